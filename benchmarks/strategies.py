"""The seed articles' table on the built-in data, from one run: the ways to choose what
trains, each a whole `edgefreeze build` of the default pipeline (same rows, epochs, batch
size and seed), with held-out accuracy of PyTorch and of the shipped int8 model, trainable
parameters, time to a trained model (filling the cache, where there is one, plus
training), and the int8 bundle's size.

    python benchmarks/strategies.py [--seed 0] [--out docs/benchmarks.md]

Each strategy builds from a cold activation cache of its own, so the cache's cost is in
its time.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from _docs import BENCHMARKS_MD, cpu_name, write_section  # benchmarks/ is on sys.path
from accuracy import PIPELINE, run, variant

from edgefreeze.schema import load_pipeline

# name -> the settings that make it, over the default pipeline (top 2 of 6 layers, lr_top
# 3e-4). Full fine-tuning keeps the rate it is known to do well at (1e-4: 83.84 % over
# three seeds, docs/benchmarks.md); the default's rate is for the top few layers.
STRATEGIES: dict[str, list[str]] = {
    "full fine-tuning": ['freeze={plan: patterns, train: ["*"]}', "train.lr_top=1.0e-4"],
    "top 2 layers": [],
    "head only": ["freeze.trainable_layers=0"],
    "progressive (head, then 1 layer an epoch, floor 2)": ["freeze={plan: progressive, floor: 2}"],
    "LoRA r=8, top 2 layers": ["peft={method: lora, r: 8}", "train.lr_top=1.0e-3"],
    "LoRA r=8, every layer": [
        "freeze.trainable_layers=6",
        "peft={method: lora, r: 8}",
        "train.lr_top=1.0e-3",
    ],
    "IA3, top 2 layers": ["peft={method: ia3}", "train.lr_top=3.0e-3"],
    "bottleneck adapters (64), top 2 layers": [
        "peft={method: adapter, bottleneck: 64}",
        "train.lr_top=1.0e-3",
    ],
    "prefix (16 virtual tokens), top 2 layers": [
        "peft={method: prefix, tokens: 16}",
        "train.lr_top=5.0e-3",
    ],
    "auto (AutoFreeze, from 4 layers)": ["freeze={plan: auto, trainable_layers: 4}"],
}


def render(results: dict[str, dict], seed: int, command: str) -> str:
    full = results["full fine-tuning"]
    lines = [
        "<!-- strategies:start -->",
        "## Ways to choose what trains",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {cpu_name()}. The default pipeline (MiniLM-L6, the Rotten Tomatoes "
        f"split by film, 3 epochs, batch 32, seed {seed}) with the settings named; "
        "each strategy from a cold activation cache of its own. Time to a trained model "
        "is filling the cache (where there is one) plus training, in seconds.",
        "",
        "| strategy | settings | trainable parameters | held-out accuracy (PyTorch) | "
        "int8 | gate | time to a trained model | vs full | int8 file MB |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, r in results.items():
        seconds = r["cache_s"] + r["train_s"]
        lines.append(
            f"| {name} | {' '.join(f'`{s}`' for s in STRATEGIES[name]) or '(the default)'} | "
            f"{r['trainable_parameters']:,} | {r['accuracy']:.2%} | {r['int8_accuracy']:.2%} | "
            f"{'passed' if r['passed'] else 'refused'} | {seconds:.0f} | "
            f"{seconds / (full['cache_s'] + full['train_s']):.2f} | {r['int8_bytes'] / 1e6:.1f} |"
        )
    lines.append("<!-- strategies:end -->")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", nargs="*", choices=list(STRATEGIES), default=list(STRATEGIES))
    parser.add_argument("--out", type=Path, default=BENCHMARKS_MD)
    args = parser.parse_args()
    pipeline = load_pipeline(PIPELINE)
    results = {}
    with tempfile.TemporaryDirectory(prefix="edgefreeze-strategies-") as scratch:
        for number, name in enumerate(args.only):
            print(f"{name} ...", file=sys.stderr, flush=True)
            results[name] = run(
                variant(pipeline, STRATEGIES[name], args.seed),
                Path(scratch) / f"cache-{number}",
                Path(scratch) / f"b-{number}",
            )
            print(results[name], file=sys.stderr, flush=True)
    section = render(
        results, args.seed, " ".join(["python benchmarks/strategies.py", *sys.argv[1:]])
    )
    write_section(args.out, section, "strategies")
    print(section)


if __name__ == "__main__":
    main()
