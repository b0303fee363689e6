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


def judge(metrics: dict[str, dict[str, float]], shape_errors: dict[str, float],
          spec: GateSpec) -> Verdict:
    """Apply the pipeline's gate to every ONNX model built: int8 and fp16 models on
    accuracy and agreement, fp32 models on logit error (held-out and shape grid)."""
    reference = metrics["pytorch"]
    rules = []
    for name, m in metrics.items():
        if name.endswith(("int8", "fp16")):
            rules += reduced_precision_rules(name, m, reference, spec)
        elif name.endswith("fp32"):
            rules.append(Rule(f"{name}.max_logit_error",
                              max(m["max_logit_error"], shape_errors[name]),
                              spec.max_logit_error, "max",
                              f"{name} max |logit error| against PyTorch (held-out and shape grid)"))
    return Verdict(rules=rules)


def reduced_precision_rules(name: str, metrics: dict[str, float], reference: dict[str, float],
                            spec: GateSpec) -> list[Rule]:
    """What an int8 or fp16 model must meet against PyTorch: accuracy drop and agreement."""
    return [Rule(f"{name}.max_accuracy_drop", reference["accuracy"] - metrics["accuracy"],
                 spec.max_accuracy_drop, "max", f"{name} accuracy drop against PyTorch"),
            Rule(f"{name}.min_agreement", metrics["agreement"], spec.min_agreement, "min",
                 f"{name} prediction agreement with PyTorch")]
