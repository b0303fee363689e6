"""Per-text latency of a bundle's int8 model in the Python runtime, in Node
(transformers.js, onnxruntime-node) and in headless Chromium (transformers.js, ONNX
Runtime Web's WebAssembly backend), measured side by side in one run: each round times
every runtime on the same held-out texts, one text at a time, tokenizing included, on
one thread (the browser's WebAssembly runs on one without cross-origin isolation).

    make js
    python benchmarks/javascript.py BUNDLE PIPELINE [--rows 200] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _docs import BENCHMARKS_MD, cpu_name, write_section  # benchmarks/ is on sys.path

from edgefreeze.data import load_data
from edgefreeze.recipes.browser import JAVASCRIPT
from edgefreeze.runtime import Predictor
from edgefreeze.runtime.manifest import Manifest
from edgefreeze.schema import load_pipeline
from edgefreeze.tasks import task_for

FORM = "int8"


def python_ms(bundle: Path, texts: list[str]) -> list[float]:
    predictor = Predictor(bundle, FORM, threads=1)
    predictor.outputs(texts[0])  # sessions warm, as in the other runtimes' first call
    times = []
    for text in texts:
        started = time.perf_counter()
        predictor.outputs(text)
        times.append((time.perf_counter() - started) * 1000)
    return times


def javascript_ms(
    command: list[str], bundle: Path, texts: list[str], extra: tuple[str, ...] = ()
) -> list[float]:
    """Per-text times from a probe (Node's, or the browser page's), the first text run
    twice so that both warm up as Python does."""
    with tempfile.TemporaryDirectory() as scratch:
        inputs, outputs = Path(scratch) / "inputs.json", Path(scratch) / "outputs.json"
        inputs.write_text(json.dumps([texts[0], *texts]))
        subprocess.run(
            [*command, str(bundle), FORM, str(inputs), str(outputs), *extra],
            check=True,
            capture_output=True,
        )
        return [record["ms"] for record in json.loads(outputs.read_text())[1:]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("pipeline")
    parser.add_argument("--rows", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=BENCHMARKS_MD)
    args = parser.parse_args()
    pipeline = load_pipeline(args.pipeline)
    task = task_for(Manifest.load(args.bundle / "manifest.json").task.name)
    if task.name != "text-classification":
        sys.exit(f"{args.bundle}: times text classification bundles (this is {task.name})")
    data = load_data(pipeline.spec.data, task, pipeline.resolve)
    texts = [str(text) for text in data.test.inputs[: args.rows]]
    runtimes = {
        "Python runtime (onnxruntime)": lambda: python_ms(args.bundle, texts),
        "Node (transformers.js, onnxruntime-node)": lambda: javascript_ms(
            ["node", str(JAVASCRIPT / "probe.mjs")], args.bundle, texts, ("1",)
        ),
        "Chromium (transformers.js, ONNX Runtime Web, WebAssembly)": lambda: javascript_ms(
            [sys.executable, "-m", "edgefreeze.recipes.browser"], args.bundle, texts
        ),
    }
    rounds: dict[str, list[list[float]]] = {name: [] for name in runtimes}
    for _ in range(args.rounds):
        for name, run in runtimes.items():
            rounds[name].append(run())
    section = report(args, texts, rounds)
    write_section(args.out, section, "javascript")
    print(section)


def report(args: argparse.Namespace, texts: list[str], rounds: dict[str, list[list[float]]]) -> str:
    def median_of(stat: float, name: str) -> float:
        return statistics.median(float(np.percentile(times, stat)) for times in rounds[name])

    python_p50 = median_of(50, next(iter(rounds)))
    lines = [
        "<!-- javascript:start -->",
        "## In JavaScript: Node and the browser",
        "",
        f"Command: `python benchmarks/javascript.py {args.bundle} {args.pipeline} --rows "
        f"{args.rows} --rounds {args.rounds}` (after `make js`). Machine: {cpu_name()}. The "
        f"int8 model, one held-out text at a time ({len(texts)} texts), tokenizing included, "
        "one thread everywhere; each round times the three runtimes in turn, and the median "
        "of the rounds is reported.",
        "",
        "| runtime | p50 ms | p90 ms | p50 against the Python runtime |",
        "| --- | --- | --- | --- |",
    ]
    for name in rounds:
        p50, p90 = median_of(50, name), median_of(90, name)
        lines.append(f"| {name} | {p50:.2f} | {p90:.2f} | {p50 / python_p50:.2f}x |")
    lines += ["<!-- javascript:end -->", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
