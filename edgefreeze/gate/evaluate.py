"""Run PyTorch and every ONNX form on the held-out split, and the exact (fp32) forms over
a grid of shapes. The fp16 form, made for GPU targets, runs on CUDA where ONNX Runtime
has it; every other form on the CPU.

ONNX models run through the device runtime, one example at a time, so the figures are the
ones a device would get. The shape grid feeds PyTorch and each fp32 form identical padded
batches at batch sizes and sequence lengths the exporter never saw.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgefreeze.context import RunContext
from edgefreeze.gate.held_out import HeldOut
from edgefreeze.inference import exact_fp32
from edgefreeze.progress import Reporter
from edgefreeze.runtime.bench import batch1_latency_ms
from edgefreeze.runtime.forms import FORMS, REFERENCE
from edgefreeze.runtime.inputs import InputEncoder
from edgefreeze.runtime.manifest import ShapeCell, ShapeCheck
from edgefreeze.runtime.session import OnnxModel, providers_for
from edgefreeze.tasks import Outputs, Task
from edgefreeze.tasks.encoding import ModelInputs


@dataclass(frozen=True)
class ShapeGrid:
    """The padded batches every exact form is checked on against PyTorch."""

    batch_sizes: list[int]
    sequence_lengths: list[int]  # empty: the inputs have no sequence axis (images)


@dataclass(frozen=True)
class Evaluation:
    metrics: dict[str, dict[str, float]]  # REFERENCE and each form -> metric -> value
    shape_check: dict[str, ShapeCheck]  # per exact form
    outputs: dict[str, Outputs]  # each form's held-out outputs, in example order
    latency_ms: dict[str, float]  # REFERENCE and each form: batch-1 median on this machine
    confusion: dict[str, list[list[int]]]  # REFERENCE and each form, where the task has one
    providers: dict[str, str]  # each form: the ONNX Runtime execution provider it ran on


def held_out_outputs(
    model: OnnxModel, encoder: InputEncoder, examples: list[Any], reporter: Reporter, desc: str
) -> Outputs:
    """An ONNX model's outputs, one example at a time as a device runs it."""
    return [
        model.run(encoder.encode(example))[0]
        for example in reporter.progress(examples, total=len(examples), desc=desc)
    ]


def evaluate(
    model: torch.nn.Module,
    task: Task,
    held_out: HeldOut,
    forms: dict[str, list[Path]],
    grid: ShapeGrid,
    ctx: RunContext,
    computed: dict[str, Outputs] | None = None,
) -> Evaluation:
    """The task's metrics of every form against the targets and PyTorch's reference;
    `computed` are held-out outputs already computed (by the quantization fallback)."""
    computed = computed or {}
    reference, targets = held_out.reference, held_out.targets
    metrics = {REFERENCE: task.metrics(reference, targets, reference)}
    sessions = {
        name: OnnxModel(paths, providers=providers_for(FORMS[name].precision))
        for name, paths in forms.items()
    }
    outputs = {}
    for name, session in sessions.items():
        found = computed.get(name)
        outputs[name] = (
            found
            if found is not None
            else held_out_outputs(session, held_out.encoder, held_out.examples, ctx.reporter, name)
        )
        metrics[name] = task.metrics(outputs[name], targets, reference)
    shape_check = {
        name: _shape_check(model, session, held_out.encoded, grid, ctx.device)
        for name, session in sessions.items()
        if FORMS[name].exact
    }
    latency = {
        REFERENCE: _torch_latency_ms(model, held_out.encoded.batch([0]), ctx.device),
        **{
            name: batch1_latency_ms(session.run, held_out.feed(0))
            for name, session in sessions.items()
        },
    }
    labels = reference[0].shape[-1]
    confusion = {
        name: matrix
        for name, got in {REFERENCE: reference, **outputs}.items()
        if (matrix := task.confusion(got, targets, labels)) is not None
    }
    return Evaluation(
        metrics=metrics,
        shape_check=shape_check,
        outputs=outputs,
        latency_ms=latency,
        confusion=confusion,
        providers={name: session.provider for name, session in sessions.items()},
    )


@torch.no_grad()
def _torch_latency_ms(
    model: torch.nn.Module, batch: dict[str, np.ndarray], device: torch.device
) -> float:
    model.eval()
    inputs = {k: torch.from_numpy(v).to(device) for k, v in batch.items()}

    def forward(feed: dict[str, torch.Tensor]) -> None:
        model(**feed)
        if device.type == "cuda":  # kernels run asynchronously: time them, not the launch
            torch.cuda.synchronize(device)

    return batch1_latency_ms(forward, inputs)


@torch.no_grad()
def _shape_check(
    model: torch.nn.Module,
    session: OnnxModel,
    encoded: ModelInputs,
    grid: ShapeGrid,
    device: torch.device,
) -> ShapeCheck:
    """PyTorch against the session on padded batches of every size and length."""
    model.eval()
    cells = []
    lengths: Sequence[int | None] = grid.sequence_lengths or [None]  # none: no sequence axis
    with exact_fp32():
        for batch_size in grid.batch_sizes:
            indices = [i % len(encoded) for i in range(batch_size)]
            for length in lengths:
                batch = encoded.batch(indices, length=length)
                expected = model(**{k: torch.from_numpy(v).to(device) for k, v in batch.items()})
                error = np.abs(session.run(batch) - expected.logits.float().cpu().numpy()).max()
                cells.append(
                    ShapeCell(
                        batch_size=batch_size, sequence_length=length, max_logit_error=float(error)
                    )
                )
    return ShapeCheck(
        batch_sizes=grid.batch_sizes,
        sequence_lengths=grid.sequence_lengths,
        max_logit_error=max(c.max_logit_error for c in cells),
        cells=cells,
    )
