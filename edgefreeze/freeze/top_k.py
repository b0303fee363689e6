"""top_k: freeze the embeddings and the bottom layers; train the top k layers and the head."""

from __future__ import annotations

from edgefreeze.backbones import Backbone
from edgefreeze.errors import ConfigError
from edgefreeze.freeze.plan import PLANS, PlanKind, Selection
from edgefreeze.schema.freeze import TopKSpec


@PLANS.register("top_k")
class TopK(PlanKind[TopKSpec]):
    config = TopKSpec

    def select(self, config: TopKSpec, backbone: Backbone) -> Selection:
        depth = backbone.depth
        if config.trainable_layers > depth:
            raise ConfigError(
                f"freeze.trainable_layers: {config.trainable_layers} exceeds "
                f"the model's {depth} layers"
            )
        boundary = depth - config.trainable_layers
        return Selection(
            boundary=boundary,
            parts={"top": list(backbone.layer_stack()[boundary:]), "head": backbone.head_modules()},
        )
