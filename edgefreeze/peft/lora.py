"""LoRA (Hu et al., 2021): W x + (alpha / r) B A x, with A (r x in) and B (out x r) trained
and W frozen; merged into W before export, through the `peft` library."""

from __future__ import annotations

from pydantic import Field
from torch import nn

from edgefreeze.backbones import Backbone
from edgefreeze.peft.method import METHODS, PeftMethod, matching_linears
from edgefreeze.peft.merge import merge_tuner_layers
from edgefreeze.spec import PeftSpec


class LoraSpec(PeftSpec):
    r: int = Field(8, ge=1, le=1024, description="rank of the update")
    alpha: float = Field(16.0, gt=0.0, description="scale: the update is alpha / r times BA")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="dropout on the LoRA branch's input")
    targets: list[str] = Field(["query", "value"], min_length=1, description="linear modules "
                               "of each trainable layer that get an update: roles (query, key, "
                               "value, attention_output, intermediate, output) or name "
                               "suffixes")


@METHODS.register("lora")
class Lora(PeftMethod):
    config = LoraSpec
    size = "r"

    def attach(self, config: LoraSpec, backbone: Backbone,
               layers: list[int]) -> list[nn.Parameter]:
        from peft import LoraConfig, inject_adapter_in_model

        names = matching_linears(backbone, layers, config.targets, "peft.targets")
        inject_adapter_in_model(LoraConfig(r=config.r, lora_alpha=config.alpha,
                                           lora_dropout=config.dropout, target_modules=names),
                                backbone.model)
        return [p for name, p in backbone.model.named_parameters() if ".lora_" in name]

    def merge(self, model: nn.Module) -> None:
        merge_tuner_layers(model)
