"""edgefreeze against the Hugging Face Trainer, side by side in one run.

The default pipeline's rows (its split by film), the same trainable part (the top 2 of 6
layers and the head; embeddings and the bottom 4 layers frozen), epochs, batch size,
learning-rate schedule and held-out rows, at several seeds:
  - the Trainer in fp32 (its default) and with `bf16=True`,
  - `edgefreeze build` from a cold activation cache and from a warm one,
each with its training time, time to a trained model (edgefreeze: filling the cache plus
training), and held-out accuracy (edgefreeze also its whole build and the int8 model).

    python benchmarks/peers.py [--seeds 0 1 2] [--trainer fp32 bf16] [--out docs/benchmarks.md]

The Trainer needs `accelerate`, which the build extra brings (through `peft`).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _docs import BENCHMARKS_MD, cpu_name, write_section  # benchmarks/ is on sys.path
from transformers import DataCollatorWithPadding, Trainer, TrainingArguments, set_seed

from edgefreeze.backbones import load_model
from edgefreeze.data import load_data
from edgefreeze.progress import Reporter
from edgefreeze.recipes.build import BuildOptions, build
from edgefreeze.runtime.forms import INT8, REFERENCE
from edgefreeze.schema import Pipeline, load_pipeline
from edgefreeze.tasks import task_for

PIPELINE = Path(__file__).resolve().parent.parent / "pipelines" / "rotten-tomatoes.yaml"


class Rows(torch.utils.data.Dataset):
    """Tokenized rows as the Trainer's collator wants them (dicts of lists)."""

    def __init__(self, encoded, labels: np.ndarray) -> None:
        self.encoded, self.labels = encoded, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        row = {name: values[i].tolist() for name, values in self.encoded.inputs.items()}
        return {**row, "labels": int(self.labels[i])}


def trainer_run(pipeline: Pipeline, seed: int, precision: str) -> dict:
    """The Trainer with the bottom layers frozen, as people set it up today."""
    spec = pipeline.spec
    task = task_for(spec.task)
    data = load_data(spec.data, task, pipeline.resolve)
    set_seed(seed)
    loaded = load_model(spec.model, task, data.label_names, pipeline.resolve, False, seed)
    model, backbone = loaded.model, loaded.backbone
    frozen = backbone.depth - spec.freeze.trainable_layers
    for module in [backbone.embedding_module(), *backbone.layer_stack()[:frozen]]:
        module.requires_grad_(False)
    train_rows, test_rows = (
        Rows(task.encode(loaded.processor, split.inputs, spec.data.max_length), split.targets)
        for split in (data.train, data.test)
    )
    with tempfile.TemporaryDirectory() as scratch:
        arguments = TrainingArguments(
            output_dir=scratch,
            num_train_epochs=spec.train.epochs,
            per_device_train_batch_size=spec.train.batch_size,
            per_device_eval_batch_size=64,
            learning_rate=spec.train.lr_top,
            warmup_ratio=spec.train.warmup,
            max_grad_norm=spec.train.max_grad_norm,
            seed=seed,
            bf16=precision == "bf16",
            use_cpu=not torch.cuda.is_available(),
            report_to=[],
            save_strategy="no",
            logging_strategy="no",
            eval_strategy="no",
            disable_tqdm=True,
        )
        trainer = Trainer(
            model=model,
            args=arguments,
            train_dataset=train_rows,
            data_collator=DataCollatorWithPadding(loaded.processor),
        )
        start = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - start
        logits = trainer.predict(test_rows).predictions
    accuracy = float(np.mean(np.argmax(logits, axis=1) == data.test.targets))
    return {"train_s": seconds, "model_s": seconds, "accuracy": accuracy}


def edgefreeze_run(pipeline: Pipeline, seed: int, cache: Path, output: Path) -> dict:
    """`edgefreeze build` at this seed, on the activation cache at `cache`."""
    spec = pipeline.spec
    spec = spec.model_copy(update={"train": spec.train.model_copy(update={"seed": seed})})
    start = time.perf_counter()
    result = build(
        pipeline.model_copy(update={"spec": spec}),
        BuildOptions(output=output, cache_dir=cache),
        Reporter(quiet=True),
    )
    total = time.perf_counter() - start
    manifest = result.manifest
    timings = manifest.timings_s
    return {
        "train_s": timings["train"],
        "model_s": timings["cache"] + timings["train"],
        "build_s": total,
        "accuracy": manifest.metrics[REFERENCE]["accuracy"],
        "int8_accuracy": manifest.metrics[INT8.name]["accuracy"],
        "cache_hits": manifest.cache.hits,
        "precision": manifest.training.precision,
    }


def render(rows: dict[str, list[dict]], seeds: list[int], pipeline: Pipeline, command: str) -> str:
    spec = pipeline.spec
    best = min(
        (name for name in rows if name.startswith("Trainer")),
        key=lambda name: statistics.median(r["model_s"] for r in rows[name]),
    )
    best_s = statistics.median(r["model_s"] for r in rows[best])
    lines = [
        "<!-- peers:start -->",
        "## Against the Hugging Face Trainer",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {cpu_name()}, {torch.get_num_threads()} torch threads, Python "
        f"{platform.python_version()}, torch {torch.__version__}. The default "
        f"pipeline's split by film, {spec.freeze.trainable_layers} of 6 layers and the "
        f"head trainable, {spec.train.epochs} epochs, batch {spec.train.batch_size}, "
        f"lr {spec.train.lr_top} with {spec.train.warmup:.0%} linear warmup and decay, "
        f"max_length {spec.data.max_length}; held-out accuracy on the same rows; seeds "
        f"{', '.join(map(str, seeds))}. Times in seconds (median over seeds), measured "
        "one after another in one process.",
        "",
        "| | time to a trained model | training | whole build (bundle shipped) | "
        "held-out accuracy per seed | mean | vs the Trainer's fastest |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, runs in rows.items():
        model_s = statistics.median(r["model_s"] for r in runs)
        build_s = (
            f"{statistics.median(r['build_s'] for r in runs):.1f}" if "build_s" in runs[0] else "–"
        )
        accuracies = [r["accuracy"] for r in runs]
        lines.append(
            f"| {name} | {model_s:.1f} | "
            f"{statistics.median(r['train_s'] for r in runs):.1f} | {build_s} | "
            f"{' / '.join(f'{a:.2%}' for a in accuracies)} | "
            f"{statistics.mean(accuracies):.2%} | **{best_s / model_s:.2f}x** |"
        )
    lines += ["<!-- peers:end -->"]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--trainer",
        nargs="*",
        default=["fp32", "bf16"],
        choices=["fp32", "bf16"],
        help="Trainer precisions to run",
    )
    parser.add_argument("--out", type=Path, default=BENCHMARKS_MD)
    args = parser.parse_args()
    pipeline = load_pipeline(PIPELINE)
    rows: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory(prefix="edgefreeze-peers-") as scratch:
        for seed in args.seeds:
            for precision in args.trainer:
                print(f"Trainer {precision}, seed {seed} ...", file=sys.stderr, flush=True)
                run = trainer_run(pipeline, seed, precision)
                rows.setdefault(f"Trainer, {precision}", []).append(run)
                print(run, file=sys.stderr, flush=True)
            cache = Path(scratch) / f"cache-{seed}"
            for state in ("cold", "warm"):
                print(f"edgefreeze, {state} cache, seed {seed} ...", file=sys.stderr, flush=True)
                run = edgefreeze_run(pipeline, seed, cache, Path(scratch) / f"{state}-{seed}")
                rows.setdefault(f"edgefreeze build, {state} cache", []).append(run)
                print(run, file=sys.stderr, flush=True)
    section = render(
        rows, args.seeds, pipeline, " ".join(["python benchmarks/peers.py", *sys.argv[1:]])
    )
    write_section(args.out, section, "peers")
    print(section)


if __name__ == "__main__":
    main()
