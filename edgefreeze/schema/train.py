"""`train:` and `sweep:`: how the trainable top learns, and what a sweep searches."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from edgefreeze.schema.section import Section


class TrainSpec(Section):
    epochs: int = Field(3, ge=1, le=1000, description="passes over the training split")
    batch_size: int = Field(32, ge=1, le=65536, description="examples per optimizer step")
    lr_top: float = Field(
        3e-4,
        gt=0.0,
        lt=1.0,
        description="learning rate of the trainable "
        "layers (for the top few; full fine-tuning wants 1e-4 or less)",
    )
    lr_head: float = Field(
        1e-3,
        gt=0.0,
        lt=1.0,
        description="learning rate of the task's head "
        "(pooler and classifier, or the token or image head)",
    )
    weight_decay: float = Field(
        0.01, ge=0.0, lt=1.0, description="AdamW's decoupled weight decay (not on biases and norms)"
    )
    warmup: float = Field(0.1, ge=0.0, lt=1.0, description="share of steps with linear warmup")
    schedule: Literal["linear", "cosine", "constant"] = Field(
        "linear",
        description="the learning rate after warmup: linear or cosine decay to 0, or constant",
    )
    layer_decay: float = Field(
        1.0,
        gt=0.0,
        le=1.0,
        description="discriminative rates: each trainable layer learns "
        "at this times the rate of the layer above it (the top one at lr_top); 1: all alike",
    )
    early_stopping: int | None = Field(
        None,
        ge=1,
        description="stop after this many epochs without a better validation "
        "score, and keep the best epoch's weights (needs a validation split)",
    )
    max_grad_norm: float = Field(
        1.0, gt=0.0, description="gradients are clipped to this global norm"
    )
    dropout: float | None = Field(
        None,
        ge=0.0,
        lt=1.0,
        description="dropout probability in what trains (null: the model's own)",
    )
    seed: int = Field(0, description="seed of the new head, PEFT weights, shuffling, dropout")
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="where the top trains; auto: CUDA when there is one"
    )
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto",
        description="compute of the trainable top; auto = bf16 autocast where the "
        "device has fast bf16 (CUDA, CPUs with AMX or AVX512-BF16), fp16 with a gradient "
        "scaler on CUDA without bf16, else fp32. The frozen stem and the weights stay fp32",
    )

    def with_epochs(self, epochs: int | None) -> TrainSpec:
        """These settings with another number of epochs (None: unchanged)."""
        return self.model_copy(update={"epochs": epochs}) if epochs else self


class SweepSpec(Section):
    """What `edgefreeze sweep` searches: each range is [low, high] (equal ends fix the value);
    a range left out gets the default below."""

    trials: int = Field(20, ge=1, le=100_000, description="trials to run")
    timeout_s: float | None = Field(
        None, gt=0.0, description="start no trial after this many seconds"
    )
    seed: int = Field(0, description="the sampler's seed")
    prune: bool = Field(
        True,
        description="successive halving: stop a trial at a sixth "
        "or at half of its schedule unless its validation score is among "
        "the best third of the trials scored there",
    )
    confidence: float = Field(
        0.95,
        ge=0.0,
        le=1.0,
        description="the best trial replaces "
        "the pipeline's own settings (the first trial) only if it "
        "scores higher in this share of paired bootstrap resamples of "
        "the validation rows; 0 ships the best by validation score",
    )
    lr_top: tuple[float, float] = Field((1e-5, 1e-3), description="log-uniform")
    lr_head: tuple[float, float] = Field((1e-4, 1e-2), description="log-uniform")
    epochs: tuple[int, int] | None = Field(None, description="default: 1 to train.epochs")
    trainable_layers: tuple[int, int] | None = Field(
        None,
        description="top_k plans: default 0 to freeze.trainable_layers, the cache's "
        "boundary, which no trial goes below",
    )
    rank: tuple[int, int] | None = Field(
        None,
        description="the PEFT method's size (LoRA r, adapter bottleneck, prefix "
        "tokens), powers of two in the range; default: the pipeline's value",
    )

    @model_validator(mode="after")
    def _ranges_ordered(self) -> SweepSpec:
        for name in ("lr_top", "lr_head", "epochs", "trainable_layers", "rank"):
            bounds, least = getattr(self, name), 0 if name == "trainable_layers" else 1e-12
            if bounds is not None and not least <= bounds[0] <= bounds[1]:
                floor = "0" if name == "trainable_layers" else "0 <"
                raise ValueError(
                    f"sweep.{name}: [low, high] with {floor} low <= high, not {list(bounds)}"
                )
        return self
