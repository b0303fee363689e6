"""Quantize with the gate in the loop: when an int8 model fails the gate's int8 rules,
keep its most sensitive segments in fp32 (the head first, then the top layers) and try
again, until it passes or nothing is left to keep. The report says what stayed fp32 and
what that cost in size and latency.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from edgefreeze.evaluate import held_out_logits
from edgefreeze.gate import reduced_precision_rules
from edgefreeze.metrics import compare
from edgefreeze.progress import Reporter
from edgefreeze.quantize import Architecture, quantize_int8
from edgefreeze.runtime import OnnxClassifier
from edgefreeze.spec import PipelineSpec, QuantizeSpec


def quantize_gated(name: str, fp32_paths: list[Path], int8_paths: list[Path],
                   settings: QuantizeSpec, spec: PipelineSpec, architecture: Architecture,
                   reference: np.ndarray, texts: list[str], labels: np.ndarray,
                   tokenizer_json: Path, reporter: Reporter,
                   calibration: list[dict[str, np.ndarray]] | None = None
                   ) -> tuple[dict, np.ndarray]:
    """Write `int8_paths` (one per fp32 graph; only the last graph, the one nearest the
    output, ever keeps parts in fp32). Returns the manifest's record of the attempts and
    the final model's held-out logits (so the gate need not run it again)."""
    *fixed, (last_fp32, last_int8) = list(zip(fp32_paths, int8_paths))
    info = {"graphs": {target.name: quantize_int8(source, target, settings, architecture)
                       for source, target in fixed}}
    reference_metrics = compare(reference, labels, reference)
    attempts = []
    keep = 0
    while True:
        result = quantize_int8(last_fp32, last_int8, settings, architecture, keep_fp32=keep,
                               calibration=calibration)
        classifier = OnnxClassifier(int8_paths, tokenizer_json, spec.data.max_length)
        logits = held_out_logits(classifier, texts, reporter, f"{name} try {keep + 1}")
        metrics = compare(logits, labels, reference)
        rules = reduced_precision_rules(name, metrics, reference_metrics, spec.gate)
        attempts.append({"fp32_segments": result["fp32_segments"],
                         "accuracy": metrics["accuracy"], "agreement": metrics["agreement"],
                         "passed": all(r.passed for r in rules),
                         "size_bytes": sum(p.stat().st_size for p in int8_paths),
                         "p50_ms": _latency_ms(classifier, texts[0])})
        if attempts[-1]["passed"] or keep >= result["segments"]:
            break
        keep += 1
        reporter.info(f"  {name} failed the gate ({'; '.join(r.describe() for r in rules if not r.passed)});"
                      f" keeping one more segment in fp32")
    info["graphs"][last_int8.name] = result
    info["attempts"] = attempts
    return info, logits


def _latency_ms(classifier: OnnxClassifier, text: str, runs: int = 50) -> float:
    """Batch-1 median latency: what keeping parts in fp32 cost on this machine."""
    inputs = classifier.encode(text)
    for _ in range(5):
        classifier.run(inputs)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        classifier.run(inputs)
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1000)
