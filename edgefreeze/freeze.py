"""Freezing: the bottom of the network is fixed, the top layers and the head train.

Frozen modules get no gradients and stay in eval mode (dropout off), so the frozen stem is
a pure function of its input: the property the activation cache relies on.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from edgefreeze.backbones import Backbone
from edgefreeze.errors import ConfigError

NO_DECAY = ("bias", "LayerNorm.weight", "layer_norm.weight", "norm.weight")


@dataclass(frozen=True)
class FreezePlan:
    trainable_layers: list[int]  # indices into the layer stack, bottom = 0
    trainable_parameters: int
    total_parameters: int

    @property
    def trainable_share(self) -> float:
        return self.trainable_parameters / self.total_parameters


def apply_freeze(backbone: Backbone, trainable_layers: int) -> FreezePlan:
    """Freeze everything, then unfreeze the top `trainable_layers` layers and the head."""
    depth = backbone.depth
    if trainable_layers > depth:
        raise ConfigError(f"freeze.trainable_layers: {trainable_layers} exceeds the model's "
                          f"{depth} layers")
    backbone.model.requires_grad_(False)
    for module in top_modules(backbone, trainable_layers):
        module.requires_grad_(True)
    parameters = list(backbone.model.parameters())
    return FreezePlan(
        trainable_layers=list(range(depth - trainable_layers, depth)),
        trainable_parameters=sum(p.numel() for p in parameters if p.requires_grad),
        total_parameters=sum(p.numel() for p in parameters))


def top_modules(backbone: Backbone, trainable_layers: int) -> list[nn.Module]:
    stack = backbone.layer_stack()
    return list(stack[len(stack) - trainable_layers:]) + backbone.head_modules()


def set_train_mode(backbone: Backbone, trainable_layers: int) -> None:
    """Train mode for the trainable top, eval mode (no dropout) for the frozen rest."""
    backbone.model.eval()
    for module in top_modules(backbone, trainable_layers):
        module.train()


def parameter_groups(backbone: Backbone, trainable_layers: int, lr_top: float, lr_head: float,
                     weight_decay: float) -> list[dict]:
    """Optimizer groups over trainable parameters only: per-part learning rates, and no
    weight decay on biases and norms."""
    stack = backbone.layer_stack()
    parts = {"top": [stack[i] for i in range(len(stack) - trainable_layers, len(stack))],
             "head": backbone.head_modules()}
    rates = {"top": lr_top, "head": lr_head}
    groups = []
    for part, modules in parts.items():
        named = [(n, p) for m in modules for n, p in m.named_parameters() if p.requires_grad]
        for decay in (True, False):
            params = [p for n, p in named if n.endswith(NO_DECAY) != decay]
            if params:
                groups.append({"params": params, "lr": rates[part], "name": part,
                               "weight_decay": weight_decay if decay else 0.0})
    return groups
