"""Architecture adapters: where a model family keeps its embeddings, layers and head.

One small declarative class per family, registered for the `model_type`s it serves (the
pattern of Optimum's exporter configs). Adding a family means adding a class here; the
freezing, training and export machinery never changes.
"""

from __future__ import annotations

from typing import ClassVar

from torch import nn

from edgefreeze.errors import ConfigError

_REGISTRY: dict[str, type[Backbone]] = {}


def register(*model_types: str):
    """Class decorator: serve these `config.model_type` values with the class."""

    def decorate(cls: type[Backbone]) -> type[Backbone]:
        for model_type in model_types:
            _REGISTRY[model_type] = cls
        return cls

    return decorate


class Backbone:
    """A sequence-classification model seen as embeddings -> layer stack -> head.

    Subclasses only declare dotted attribute paths into the Hugging Face model.
    """

    embeddings: ClassVar[str]
    layers: ClassVar[str]
    head: ClassVar[tuple[str, ...]]

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    def embedding_module(self) -> nn.Module:
        return self.model.get_submodule(self.embeddings)

    def layer_stack(self) -> nn.ModuleList:
        return self.model.get_submodule(self.layers)

    def head_modules(self) -> list[nn.Module]:
        return [self.model.get_submodule(path) for path in self.head]

    @property
    def depth(self) -> int:
        return len(self.layer_stack())


def backbone_for(model: nn.Module) -> Backbone:
    """The adapter for a loaded model, or a `ConfigError` naming the supported families."""
    model_type = getattr(model.config, "model_type", None)
    if model_type not in _REGISTRY:
        known = ", ".join(sorted(_REGISTRY))
        raise ConfigError(f"model: architecture {model_type!r} is not supported yet "
                          f"(supported: {known})")
    return _REGISTRY[model_type](model)


def supported_model_types() -> list[str]:
    return sorted(_REGISTRY)
