"""The supported families, each only what differs from the others."""

from __future__ import annotations

from typing import Any, ClassVar, cast

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers.modeling_attn_mask_utils import _prepare_4d_attention_mask_for_sdpa

from edgefreeze.backbones.registry import FAMILIES, Backbone, LayerMask, hf_config
from edgefreeze.errors import ConfigError


@FAMILIES.register("bert")
class BertBackbone(Backbone):
    embeddings = "bert.embeddings"
    layers = "bert.encoder.layer"


@FAMILIES.register("roberta", "xlm-roberta", "camembert")
class RobertaBackbone(Backbone):
    embeddings = "roberta.embeddings"
    layers = "roberta.encoder.layer"

    @property
    def max_tokens(self) -> int:
        # Positions count from padding_idx + 1: roberta-base's 514 rows serve 512 tokens.
        config = hf_config(self.model)
        return cast(int, config.max_position_embeddings - config.pad_token_id - 1)


@FAMILIES.register("mpnet")
class MPNetBackbone(RobertaBackbone):
    """MPNet (the family of the most used sentence-embedding models): RoBERTa's positions
    and head, no token types, and a relative position bias that the encoder computes once
    from the sequence length and hands every layer; each layer here computes the same."""

    embeddings = "mpnet.embeddings"
    layers = "mpnet.encoder.layer"
    linears = {
        "query": "attention.attn.q",
        "key": "attention.attn.k",
        "value": "attention.attn.v",
        "attention_output": "attention.attn.o",
        "intermediate": "intermediate.dense",
        "output": "output.dense",
    }

    def embed(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return cast(torch.Tensor, self.embedding_module()(input_ids=inputs["input_ids"]))

    def layer_mask(self, attention_mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor:
        # MPNet's attention always adds the extended (additive) mask, whatever the config's
        # attention implementation says.
        assert attention_mask is not None  # a text model's inputs always carry one
        return cast(
            torch.Tensor,
            cast(PreTrainedModel, self.model).get_extended_attention_mask(
                attention_mask, attention_mask.shape, dtype=dtype
            ),
        )

    def run_layer(self, layer: nn.Module, hidden: torch.Tensor, mask: LayerMask) -> torch.Tensor:
        assert isinstance(mask, torch.Tensor)  # what this family's layer_mask makes
        # From the mask's length, not the hidden states': prefix tuning's virtual tokens
        # ride along in `hidden` between its layers and get no position (peft/prefix.py).
        model: Any = self.model
        bias = model.mpnet.encoder.compute_position_bias(hidden[:, : mask.shape[-1]])
        return cast(torch.Tensor, layer(hidden, attention_mask=mask, position_bias=bias)[0])


@FAMILIES.register("deberta-v2")
class DebertaV2Backbone(Backbone):
    """DeBERTa-v2 and DeBERTa-v3 checkpoints. Disentangled attention reads a relative
    position table and the tokens' distances, which the encoder computes once and hands
    every layer (each layer here computes the same); the embeddings are masked; where
    `conv_kernel_size` > 0 (deberta-v2-xlarge) layer 0's output also passes a convolution
    over the embeddings."""

    embeddings = "deberta.embeddings"
    layers = "deberta.encoder.layer"
    no_virtual_tokens = (
        "its disentangled attention reads every key's relative position, "
        "and virtual tokens have none"
    )
    linears = {
        "query": "attention.self.query_proj",
        "key": "attention.self.key_proj",
        "value": "attention.self.value_proj",
        "attention_output": "attention.output.dense",
        "intermediate": "intermediate.dense",
        "output": "output.dense",
    }

    def embed(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return cast(
            torch.Tensor,
            self.embedding_module()(
                input_ids=inputs["input_ids"],
                token_type_ids=inputs.get("token_type_ids"),
                mask=inputs["attention_mask"],
            ),
        )

    def layer_mask(self, attention_mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor:
        model: Any = self.model
        return cast(torch.Tensor, model.deberta.encoder.get_attention_mask(attention_mask))

    def run_layer(self, layer: nn.Module, hidden: torch.Tensor, mask: LayerMask) -> torch.Tensor:
        assert isinstance(mask, torch.Tensor)  # what this family's layer_mask makes
        model: Any = self.model
        encoder = model.deberta.encoder
        out: torch.Tensor = layer(
            hidden,
            mask,
            relative_pos=encoder.get_rel_pos(hidden),
            rel_embeddings=encoder.get_rel_embedding(),
        )[0]
        if encoder.conv is not None and layer is encoder.layer[0]:
            out = encoder.conv(hidden, out, mask[:, 0, 0])  # row 0 ([CLS]) is the 2-D mask
        return out


@FAMILIES.register("modernbert")
class ModernBertBackbone(Backbone):
    """ModernBERT: pre-norm layers with rotary positions in every attention, global
    attention every few layers and a sliding window in the others (both masks built once
    per batch, as the model does); the final norm after the last layer belongs to the
    head (with `classifier_pooling: mean` the task's head reads every row, not the first)."""

    embeddings = "model.embeddings"
    layers = "model.layers"
    linears = {
        "query": "attn.Wqkv",
        "key": "attn.Wqkv",
        "value": "attn.Wqkv",
        "attention_output": "attn.Wo",
        "intermediate": "mlp.Wi",
        "output": "mlp.Wo",
    }
    no_virtual_tokens = (
        "rotary embeddings give every token a position, and virtual tokens have none"
    )

    def embed(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return cast(torch.Tensor, self.embedding_module()(input_ids=inputs["input_ids"]))

    def layer_mask(
        self, attention_mask: torch.Tensor | None, dtype: torch.dtype
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        assert attention_mask is not None  # a text model's inputs always carry one
        model: Any = self.model
        global_mask, window_mask = model.model._update_attention_mask(
            attention_mask, output_attentions=False
        )
        positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
        return global_mask, window_mask, positions.unsqueeze(0)

    def run_layer(self, layer: nn.Module, hidden: torch.Tensor, mask: LayerMask) -> torch.Tensor:
        assert isinstance(mask, tuple)  # what this family's layer_mask makes
        global_mask, window_mask, positions = mask
        return cast(
            torch.Tensor,
            layer(
                hidden,
                attention_mask=global_mask,
                sliding_window_mask=window_mask,
                position_ids=positions,
            )[0],
        )


@FAMILIES.register("electra")
class ElectraBackbone(Backbone):
    embeddings = "electra.embeddings"
    layers = "electra.encoder.layer"

    def embed(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        hidden = super().embed(inputs)
        project = getattr(self.model.electra, "embeddings_project", None)
        return project(hidden) if project is not None else hidden


@FAMILIES.register("distilbert")
class DistilBertBackbone(Backbone):
    embeddings = "distilbert.embeddings"
    layers = "distilbert.transformer.layer"
    linears = {
        "query": "attention.q_lin",
        "key": "attention.k_lin",
        "value": "attention.v_lin",
        "attention_output": "attention.out_lin",
        "intermediate": "ffn.lin1",
        "output": "ffn.lin2",
    }

    def embed(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return cast(torch.Tensor, self.embedding_module()(inputs["input_ids"]))

    def layer_mask(
        self, attention_mask: torch.Tensor | None, dtype: torch.dtype
    ) -> torch.Tensor | None:
        if hf_config(self.model)._attn_implementation == "sdpa":
            assert attention_mask is not None  # a text model's inputs always carry one
            return cast(
                torch.Tensor | None,
                _prepare_4d_attention_mask_for_sdpa(
                    attention_mask, dtype, tgt_len=attention_mask.shape[1]
                ),
            )
        return attention_mask

    def run_layer(self, layer: nn.Module, hidden: torch.Tensor, mask: LayerMask) -> torch.Tensor:
        return cast(torch.Tensor, layer(hidden, attn_mask=mask)[-1])


class _ImageBackbone(Backbone):
    """A vision model: pixels in, no tokens, so no attention mask, no token limit and no
    place for prefix tuning's virtual tokens."""

    modality = "image"
    no_virtual_tokens = "an image model's inputs are pixels, with no attention mask to extend"

    @property
    def max_tokens(self) -> None:
        return None

    def embed(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return cast(torch.Tensor, self.embedding_module()(inputs["pixel_values"]))

    def layer_mask(self, attention_mask: torch.Tensor | None, dtype: torch.dtype) -> None:
        return None

    def rows_mask(self, inputs: dict[str, torch.Tensor], hidden: torch.Tensor) -> torch.Tensor:
        return torch.ones(hidden.shape[:2], dtype=torch.int64, device=hidden.device)

    def run_layer(self, layer: nn.Module, hidden: torch.Tensor, mask: LayerMask) -> torch.Tensor:
        out = layer(hidden)  # a tuple before transformers 4.54
        return cast(torch.Tensor, out[0] if isinstance(out, tuple) else out)


@FAMILIES.register("vit")
class ViTBackbone(_ImageBackbone):
    """ViT: patch embeddings plus a [CLS] row, then pre-norm transformer layers; the final
    layer norm belongs to the head, which reads the [CLS] row."""

    embeddings = "vit.embeddings"
    layers = "vit.encoder.layer"
    fusion_type = "vit"
    linears = {
        "query": "attention.attention.query",
        "key": "attention.attention.key",
        "value": "attention.attention.value",
        "attention_output": "attention.output.dense",
        "intermediate": "intermediate.dense",
        "output": "output.dense",
    }


@FAMILIES.register("resnet")
class ResNetBackbone(_ImageBackbone):
    """ResNet: a convolutional stem (the embedder), then stages of residual blocks, the
    layers that freeze. A stage's output (batch, channels, height, width) is stored as
    rows, one per position; the width is the stage's channels. Frozen stages stay in eval
    mode (the freezing plan's rule), so their BatchNorm statistics never move. The head
    averages every row (the task's head says so), so head-only caching keeps them all."""

    embeddings = "resnet.embedder"
    layers = "resnet.encoder.stages"
    fusion_type = None
    int8_ops = ("Conv", "MatMul")
    linears: ClassVar[dict[str, str]] = {}

    @property
    def hidden_size(self) -> int:
        return cast(int, hf_config(self.model).hidden_sizes[-1])

    def width(self, boundary: int) -> int:
        config = hf_config(self.model)
        return cast(int, config.hidden_sizes[boundary - 1] if boundary else config.embedding_size)

    def to_rows(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden.flatten(2).transpose(1, 2)

    def from_rows(self, hidden: torch.Tensor) -> torch.Tensor:
        batch, rows, width = hidden.shape
        side = int(round(rows**0.5))
        if side * side != rows:
            raise ConfigError(
                f"model: the resnet adapter needs square images; the image "
                f"processor's make a feature map of {rows} positions, not a "
                "square (set its size or crop square)"
            )
        return hidden.transpose(1, 2).reshape(batch, width, side, side)
