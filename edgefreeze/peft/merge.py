"""Fold `peft` adapter layers into the linear layers they wrap, leaving a plain model."""

from __future__ import annotations

from torch import nn


def merge_tuner_layers(model: nn.Module) -> None:
    """Merge every peft tuner layer (LoRA, IA3) into its base layer and put the base layer
    back in its place, so the exporter sees the model's own architecture."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    for name, module in list(model.named_modules()):
        if isinstance(module, BaseTunerLayer):
            module.merge()
            parent, _, attribute = name.rpartition(".")
            setattr(model.get_submodule(parent), attribute, module.get_base_layer())
