"""Freezing plans: which parts of the model train (one module per plan kind)."""

from edgefreeze.freeze import top_k as _top_k  # noqa: F401  (registers the plan)
from edgefreeze.freeze.plan import (PLANS, FreezePlan, PlanKind, Selection, describe_plan,
                                    make_plan, stem_digest)

__all__ = ["PLANS", "FreezePlan", "PlanKind", "Selection", "describe_plan", "make_plan",
           "stem_digest"]
