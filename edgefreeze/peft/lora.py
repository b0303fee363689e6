"""LoRA (Hu et al., 2021): W x + (alpha / r) B A x, with A (r x in) and B (out x r) trained
and W frozen; merged into W before export, through the `peft` library."""

from __future__ import annotations

from torch import nn

from edgefreeze.backbones import Backbone
from edgefreeze.peft.merge import merge_tuner_layers
from edgefreeze.peft.method import METHODS, PeftMethod, matching_linears
from edgefreeze.schema.peft import LoraSpec


@METHODS.register("lora")
class Lora(PeftMethod[LoraSpec]):
    config = LoraSpec
    size = "r"

    def attach(self, config: LoraSpec, backbone: Backbone, layers: list[int]) -> list[nn.Parameter]:
        from peft import LoraConfig, inject_adapter_in_model

        names = matching_linears(backbone, layers, config.targets, "peft.targets")
        inject_adapter_in_model(
            LoraConfig(
                r=config.r,
                lora_alpha=config.alpha,  # peft's annotation says int; floats work
                lora_dropout=config.dropout,
                target_modules=names,
            ),
            backbone.model,
        )
        return [p for name, p in backbone.model.named_parameters() if ".lora_" in name]

    def merge(self, model: nn.Module) -> None:
        merge_tuner_layers(model)
