"""The gate: the rules a build must pass before anything ships, and the verdict."""

from __future__ import annotations

from dataclasses import dataclass, field

from edgefreeze.spec import GateSpec


@dataclass(frozen=True)
class Rule:
    name: str
    measured: float
    limit: float
    kind: str  # "max" (measured must be <= limit) or "min" (>= limit)
    what: str

    @property
    def passed(self) -> bool:
        return self.measured <= self.limit if self.kind == "max" else self.measured >= self.limit

    def describe(self) -> str:
        sign = "<=" if self.kind == "max" else ">="
        status = "pass" if self.passed else f"FAIL by {abs(self.measured - self.limit):.6g}"
        return f"{self.what}: {self.measured:.6g} (must be {sign} {self.limit:.6g}) {status}"


@dataclass(frozen=True)
class Verdict:
    rules: list[Rule] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(rule.passed for rule in self.rules)

    @property
    def failures(self) -> list[Rule]:
        return [rule for rule in self.rules if not rule.passed]

    def to_dict(self) -> dict[str, object]:
        return {
            "passed": self.passed,
            "rules": {r.name: {"kind": r.kind, "limit": r.limit, "measured": r.measured,
                               "passed": r.passed, "what": r.what} for r in self.rules},
            "failures": [r.describe() for r in self.failures],
        }


def judge(metrics: dict[str, dict[str, float]], shape_error: float, spec: GateSpec) -> Verdict:
    """Apply the pipeline's gate to the measured metrics."""
    int8, reference = metrics["onnx_int8"], metrics["pytorch"]
    fp32_error = max(metrics["onnx_fp32"]["max_logit_error"], shape_error)
    return Verdict(rules=[
        Rule("max_accuracy_drop", reference["accuracy"] - int8["accuracy"],
             spec.max_accuracy_drop, "max", "int8 accuracy drop against PyTorch"),
        Rule("min_agreement", int8["agreement"], spec.min_agreement, "min",
             "int8 prediction agreement with PyTorch"),
        Rule("max_logit_error", fp32_error, spec.max_logit_error, "max",
             "ONNX fp32 max |logit error| against PyTorch (held-out and shape grid)"),
    ])
