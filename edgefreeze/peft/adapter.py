"""Bottleneck adapters (Houlsby et al., 2019; the seed article's residual adapter):
h + W_up f(W_down h), after the linear projections that end each sub-layer, with W_up
starting at zero so training starts from the pretrained model. They stay in the graph at
export (a few small matmuls per layer)."""

from __future__ import annotations

from torch import Tensor, nn

from edgefreeze.backbones import Backbone
from edgefreeze.peft.method import METHODS, PeftMethod, matching_linears
from edgefreeze.schema.peft import AdapterSpec


class Bottleneck(nn.Module):
    """x + up(gelu(down(x))) over the last axis, (batch, sequence, width) in and out."""

    def __init__(self, width: int, bottleneck: int) -> None:
        super().__init__()
        self.down = nn.Linear(width, bottleneck)
        self.up = nn.Linear(bottleneck, width)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: Tensor) -> object:  # a Tensor (calling an nn.Linear gives Any)
        return x + self.up(nn.functional.gelu(self.down(x)))


@METHODS.register("adapter")
class Adapter(PeftMethod[AdapterSpec]):
    config = AdapterSpec
    size = "bottleneck"

    def attach(
        self, config: AdapterSpec, backbone: Backbone, layers: list[int]
    ) -> list[nn.Parameter]:
        model, added = backbone.model, []
        for name in matching_linears(backbone, layers, config.targets, "peft.targets"):
            parent, _, attribute = name.rpartition(".")
            linear = model.get_submodule(name)
            assert isinstance(linear, nn.Linear)  # matching_linears names Linear modules only
            adapter = Bottleneck(linear.out_features, config.bottleneck)
            setattr(model.get_submodule(parent), attribute, nn.Sequential(linear, adapter))
            added += list(adapter.parameters())
        return added
