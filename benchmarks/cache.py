"""What the activation cache buys, measured side by side in one run.

On the built-in model and data (the default pipeline's split and max_length), for the
top 2 of 6 layers trainable and for head-only training:
  - an uncached epoch (the frozen stem runs on every batch),
  - the filling pass (stem once over the training rows, written to a fresh cache),
  - a cached epoch (the top reads memory-mapped fp16 activations),
  - the pure compute of the top on tensors already in memory (the limit),
  - a retrain with 10 % new rows against a cold build (caching + training),
and the cache's bytes for the whole data set against a padded fp32 layout.

    python benchmarks/cache.py [--epochs 3] [--out docs/benchmarks.md]

The figures replace the cache section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _docs import BENCHMARKS_MD, cpu_name, write_section  # benchmarks/ is on sys.path

from edgefreeze.backbones import load_model
from edgefreeze.cache import ActivationStore, describe_keyset, fetch_activations
from edgefreeze.cache.features import CachedFeatures, LiveFeatures
from edgefreeze.context import RunContext
from edgefreeze.data import load_data
from edgefreeze.freeze import frozen_digest, make_plan
from edgefreeze.progress import Reporter
from edgefreeze.schema import load_pipeline
from edgefreeze.schema.freeze import TopKSpec
from edgefreeze.tasks import task_for
from edgefreeze.train.batching import bucketed_batches
from edgefreeze.train.device import resolve_precision
from edgefreeze.train.loop import Examples, Splits, TopStep, train

PIPELINE = Path(__file__).resolve().parent.parent / "pipelines" / "rotten-tomatoes.yaml"
QUIET = Reporter(quiet=True)
CPU = torch.device("cpu")


class Bench:
    def __init__(self, epochs: int) -> None:
        pipeline = load_pipeline(PIPELINE)
        self.spec = pipeline.spec
        self.task = task_for(self.spec.task)
        self.data = load_data(self.spec.data, self.task, pipeline.resolve)
        self.train_spec = self.spec.train.model_copy(update={"epochs": 1, "device": "cpu"})
        self.epochs = epochs
        self.max_length = self.spec.data.max_length
        self.cache_root = Path(tempfile.mkdtemp(prefix="edgefreeze-bench-"))

    def model(self, trainable_layers: int):
        """A fresh pretrained model, and its plan: the top `trainable_layers` train."""
        loaded = load_model(self.spec.model, self.task, self.data.label_names, Path, False, 0)
        return loaded, make_plan(TopKSpec(trainable_layers=trainable_layers), loaded.backbone)

    def store(self, loaded, plan, root: Path | None = None) -> ActivationStore:
        keyset, description = describe_keyset(
            frozen_digest(loaded.model),
            loaded.backbone,
            loaded.processor,
            self.task.name,
            self.max_length,
            plan,
            "fp16",
        )
        return ActivationStore(
            root or self.cache_root, keyset, description, "fp16", loaded.backbone.hidden_size
        )

    def fill(self, loaded, plan, texts: list[str], root: Path | None = None):
        store = self.store(loaded, plan, root)
        encoded = self.task.encode(loaded.processor, texts, self.max_length)
        keys = [self.task.example_key(text) for text in texts]
        start = time.perf_counter()
        arrays, stats = fetch_activations(
            store, keys, encoded, loaded.backbone, plan, RunContext(QUIET)
        )
        seconds = time.perf_counter() - start
        store.close()
        return arrays, stats, seconds

    def epoch(self, loaded, plan, features, labels: np.ndarray, epochs: int = 1) -> float:
        spec = self.train_spec.model_copy(update={"epochs": epochs})
        start = time.perf_counter()
        train(
            loaded.backbone,
            plan,
            self.task,
            Splits(Examples(features, labels)),
            spec,
            RunContext(QUIET),
        )
        return time.perf_counter() - start

    def pure_top(self, loaded, plan, features: CachedFeatures, labels: np.ndarray) -> float:
        """One epoch of the training loop's own step on batches already padded in memory."""
        rates = {"top": self.train_spec.lr_top, "head": self.train_spec.lr_head}
        optimizer = torch.optim.AdamW(plan.parameter_groups(loaded.model, rates, 0.01))
        batches = bucketed_batches(
            features.lengths(), self.train_spec.batch_size, np.random.default_rng(0)
        )
        tensors = [(*features.batch(b, CPU), torch.from_numpy(labels[b])) for b in batches]
        plan.begin_epoch(loaded.model, 1)
        precision = resolve_precision(self.train_spec.precision, CPU)
        start = time.perf_counter()
        step = TopStep(
            loaded.backbone, self.task, optimizer, precision, self.train_spec.max_grad_norm
        )
        for batch in tensors:
            step(plan, batch)
        return time.perf_counter() - start

    def configuration(self, trainable_layers: int) -> dict:
        texts, labels = self.data.train.inputs, self.data.train.targets
        loaded, plan = self.model(trainable_layers)
        encoded = self.task.encode(loaded.processor, texts, self.max_length)
        row = {
            "uncached": self.epoch(
                loaded, plan, LiveFeatures(encoded, loaded.backbone, plan), labels
            )
        }
        _, _, row["fill"] = self.fill(loaded, plan, texts)
        arrays, stats, row["load"] = self.fill(loaded, plan, texts)  # all hits now
        assert stats.misses == 0, stats
        cached = CachedFeatures(arrays)
        row["cached"] = self.epoch(loaded, plan, cached, labels)
        row["pure"] = self.pure_top(*self.model(trainable_layers), cached, labels)

        # Retrain: 90 % of the rows were built before; 10 % arrive new.
        rng = np.random.default_rng(0)
        order = rng.permutation(len(texts))
        old = sorted(order[: int(0.9 * len(texts))].tolist())
        with (
            tempfile.TemporaryDirectory(dir=self.cache_root) as cold_dir,
            tempfile.TemporaryDirectory(dir=self.cache_root) as warm_dir,
        ):
            cold_arrays, _, cold_fill = self.fill(loaded, plan, texts, Path(cold_dir))
            previous = self.model(trainable_layers)  # the last bundle's model, once trained
            cold_train = self.epoch(*previous, CachedFeatures(cold_arrays), labels, self.epochs)
            self.fill(loaded, plan, [texts[i] for i in old], Path(warm_dir))
            warm_arrays, warm_stats, warm_fill = self.fill(loaded, plan, texts, Path(warm_dir))
            warm_train = self.epoch(
                *self.model(trainable_layers), CachedFeatures(warm_arrays), labels, self.epochs
            )
            # `retrain --from` the last bundle with --epochs 1: its trained top goes on.
            resumed = self.epoch(*previous, CachedFeatures(warm_arrays), labels, 1)
        row.update(
            cold=cold_fill + cold_train,
            retrain=warm_fill + warm_train,
            resumed=warm_fill + resumed,
            retrain_misses=warm_stats.misses,
        )
        return row

    def bytes(self) -> dict:
        """Cache bytes of every row of the data set (top-2 boundary) vs padded fp32."""
        loaded, plan = self.model(2)
        texts = [t for split in self.data.named_splits().values() for t in split.inputs]
        with tempfile.TemporaryDirectory(dir=self.cache_root) as root:
            _, stats, _ = self.fill(loaded, plan, texts, Path(root))
            disk = sum(p.stat().st_size for p in Path(root).rglob("*.bin"))
        padded = len(texts) * self.max_length * loaded.backbone.hidden_size * 4
        return {"rows": len(texts), "cache": disk, "padded_fp32": padded, "served": stats.bytes}


def render(rows: dict[str, dict], sizes: dict, bench: Bench, command: str) -> str:
    lines = [
        "<!-- cache:start -->",
        "## Activation cache",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {cpu_name()}, {torch.get_num_threads()} torch threads, "
        f"{platform.python_version()}, torch {torch.__version__}. Data: the default "
        f"pipeline's {len(bench.data.train):,} training rows, max_length "
        f"{bench.max_length}, batch {bench.train_spec.batch_size}; fp16 cache; top "
        f"computed in {resolve_precision(bench.train_spec.precision, CPU)} "
        "(`train.precision: auto`), the frozen stem in fp32. "
        "Times in seconds, measured one after another in one process.",
        "",
        "| | uncached epoch | filling pass | cached epoch | pure top compute | "
        "uncached / cached | cached / pure |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, r in rows.items():
        lines.append(
            f"| {name} | {r['uncached']:.2f} | {r['fill']:.2f} | {r['cached']:.2f} | "
            f"{r['pure']:.2f} | **{r['uncached'] / r['cached']:.2f}x** | "
            f"**{r['cached'] / r['pure']:.2f}** |"
        )
    lines += [
        "",
        f"Retrain with 10 % new rows ({bench.epochs} epochs), against a cold build's "
        "caching and training on the same rows:",
        "",
        "| | cold build: fill + train | retrain: fill new rows + train | retrain / cold | "
        "retrain --from last bundle --epochs 1 | that / cold | rows through the stem |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, r in rows.items():
        lines.append(
            f"| {name} | {r['cold']:.2f} | {r['retrain']:.2f} | "
            f"**{r['retrain'] / r['cold']:.2f}** | {r['resumed']:.2f} | "
            f"**{r['resumed'] / r['cold']:.2f}** | {r['retrain_misses']:,} |"
        )
    lines += [
        "",
        "A retrain sends only the new rows through the stem; what is left is training "
        "the top on every row again. Head-only training costs almost nothing, so its "
        "retrain is about the new rows' stem pass. With layers to train, the top's "
        "epochs dominate both sides and the ratio approaches (new-row fill + epochs) / "
        "(full fill + epochs): the cache cannot remove the top's own compute. Starting "
        "from the last bundle's trained top (`retrain --from`, one epoch) removes most "
        "of those epochs.",
    ]
    lines += [
        "",
        f"Cache size for all {sizes['rows']:,} rows of the data set (top-2 boundary, "
        f"every token unpadded, fp16): **{sizes['cache'] / 1e6:.1f} MB**, against "
        f"{sizes['padded_fp32'] / 1e6:.1f} MB for a padded fp32 layout "
        f"(**{sizes['cache'] / sizes['padded_fp32']:.1%}**).",
        "<!-- cache:end -->",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3, help="epochs of the retrain comparison")
    parser.add_argument("--out", type=Path, default=BENCHMARKS_MD)
    args = parser.parse_args()
    bench = Bench(args.epochs)
    rows = {}
    for name, layers in (("top 2 of 6 layers", 2), ("head only", 0)):
        print(f"measuring {name} ...", file=sys.stderr, flush=True)
        rows[name] = bench.configuration(layers)
        print(rows[name], file=sys.stderr, flush=True)
    sizes = bench.bytes()
    section = render(rows, sizes, bench, " ".join(["python benchmarks/cache.py", *sys.argv[1:]]))
    write_section(args.out, section, "cache")
    print(section)


if __name__ == "__main__":
    main()
