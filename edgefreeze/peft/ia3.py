"""IA3 (Liu et al., 2022): learned vectors that rescale keys, values and the feed-forward
activations, l * (W x); merged into W before export, through the `peft` library."""

from __future__ import annotations

from torch import nn

from edgefreeze.backbones import Backbone
from edgefreeze.errors import ConfigError
from edgefreeze.peft.merge import merge_tuner_layers
from edgefreeze.peft.method import METHODS, PeftMethod, matching_linears
from edgefreeze.schema.peft import IA3Spec


@METHODS.register("ia3")
class IA3(PeftMethod[IA3Spec]):
    config = IA3Spec

    def attach(self, config: IA3Spec, backbone: Backbone, layers: list[int]) -> list[nn.Parameter]:
        from peft import IA3Config, inject_adapter_in_model

        names = matching_linears(backbone, layers, config.targets, "peft.targets")
        feedforward = matching_linears(backbone, layers, config.feedforward, "peft.feedforward")
        if not set(feedforward) <= set(names):
            raise ConfigError("peft.feedforward: must be among peft.targets")
        inject_adapter_in_model(
            IA3Config(target_modules=names, feedforward_modules=feedforward), backbone.model
        )
        return [p for name, p in backbone.model.named_parameters() if ".ia3_" in name]

    def merge(self, model: nn.Module) -> None:
        merge_tuner_layers(model)
