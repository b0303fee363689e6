"""Tokenize once, pad per batch: ragged token lists in, padded int64 arrays out.

Padding each batch only to its own longest example (instead of max_length) is what makes
CPU training and evaluation affordable on short texts.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from transformers import PreTrainedTokenizerBase


@dataclass(frozen=True)
class Encoded:
    """Token ids per example, unpadded: `inputs[name][i]` is example i's (len_i,) array."""

    inputs: dict[str, list[np.ndarray]]
    pad_token_id: int

    def __len__(self) -> int:
        return len(self.inputs["input_ids"])

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
                array[row, :len(values)] = values
            out[name] = array
        return out

    def batches(self, batch_size: int, order: Sequence[int] | None = None
                ) -> Iterator[tuple[list[int], dict[str, np.ndarray]]]:
        order = list(range(len(self))) if order is None else list(order)
        for start in range(0, len(order), batch_size):
            indices = order[start:start + batch_size]
            yield indices, self.batch(indices)


def encode_texts(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str],
                 max_length: int) -> Encoded:
    """Token ids of each text, truncated to `max_length`, unpadded."""
    tokens = tokenizer(list(texts), truncation=True, max_length=max_length)
    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in tokens]
    inputs = {n: [np.asarray(row, dtype=np.int64) for row in tokens[n]] for n in names}
    return Encoded(inputs=inputs, pad_token_id=tokenizer.pad_token_id or 0)


def bucketed_batches(lengths: np.ndarray, batch_size: int, generator: np.random.Generator,
                     bucket_batches: int = 50) -> list[list[int]]:
    """Batches of similar lengths, in random order: shuffle, sort within windows of
    `bucket_batches` batches, cut, shuffle the batches. Cuts padding (and so compute)
    while keeping every epoch's batches random."""
    order = generator.permutation(len(lengths))
    window = batch_size * bucket_batches
    batches = []
    for start in range(0, len(order), window):
        chunk = order[start:start + window]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches += [chunk[i:i + batch_size].tolist() for i in range(0, len(chunk), batch_size)]
    return [batches[i] for i in generator.permutation(len(batches))]
