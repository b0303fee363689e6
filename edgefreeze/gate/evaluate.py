"""Run PyTorch and every ONNX form on the held-out split, and the exact (fp32) forms over
a grid of shapes. The fp16 form, made for GPU targets, runs on CUDA where ONNX Runtime
has it; every other form on the CPU.

ONNX models run through the device runtime, one example at a time, so the figures are the
ones a device would get. The shape grid feeds PyTorch and each fp32 form identical padded
batches at batch sizes and sequence lengths the exporter never saw.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgefreeze.modes import evaluating, exact_fp32
from edgefreeze.progress import Reporter
from edgefreeze.runtime.bench import batch1_latency_ms
from edgefreeze.runtime.forms import FORMS, REFERENCE
from edgefreeze.runtime.inputs import InputEncoder
from edgefreeze.runtime.session import OnnxModel, providers_for
from edgefreeze.tasks import Outputs, Task
from edgefreeze.tasks.encoding import ModelInputs


@dataclass(frozen=True)
class Evaluation:
    metrics: dict[str, dict[str, float]]  # REFERENCE and each form -> metric -> value
    shape_check: dict[str, dict[str, Any]]  # per exact form
    outputs: dict[str, Outputs]  # each form's held-out outputs, in example order
    latency_ms: dict[str, float]  # REFERENCE and each form: batch-1 median on this machine
    confusion: dict[str, list[list[int]]]  # REFERENCE and each form, where the task has one
    providers: dict[str, str]  # each form: the ONNX Runtime execution provider it ran on


@torch.no_grad()
def reference_outputs(model: torch.nn.Module, task: Task, encoded: ModelInputs,
                      device: torch.device, batch_size: int = 64) -> Outputs:
    """PyTorch's held-out outputs, fp32, in example order: what every ONNX model is
    compared with. Batches sorted by length (less padding)."""
    lengths = encoded.lengths()
    out: Outputs = [np.empty(0)] * len(encoded)
    with evaluating(model), exact_fp32():
        for indices, batch in encoded.batches(batch_size, np.argsort(lengths, kind="stable")):
            inputs = {k: torch.from_numpy(v).to(device) for k, v in batch.items()}
            logits = model(**inputs).logits.float().cpu().numpy()
            for index, output in zip(indices, task.unbatch(logits, lengths[indices])):
                out[index] = output
    return out


def held_out_outputs(model: OnnxModel, encoder: InputEncoder, examples: list[Any],
                     reporter: Reporter, desc: str) -> Outputs:
    """An ONNX model's outputs, one example at a time as a device runs it."""
    return [model.run(encoder.encode(example))[0]
            for example in reporter.progress(examples, total=len(examples), desc=desc)]


def evaluate(model: torch.nn.Module, task: Task, reference: Outputs, examples: list[Any],
             targets: Any, encoded: ModelInputs, forms: dict[str, list[Path]],
             encoder: InputEncoder, batch_sizes: list[int], sequence_lengths: list[int],
             device: torch.device, reporter: Reporter,
             known: dict[str, Outputs] | None = None) -> Evaluation:
    """The task's metrics of every form against the targets and PyTorch's `reference`;
    `known` are held-out outputs already computed (by the quantization fallback)."""
    known = known or {}
    metrics = {REFERENCE: task.metrics(reference, targets, reference)}
    sessions = {name: OnnxModel(paths, providers=providers_for(FORMS[name].precision))
                for name, paths in forms.items()}
    outputs = {}
    for name, session in sessions.items():
        outputs[name] = known.get(name)
        if outputs[name] is None:
            outputs[name] = held_out_outputs(session, encoder, examples, reporter, name)
        metrics[name] = task.metrics(outputs[name], targets, reference)
    shape_check = {name: _shape_check(model, session, encoded, batch_sizes, sequence_lengths,
                                      device)
                   for name, session in sessions.items() if FORMS[name].exact}
    first = encoder.encode(examples[0])
    latency = {REFERENCE: _torch_latency_ms(model, encoded.batch([0]), device),
               **{name: batch1_latency_ms(session.run, first)
                  for name, session in sessions.items()}}
    labels = reference[0].shape[-1]
    confusion = {name: matrix for name, got in {REFERENCE: reference, **outputs}.items()
                 if (matrix := task.confusion(got, targets, labels)) is not None}
    return Evaluation(metrics=metrics, shape_check=shape_check, outputs=outputs,
                      latency_ms=latency, confusion=confusion,
                      providers={name: session.provider for name, session in sessions.items()})


@torch.no_grad()
def _torch_latency_ms(model: torch.nn.Module, batch: dict[str, np.ndarray],
                      device: torch.device) -> float:
    model.eval()
    inputs = {k: torch.from_numpy(v).to(device) for k, v in batch.items()}

    def forward(feed: dict[str, torch.Tensor]) -> None:
        model(**feed)
        if device.type == "cuda":  # kernels run asynchronously: time them, not the launch
            torch.cuda.synchronize(device)

    return batch1_latency_ms(forward, inputs)


@torch.no_grad()
def _shape_check(model: torch.nn.Module, session: OnnxModel, encoded: ModelInputs,
                 batch_sizes: list[int], sequence_lengths: list[int],
                 device: torch.device) -> dict[str, Any]:
    """PyTorch against the session on padded batches of every size and length."""
    model.eval()
    cells = []
    with exact_fp32():
        for batch_size in batch_sizes:
            indices = [i % len(encoded) for i in range(batch_size)]
            for length in sequence_lengths or [None]:  # none: inputs without a sequence axis
                batch = encoded.batch(indices, length=length)
                expected = model(**{k: torch.from_numpy(v).to(device) for k, v in batch.items()})
                error = np.abs(session.run(batch) - expected.logits.float().cpu().numpy()).max()
                cells.append({"batch_size": batch_size, "sequence_length": length,
                              "max_logit_error": float(error)})
    return {"batch_sizes": batch_sizes, "sequence_lengths": sequence_lengths,
            "max_logit_error": max(c["max_logit_error"] for c in cells), "cells": cells}
