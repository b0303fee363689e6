"""Training batches: random, but of similar lengths."""

from __future__ import annotations

import numpy as np


def bucketed_batches(
    lengths: np.ndarray, batch_size: int, generator: np.random.Generator, bucket_batches: int = 50
) -> list[list[int]]:
    """Batches of similar lengths, in random order: shuffle, sort within windows of
    `bucket_batches` batches, cut, shuffle the batches. Cuts padding (and so compute)
    while keeping every epoch's batches random."""
    order = generator.permutation(len(lengths))
    window = batch_size * bucket_batches
    batches = []
    for start in range(0, len(order), window):
        chunk = order[start : start + window]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches += [chunk[i : i + batch_size].tolist() for i in range(0, len(chunk), batch_size)]
    return [batches[i] for i in generator.permutation(len(batches))]
