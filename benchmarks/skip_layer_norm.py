"""Is ONNX Runtime's SkipLayerNormFusion still worth turning off?

    python benchmarks/skip_layer_norm.py BUNDLE [--out docs/benchmarks.md]

edgefreeze's runtime disables that fusion (SESSION_CONFIG in edgefreeze.runtime.session,
recorded in every bundle's manifest) because, on onnxruntime 1.32's CPU provider, the
fused SkipLayerNormalization kernel was slower than the Add and LayerNormalization it
replaces. Re-run this after upgrading onnxruntime: it
times the single kernel against the pair, and the bundle's int8 model with the fusion on
(ONNX Runtime's default) against off, in interleaved rounds at 1 and 2 threads.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
from _docs import BENCHMARKS_MD, cpu_name, write_section  # benchmarks/ is on sys.path
from onnx import TensorProto, helper

from edgefreeze.runtime import SESSION_CONFIG, Bundle, session_options
from edgefreeze.runtime.bench import inputs
from edgefreeze.runtime.forms import INT8

ROUNDS, RUNS = 5, 300


def norm_graph(fused: bool, width: int, tokens: int) -> bytes:
    """residual + LayerNorm on (1, tokens, width) as one SkipLayerNormalization or two ops."""
    shape = [1, tokens, width]
    values = [
        helper.make_tensor(
            name,
            TensorProto.FLOAT,
            [width],
            np.random.default_rng(0).random(width, dtype=np.float32),
        )
        for name in ("gamma", "beta")
    ]
    if fused:
        nodes = [
            helper.make_node(
                "SkipLayerNormalization",
                ["x", "skip", "gamma", "beta"],
                ["y"],
                domain="com.microsoft",
                epsilon=1e-12,
            )
        ]
    else:
        nodes = [
            helper.make_node("Add", ["x", "skip"], ["sum"]),
            helper.make_node(
                "LayerNormalization", ["sum", "gamma", "beta"], ["y"], axis=-1, epsilon=1e-12
            ),
        ]
    graph = helper.make_graph(
        nodes,
        "norm",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, shape) for n in ("x", "skip")],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)],
        values,
    )
    return helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    ).SerializeToString()


def session(model: bytes | str, threads: int, fusion: bool) -> ort.InferenceSession:
    """fusion=True: ONNX Runtime's defaults; False: edgefreeze's SESSION_CONFIG."""
    options = session_options(threads, {} if fusion else SESSION_CONFIG)
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def interleaved_p50_ms(runs: dict[str, tuple[ort.InferenceSession, dict]]) -> dict[str, float]:
    """Median over rounds of each session's p50; rounds alternate so noise hits all alike."""
    medians: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(ROUNDS):
        for name, (sess, feed) in runs.items():
            for _ in range(RUNS // 10):
                sess.run(None, feed)
            times = []
            for _ in range(RUNS):
                start = time.perf_counter()
                sess.run(None, feed)
                times.append(time.perf_counter() - start)
            medians[name].append(float(np.median(times)) * 1000)
    return {name: float(np.median(values)) for name, values in medians.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--out", type=Path, default=BENCHMARKS_MD)
    args = parser.parse_args()
    bundle = Bundle(args.bundle)
    model_path = str(bundle.model_files(INT8.name)[0])
    width = json.loads((bundle.path / "config.json").read_text())["hidden_size"]
    rng = np.random.default_rng(0)
    norm_feed = {n: rng.random((1, 32, width), dtype=np.float32) for n in ("x", "skip")}
    accepted = {i.name for i in session(model_path, 1, False).get_inputs()}
    model_feed = {k: v for k, v in inputs(bundle, 1, 32).items() if k in accepted}
    rows = []
    for threads in (1, 2):
        times = interleaved_p50_ms(
            {
                "kernel fused": (session(norm_graph(True, width, 32), threads, True), norm_feed),
                "kernel pair": (session(norm_graph(False, width, 32), threads, False), norm_feed),
                "model fused": (session(model_path, threads, True), model_feed),
                "model pair": (session(model_path, threads, False), model_feed),
            }
        )
        rows.append(
            f"| {threads} | {times['kernel fused'] * 1000:.1f} us | "
            f"{times['kernel pair'] * 1000:.1f} us | {times['model fused']:.2f} ms | "
            f"{times['model pair']:.2f} ms | "
            f"{times['model fused'] / times['model pair']:.2f}x |"
        )
    command = " ".join(["python benchmarks/skip_layer_norm.py", *sys.argv[1:]])
    section = (
        "\n".join(
            [
                "<!-- skip-layer-norm:start -->",
                "## Residual + LayerNorm: ONNX Runtime's fused kernel or the pair",
                "",
                f"Command: `{command}` (the default bundle). Machine: {cpu_name()}; onnxruntime "
                f"{ort.__version__}; (1, 32, {width}) inputs for the kernel, the bundle's int8 "
                f"model at batch 1, 32 tokens; p50 of {RUNS} runs, median of {ROUNDS} "
                "interleaved rounds.",
                "",
                "| threads | SkipLayerNormalization | Add + LayerNormalization | int8 model, "
                "fusion on (ORT default) | int8 model, fusion off (edgefreeze) | speed-up |",
                "| --- | --- | --- | --- | --- | --- |",
                *rows,
                "",
                "A speed-up near 1.00x means the fusion no longer costs anything: drop its entry "
                "from `SESSION_CONFIG` in edgefreeze/runtime/session.py.",
                "<!-- skip-layer-norm:end -->",
            ]
        )
        + "\n"
    )
    write_section(args.out, section, "skip-layer-norm")
    print(section)


if __name__ == "__main__":
    main()
