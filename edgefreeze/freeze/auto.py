"""auto: freeze layers as they settle (AutoFreeze, Liu et al. 2021; Egeria, Wang et al.
2023). Training starts with the top `trainable_layers` layers; after each epoch, when the
lowest of them changed its mean gradient norm by less than `threshold` since the epoch
before, it is frozen and joins the stem, so from the next epoch its output is computed
once and reused, like the cache, instead of being trained through. `floor` layers always
train. The manifest's `training.freeze.moves` says where the boundary went and why."""

from __future__ import annotations

from edgefreeze.backbones import Backbone
from edgefreeze.errors import ConfigError
from edgefreeze.freeze.plan import PLANS, FreezePlan, PlanKind, Selection
from edgefreeze.schema.freeze import AutoSpec


@PLANS.register("auto")
class Auto(PlanKind[AutoSpec]):
    config = AutoSpec
    adaptive = True

    def select(self, config: AutoSpec, backbone: Backbone) -> Selection:
        depth = backbone.depth
        if not config.floor <= config.trainable_layers <= depth:
            raise ConfigError(
                f"freeze: auto needs floor ({config.floor}) <= trainable_layers "
                f"({config.trainable_layers}) <= the model's {depth} layers"
            )
        boundary = depth - config.trainable_layers
        return Selection(
            boundary=boundary,
            parts={"top": list(backbone.layer_stack()[boundary:]), "head": backbone.head_modules()},
        )

    def advance(self, plan: FreezePlan, norms: list[dict[int, float]]) -> tuple[int, str] | None:
        config = plan.config
        assert isinstance(config, AutoSpec)  # this kind made the plan from its own settings
        if len(norms) < 2 or plan.depth - plan.boundary <= config.floor:
            return None
        lowest = plan.boundary
        if lowest not in norms[-2] or lowest not in norms[-1]:  # no finite step measured it
            return None
        before, now = norms[-2][lowest], norms[-1][lowest]
        change = abs(now - before) / max(before, 1e-12)
        if change >= config.threshold:
            return None
        return lowest + 1, (
            f"layer {lowest}'s gradient norm changed {change:.1%} between "
            f"epochs (under {config.threshold:.0%})"
        )
