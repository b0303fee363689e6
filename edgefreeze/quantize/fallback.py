"""Quantize with the gate in the loop: when an int8 model fails the gate's rules for
reduced-precision forms, keep its most sensitive segments in fp32 (the head first, then
the top layers) and try again, until it passes or nothing is left to keep. The report
says what stayed fp32 and what that cost in size and latency.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgefreeze.gate.evaluate import held_out_outputs
from edgefreeze.gate.rules import tolerance_rules
from edgefreeze.progress import Reporter
from edgefreeze.quantize.fusion import Architecture
from edgefreeze.quantize.int8 import quantize_int8
from edgefreeze.runtime.bench import batch1_latency_ms
from edgefreeze.runtime.forms import ModelForm
from edgefreeze.runtime.inputs import InputEncoder
from edgefreeze.runtime.session import OnnxModel
from edgefreeze.spec import GateSpec, QuantizeSpec
from edgefreeze.tasks import Outputs, Task


def quantize_gated(form: ModelForm, fp32_paths: list[Path], int8_paths: list[Path],
                   settings: QuantizeSpec, architecture: Architecture, task: Task,
                   gate: GateSpec, reference: Outputs, examples: list[Any], targets: Any,
                   encoder: InputEncoder, reporter: Reporter,
                   calibration: list[dict[str, np.ndarray]] | None = None
                   ) -> tuple[dict, Outputs]:
    """Write `int8_paths` (one per fp32 graph; only the last graph, the one nearest the
    output, ever keeps parts in fp32). Returns the manifest's record of the attempts and
    the final model's held-out outputs (so the gate need not run it again)."""
    *fixed, (last_fp32, last_int8) = list(zip(fp32_paths, int8_paths))
    graphs = {target.name: quantize_int8(source, target, settings, architecture)
              for source, target in fixed}
    reference_metrics = task.metrics(reference, targets, reference)
    attempts = []
    keep = 0
    while True:
        result = quantize_int8(last_fp32, last_int8, settings, architecture, keep_fp32=keep,
                               calibration=calibration)
        model = OnnxModel(int8_paths)
        outputs = held_out_outputs(model, encoder, examples, reporter,
                                   f"{form.name} try {keep + 1}")
        metrics = task.metrics(outputs, targets, reference)
        rules = tolerance_rules(form, metrics, reference_metrics, task.gate_metric, gate)
        attempts.append({"fp32_segments": result["fp32_segments"], "metrics": metrics,
                         "passed": all(r.passed for r in rules),
                         "size_bytes": sum(p.stat().st_size for p in int8_paths),
                         "p50_ms": batch1_latency_ms(model.run, encoder.encode(examples[0]))})
        if attempts[-1]["passed"] or keep >= result["segments"]:
            break
        keep += 1
        reporter.info(f"  {form.name} failed the gate "
                      f"({'; '.join(r.describe() for r in rules if not r.passed)});"
                      f" keeping one more segment in fp32")
    graphs[last_int8.name] = result
    return {"mode": settings.mode, "graphs": graphs, "attempts": attempts}, outputs

