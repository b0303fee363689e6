"""The gate: the rules a build must pass before anything ships, and the verdict.

Which rules a model form gets follows from its precision (`runtime.forms`): exact (fp32)
forms must match PyTorch's outputs, reduced-precision forms may lose at most so much of
the task's gate metric and agreement.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import Literal

from edgefreeze.figures import rule_figure
from edgefreeze.gate.evaluate import Evaluation
from edgefreeze.runtime.forms import FORMS, REFERENCE, ModelForm
from edgefreeze.runtime.manifest import GateRecord, RuleRecord
from edgefreeze.schema import GateSpec


@dataclass(frozen=True)
class Rule:
    name: str
    measured: float
    limit: float
    kind: Literal["max", "min"]  # max: measured must be <= limit; min: >= limit
    what: str

    @property
    def passed(self) -> bool:
        return self.measured <= self.limit if self.kind == "max" else self.measured >= self.limit

    def describe(self) -> str:
        sign = "<=" if self.kind == "max" else ">="
        figure = partial(rule_figure, self.name)
        status = "pass" if self.passed else f"FAIL by {figure(abs(self.measured - self.limit))}"
        return (
            f"{self.what}: {figure(self.measured)} (must be {sign} {figure(self.limit)}) {status}"
        )


@dataclass(frozen=True)
class Verdict:
    rules: list[Rule] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(rule.passed for rule in self.rules)

    @property
    def failures(self) -> list[Rule]:
        return [rule for rule in self.rules if not rule.passed]

    def record(self) -> GateRecord:
        """The manifest's `gate`."""
        return GateRecord(
            passed=self.passed,
            rules={
                r.name: RuleRecord(
                    kind=r.kind, limit=r.limit, measured=r.measured, passed=r.passed, what=r.what
                )
                for r in self.rules
            },
            failures=[r.describe() for r in self.failures],
        )


def judge(
    evaluation: Evaluation, gate_metric: str, gate: GateSpec, sizes: dict[str, int]
) -> Verdict:
    """Apply the pipeline's gate to every form evaluated: exact forms on logit error
    (held-out and shape grid), the others on the drop of `gate_metric` and agreement, and
    int8 forms on their size against their fp32 form's (`sizes`: bytes per form)."""
    metrics, rules = evaluation.metrics, []
    for name, measured in metrics.items():
        if name == REFERENCE:
            continue
        form = FORMS[name]
        if form.exact:
            shapes = evaluation.shape_check[name].max_logit_error
            rules.append(
                Rule(
                    f"{name}.max_logit_error",
                    max(measured["max_logit_error"], shapes),
                    gate.max_logit_error,
                    "max",
                    f"{name} max |logit error| against PyTorch (held-out and shape grid)",
                )
            )
        else:
            rules += tolerance_rules(form, measured, metrics[REFERENCE], gate_metric, gate)
        if form.precision == "int8":
            assert form.source is not None  # an int8 form is made from its fp32 form
            rules.append(size_rule(form, sizes[name] / sizes[form.source], gate))
    return Verdict(rules=rules)


def size_rule(form: ModelForm, share: float, gate: GateSpec) -> Rule:
    """An int8 form must be mostly int8: its files at most this share of its fp32 form's."""
    return Rule(
        f"{form.name}.max_size_share",
        share,
        gate.max_int8_size_share,
        "max",
        f"{form.name} size as a share of {form.source}'s",
    )


def tolerance_rules(
    form: ModelForm,
    metrics: dict[str, float],
    reference: dict[str, float],
    gate_metric: str,
    gate: GateSpec,
    against: str = "PyTorch",
) -> list[Rule]:
    """What a reduced-precision form must meet against its reference (PyTorch; for a
    target check, the same form on this machine): the drop of the task's gate metric, and
    agreement."""
    return [
        Rule(
            f"{form.name}.max_metric_drop",
            reference[gate_metric] - metrics[gate_metric],
            gate.max_metric_drop,
            "max",
            f"{form.name} {gate_metric} drop against {against}",
        ),
        Rule(
            f"{form.name}.min_agreement",
            metrics["agreement"],
            gate.min_agreement,
            "min",
            f"{form.name} prediction agreement with {against}",
        ),
    ]
