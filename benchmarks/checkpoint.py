"""A real deeper checkpoint of another family on the default pipeline: its cached epoch
against the uncached one, and a whole build with the top 2 layers trainable, in one run.

    python benchmarks/checkpoint.py --model /path/to/all-mpnet-base-v2 [--rows 4000]

The checkpoint is a local Hugging Face folder (config, tokenizer.json, safetensors). The
epochs are measured as in benchmarks/scaling.py (a fresh process, one epoch each: filling
a cold cache, an epoch from it, an epoch with the stem live); the build is
`edgefreeze build` with `model:` replaced and the same sample of rows, reading the cache
that measurement filled (same model, rows and boundary: its cache stage is a lookup).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import tempfile
import time
from pathlib import Path

from _docs import BENCHMARKS_MD, cpu_name, write_section  # benchmarks/ is on sys.path
from scaling import PIPELINE, _result, measure

from edgefreeze.hashing import file_sha256
from edgefreeze.progress import Reporter
from edgefreeze.recipes.build import BuildOptions, build
from edgefreeze.runtime.forms import INT8, REFERENCE
from edgefreeze.runtime.manifest import GateRefused
from edgefreeze.schema import load_pipeline


def whole_build(model: Path, rows: int, scratch: Path) -> dict:
    """`edgefreeze build` of the default pipeline on `model`, with the activation cache
    under `scratch` (filled by the epoch measurement)."""
    pipeline = load_pipeline(PIPELINE)
    spec = pipeline.spec.model_copy(
        update={
            "model": str(model),
            "data": pipeline.spec.data.model_copy(update={"sample_rows": rows}),
        }
    )
    start = time.perf_counter()
    try:
        manifest = build(
            pipeline.model_copy(update={"spec": spec}),
            BuildOptions(output=scratch / "bundle", cache_dir=scratch / "cache"),
            Reporter(quiet=True),
        ).manifest
    except GateRefused as refused:
        manifest = refused.manifest
    return {
        "seconds": time.perf_counter() - start,
        "passed": manifest.gate.passed,
        "accuracy": manifest.metrics[REFERENCE]["accuracy"],
        "int8_accuracy": manifest.metrics[INT8.name]["accuracy"],
        "agreement": manifest.metrics[INT8.name]["agreement"],
        "epochs_s": [e.seconds for e in manifest.training.epochs],
        "cache_s": manifest.timings_s["cache"],
        "trainable": manifest.training.freeze.trainable_parameters,
        "total": manifest.training.freeze.total_parameters,
        "int8_mb": manifest.sizes[INT8.name] / 1e6,
        "fp32_mb": manifest.sizes["fp32"] / 1e6,
        "failures": manifest.gate.failures,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--rows", type=int, default=4000)
    parser.add_argument("--out", type=Path, default=BENCHMARKS_MD)
    args = parser.parse_args()
    config = json.loads((args.model / "config.json").read_text())
    context = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="edgefreeze-checkpoint-") as scratch:
        queue = context.Queue()
        process = context.Process(
            target=measure, args=(args.rows, 64, 6, 1, scratch, queue, str(args.model))
        )
        process.start()
        epoch = _result(queue, process)
        process.join()
        print(epoch, file=sys.stderr, flush=True)
        built = whole_build(args.model, args.rows, Path(scratch))
        print(built, file=sys.stderr, flush=True)
    name = f"{args.model.name} ({config['model_type']}, {config['num_hidden_layers']} layers)"
    lines = [
        "<!-- checkpoint:start -->",
        "## A deeper checkpoint of another family",
        "",
        f"Command: `python benchmarks/checkpoint.py --model {args.model.name} --rows "
        f"{args.rows}` (a local copy of the checkpoint)",
        "",
        f"Machine: {cpu_name()}. {name}, hidden size {config['hidden_size']}, "
        f"model.safetensors sha256 {file_sha256(args.model / 'model.safetensors')[:16]}…; "
        f"the default pipeline with `model:` replaced, a seeded sample of {args.rows:,} rows "
        f"({epoch['rows']:,} training), top 2 layers trainable, batch 32, the top in "
        f"{epoch['precision']}. Seconds.",
        "",
        "| | seconds |",
        "| --- | --- |",
        f"| filling the cache (the {config['num_hidden_layers'] - 2} frozen layers, once) | "
        f"{epoch['fill_s']:.1f} |",
        f"| an epoch from the cache | {epoch['cached_s']:.1f} |",
        f"| an epoch with the stem live | {epoch['live_s']:.1f} |",
        f"| live / cached | **{epoch['live_s'] / epoch['cached_s']:.2f}x** |",
        "",
        f"The whole build (`edgefreeze build`, 3 epochs, the cache above warm: "
        f"{built['cache_s']:.1f} s; export, int8, gate): "
        f"{built['seconds']:.0f} s, gate {'passed' if built['passed'] else 'refused'}"
        + (f" ({'; '.join(built['failures'])})" if built["failures"] else "")
        + f"; held-out accuracy {built['accuracy']:.2%} (PyTorch), "
        f"{built['int8_accuracy']:.2%} (int8, agreement {built['agreement']:.2%}); "
        f"{built['trainable']:,} of {built['total']:,} parameters trained; epochs "
        f"{', '.join(f'{s:.0f}' for s in built['epochs_s'])} s; int8 file "
        f"{built['int8_mb']:.0f} MB of fp32's {built['fp32_mb']:.0f} MB.",
        "<!-- checkpoint:end -->",
    ]
    section = "\n".join(lines) + "\n"
    write_section(args.out, section, "checkpoint")
    print(section)


if __name__ == "__main__":
    main()
