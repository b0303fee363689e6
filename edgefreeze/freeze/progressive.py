"""progressive: start with the head alone, then unfreeze one more layer from the top every
few epochs, down to a floor (the seed articles' progressive unfreezing, as in ULMFiT).

The cache boundary sits at the floor, so every stage reads the same cached activations;
layers between the floor and those already unfrozen run without gradients, in eval mode.
"""

from __future__ import annotations

from edgefreeze.backbones import Backbone
from edgefreeze.errors import ConfigError
from edgefreeze.freeze.plan import PLANS, PlanKind, Selection
from edgefreeze.schema.freeze import ProgressiveSpec


@PLANS.register("progressive")
class Progressive(PlanKind[ProgressiveSpec]):
    config = ProgressiveSpec

    def select(self, config: ProgressiveSpec, backbone: Backbone) -> Selection:
        depth = backbone.depth
        if config.floor > depth:
            raise ConfigError(f"freeze.floor: {config.floor} exceeds the model's {depth} layers")
        stack, head = backbone.layer_stack(), backbone.head_modules()
        boundary = depth - config.floor
        stages = [
            (1 + step * config.every, [*stack[depth - step :], *head])
            for step in range(config.floor + 1)
        ]
        return Selection(
            boundary=boundary, parts={"top": list(stack[boundary:]), "head": head}, stages=stages
        )
