"""Run PyTorch, ONNX fp32 and ONNX int8 on the held-out split, and fp32 over a shape grid.

ONNX models run through the device runtime, one text at a time, so the figures are the
ones a device would get. The shape grid feeds PyTorch and ONNX fp32 identical padded
batches at batch sizes and sequence lengths the exporter never saw.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from edgefreeze.batching import Encoded
from edgefreeze.metrics import compare
from edgefreeze.progress import Reporter
from edgefreeze.runtime import OnnxClassifier
from edgefreeze.train import torch_logits


@dataclass(frozen=True)
class Evaluation:
    metrics: dict[str, dict[str, float]]  # pytorch / onnx_fp32 / onnx_int8 ... -> metric -> value
    shape_check: dict[str, dict[str, object]]  # per fp32 ONNX model


def reference_logits(model: torch.nn.Module, encoded: Encoded, device: torch.device) -> np.ndarray:
    """PyTorch's held-out logits: what every ONNX model is compared with."""
    return torch_logits(model, encoded, 64, device)


def held_out_logits(classifier: OnnxClassifier, texts: list[str], reporter: Reporter,
                    desc: str) -> np.ndarray:
    """An ONNX model's logits, one text at a time as a device runs it."""
    return np.concatenate([classifier.run(classifier.encode(text)) for text in
                           reporter.progress(texts, total=len(texts), desc=desc)])


def evaluate(model: torch.nn.Module, reference: np.ndarray, texts: list[str],
             labels: np.ndarray, encoded: Encoded, onnx_paths: dict[str, list[Path]],
             tokenizer_json: Path, max_length: int, batch_sizes: list[int],
             sequence_lengths: list[int], device: torch.device, reporter: Reporter,
             known_logits: dict[str, np.ndarray] | None = None) -> Evaluation:
    """Metrics of every ONNX model against the labels and PyTorch's `reference` logits;
    `known_logits` are held-out logits already computed (by the quantization fallback)."""
    known_logits = known_logits or {}
    metrics = {"pytorch": compare(reference, labels, reference)}
    classifiers = {name: OnnxClassifier(path, tokenizer_json, max_length)
                   for name, path in onnx_paths.items()}
    for name, classifier in classifiers.items():
        logits = known_logits.get(name)
        if logits is None:
            logits = held_out_logits(classifier, texts, reporter, name)
        metrics[name] = compare(logits, labels, reference)
    shape_check = {name: _shape_check(model, classifier, encoded, batch_sizes,
                                      sequence_lengths, device)
                   for name, classifier in classifiers.items() if name.endswith("fp32")}
    return Evaluation(metrics=metrics, shape_check=shape_check)


@torch.no_grad()
def _shape_check(model: torch.nn.Module, classifier: OnnxClassifier, encoded: Encoded,
                 batch_sizes: list[int], sequence_lengths: list[int],
                 device: torch.device) -> dict[str, object]:
    model.eval()
    cells = []
    for batch_size in batch_sizes:
        indices = [i % len(encoded) for i in range(batch_size)]
        for length in sequence_lengths:
            batch = encoded.batch(indices, length=length)
            expected = model(**{k: torch.from_numpy(v).to(device) for k, v in batch.items()})
            error = np.abs(classifier.run(batch) - expected.logits.float().cpu().numpy()).max()
            cells.append({"batch_size": batch_size, "sequence_length": length,
                          "max_logit_error": float(error)})
    return {"batch_sizes": batch_sizes, "sequence_lengths": sequence_lengths,
            "max_logit_error": max(c["max_logit_error"] for c in cells), "cells": cells}
