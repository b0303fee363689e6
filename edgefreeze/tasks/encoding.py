"""What a task turns examples into: model inputs per example, unpadded, padded per batch.

Tokenizing once and padding each batch only to its own longest example (instead of
max_length) is what makes CPU training and evaluation affordable on short texts. Images
are all one size once processed: their batches simply stack (`EncodedImages`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from transformers import BatchEncoding, PreTrainedTokenizerBase

from edgefreeze.runtime.inputs import word_starts

TOKEN_INPUTS = ("input_ids", "attention_mask", "token_type_ids")  # what a text model may take


@dataclass(frozen=True)
class Encoded:
    """Token ids per example, unpadded: `inputs[name][i]` is example i's (len_i,) array."""

    inputs: dict[str, list[np.ndarray]]
    pad_token_id: int
    sequential: ClassVar[bool] = True  # batches pad to a length (the gate varies it)
    cut: np.ndarray | None = None  # (n,) bool: the example was truncated to max_length
    # Pre-split inputs (words): per example, for each token the index of the word it
    # starts, or -1 (a special token, or a word's later sub-token).
    word_starts: list[np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.inputs["input_ids"])

    @property
    def truncated(self) -> int:
        """How many examples were cut to max_length tokens."""
        return int(self.cut.sum()) if self.cut is not None else 0

    def subset(self, indices: Sequence[int]) -> Encoded:
        """These examples only, in this order."""
        return Encoded(
            {name: [rows[i] for i in indices] for name, rows in self.inputs.items()},
            self.pad_token_id,
            self.cut[list(indices)] if self.cut is not None else None,
            [self.word_starts[i] for i in indices] if self.word_starts is not None else None,
        )

    def lengths(self) -> np.ndarray:
        return np.array([len(ids) for ids in self.inputs["input_ids"]])

    def batch(self, indices: Sequence[int], length: int | None = None) -> dict[str, np.ndarray]:
        """Pad the chosen examples to `length` (default: their longest) and stack them."""
        longest = max(len(self.inputs["input_ids"][i]) for i in indices)
        width = length or longest
        out = {}
        for name, rows in self.inputs.items():
            fill = self.pad_token_id if name == "input_ids" else 0
            array = np.full((len(indices), width), fill, dtype=np.int64)
            for row, index in enumerate(indices):
                values = rows[index][:width]
                array[row, : len(values)] = values
            out[name] = array
        return out

    def batches(
        self: ModelInputs, batch_size: int, order: Iterable[int] | None = None
    ) -> Iterator[tuple[list[int], dict[str, np.ndarray]]]:
        order = list(range(len(self))) if order is None else list(order)
        for start in range(0, len(order), batch_size):
            indices = order[start : start + batch_size]
            yield indices, self.batch(indices)


@dataclass(frozen=True)
class EncodedImages:
    """Pixels per example, `inputs["pixel_values"][i]` a (channels, height, width) float32
    array: the same interface as `Encoded`, with nothing to pad or truncate."""

    inputs: dict[str, list[np.ndarray]]
    sequential: ClassVar[bool] = False
    cut: ClassVar[None] = None
    word_starts: ClassVar[None] = None
    truncated: ClassVar[int] = 0

    def __len__(self) -> int:
        return len(self.inputs["pixel_values"])

    def subset(self, indices: Sequence[int]) -> EncodedImages:
        return EncodedImages(
            {name: [rows[i] for i in indices] for name, rows in self.inputs.items()}
        )

    def lengths(self) -> np.ndarray:
        """One each: every image yields the same rows."""
        return np.ones(len(self), dtype=np.int64)

    def batch(self, indices: Sequence[int], length: int | None = None) -> dict[str, np.ndarray]:
        """The chosen examples stacked (`length` does not apply to images)."""
        return {name: np.stack([rows[i] for i in indices]) for name, rows in self.inputs.items()}

    batches = Encoded.batches


ModelInputs = Encoded | EncodedImages  # what `Task.encode` returns


def encode_texts(
    tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], max_length: int
) -> Encoded:
    """Token ids of each text, truncated to `max_length`, unpadded; a text of megabytes
    is tokenized whole (a cut by characters could split a word the tokenizer would map
    whole) and then cut."""
    tokens = tokenizer(list(texts), truncation=True, max_length=max_length)
    names = [n for n in TOKEN_INPUTS if n in tokens]
    inputs = {n: [np.asarray(row, dtype=np.int64) for row in tokens[n]] for n in names}
    return Encoded(inputs=inputs, pad_token_id=tokenizer.pad_token_id or 0, cut=_cut(tokens))


def encode_words(
    tokenizer: PreTrainedTokenizerBase, sentences: Sequence[Sequence[str]], max_length: int
) -> Encoded:
    """Token ids of each pre-split sentence (a list of words), truncated to `max_length`,
    with the token where each word starts: the one that carries the word's label."""
    tokens = tokenizer(
        [list(words) for words in sentences],
        is_split_into_words=True,
        truncation=True,
        max_length=max_length,
    )
    names = [n for n in TOKEN_INPUTS if n in tokens]
    inputs = {n: [np.asarray(row, dtype=np.int64) for row in tokens[n]] for n in names}
    return Encoded(
        inputs=inputs,
        pad_token_id=tokenizer.pad_token_id or 0,
        cut=_cut(tokens),
        word_starts=[word_starts(tokens.word_ids(i)) for i in range(len(sentences))],
    )


def _cut(tokens: BatchEncoding) -> np.ndarray:
    """Which texts lost tokens to truncation: the fast tokenizer (the only kind a model
    loads with, see backbones/loader.py) keeps what it cut off as `overflowing`."""
    assert tokens.encodings is not None  # only a slow tokenizer leaves them out
    return np.array([bool(e.overflowing) for e in tokens.encodings], dtype=bool)
