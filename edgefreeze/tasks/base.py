"""What a task is: everything in a build that depends on what is predicted.

A task turns rows into examples (an input and a target), puts a head on each model family
it supports, defines its loss, turns a batch of outputs into one output per example,
scores outputs against targets and a reference, names the metric the gate watches, the
exporter task, and what the device needs to run it (its input and output kinds, see
`edgefreeze.runtime.inputs` and `.outputs`). The rest of the pipeline handles examples,
targets and outputs as opaque values and calls the task for what they mean.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from edgefreeze.hashing import content_key
from edgefreeze.runtime.manifest import TaskRecord
from edgefreeze.tasks.encoding import ModelInputs

Outputs = list[np.ndarray]  # one array per example, in example order
Ints = Sequence[int] | np.ndarray  # example rows or lengths: a list, or a numpy int array


class MissingValue(ValueError):
    """A row's column is empty or absent (data.drop_empty decides: skip it, or fail)."""

    def __init__(self, column: str) -> None:
        super().__init__(column)
        self.column = column


@dataclass(frozen=True)
class Head:
    """A task's head on one model family: its modules (dotted paths into the Hugging Face
    model; they train with the head's learning rate) and how they turn the last hidden
    states (batch, sequence, hidden) and the attention mask (batch, sequence; None for an
    image model's exported top, which takes no mask) into outputs."""

    modules: tuple[str, ...]
    run: Callable[[nn.Module, torch.Tensor, torch.Tensor | None], torch.Tensor]
    # How many leading rows of the hidden states it reads, from the model's config, where
    # that is not the task's `head_rows` (a head that pools every row: None).
    rows: Callable[[Any], int | None] | None = None


class Task(ABC):
    """A registered kind of prediction (see `edgefreeze.tasks.TASKS`)."""

    name: ClassVar[str]  # the pipeline's `task:`
    model_class: ClassVar[type]  # the transformers auto class whose head the task trains
    export_task: ClassVar[str]  # Optimum's exporter task
    inputs: ClassVar[str]  # the device's input kind
    outputs: ClassVar[str]  # the device's output kind
    gate_metric: ClassVar[str]  # the metric gate.max_metric_drop watches (higher is better)
    # How reports name the metrics `metrics` returns (a name not here is shown as it is).
    metric_labels: ClassVar[dict[str, str]] = {
        "agreement": "agreement with PyTorch",
        "max_logit_error": "max abs logit error",
    }
    columns: ClassVar[tuple[str, str]] = ("text", "label")  # a file's input and target
    # columns unless the data says
    heads: ClassVar[dict[str, Head]]  # per config.model_type
    head_rows: ClassVar[int | None]  # leading rows of the hidden states the head reads
    # (None: all): what head-only caching keeps

    # --- data -------------------------------------------------------------------------
    @abstractmethod
    def example(
        self, row: dict[str, Any], input_column: str, target_column: str
    ) -> tuple[Any, Any]:
        """(input, target with label names) of one row; raises MissingValue for an empty
        value and ValueError (one line) for a malformed one."""

    def resolve(self, example: Any, folder: Path | None) -> Any:
        """The example as training reads it, given the folder of the file it came from
        (None: no file): an input that names a file is read from there. Raises ValueError
        (one line) for one that cannot be."""
        return example

    @abstractmethod
    def target_labels(self, target: Any) -> Iterable[str]:
        """The label names one target uses."""

    @abstractmethod
    def encode_targets(self, targets: Sequence[Any], index: dict[str, int]) -> Any:
        """A split's targets as label ids, in the form `loss` and `metrics` read."""

    # --- predictions (compared across releases by the baseline gate) ---------------------
    def aligned_targets(self, targets: Any, encoded: ModelInputs) -> Any:
        """A split's targets as the loss and the metrics read them against its tokens (a
        word-level task moves each word's label onto the token where the word starts)."""
        return targets

    def predicted(self, output: np.ndarray, targets: Any, row: int) -> Any:
        """The label ids example `row`'s output predicts, in `target_at`'s form: one id,
        or one per scored word."""
        return output.argmax(-1).tolist()

    def target_at(self, targets: Any, row: int) -> Any:
        """One example's target, as plain label ids."""
        return np.asarray(targets[row]).tolist()

    def confusion(self, outputs: Outputs, targets: Any, labels: int) -> list[list[int]] | None:
        """Counts of [true label][predicted label] (None where the task has no such
        table); the report draws it."""
        return None

    def named(self, ids: Any, label_names: list[str]) -> Any:
        """Label ids as label names."""
        return [label_names[i] for i in ids] if isinstance(ids, list) else label_names[ids]

    def example_key(self, example: Any) -> str:
        """What identifies an input in the activation cache (its content)."""
        return content_key(example)

    # --- model ------------------------------------------------------------------------
    @abstractmethod
    def encode(self, processor: Any, inputs: Sequence[Any], max_length: int) -> ModelInputs:
        """Model inputs per example (unpadded), from the model's tokenizer or image
        processor."""

    @abstractmethod
    def batch_targets(self, targets: Any, indices: Sequence[int]) -> torch.Tensor:
        """The targets of a batch of examples, as the loss reads them."""

    @abstractmethod
    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The training loss of one batch."""

    def loss_weight(self, targets: Any, indices: Sequence[int]) -> float:
        """What `loss` averages over in these examples (one per example here): each of
        several processes weighs its part of a batch by its share of this."""
        return float(len(indices))

    @abstractmethod
    def unbatch(self, outputs: np.ndarray, lengths: Ints) -> Outputs:
        """A padded batch's outputs as one array per example (`lengths`: its tokens)."""

    # --- evaluation -------------------------------------------------------------------
    @abstractmethod
    def metrics(self, outputs: Outputs, targets: Any, reference: Outputs) -> dict[str, float]:
        """Metrics against the targets, and against a reference model's outputs on the
        same examples: at least `gate_metric`, `agreement` (share of predictions equal to
        the reference's) and `max_logit_error`."""

    def score(self, outputs: Outputs, targets: Any) -> float:
        """The gate metric alone (a sweep's paired bootstrap computes it a thousand times)."""
        return self.metrics(outputs, targets, outputs)[self.gate_metric]

    def select(self, targets: Any, rows: Ints) -> Any:
        """The targets of `rows`, in that order (rows may repeat)."""
        return np.asarray(targets)[np.asarray(rows)]

    @staticmethod
    def max_error(outputs: Outputs, reference: Outputs) -> float:
        """Largest absolute difference between two models' outputs on the same examples."""
        return float(max(np.max(np.abs(a - b)) for a, b in zip(outputs, reference)))

    def record(self) -> TaskRecord:
        """What the manifest says of the task (the device reads inputs and outputs)."""
        return TaskRecord(
            name=self.name, inputs=self.inputs, outputs=self.outputs, gate_metric=self.gate_metric
        )
