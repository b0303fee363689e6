"""`edgefreeze sweep` on the default pipeline, and what the same trials would take with the
Hugging Face Trainer, in one run.

The sweep runs from a cold activation cache through to a shipped bundle. The Trainer is
timed for one epoch at each trainable depth the trials used (bf16, its faster setting
here; the same rows, batch and frozen layers), and a Trainer sweep of the same trials is
estimated as the trials' epochs times those epoch times (it runs the whole model every
epoch, and nothing of a trial carries to the next).

    python benchmarks/sweep.py [--trials 20] [--out docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

from _docs import BENCHMARKS_MD, cpu_name, write_section  # benchmarks/ is on sys.path
from peers import PIPELINE, trainer_run

from edgefreeze.progress import Reporter
from edgefreeze.recipes.build import BuildOptions
from edgefreeze.recipes.sweep import sweep
from edgefreeze.runtime.forms import INT8, REFERENCE
from edgefreeze.schema import load_pipeline


def trainer_epoch_s(trainable_layers: int) -> float:
    """One Trainer epoch (bf16) with this many top layers trainable."""
    pipeline = load_pipeline(PIPELINE)
    spec = pipeline.spec
    spec = spec.model_copy(
        update={
            "train": spec.train.model_copy(update={"epochs": 1}),
            "freeze": spec.freeze.model_copy(update={"trainable_layers": trainable_layers}),
        }
    )
    return trainer_run(pipeline.model_copy(update={"spec": spec}), 0, "bf16")["train_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--out", type=Path, default=BENCHMARKS_MD)
    args = parser.parse_args()
    pipeline = load_pipeline(PIPELINE)
    with tempfile.TemporaryDirectory(prefix="edgefreeze-sweep-") as scratch:
        start = time.perf_counter()
        result = sweep(
            pipeline,
            BuildOptions(output=Path(scratch) / "bundle", cache_dir=Path(scratch) / "cache"),
            Reporter(),
            trials=args.trials,
        )
        total = time.perf_counter() - start
    manifest, record = result.manifest, result.manifest.sweep
    trials = record.trials
    depth = pipeline.spec.freeze.trainable_layers
    epochs_at: dict[int, float] = defaultdict(float)  # pruned trials: part of an epoch
    for trial in trials:
        epochs_at[trial.params.get("trainable_layers", depth)] += trial.epochs_run
    per_epoch = {}
    for layers in sorted(epochs_at):
        print(f"Trainer, one epoch, {layers} layers trainable ...", file=sys.stderr, flush=True)
        per_epoch[layers] = trainer_epoch_s(layers)
    trainer_total = sum(per_epoch[k] * n for k, n in epochs_at.items())
    states = Counter(t.state for t in trials)
    lines = [
        "<!-- sweep:start -->",
        "## Sweeping the trainable part",
        "",
        f"Command: `{' '.join(['python benchmarks/sweep.py', *sys.argv[1:]])}`",
        "",
        f"Machine: {cpu_name()}. `edgefreeze sweep pipelines/rotten-tomatoes.yaml --trials "
        f"{args.trials}` with the default space (lr_top and lr_head log-uniform, epochs 1 to "
        f"{pipeline.spec.train.epochs}, 0 to {depth} trainable layers) and its pruner "
        f"({record.pruner}), from a cold cache to a shipped bundle. The Trainer column is "
        "its measured epoch time at each depth the trials used, times the epochs the trials "
        "ran there.",
        "",
        "| | seconds |",
        "| --- | --- |",
        f"| whole sweep: cache, {len(trials)} trials, export, quantize, gate, publish | "
        f"**{total:.0f}** |",
        f"| the trials ({', '.join(f'{n} {s}' for s, n in sorted(states.items()))}; "
        f"{sum(epochs_at.values()):.1f} epochs) | {record.seconds:.0f} |",
        f"| filling the cache | {manifest.timings_s['cache']:.0f} |",
        f"| the same trials with the Trainer (estimate from measured epochs) | "
        f"**{trainer_total:.0f}** |",
        "",
        "| trainable layers | trial epochs | Trainer epoch (bf16), s |",
        "| --- | --- | --- |",
        *[f"| {k} | {epochs_at[k]:.1f} | {per_epoch[k]:.0f} |" for k in sorted(per_epoch)],
        "",
        f"Chosen: trial {record.best_trial}, {record.best_params}, validation accuracy "
        f"{record.best_value:.2%}; shipped with held-out accuracy "
        f"{manifest.metrics[REFERENCE]['accuracy']:.2%} (PyTorch) and "
        f"{manifest.metrics[INT8.name]['accuracy']:.2%} ({INT8.name}); the default build "
        "is in the peers table above.",
        "<!-- sweep:end -->",
    ]
    section = "\n".join(lines) + "\n"
    write_section(args.out, section, "sweep")
    print(section)


if __name__ == "__main__":
    main()
