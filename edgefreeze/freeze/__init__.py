"""Freezing plans: which parts of the model train (one module per plan kind)."""

from edgefreeze.freeze import auto as _auto  # noqa: F401  (each registers a plan)
from edgefreeze.freeze import patterns as _patterns  # noqa: F401
from edgefreeze.freeze import progressive as _progressive  # noqa: F401
from edgefreeze.freeze import top_k as _top_k  # noqa: F401
from edgefreeze.freeze.plan import (
    LEARNING_RATES,
    PLANS,
    FreezePlan,
    PlanKind,
    PlannedModel,
    Selection,
    describe_plan,
    frozen_digest,
    make_plan,
)

__all__ = [
    "LEARNING_RATES",
    "PLANS",
    "FreezePlan",
    "PlanKind",
    "PlannedModel",
    "Selection",
    "describe_plan",
    "frozen_digest",
    "make_plan",
]
