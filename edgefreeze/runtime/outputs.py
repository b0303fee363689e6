"""How a device reads a model's outputs for one input, per output kind (the manifest's
`task.outputs`). Torch-free: numpy only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from edgefreeze.registry import Registry


class OutputDecoder(Protocol):
    """What one input's model outputs mean, given the label names."""

    def decode(self, outputs: np.ndarray, labels: list[str]) -> object: ...

    def summary(self, prediction: object) -> str:
        """A prediction as one tab-separated line for people (`predict` without --json)."""

    def check(self, width: int | None, labels: list[str]) -> str | None:
        """Why outputs of this last-axis width cannot carry these labels, or None."""


OUTPUTS: Registry[type] = Registry("output kind")


@dataclass(frozen=True)
class Prediction:
    label: str
    probabilities: dict[str, float]


@OUTPUTS.register("label")
class LabelOutputs:
    """One score per label for the whole input: softmax, then the best label."""

    def decode(self, outputs: np.ndarray, labels: list[str]) -> Prediction:
        scores = outputs.reshape(-1)
        shifted = np.exp(scores - scores.max())
        probabilities = shifted / shifted.sum()
        return Prediction(labels[int(probabilities.argmax())],
                          {label: float(p) for label, p in zip(labels, probabilities)})

    def summary(self, prediction: Prediction) -> str:
        return f"{prediction.label}\t{prediction.probabilities[prediction.label]:.3f}"

    def check(self, width: int | None, labels: list[str]) -> str | None:
        if width not in (None, len(labels)):
            return f"names {len(labels)} labels but the model has {width} outputs"
        return None


def output_kind(kind: str) -> type[OutputDecoder]:
    decoder = OUTPUTS.get(kind)
    if decoder is None:
        raise ValueError(OUTPUTS.unknown(kind))
    return decoder
