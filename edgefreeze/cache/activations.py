"""Serve a split's frozen-stem activations from the store, computing only the misses."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from edgefreeze.backbones import Backbone
from edgefreeze.cache.store import ActivationStore
from edgefreeze.context import RunContext
from edgefreeze.freeze import FreezePlan
from edgefreeze.inference import evaluating, exact_fp32
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


def fetch_activations(
    store: ActivationStore,
    keys: list[str],
    encoded: ModelInputs,
    backbone: Backbone,
    plan: FreezePlan,
    ctx: RunContext,
    desc: str = "cache",
) -> tuple[list[np.ndarray], CacheStats]:
    """Per example (named by its content key), its (rows, hidden) stem activation at the
    plan's boundary: every token's row, or only the rows the top reads (`kept_rows`).
    What the store lacks (or holds corrupt) is computed, `stem_batch_size` examples per
    stem pass, and written back."""
    fill = _Fill(store, backbone, plan, ctx)
    loaded = fill.stored(keys)
    missing: dict[str, int] = {}
    for index, key in enumerate(keys):
        if key not in loaded and key not in missing:
            missing[key] = index
    computed = fill.computed(keys, encoded, list(missing.values()), desc)
    arrays = [loaded[key] if key in loaded else computed[key] for key in keys]
    stats = fill.stats
    stats.hits = sum(key in loaded for key in keys)
    stats.misses = len(keys) - stats.hits
    stats.bytes = sum(a.nbytes for a in arrays)
    stats.problem = store.problem
    return arrays, stats


@dataclass
class _Fill:
    """One fetch's reads from and writes to the store."""

    store: ActivationStore
    backbone: Backbone
    plan: FreezePlan
    ctx: RunContext
    stats: CacheStats = field(default_factory=CacheStats)

    def stored(self, keys: list[str]) -> dict[str, np.ndarray]:
        """What the store holds of `keys`; corrupt entries are dropped (and counted)."""
        loaded: dict[str, np.ndarray] = {}
        bad: list[str] = []
        for key, entry in self.store.lookup(keys).items():
            array = self.store.load(entry)
            if array is None:
                bad.append(key)
            else:
                loaded[key] = array
        if bad:
            self.store.forget(bad)
            self.stats.corrupt = len(bad)
            self.ctx.reporter.info(f"  cache: {len(bad)} corrupt entries dropped, recomputing them")
        self.store.touch(list(loaded))
        return loaded

    def computed(
        self, keys: list[str], encoded: ModelInputs, todo: list[int], desc: str
    ) -> dict[str, np.ndarray]:
        """The stem's activations of the examples at `todo`, shortest first, written to
        the store a shard at a time."""
        lengths, device = encoded.lengths(), self.ctx.device
        todo = sorted(todo, key=lambda i: lengths[i])
        size = stem_batch_size(device)
        batches = [todo[s : s + size] for s in range(0, len(todo), size)]
        computed: dict[str, np.ndarray] = {}
        pending: list[tuple[str, np.ndarray]] = []
        for indices in (
            self.ctx.reporter.progress(batches, total=len(batches), desc=desc) if batches else ()
        ):
            inputs = {k: torch.from_numpy(v).to(device) for k, v in encoded.batch(indices).items()}
            with torch.inference_mode(), evaluating(self.backbone.model), exact_fp32():
                hidden = self.backbone.stem(inputs, self.plan.boundary)
                rows = self.backbone.rows_mask(inputs, hidden).sum(dim=1).tolist()
                values = hidden.float().cpu().numpy()
            kept = self.plan.kept_rows
            for row, index in enumerate(indices):
                array = values[row, : min(rows[row], kept or rows[row])].astype(self.store.dtype)
                computed[keys[index]] = array
                pending.append((keys[index], array))
            if len(pending) >= SHARD_EXAMPLES:
                self.stats.bytes_written += self.store.write(pending)
                pending = []
        self.stats.bytes_written += self.store.write(pending)
        return computed
