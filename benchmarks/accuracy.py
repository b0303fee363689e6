"""Which training choices move held-out accuracy: variants of a pipeline, several seeds each,
in one run on one warm activation cache.

A variant is a list of dotted settings; `base` is the pipeline as written:

    python benchmarks/accuracy.py --seeds 0 1 2 \\
        --variant "bf16 top" train.precision=bf16 --variant "fp32 cache" cache.dtype=fp32

Each run is a whole `edgefreeze build` (its int8 model too); the table gives PyTorch's
held-out accuracy per seed, the mean and the training time, and replaces the accuracy
section of docs/benchmarks.md (--out).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml
from _docs import BENCHMARKS_MD, cpu_name, write_section  # benchmarks/ is on sys.path

from edgefreeze.progress import Reporter
from edgefreeze.recipes.build import BuildOptions, build
from edgefreeze.runtime.forms import INT8, REFERENCE
from edgefreeze.runtime.manifest import GateRefused
from edgefreeze.schema import Pipeline, PipelineSpec, load_pipeline

PIPELINE = Path(__file__).resolve().parent.parent / "pipelines" / "rotten-tomatoes.yaml"


def variant(pipeline: Pipeline, settings: list[str], seed: int) -> Pipeline:
    """The pipeline with `KEY=VALUE` settings (values read as YAML) and the seed applied,
    validated as a pipeline file would be."""
    document = pipeline.spec.model_dump(mode="json")
    for setting in [*settings, f"train.seed={seed}"]:
        key, _, value = setting.partition("=")
        *parents, last = key.split(".")
        node = document
        for part in parents:
            node = node[part]
        node[last] = yaml.safe_load(value)
    return pipeline.model_copy(update={"spec": PipelineSpec.model_validate(document)})


def run(pipeline: Pipeline, cache: Path, output: Path) -> dict:
    """One whole build; what it measured (a refused build counts, with `passed` False)."""
    start = time.perf_counter()
    try:
        manifest = build(
            pipeline, BuildOptions(output=output, cache_dir=cache), Reporter(quiet=True)
        ).manifest
    except GateRefused as refused:
        manifest = refused.manifest
    return {
        "accuracy": manifest.metrics[REFERENCE]["accuracy"],
        "int8_accuracy": manifest.metrics[INT8.name]["accuracy"],
        "train_s": manifest.timings_s["train"],
        "cache_s": manifest.timings_s["cache"],
        "build_s": time.perf_counter() - start,
        "passed": manifest.gate.passed,
        "trainable_parameters": manifest.training.freeze.trainable_parameters,
        "int8_bytes": manifest.sizes[INT8.name],
    }


def render(
    results: dict[str, list[dict]], variants: dict[str, list[str]], seeds: list[int], command: str
) -> str:
    base = statistics.mean(r["accuracy"] for r in results["base"])
    lines = [
        "<!-- accuracy:start -->",
        "## What moves held-out accuracy",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {cpu_name()}. The default pipeline with the settings named, seeds "
        f"{', '.join(map(str, seeds))}; PyTorch's accuracy on the 2,581 held-out rows "
        "(the int8 model's in brackets), one warm activation cache.",
        "",
        "| variant | settings | accuracy per seed | mean | vs base | training s |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, runs in results.items():
        mean = statistics.mean(r["accuracy"] for r in runs)
        per_seed = " / ".join(f"{r['accuracy']:.2%} ({r['int8_accuracy']:.2%})" for r in runs)
        lines.append(
            f"| {name} | {' '.join(f'`{s}`' for s in variants[name]) or '–'} | "
            f"{per_seed} | {mean:.2%} | {100 * (mean - base):+.2f} | "
            f"{statistics.median(r['train_s'] for r in runs):.0f} |"
        )
    lines.append("<!-- accuracy:end -->")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pipeline", type=Path, default=PIPELINE)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--variant",
        nargs="+",
        action="append",
        default=[],
        metavar=("NAME", "KEY=VALUE"),
        help="a name and its settings",
    )
    parser.add_argument("--out", type=Path, default=BENCHMARKS_MD)
    args = parser.parse_args()
    pipeline = load_pipeline(args.pipeline)
    variants = {"base": [], **{name: settings for name, *settings in args.variant}}
    results: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory(prefix="edgefreeze-accuracy-") as scratch:
        for seed in args.seeds:
            for number, (name, settings) in enumerate(variants.items()):
                print(f"{name}, seed {seed} ...", file=sys.stderr, flush=True)
                result = run(
                    variant(pipeline, settings, seed),
                    Path(scratch) / "cache",
                    Path(scratch) / f"bundle-{seed}-{number}",
                )
                results.setdefault(name, []).append(result)
                print(result, file=sys.stderr, flush=True)
    section = render(
        results, variants, args.seeds, " ".join(["python benchmarks/accuracy.py", *sys.argv[1:]])
    )
    write_section(args.out, section, "accuracy")
    print(section)


if __name__ == "__main__":
    main()
