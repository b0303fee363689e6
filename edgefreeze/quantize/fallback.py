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

from pathlib import Path
from typing import Any

import numpy as np

from edgefreeze.gate.evaluate import held_out_outputs
from edgefreeze.gate.rules import size_rule, tolerance_rules
from edgefreeze.progress import Reporter
from edgefreeze.quantize.fusion import Architecture
from edgefreeze.quantize.int8 import quantize_int8
from edgefreeze.runtime.bench import batch1_latency_ms
from edgefreeze.runtime.forms import ModelForm
from edgefreeze.runtime.inputs import InputEncoder
from edgefreeze.runtime.session import OnnxModel
from edgefreeze.schema import GateSpec, QuantizeSpec
from edgefreeze.tasks import Outputs, Task


def quantize_gated(form: ModelForm, fp32_paths: list[Path], int8_paths: list[Path],
                   settings: QuantizeSpec, architecture: Architecture, task: Task,
                   gate: GateSpec, reference: Outputs, examples: list[Any], targets: Any,
                   encoder: InputEncoder, reporter: Reporter,
                   probe: list[dict[str, np.ndarray]],
                   calibration: list[dict[str, np.ndarray]] | None = None
                   ) -> tuple[dict, Outputs]:
    """Write `int8_paths` (one per fp32 graph; only the last graph, the one nearest the
    output, ever keeps parts in fp32). `probe` (model input feeds of training examples,
    never held-out ones: they are the gate's) ranks the segments when the first attempt
    fails. Returns the manifest's record of the attempts and the final model's held-out
    outputs (so the gate need not run it again)."""
    *fixed, (last_fp32, last_int8) = list(zip(fp32_paths, int8_paths))
    graphs = {target.name: quantize_int8(source, target, settings, architecture)
              for source, target in fixed}
    reference_metrics = task.metrics(reference, targets, reference)
    fp32_bytes = sum(p.stat().st_size for p in fp32_paths)
    attempts: list[dict] = []
    keep: list[str] = []
    order: list[str] | None = None
    sensitivity: dict[str, float] = {}
    while True:
        result = quantize_int8(last_fp32, last_int8, settings, architecture, keep_fp32=keep,
                               calibration=calibration)
        model = OnnxModel(int8_paths)
        outputs = held_out_outputs(model, encoder, examples, reporter,
                                   f"{form.name} try {len(keep) + 1}")
        metrics = task.metrics(outputs, targets, reference)
        size = sum(p.stat().st_size for p in int8_paths)
        rules = [*tolerance_rules(form, metrics, reference_metrics, task.gate_metric, gate),
                 size_rule(form, size / fp32_bytes, gate)]
        attempts.append({"fp32_segments": list(keep), "metrics": metrics,
                         "passed": all(r.passed for r in rules), "size_bytes": size,
                         "size_share": size / fp32_bytes,
                         "p50_ms": batch1_latency_ms(model.run, encoder.encode(examples[0]))})
        if attempts[-1]["passed"] or not rules[-1].passed:
            break  # passed, or already too much fp32: keeping more only grows the file
        if order is None:
            if settings.fallback_order == "sensitivity":
                sensitivity = rank_segments(fp32_paths, int8_paths, settings, architecture,
                                            result["segments"], probe, calibration)
                order = sorted(sensitivity, key=sensitivity.get, reverse=True)
            else:
                order = result["segments"]
        remaining = [name for name in order if name not in keep]
        if not remaining:
            break
        keep.append(remaining[0])
        reporter.info(f"  {form.name} failed the gate "
                      f"({'; '.join(r.describe() for r in rules if not r.passed)});"
                      f" keeping {remaining[0]} in fp32")
    graphs[last_int8.name] = result
    return {"mode": settings.mode, "graphs": graphs, "attempts": attempts,
            "fallback_order": settings.fallback_order if order is not None else None,
            "sensitivity": sensitivity}, outputs


def rank_segments(fp32_paths: list[Path], int8_paths: list[Path], settings: QuantizeSpec,
                  architecture: Architecture, names: list[str],
                  feeds: list[dict[str, np.ndarray]],
                  calibration: list[dict[str, np.ndarray]] | None = None) -> dict[str, float]:
    """Each segment's mean absolute output error against fp32 on `feeds` when it alone is
    int8 (the other segments of the last graph fp32): higher is more sensitive.
    `calibration`: static mode's feeds, as for the attempts themselves."""
    exact = OnnxModel(fp32_paths)
    expected = [exact.run(feed) for feed in feeds]
    errors = {}
    for name in names:
        quantize_int8(fp32_paths[-1], int8_paths[-1], settings, architecture,
                      keep_fp32=[other for other in names if other != name],
                      calibration=calibration)
        model = OnnxModel(int8_paths)
        errors[name] = float(np.mean([np.abs(model.run(feed) - want).mean()
                                      for feed, want in zip(feeds, expected)]))
    return errors
