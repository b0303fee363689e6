"""How a device reads a model's outputs for one input, per output kind (the manifest's
`task.outputs`). Torch-free: numpy only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, cast

import numpy as np

from edgefreeze.registry import Registry


class OutputDecoder(Protocol):
    """What one input's model outputs mean, given the label names, the feed the input
    encoder made and the input itself."""

    def decode(
        self, outputs: np.ndarray, labels: list[str], feed: dict[str, np.ndarray], example: object
    ) -> object: ...

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

    def decode(
        self, outputs: np.ndarray, labels: list[str], feed: dict[str, np.ndarray], example: object
    ) -> Prediction:
        probabilities = _softmax(outputs.reshape(-1))
        return Prediction(
            labels[int(probabilities.argmax())],
            {label: float(p) for label, p in zip(labels, probabilities)},
        )

    def summary(self, prediction: Prediction) -> str:
        return f"{prediction.label}\t{prediction.probabilities[prediction.label]:.3f}"

    def check(self, width: int | None, labels: list[str]) -> str | None:
        if width not in (None, len(labels)):
            return f"names {len(labels)} labels but the model has {width} outputs"
        return None


@dataclass(frozen=True)
class Entity:
    type: str
    text: str
    start: int  # characters [start, end) in the text (a list of words: joined by spaces)
    end: int
    score: float  # the mean probability of its words' tags


@dataclass(frozen=True)
class Tagging:
    tags: list[str]  # one per word up to the last the model read (a word the tokenizer
    # maps to no token, a stray control character, is O)
    entities: list[Entity]
    words_unread: int  # words past max_length: they get no tag


@OUTPUTS.register("tags")
class TagOutputs:
    """One score per label for each token: each word's tag is read at its first token,
    and runs of tags become entities by conlleval's rules (IOB1, IOB2 and BIOES alike)."""

    def decode(
        self, outputs: np.ndarray, labels: list[str], feed: dict[str, np.ndarray], example: object
    ) -> Tagging:
        scores = outputs.reshape(-1, outputs.shape[-1])
        starts = feed["word_starts"].reshape(-1)
        spans = feed["word_spans"].reshape(-1, 2)
        positions = np.flatnonzero(starts >= 0)
        read = int(starts[positions].max()) + 1 if len(positions) else 0
        tags, confidence = ["O"] * read, [1.0] * read
        for position in positions:  # each word's tag, from the token where it starts
            probabilities = _softmax(scores[position])
            best = int(probabilities.argmax())
            tags[starts[position]], confidence[starts[position]] = (
                labels[best],
                float(probabilities[best]),
            )
        text = example if isinstance(example, str) else " ".join(cast("list[str]", example))
        entities = []
        for kind, first, last in entity_runs(tags):
            start, end = int(spans[first][0]), int(spans[last][1])
            score = float(np.mean(confidence[first : last + 1]))
            entities.append(Entity(kind, text[start:end], start, end, round(score, 6)))
        return Tagging(tags, entities, len(spans) - read)

    def summary(self, prediction: Tagging) -> str:
        return "\t".join(f"{e.type}:{e.text}@{e.start}" for e in prediction.entities) or "-"

    def check(self, width: int | None, labels: list[str]) -> str | None:
        if width not in (None, len(labels)):
            return f"names {len(labels)} tags but the model has {width} outputs per token"
        return None


def entity_runs(tags: list[str]) -> list[tuple[str, int, int]]:
    """(type, first, last) word of each entity in a tag sequence, by conlleval's chunk
    rules (as seqeval's default mode reads them): the device has no seqeval, and a test
    checks that the two agree."""
    runs: list[tuple[str, int, int]] = []
    previous, previous_type, begin = "O", "", 0
    for i, tag in enumerate([*tags, "O"]):
        prefix, kind = (tag[0], tag[2:]) if tag != "O" else ("O", "")
        if (
            previous in "ES"
            or (previous in "BI" and prefix in "BSO")
            or (previous != "O" and previous_type != kind)
        ):
            runs.append((previous_type, begin, i - 1))
        if (
            prefix in "BS"
            or (previous in "ESO" and prefix in "EI")
            or (prefix != "O" and previous_type != kind)
        ):
            begin = i
        previous, previous_type = prefix, kind
    return runs


def _softmax(scores: np.ndarray) -> np.ndarray:
    shifted = np.exp(scores - scores.max())
    return np.asarray(shifted / shifted.sum())


def output_kind(kind: str) -> type[OutputDecoder]:
    decoder = OUTPUTS.get(kind)
    if decoder is None:
        raise ValueError(OUTPUTS.unknown(kind))
    return decoder
