"""Architecture adapters: where a model family keeps its embeddings, layers and head.

One small declarative class per family, registered for the `model_type`s it serves (the
pattern of Optimum's exporter configs). Adding a family means adding a class here; the
freezing, training and export machinery never changes.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn
from transformers.modeling_attn_mask_utils import _prepare_4d_attention_mask_for_sdpa

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

    Subclasses declare dotted attribute paths into the Hugging Face model and how their
    head reads the last hidden states; the defaults fit the BERT layer API. `stem` and
    `top` split the model's own forward pass at a layer boundary:
    `top(stem(x, b), mask, b) == model(**x).logits` for every boundary b.
    """

    embeddings: ClassVar[str]
    layers: ClassVar[str]
    head: ClassVar[tuple[str, ...]]
    fusion_type: ClassVar[str] = "bert"  # ONNX Runtime optimizer's model_type for fusion

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

    @property
    def hidden_size(self) -> int:
        return self.model.config.hidden_size

    @property
    def max_tokens(self) -> int:
        """The longest input the position table serves (tokens, specials included)."""
        return self.model.config.max_position_embeddings

    def stem(self, inputs: dict[str, torch.Tensor], boundary: int) -> torch.Tensor:
        """Hidden states (batch, seq, hidden) after the bottom `boundary` layers."""
        hidden = self.embed(inputs)
        mask = self.layer_mask(inputs["attention_mask"], hidden.dtype)
        for layer in self.layer_stack()[:boundary]:
            hidden = self.run_layer(layer, hidden, mask)
        return hidden

    def top(self, hidden: torch.Tensor, attention_mask: torch.Tensor,
            boundary: int) -> torch.Tensor:
        """Logits (batch, labels) from the hidden states at `boundary`.

        With boundary == depth only the head runs, and it reads the first token alone, so
        `hidden` may be just (batch, 1, hidden): what head-only caching stores.
        """
        mask = self.layer_mask(attention_mask, hidden.dtype)
        for layer in self.layer_stack()[boundary:]:
            hidden = self.run_layer(layer, hidden, mask)
        return self.classify(hidden)

    def embed(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.embedding_module()(input_ids=inputs["input_ids"],
                                       token_type_ids=inputs.get("token_type_ids"))

    def layer_mask(self, attention_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor | None:
        """The mask the model's own forward would hand its layers."""
        config = self.model.config
        if (config._attn_implementation == "sdpa"
                and getattr(config, "position_embedding_type", "absolute") == "absolute"):
            return _prepare_4d_attention_mask_for_sdpa(attention_mask, dtype,
                                                       tgt_len=attention_mask.shape[1])
        return self.model.get_extended_attention_mask(attention_mask, attention_mask.shape,
                                                      dtype=dtype)

    def run_layer(self, layer: nn.Module, hidden: torch.Tensor,
                  mask: torch.Tensor | None) -> torch.Tensor:
        return layer(hidden, attention_mask=mask)[0]

    def classify(self, hidden: torch.Tensor) -> torch.Tensor:
        """Logits from last hidden states; heads that read the whole sequence's first token."""
        return self.model.get_submodule(self.head[-1])(hidden)


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
