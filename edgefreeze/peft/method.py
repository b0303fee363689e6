"""What a parameter-efficient method is: small weights added to the layers a freezing plan
trains, which then train instead of those layers' own weights."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar, Generic, TypeVar

from torch import nn

from edgefreeze.backbones import Backbone, hf_config
from edgefreeze.errors import ConfigError
from edgefreeze.schema import PEFT_SETTINGS, PeftSpec
from edgefreeze.schema.section import KindRegistry

Spec = TypeVar("Spec", bound=PeftSpec)  # a method's own settings class


class PeftMethod(ABC, Generic[Spec]):
    """A registered method (see `METHODS`), generic in its settings."""

    config: ClassVar[type[PeftSpec]]  # its settings under `peft:`
    size: ClassVar[str | None] = None  # the setting that sizes the added weights (a sweep's rank)

    @abstractmethod
    def attach(self, config: Spec, backbone: Backbone, layers: list[int]) -> list[nn.Parameter]:
        """Add the method's weights to these layers of `backbone.model`, in place; return
        them (what trains in those layers from now on)."""

    def merge(self, model: nn.Module) -> None:  # noqa: B027 - a default, not a stub
        """Fold the added weights into the model's own before export (default: they stay,
        and export as part of the graph)."""


METHODS: KindRegistry[type[PeftMethod[Any]]] = KindRegistry(
    "parameter-efficient method", PEFT_SETTINGS
)


def matching_linears(
    backbone: Backbone, layers: list[int], targets: list[str], key: str
) -> list[str]:
    """Full names of the linear modules in `layers` that `targets` name: a role the family
    maps (`query`, `value`, `output`: see Backbone.linears), or a name suffix within the
    layer (`self.query`). A target that names nothing is one line saying what there is."""
    found, seen = [], set()
    for target in targets:
        role = backbone.linears.get(target)
        matched = False
        for index in layers:
            for relative, module in backbone.layer_stack()[index].named_modules():
                if not isinstance(module, nn.Linear):
                    continue
                seen.add(relative)
                if relative == role or (
                    role is None and (relative == target or relative.endswith(f".{target}"))
                ):
                    found.append(f"{backbone.layers}.{index}.{relative}")
                    matched = True
        if not seen:
            raise ConfigError(
                f"{key}: the trainable layers of {hf_config(backbone.model).model_type} "
                "have no linear modules to attach to (convolutions only); train "
                "them whole (no peft) instead"
            )
        if not matched:
            raise ConfigError(
                f"{key}: {target!r} names no linear module of the trainable "
                f"layers (roles: {', '.join(backbone.linears)}; modules: "
                f"{', '.join(sorted(seen))})"
            )
    return list(dict.fromkeys(found))
