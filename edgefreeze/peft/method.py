"""What a parameter-efficient method is: small weights added to the layers a freezing plan
trains, which then train instead of those layers' own weights."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

from torch import nn

from edgefreeze.backbones import Backbone
from edgefreeze.errors import ConfigError
from edgefreeze.registry import Registry
from edgefreeze.spec import PeftSpec


class PeftMethod(ABC):
    """A registered method (see `METHODS`)."""

    config: ClassVar[type[PeftSpec]]  # its settings under `peft:`

    @abstractmethod
    def attach(self, config: PeftSpec, backbone: Backbone,
               layers: list[int]) -> list[nn.Parameter]:
        """Add the method's weights to these layers of `backbone.model`, in place; return
        them (what trains in those layers from now on)."""

    def merge(self, model: nn.Module) -> None:
        """Fold the added weights into the model's own before export (default: they stay,
        and export as part of the graph)."""


METHODS: Registry[type[PeftMethod]] = Registry("parameter-efficient method")


def matching_linears(backbone: Backbone, layers: list[int], targets: list[str],
                     key: str) -> list[str]:
    """Full names of the linear modules in `layers` whose name within the layer is a target
    or ends with `.target` (`query`, `output.dense`), or one line saying what there is."""
    stack = backbone.layers
    found, seen = [], set()
    for index in layers:
        for relative, module in backbone.layer_stack()[index].named_modules():
            if isinstance(module, nn.Linear):
                seen.add(relative)
                if any(relative == t or relative.endswith(f".{t}") for t in targets):
                    found.append(f"{stack}.{index}.{relative}")
    if not found:
        raise ConfigError(f"{key}: {targets} name no linear module of the trainable layers "
                          f"(they have {sorted(seen)})")
    return found
