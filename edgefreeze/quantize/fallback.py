"""Quantize with the gate in the loop: when an int8 model fails the gate's rules for
reduced-precision forms, keep its most sensitive segment in fp32 and try again, one more
segment at a time, until it passes, nothing is left to keep, or the model would no longer
be int8 in any useful sense.

Which segment is most sensitive is measured, as NNCF and Intel Neural Compressor do:
each segment (the head, each transformer layer) is quantized alone, the rest left fp32,
and its output error against the fp32 model on a sample of training inputs ranks it.
`quantize.fallback_order: from_output` keeps the earlier fixed order (head first, then the
layers from the top down) instead. Either way the gate's `max_int8_size_share` rule caps
how much may stay fp32: a file called model.int8.onnx that is mostly fp32 is refused,
never shipped. The report says what stayed fp32 and what that cost in size and latency.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgefreeze.context import RunContext
from edgefreeze.gate.evaluate import held_out_outputs
from edgefreeze.gate.held_out import HeldOut
from edgefreeze.gate.rules import size_rule, tolerance_rules
from edgefreeze.quantize.fusion import Architecture
from edgefreeze.quantize.int8 import quantize_int8
from edgefreeze.runtime.bench import batch1_latency_ms
from edgefreeze.runtime.forms import ModelForm
from edgefreeze.runtime.manifest import AttemptRecord, QuantizeRecord
from edgefreeze.runtime.session import OnnxModel
from edgefreeze.schema import GateSpec, QuantizeSpec
from edgefreeze.tasks import Outputs, Task


@dataclass(frozen=True)
class GatedQuantizer:
    """int8 with the gate's reduced-precision rules in the loop (`quantize`).

    Args:
        probe: model input feeds of training examples (never held-out ones: they are
            the gate's) that rank the segments when the first attempt fails.
        calibration: static mode's feeds (None: dynamic).
    """

    settings: QuantizeSpec
    architecture: Architecture
    task: Task
    gate: GateSpec
    held_out: HeldOut
    ctx: RunContext
    probe: list[dict[str, np.ndarray]]
    calibration: list[dict[str, np.ndarray]] | None = None

    def quantize(
        self, form: ModelForm, fp32_paths: list[Path], int8_paths: list[Path]
    ) -> tuple[QuantizeRecord, Outputs]:
        """Write `int8_paths` (one per fp32 graph; only the last graph, the one nearest
        the output, ever keeps parts in fp32). Returns the manifest's record of the
        attempts and the final model's held-out outputs (so the gate need not run it
        again)."""
        *fixed, (last_fp32, last_int8) = list(zip(fp32_paths, int8_paths))
        graphs = {
            target.name: quantize_int8(source, target, self.settings, self.architecture)
            for source, target in fixed
        }
        fp32_bytes = sum(p.stat().st_size for p in fp32_paths)
        attempts: list[AttemptRecord] = []
        keep: list[str] = []
        order: list[str] | None = None
        sensitivity: dict[str, float] = {}
        while True:
            result = quantize_int8(
                last_fp32,
                last_int8,
                self.settings,
                self.architecture,
                keep_fp32=keep,
                calibration=self.calibration,
            )
            attempt, outputs, failed = self._attempt(form, int8_paths, keep, fp32_bytes)
            attempts.append(attempt)
            assert attempt.size_share is not None  # _attempt always measures it
            if attempt.passed or attempt.size_share > self.gate.max_int8_size_share:
                break  # passed, or already too much fp32: keeping more only grows the file
            if order is None:
                sensitivity, order = self._order(fp32_paths, int8_paths, result["segments"])
            remaining = [name for name in order if name not in keep]
            if not remaining:
                break
            keep.append(remaining[0])
            self.ctx.reporter.info(
                f"  {form.name} failed the gate ({failed}); keeping {remaining[0]} in fp32"
            )
        graphs[last_int8.name] = result
        return QuantizeRecord(
            mode=self.settings.mode,
            graphs=graphs,
            attempts=attempts,
            fallback_order=self.settings.fallback_order if order is not None else None,
            sensitivity=sensitivity,
        ), outputs

    def _attempt(
        self, form: ModelForm, int8_paths: list[Path], keep: list[str], fp32_bytes: int
    ) -> tuple[AttemptRecord, Outputs, str]:
        """The int8 model as written, measured on the held-out split against the gate's
        rules: its record, its outputs, and the rules it failed (described)."""
        held_out, task = self.held_out, self.task
        model = OnnxModel(int8_paths)
        outputs = held_out_outputs(
            model,
            held_out.encoder,
            held_out.examples,
            self.ctx.reporter,
            f"{form.name} try {len(keep) + 1}",
        )
        metrics = task.metrics(outputs, held_out.targets, held_out.reference)
        reference_metrics = task.metrics(held_out.reference, held_out.targets, held_out.reference)
        size = sum(p.stat().st_size for p in int8_paths)
        rules = [
            *tolerance_rules(form, metrics, reference_metrics, task.gate_metric, self.gate),
            size_rule(form, size / fp32_bytes, self.gate),
        ]
        attempt = AttemptRecord(
            fp32_segments=list(keep),
            metrics=metrics,
            passed=all(r.passed for r in rules),
            size_bytes=size,
            size_share=size / fp32_bytes,
            p50_ms=batch1_latency_ms(model.run, held_out.feed(0)),
        )
        return attempt, outputs, "; ".join(r.describe() for r in rules if not r.passed)

    def _order(
        self, fp32_paths: list[Path], int8_paths: list[Path], segments: list[str]
    ) -> tuple[dict[str, float], list[str]]:
        """Which segments to keep in fp32 first, and each one's measured sensitivity
        (none measured for the fixed order from the output down)."""
        if self.settings.fallback_order != "sensitivity":
            return {}, segments
        sensitivity = rank_segments(
            fp32_paths,
            int8_paths,
            self.settings,
            self.architecture,
            segments,
            self.probe,
            self.calibration,
        )
        return sensitivity, sorted(sensitivity, key=sensitivity.__getitem__, reverse=True)


def rank_segments(
    fp32_paths: list[Path],
    int8_paths: list[Path],
    settings: QuantizeSpec,
    architecture: Architecture,
    names: list[str],
    feeds: list[dict[str, np.ndarray]],
    calibration: list[dict[str, np.ndarray]] | None = None,
) -> dict[str, float]:
    """Each segment's mean absolute output error against fp32 on `feeds` when it alone is
    int8 (the other segments of the last graph fp32): higher is more sensitive.
    `calibration`: static mode's feeds, as for the attempts themselves."""
    exact = OnnxModel(fp32_paths)
    expected = [exact.run(feed) for feed in feeds]
    errors = {}
    for name in names:
        quantize_int8(
            fp32_paths[-1],
            int8_paths[-1],
            settings,
            architecture,
            keep_fp32=[other for other in names if other != name],
            calibration=calibration,
        )
        model = OnnxModel(int8_paths)
        errors[name] = float(
            np.mean([np.abs(model.run(feed) - want).mean() for feed, want in zip(feeds, expected)])
        )
    return errors
