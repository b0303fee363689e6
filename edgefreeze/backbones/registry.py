"""Architecture adapters: where a model family keeps its embeddings and layers, and how
its layers are called.

One small declarative class per family, registered for the `model_type`s it serves (the
pattern of Optimum's exporter configs). Adding a family means adding a class here and a
head in each task that supports it; the freezing, training and export machinery never
changes. The head comes from the task (`edgefreeze.tasks`), since it is the task that
decides what the last hidden states become.
"""

from __future__ import annotations

from typing import Any, ClassVar, cast

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers.modeling_attn_mask_utils import _prepare_4d_attention_mask_for_sdpa

from edgefreeze.errors import ConfigError
from edgefreeze.inference import evaluating
from edgefreeze.registry import Registry
from edgefreeze.tasks import Head, Task
from edgefreeze.tasks.encoding import ModelInputs

FAMILIES: Registry[type[Backbone]] = Registry("architecture")

# What a family's `layer_mask` builds and its `run_layer` hands the layers: a mask tensor
# (None: nothing to mask), or ModernBERT's (global mask, sliding-window mask, positions).
LayerMask = torch.Tensor | tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None


def hf_config(model: nn.Module) -> Any:
    """A Hugging Face model's config. Its fields depend on the family, so the type checker
    sees Any (nn.Module types every attribute it does not declare as Tensor | Module)."""
    return model.config


class Backbone:
    """A Hugging Face model seen as embeddings -> layer stack -> the task's head.

    Subclasses declare dotted attribute paths into the model; the defaults fit the BERT
    layer API. `stem` and `top` split the model's own forward pass at a layer boundary:
    `top(stem(x, b), mask, b) == model(**x).logits` for every boundary b.
    """

    embeddings: ClassVar[str]
    layers: ClassVar[str]
    modality: ClassVar[str] = "text"  # what the model reads: "text" or "image"
    fusion_type: ClassVar[str | None] = "bert"  # ONNX Runtime optimizer's model_type for
    # fusion (None: nothing to fuse)
    int8_ops: ClassVar[tuple[str, ...]] = ("MatMul", "Attention")  # what int8 quantizes
    # Why prefix tuning's virtual tokens cannot join this family's layers (None: they can).
    no_virtual_tokens: ClassVar[str | None] = None
    # The linear modules of a layer by role, as paths inside the layer: what parameter-
    # efficient methods name as targets, whatever a family calls them.
    linears: ClassVar[dict[str, str]] = {
        "query": "attention.self.query",
        "key": "attention.self.key",
        "value": "attention.self.value",
        "attention_output": "attention.output.dense",
        "intermediate": "intermediate.dense",
        "output": "output.dense",
    }

    def __init__(self, model: nn.Module, head: Head, head_rows: int | None) -> None:
        self.model = model
        self.head = head
        self.head_rows = head_rows  # leading rows of the hidden states the head reads

    def on(self, model: nn.Module) -> Backbone:
        """The same adapter and head over another instance of the model (a merged copy)."""
        return type(self)(model, self.head, self.head_rows)

    def embedding_module(self) -> nn.Module:
        return self.model.get_submodule(self.embeddings)

    def layer_stack(self) -> nn.ModuleList:
        return cast(nn.ModuleList, self.model.get_submodule(self.layers))

    def head_modules(self) -> list[nn.Module]:
        return [self.model.get_submodule(path) for path in self.head.modules]

    @property
    def depth(self) -> int:
        return len(self.layer_stack())

    @property
    def hidden_size(self) -> int:
        return cast(int, hf_config(self.model).hidden_size)

    @property
    def max_tokens(self) -> int | None:
        """The longest input the position table serves (tokens, specials included; None:
        the inputs are not tokens)."""
        return cast(int | None, hf_config(self.model).max_position_embeddings)

    def stem(self, inputs: dict[str, torch.Tensor], boundary: int) -> torch.Tensor:
        """Hidden states (batch, rows, width) after the bottom `boundary` layers."""
        hidden = self.embed(inputs)
        mask = self.layer_mask(inputs.get("attention_mask"), hidden.dtype)
        for layer in self.layer_stack()[:boundary]:
            hidden = self.run_layer(layer, hidden, mask)
        return self.to_rows(hidden)

    def top(
        self, hidden: torch.Tensor, attention_mask: torch.Tensor | None, boundary: int
    ) -> torch.Tensor:
        """The head's outputs from the hidden states at `boundary`.

        With boundary == depth only the head runs, and it reads the first `head_rows` rows,
        so `hidden` may be just those: what head-only caching stores.
        """
        mask = self.layer_mask(attention_mask, hidden.dtype)
        hidden = self.from_rows(hidden)
        for layer in self.layer_stack()[boundary:]:
            hidden = self.run_layer(layer, hidden, mask)
        return self.head.run(self.model, self.to_rows(hidden), attention_mask)

    def rows_mask(self, inputs: dict[str, torch.Tensor], hidden: torch.Tensor) -> torch.Tensor:
        """Which of the stem's output rows (batch, rows) are real: the tokens' attention
        mask (an image's rows are all real)."""
        return inputs["attention_mask"]

    def to_rows(self, hidden: torch.Tensor) -> torch.Tensor:
        """The layers' output as (batch, rows, width), the form the cache stores and the
        top reads (a transformer's layers already give it)."""
        return hidden

    def from_rows(self, hidden: torch.Tensor) -> torch.Tensor:
        """The inverse of `to_rows`: what the next layer takes."""
        return hidden

    def width(self, boundary: int) -> int:
        """The width of the hidden states at `boundary` (a transformer's is one for all)."""
        return self.hidden_size

    @torch.no_grad()
    def check_split(self, encoded: ModelInputs, boundary: int, tolerance: float = 1e-4) -> None:
        """Stem then top must give the model's own outputs: training runs the two apart,
        while the reference outputs and the exported model run the model whole. A family
        adapter or task head that misreads a checkpoint would train one function and ship
        another; this catches it on a few real examples before any training."""
        batch = encoded.batch(list(range(min(8, len(encoded)))))
        inputs = {name: torch.from_numpy(values) for name, values in batch.items()}
        with evaluating(self.model):
            whole = self.model(**inputs).logits
            hidden = self.stem(inputs, boundary)
            split = self.top(hidden, self.rows_mask(inputs, hidden), boundary)
        error = float((whole - split).abs().max())
        if not error <= tolerance:
            raise ConfigError(
                f"model: edgefreeze's {hf_config(self.model).model_type} adapter does "
                f"not reproduce this checkpoint's outputs when split at layer "
                f"{boundary} (max error {error:.3g}); this variant of the "
                "architecture is not supported yet"
            )

    def embed(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return cast(
            torch.Tensor,
            self.embedding_module()(
                input_ids=inputs["input_ids"], token_type_ids=inputs.get("token_type_ids")
            ),
        )

    def layer_mask(self, attention_mask: torch.Tensor | None, dtype: torch.dtype) -> LayerMask:
        """The mask the model's own forward would hand its layers."""
        assert attention_mask is not None  # a text model's inputs always carry one
        config = hf_config(self.model)
        if (
            config._attn_implementation == "sdpa"
            and getattr(config, "position_embedding_type", "absolute") == "absolute"
        ):
            return cast(
                torch.Tensor | None,
                _prepare_4d_attention_mask_for_sdpa(
                    attention_mask, dtype, tgt_len=attention_mask.shape[1]
                ),
            )
        return cast(
            torch.Tensor,
            cast(PreTrainedModel, self.model).get_extended_attention_mask(
                attention_mask, attention_mask.shape, dtype=dtype
            ),
        )

    def run_layer(self, layer: nn.Module, hidden: torch.Tensor, mask: LayerMask) -> torch.Tensor:
        return cast(torch.Tensor, layer(hidden, attention_mask=mask)[0])


# Families whose layers all run one shared set of weights: training "the top layers" would
# train the bottom ones too, and the cached activations would go stale as they trained.
SHARED_LAYER_WEIGHTS = {"albert"}


def backbone_for(model: nn.Module, task: Task) -> Backbone:
    """The adapter for a loaded model with the task's head, or a `ConfigError` naming the
    supported families."""
    model_type = getattr(model.config, "model_type", None)
    if model_type in SHARED_LAYER_WEIGHTS:
        raise ConfigError(
            f"model: {model_type} layers share one set of weights, so its top "
            "layers cannot train while the layers below stay frozen and cached; "
            f"choose a model of another family ({', '.join(FAMILIES.names())})"
        )
    family = FAMILIES.get(model_type) if model_type is not None else None
    if model_type is None or family is None:
        raise ConfigError(
            f"model: architecture {model_type!r} is not supported yet "
            f"(supported: {', '.join(FAMILIES.names())})"
        )
    head = task.heads.get(model_type)
    if head is None:
        raise ConfigError(
            f"task: {task.name} has no head for architecture {model_type!r} "
            f"(it has: {', '.join(sorted(task.heads))})"
        )
    rows = head.rows(hf_config(model)) if head.rows is not None else task.head_rows
    return family(model, head, rows)


def supported_model_types(modality: str | None = None) -> list[str]:
    """The registered families, or those reading `modality` ("text", "image")."""
    # (a registered name always has its family)
    return [
        name
        for name in FAMILIES.names()
        if modality is None or cast(type[Backbone], FAMILIES.get(name)).modality == modality
    ]
