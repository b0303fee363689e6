"""patterns: choose what trains by parameter name (the seed articles' "freezing by module
name"), e.g. the last layer's attention and every bias.

Globs (fnmatch) match the model's parameter names, such as
`bert.encoder.layer.5.attention.self.query.weight`. The task's head trains unless a
`freeze` glob says otherwise. The cache boundary sits below the lowest layer with a
parameter that trains; when the embeddings train there is no frozen stem to cache.
"""

from __future__ import annotations

from fnmatch import fnmatchcase

from edgefreeze.backbones import Backbone
from edgefreeze.errors import ConfigError
from edgefreeze.freeze.plan import PLANS, PlanKind, Selection
from edgefreeze.schema.freeze import PatternsSpec


@PLANS.register("patterns")
class Patterns(PlanKind[PatternsSpec]):
    config = PatternsSpec

    def select(self, config: PatternsSpec, backbone: Backbone) -> Selection:
        named = dict(backbone.model.named_parameters())
        for key, globs in (("train", config.train), ("freeze", config.freeze)):
            for glob in globs:
                if not any(fnmatchcase(name, glob) for name in named):
                    example = next(iter(named))
                    raise ConfigError(
                        f"freeze.{key}: {glob!r} matches no parameter of this "
                        f"model (names look like {example!r})"
                    )
        head = {id(p) for module in backbone.head_modules() for p in module.parameters()}
        chosen = [
            (name, p)
            for name, p in named.items()
            if (
                any(fnmatchcase(name, glob) for glob in config.train)
                or (config.head and id(p) in head)
            )
            and not any(fnmatchcase(name, glob) for glob in config.freeze)
        ]
        if not chosen:
            raise ConfigError(
                "freeze: plan patterns trains nothing; name parameters in "
                "freeze.train or keep freeze.head: true"
            )
        embeddings = {id(p) for p in backbone.embedding_module().parameters()}
        layer_of = {
            id(p): i for i, layer in enumerate(backbone.layer_stack()) for p in layer.parameters()
        }
        layers = [layer_of[id(p)] for _, p in chosen if id(p) in layer_of]
        boundary = (
            0
            if any(id(p) in embeddings for _, p in chosen)
            else min(layers, default=backbone.depth)
        )
        return Selection(
            boundary=boundary,
            parts={
                "top": [p for _, p in chosen if id(p) not in head],
                "head": [p for _, p in chosen if id(p) in head],
            },
        )
