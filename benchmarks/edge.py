"""The bundle on the device, side by side in one run: edgefreeze's int8 against ONNX fp32,
PyTorch eager, and what `optimum-cli onnxruntime quantize --avx512_vnni` makes of the
same fp32 model (Optimum's own preset, the tool people use today).

    python benchmarks/edge.py BUNDLE [--threads N] [--out docs/benchmarks.md]

Latency and throughput come from `edgefreeze bench`'s harness (each model in a fresh
process, batch 1 and batch 32, sequence length 32, medians of interleaved rounds);
accuracy is on the default pipeline's held-out films, one text at a time as a device runs
them. The figures replace
the edge section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from _docs import BENCHMARKS_MD, cpu_name, write_section  # benchmarks/ is on sys.path

from edgefreeze.data import load_data
from edgefreeze.runtime import Bundle, OnnxModel
from edgefreeze.runtime.bench import bench
from edgefreeze.runtime.forms import FP32, INT8, REFERENCE
from edgefreeze.schema import load_pipeline
from edgefreeze.tasks import task_for

PIPELINE = Path(__file__).resolve().parent.parent / "pipelines" / "rotten-tomatoes.yaml"
ROUNDS = 5  # each model measured in 5 interleaved rounds; figures are medians over rounds


def optimum_quantize(bundle: Path, folder: Path) -> Path:
    """Optimum's avx512_vnni dynamic preset applied to the bundle's fp32 model."""
    source = folder / "fp32"
    source.mkdir()
    for name in ("model.onnx", "config.json"):
        shutil.copy(bundle / name, source / name)
    # The module, not the optimum-cli script: a venv's python runs this without its bin/ on PATH.
    subprocess.run(
        [
            sys.executable,
            "-m",
            "optimum.commands.optimum_cli",
            "onnxruntime",
            "quantize",
            "--onnx_model",
            str(source),
            "--avx512_vnni",
            "-o",
            str(folder / "optimum"),
        ],
        check=True,
        capture_output=True,
    )
    return next((folder / "optimum").glob("*quantized*.onnx"))


def predictions(files: list[Path], bundle: Bundle, texts: list[str]) -> np.ndarray:
    model, encoder = OnnxModel(files), bundle.encoder()
    return np.array([model.run(encoder.encode(text)).argmax() for text in texts])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--out", type=Path, default=BENCHMARKS_MD)
    args = parser.parse_args()
    bundle = Bundle(args.bundle)
    pipeline = load_pipeline(PIPELINE)
    test = load_data(pipeline.spec.data, task_for(pipeline.spec.task), pipeline.resolve).test
    with tempfile.TemporaryDirectory() as scratch:
        optimum_model = optimum_quantize(args.bundle, Path(scratch))
        speed = bench(
            args.bundle,
            threads=args.threads,
            length=32,
            runs=300,
            others={"optimum_avx512_vnni": [optimum_model]},
            rounds=ROUNDS,
        )
        metrics = {
            name: bundle.manifest.metrics[name] for name in (INT8.name, FP32.name, REFERENCE)
        }
        # The fp32 ONNX model stands in for PyTorch here (they agree to 6e-06 in logits).
        reference = predictions([args.bundle / FP32.files[0]], bundle, test.inputs)
        theirs = predictions([optimum_model], bundle, test.inputs)
        metrics["optimum_avx512_vnni"] = {
            "accuracy": float(np.mean(theirs == test.targets)),
            "agreement": float(np.mean(theirs == reference)),
        }
    rows = [INT8.name, "optimum_avx512_vnni", FP32.name, REFERENCE]
    int8 = speed[INT8.name]
    command = " ".join(["python benchmarks/edge.py", *sys.argv[1:]])
    section_name = "edge" if not args.threads else f"edge-threads-{args.threads}"
    lines = [
        f"<!-- {section_name}:start -->",
        f"## On the device: latency, size, accuracy "
        f"({f'{args.threads} thread(s)' if args.threads else 'default threads'})",
        "",
        f"Command: `{command}` (the default bundle from `edgefreeze build "
        "pipelines/rotten-tomatoes.yaml`)",
        "",
        f"Machine: {cpu_name()}; threads per model: {args.threads or 'runtime default'}; "
        f"batch 1 latency over 300 runs and batch 32 throughput, sequence length 32, "
        f"medians of {ROUNDS} interleaved rounds (one process per model per round); "
        f"accuracy on the {len(test):,} held-out rows, one text at a time.",
        "",
        "| model | p50 ms | p95 ms | p99 ms | batch-32 texts/s | file MB | peak RSS MB | "
        "held-out accuracy | agreement with PyTorch | int8 speed-up at p50 |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name in rows:
        r = speed[name]
        lines.append(
            f"| {name} | {r['p50_ms']:.2f} | {r['p95_ms']:.2f} | {r['p99_ms']:.2f} | "
            f"{r['throughput_per_s']:.0f} | {r['size_bytes'] / 1e6:.1f} | "
            f"{r['peak_rss_bytes'] / 1e6:.0f} | {metrics[name]['accuracy']:.2%} | "
            f"{metrics[name]['agreement']:.2%} | "
            f"{r['p50_ms'] / int8['p50_ms']:.2f}x |"
        )
    drop = metrics[INT8.name]["accuracy"] - metrics[REFERENCE]["accuracy"]
    lines += [
        "",
        f"int8 file: {int8['size_bytes'] / speed[FP32.name]['size_bytes']:.1%} of "
        f"fp32. int8 accuracy {100 * drop:+.2f} points against PyTorch.",
        "",
        "Optimum's agreement is measured against the ONNX fp32 model's predictions, "
        "not PyTorch's (the fp32 row's agreement with PyTorch shows how far the two "
        f"differ: {metrics[FP32.name]['agreement']:.2%} of rows alike).",
        f"<!-- {section_name}:end -->",
    ]
    section = "\n".join(lines) + "\n"
    write_section(args.out, section, section_name)
    print(section)


if __name__ == "__main__":
    main()
