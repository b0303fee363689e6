"""The cache stage: what the training loop consumes, stem activations live or from the
activation cache.

Both sources give the same thing for a batch of example indices: hidden states at the
plan's boundary (batch, rows, hidden) and their attention mask (batch, rows). The loop
never knows which one it was handed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from edgefreeze.backbones import Backbone
from edgefreeze.cache import (
    ActivationStore,
    CacheStats,
    describe_keyset,
    fetch_activations,
)
from edgefreeze.context import RunContext
from edgefreeze.data import LabelledData
from edgefreeze.failpoints import failpoint
from edgefreeze.freeze import FreezePlan, PlannedModel
from edgefreeze.inference import evaluating
from edgefreeze.runtime.manifest import CacheRecord
from edgefreeze.tasks import Task
from edgefreeze.tasks.encoding import ModelInputs


class LiveFeatures:
    """Runs the stem on each batch: without gradients when it is frozen; with them when
    the plan trains the embeddings (then the stem is part of what trains)."""

    def __init__(self, encoded: ModelInputs, backbone: Backbone, plan: FreezePlan) -> None:
        self.encoded, self.backbone, self.plan = encoded, backbone, plan
        self.stem_trains = any(p.requires_grad for p in backbone.embedding_module().parameters())

    def lengths(self) -> np.ndarray:
        lengths = self.encoded.lengths()
        kept = self.plan.kept_rows
        return np.minimum(lengths, kept) if kept else lengths

    def batch(
        self, indices: Sequence[int], device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor]:
        inputs = {k: torch.from_numpy(v).to(device) for k, v in self.encoded.batch(indices).items()}
        with torch.set_grad_enabled(self.stem_trains and torch.is_grad_enabled()):
            hidden = self.backbone.stem(inputs, self.plan.boundary)
        mask = self.backbone.rows_mask(inputs, hidden)
        kept = self.plan.kept_rows
        return (hidden[:, :kept], mask[:, :kept]) if kept else (hidden, mask)


class CachedFeatures:
    """Stored activations, one (rows, hidden) array per example, padded per batch."""

    def __init__(self, arrays: list[np.ndarray]) -> None:
        self.arrays = arrays
        self.width = arrays[0].shape[1]
        self._lengths = np.array([a.shape[0] for a in arrays])
        # Head-only: one vector per example; one dense matrix makes a batch one gather.
        self._dense = (
            np.concatenate(arrays).astype(np.float32) if np.all(self._lengths == 1) else None
        )

    def lengths(self) -> np.ndarray:
        return self._lengths

    def batch(
        self, indices: Sequence[int], device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self._dense is not None:
            hidden = torch.from_numpy(self._dense[list(indices)]).unsqueeze(1)
            return hidden.to(device), torch.ones(
                (len(indices), 1), dtype=torch.int64, device=device
            )
        lengths = self._lengths[list(indices)]
        padded = np.zeros((len(indices), lengths.max(), self.width), dtype=np.float32)
        mask = np.zeros((len(indices), lengths.max()), dtype=np.int64)
        for row, index in enumerate(indices):
            padded[row, : lengths[row]] = self.arrays[index]
            mask[row, : lengths[row]] = 1
        return torch.from_numpy(padded).to(device), torch.from_numpy(mask).to(device)


StemActivations = LiveFeatures | CachedFeatures


@torch.no_grad()
def advance_features(
    features: StemActivations,
    backbone: Backbone,
    old: FreezePlan,
    new: FreezePlan,
    device: torch.device,
    batch_size: int = 64,
) -> StemActivations:
    """The features at `new`'s higher boundary: live, the stem simply runs further; cached,
    the newly frozen layers run once over the stored activations (in eval mode), and only
    the rows `new`'s top reads are kept (the head's, when nothing else trains)."""
    if isinstance(features, LiveFeatures):
        return LiveFeatures(features.encoded, backbone, new)
    lengths = features.lengths()
    arrays: list[np.ndarray] = [np.empty(0)] * len(lengths)
    order = np.argsort(lengths, kind="stable").tolist()
    with evaluating(backbone.model):
        for start in range(0, len(order), batch_size):
            indices = order[start : start + batch_size]
            hidden, mask = features.batch(indices, device)
            layer_mask = backbone.layer_mask(mask, hidden.dtype)
            hidden = backbone.from_rows(hidden)
            for layer in backbone.layer_stack()[old.boundary : new.boundary]:
                hidden = backbone.run_layer(layer, hidden, layer_mask)
            values = backbone.to_rows(hidden).float().cpu().numpy()
            for row, index in enumerate(indices):
                arrays[index] = values[row, : min(lengths[index], new.kept_rows or lengths[index])]
    return CachedFeatures(arrays)


@dataclass(frozen=True)
class CacheSettings:
    root: Path | None  # the cache folder; None: the cache is off
    dtype: str  # storage precision: fp16 or fp32
    max_length: int  # tokens kept per example (part of the cache's key)


def stem_features(
    model: PlannedModel,
    task: Task,
    data: LabelledData,
    encoded: dict[str, ModelInputs],
    cache: CacheSettings,
    ctx: RunContext,
) -> tuple[dict[str, StemActivations], CacheRecord]:
    """Training inputs of the train and validation splits: from the activation cache
    (computing only what it lacks), or the live stem when the cache is off. Returns them
    and the manifest's cache record. With several processes, each first computes its
    share of what the cache lacks, then all read everything from it."""
    backbone, plan = model.backbone, model.plan
    names = [name for name in data.named_splits() if name in ("train", "validation")]
    live: dict[str, StemActivations] = {
        name: LiveFeatures(encoded[name], backbone, plan) for name in names
    }
    if cache.root is None:
        return live, CacheRecord(enabled=False)
    if not plan.cacheable:
        why = (
            f"plan {plan.describe()} trains the embeddings or layer 0: no frozen stem "
            "to cache; running live"
        )
        ctx.reporter.info(f"  cache: {why}")
        return live, CacheRecord(enabled=False, live_reason=why)
    keyset, description = describe_keyset(
        model.frozen_sha256,
        backbone,
        model.loaded.processor,
        task.name,
        cache.max_length,
        plan,
        cache.dtype,
    )
    store = ActivationStore(
        cache.root, keyset, description, cache.dtype, backbone.width(plan.boundary)
    )
    try:
        keys = {
            name: [task.example_key(example) for example in split.inputs]
            for name, split in data.named_splits().items()
            if name in names
        }
        features, stats = _cached(store, keys, encoded, model, ctx)
    finally:
        store.close()
    if stats.problem:
        ctx.reporter.warn(f"{stats.problem}; running without the activation cache")
    ctx.reporter.info(
        f"  cache {cache.root}: {stats.hits} hits, {stats.misses} misses, "
        f"{stats.corrupt} corrupt, {stats.bytes / 1e6:.1f} MB served, "
        f"{stats.bytes_written / 1e6:.1f} MB written"
    )
    return features, CacheRecord(
        enabled=True,
        dir=str(cache.root),
        keyset=keyset,
        dtype=cache.dtype,
        boundary=plan.boundary,
        **asdict(stats),
    )


def _cached(
    store: ActivationStore,
    keys: dict[str, list[str]],
    encoded: dict[str, ModelInputs],
    model: PlannedModel,
    ctx: RunContext,
) -> tuple[dict[str, StemActivations], CacheStats]:
    """Each split's activations from `store`; with several processes, each fills its
    share of what the store lacks first."""
    backbone, plan, world = model.backbone, model.plan, ctx.world
    shares, stats = CacheStats(), CacheStats()
    features: dict[str, StemActivations] = {}
    if world.size > 1:
        for name in keys:
            mine = world.share(range(len(keys[name])))
            _, share_stats = fetch_activations(
                store,
                [keys[name][i] for i in mine],
                encoded[name].subset(mine),
                backbone,
                plan,
                ctx,
                desc=f"cache {name} (share {world.rank})",
            )
            shares.add(share_stats)
        world.wait()
    for name in keys:
        arrays, split_stats = fetch_activations(
            store, keys[name], encoded[name], backbone, plan, ctx, desc=f"cache {name}"
        )
        features[name] = CachedFeatures(arrays)
        stats.add(split_stats)
        failpoint("cache")
    if world.size > 1:  # what the shares found and computed, over all processes
        for counter in ("hits", "misses", "corrupt", "bytes_written"):
            setattr(stats, counter, int(world.sum(getattr(shares, counter))))
    return features, stats
