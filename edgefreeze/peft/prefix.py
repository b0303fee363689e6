"""Prefix tuning that keeps the cache (P-tuning v2 restricted to the trainable layers):
learned virtual tokens join the sequence where the trainable layers begin, every trainable
layer attends to them, and they leave again after the last one. The frozen stem below
never sees them, so its cached activations still serve. They stay in the graph at export.

The tokens are appended after the sequence's last position: above the embeddings there are
no positions, and padded rows mask their padding whatever follows it."""

from __future__ import annotations

import torch
from torch import nn

from edgefreeze.backbones import Backbone, hf_config
from edgefreeze.errors import ConfigError
from edgefreeze.peft.method import METHODS, PeftMethod
from edgefreeze.schema.peft import PrefixSpec


class VirtualTokens(nn.Module):
    """A layer that runs with the virtual tokens in the sequence: the first trainable layer
    appends them, each pads the attention mask to match, the last one takes them away.

    Masks come as the families hand them to their layers: None (nothing masked), (batch,
    sequence) keep-masks of 0/1, or 4-d additive masks (0 keeps) over keys, and over
    queries too for SDPA. A relative position bias (MPNet's `position_bias`, a square
    (batch, heads, sequence, sequence) tensor after the mask) gets zeros for the tokens,
    which have no position."""

    def __init__(
        self,
        layer: nn.Module,
        tokens: nn.Parameter | None,
        appends: bool,
        removes: bool,
        count: int,
    ) -> None:
        super().__init__()
        self.layer, self.tokens = layer, tokens
        self.appends, self.removes, self.count = appends, removes, count

    def forward(self, hidden: torch.Tensor, *args: object, **kwargs: object) -> object:
        if self.appends and self.tokens is not None:  # the appending layer holds the tokens
            prompt = self.tokens.to(hidden.dtype).unsqueeze(0).expand(hidden.shape[0], -1, -1)
            hidden = torch.cat([hidden, prompt], dim=1)
        if args:
            args = (self._pad(args[0]), *(self._pad_bias(a) for a in args[1:]))
        for key in ("attention_mask", "attn_mask"):
            if kwargs.get(key) is not None:
                kwargs[key] = self._pad(kwargs[key])
        if kwargs.get("position_bias") is not None:
            kwargs["position_bias"] = self._pad_bias(kwargs["position_bias"])
        outputs = self.layer(hidden, *args, **kwargs)
        if not self.removes:
            return outputs
        length = hidden.shape[1] - self.count
        return tuple(
            o[:, :length]
            if torch.is_tensor(o) and o.dim() == 3 and o.shape[1] == hidden.shape[1]
            else o
            for o in outputs
        )

    def _pad(self, mask: object) -> object:
        if mask is None or not torch.is_tensor(mask):
            return mask
        keep = 1 if mask.dim() == 2 else 0  # 0/1 keep-mask, or additive (0 keeps)
        mask = nn.functional.pad(mask, (0, self.count), value=keep)  # every query sees them
        if mask.dim() == 4 and mask.shape[-2] > 1:
            # SDPA masks have a row per query; the tokens' own queries must not see padding
            # either: give them the first token's row (a real token's, never padding).
            rows = mask[..., :1, :].expand(-1, -1, self.count, -1)
            mask = torch.cat([mask, rows], dim=-2)
        return mask

    def _pad_bias(self, bias: object) -> object:
        if not (torch.is_tensor(bias) and bias.dim() == 4 and bias.shape[-1] == bias.shape[-2]):
            return bias
        return nn.functional.pad(bias, (0, self.count, 0, self.count), value=0.0)


@METHODS.register("prefix")
class Prefix(PeftMethod[PrefixSpec]):
    config = PrefixSpec
    size = "tokens"

    def attach(
        self, config: PrefixSpec, backbone: Backbone, layers: list[int]
    ) -> list[nn.Parameter]:
        if backbone.no_virtual_tokens:
            raise ConfigError(
                f"peft.method: prefix does not fit "
                f"{hf_config(backbone.model).model_type}: "
                f"{backbone.no_virtual_tokens}; use lora, ia3 or adapter"
            )
        stack = backbone.layer_stack()
        first, last = layers[0], layers[-1]
        tokens = nn.Parameter(torch.randn(config.tokens, backbone.hidden_size) * 0.02)
        for index in range(first, last + 1):
            stack[index] = VirtualTokens(
                stack[index],
                tokens if index == first else None,
                appends=index == first,
                removes=index == last,
                count=config.tokens,
            )
        return [tokens]
