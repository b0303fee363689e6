"""Serve a split's frozen-stem activations from the store, computing only the misses."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from edgefreeze.backbones import Backbone
from edgefreeze.cache.store import ActivationStore
from edgefreeze.freeze import FreezePlan
from edgefreeze.modes import evaluating, exact_fp32
from edgefreeze.progress import Reporter
from edgefreeze.tasks.encoding import ModelInputs

SHARD_EXAMPLES = 4096  # write (and so keep) progress every this many computed examples


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    corrupt: int = 0  # entries found but failing their checksum, recomputed
    bytes_written: int = 0
    bytes: int = 0  # bytes of the activations served, hits and misses together
    problem: str | None = None  # why the cache stopped being used (run uncached), if it did

    def add(self, other: CacheStats) -> None:
        for name in self.__dataclass_fields__:
            if name != "problem":
                setattr(self, name, getattr(self, name) + getattr(other, name))
        self.problem = self.problem or other.problem


def stem_batch_size(device: torch.device) -> int:
    """Examples per stem pass when filling the cache: 64 on a CPU, which is busy at that
    size already; 256 on a GPU, which small batches leave idle. Batches are sorted by
    length, so larger ones add little padding."""
    return 256 if device.type == "cuda" else 64


def fetch_activations(store: ActivationStore, keys: list[str], encoded: ModelInputs,
                      backbone: Backbone, plan: FreezePlan, device: torch.device,
                      reporter: Reporter, batch_size: int | None = None,
                      desc: str = "cache") -> tuple[list[np.ndarray], CacheStats]:
    """Per example (named by its content key), its (rows, hidden) stem activation at the
    plan's boundary: every token's row, or only the rows the top reads (`kept_rows`).
    `batch_size` examples per stem pass (None: the device's `stem_batch_size`)."""
    batch_size = stem_batch_size(device) if batch_size is None else batch_size
    stats = CacheStats()
    found = store.lookup(keys)
    arrays: list[np.ndarray | None] = [None] * len(keys)
    loaded: dict[str, np.ndarray] = {}
    bad: list[str] = []
    for key, entry in found.items():
        array = store.load(entry)
        if array is None:
            bad.append(key)
        else:
            loaded[key] = array
    if bad:
        store.forget(bad)
        stats.corrupt = len(bad)
        reporter.info(f"  cache: {len(bad)} corrupt entries dropped, recomputing them")
    missing: dict[str, int] = {}
    for index, key in enumerate(keys):
        if key in loaded:
            arrays[index] = loaded[key]
            stats.hits += 1
        elif key not in missing:
            missing[key] = index
    store.touch(list(loaded))

    lengths = encoded.lengths()
    todo = sorted(missing.values(), key=lambda i: lengths[i])
    computed: dict[str, np.ndarray] = {}
    pending: list[tuple[str, np.ndarray]] = []
    batches = [todo[s:s + batch_size] for s in range(0, len(todo), batch_size)]
    for indices in reporter.progress(batches, total=len(batches), desc=desc) if batches else ():
        inputs = {k: torch.from_numpy(v).to(device) for k, v in encoded.batch(indices).items()}
        with torch.inference_mode(), evaluating(backbone.model), exact_fp32():
            hidden = backbone.stem(inputs, plan.boundary)
            rows = backbone.rows_mask(inputs, hidden).sum(dim=1).tolist()
            hidden = hidden.float().cpu().numpy()
        for row, index in enumerate(indices):
            length = rows[row]
            array = hidden[row, :min(length, plan.kept_rows or length)].astype(store.dtype)
            computed[keys[index]] = array
            pending.append((keys[index], array))
        if len(pending) >= SHARD_EXAMPLES:
            stats.bytes_written += store.write(pending)
            pending = []
    stats.bytes_written += store.write(pending)

    for index, key in enumerate(keys):
        if arrays[index] is None:
            arrays[index] = computed[key]
            stats.misses += 1
    stats.bytes = sum(a.nbytes for a in arrays)
    stats.problem = store.problem
    return arrays, stats
