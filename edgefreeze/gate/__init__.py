"""The gate: every model form measured on held-out data against PyTorch, and the verdict."""

from edgefreeze.gate.evaluate import Evaluation, evaluate, held_out_outputs, reference_outputs
from edgefreeze.gate.rules import Rule, Verdict, judge, tolerance_rules

__all__ = ["Evaluation", "Rule", "Verdict", "evaluate", "held_out_outputs", "judge",
           "reference_outputs", "tolerance_rules"]
