"""The gate: every model form measured on held-out data against PyTorch, and the verdict."""

from edgefreeze.gate.evaluate import Evaluation, ShapeGrid, evaluate, held_out_outputs
from edgefreeze.gate.held_out import HeldOut, reference_outputs
from edgefreeze.gate.rules import Rule, Verdict, judge, tolerance_rules

__all__ = [
    "Evaluation",
    "HeldOut",
    "Rule",
    "ShapeGrid",
    "Verdict",
    "evaluate",
    "held_out_outputs",
    "judge",
    "reference_outputs",
    "tolerance_rules",
]
