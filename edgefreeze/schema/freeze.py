"""`freeze:`: which freezing plan (`edgefreeze.freeze`) decides what trains, with its
own settings. Each plan's settings class registers under the plan's name; the plan kind
reads it as its `config`."""

from __future__ import annotations

from pydantic import Field

from edgefreeze.schema.section import KindSettings, Section


class FreezeSpec(Section):
    """What every freezing plan's settings share; each plan subclasses it with its own
    keys, and `freeze.plan` picks which one validates."""

    plan: str = Field("top_k", description="the freezing plan (edgefreeze.freeze.PLANS)")


PLAN_SETTINGS: KindSettings[FreezeSpec] = KindSettings("freezing plan", FreezeSpec, "plan")


@PLAN_SETTINGS.register("top_k")
class TopKSpec(FreezeSpec):
    trainable_layers: int = Field(
        2, ge=0, description="top encoder layers that train; 0 trains the head only"
    )


@PLAN_SETTINGS.register("auto")
class AutoSpec(FreezeSpec):
    trainable_layers: int = Field(4, ge=1, description="top layers that train at first")
    threshold: float = Field(
        0.1,
        gt=0.0,
        lt=10.0,
        description="freeze the lowest training "
        "layer once its gradient norm changes by less than this share "
        "between epochs",
    )
    floor: int = Field(1, ge=1, description="top layers that always train")


@PLAN_SETTINGS.register("progressive")
class ProgressiveSpec(FreezeSpec):
    floor: int = Field(
        2,
        ge=1,
        description="how many top layers train in the end; the cache boundary sits below them",
    )
    every: int = Field(1, ge=1, description="epochs between unfreezing one more layer")


@PLAN_SETTINGS.register("patterns")
class PatternsSpec(FreezeSpec):
    train: list[str] = Field(
        default_factory=list,
        description="parameter-name globs that train, e.g. '*.encoder.layer.5.*' or '*.bias'",
    )
    freeze: list[str] = Field(
        default_factory=list,
        description="globs that stay frozen even if `train` or the head names them",
    )
    head: bool = Field(True, description="the task's head trains (a new head must)")
