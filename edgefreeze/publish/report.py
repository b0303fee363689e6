"""The human-readable report.md, rendered from the manifest alone."""

from __future__ import annotations

from edgefreeze.runtime.forms import FORMS, REFERENCE
from edgefreeze.runtime.manifest import Manifest

METRIC_LABELS = {"macro_f1": "macro-F1", "agreement": "agreement with PyTorch",
                 "max_logit_error": "max abs logit error"}


def label(name: str) -> str:
    """A model form's name as people read it."""
    return "PyTorch" if name == REFERENCE else FORMS[name].label if name in FORMS else name


def render_report(manifest: Manifest) -> str:
    gate, metrics, training = manifest.gate, manifest.metrics, manifest.training
    freeze = training.freeze
    verdict = "PASSED, shipped" if gate.passed else "REFUSED, not shipped"
    columns = list(next(iter(metrics.values())))
    lines = [f"# {manifest.pipeline.name}: gate {verdict}", "",
             f"Task {manifest.task.name}, model `{manifest.model.spec}`, data "
             f"`{manifest.data.sources['source'].origin}`, built by edgefreeze "
             f"{manifest.edgefreeze_version} on {manifest.created}.", "",
             "## Held-out metrics", "",
             "| model | " + " | ".join(METRIC_LABELS.get(c, c) for c in columns) + " | size |",
             "| --- " * (len(columns) + 2) + "|"]
    for key, measured in metrics.items():
        size = f"{manifest.sizes[key] / 1e6:.1f} MB" if key in manifest.sizes else ""
        values = [f"{measured[c]:.2e}" if c == "max_logit_error" else f"{measured[c]:.4f}"
                  for c in columns]
        lines.append(f"| {label(key)} | " + " | ".join(values) + f" | {size} |")
    lines += ["", "## Gate", ""]
    lines += [f"- {'✅' if r.passed else '❌'} {r.what}: {r.measured:.6g} "
              f"({'≤' if r.kind == 'max' else '≥'} {r.limit:.6g})" for r in gate.rules.values()]
    for key, shapes in manifest.shape_check.items():
        lines += ["", f"{label(key)} shape check: batch sizes {shapes.batch_sizes} × "
                  f"sequence lengths {shapes.sequence_lengths}, max abs logit error "
                  f"{shapes.max_logit_error:.2e}."]
    lines += ["", "## Quantization", ""]
    for name, record in manifest.quantize.items():
        if not record.attempts:
            lines.append(f"- {label(name)}: {record.mode}.")
            continue
        final, first = record.attempts[-1], record.attempts[0]
        kept = ", ".join(final.fp32_segments) or "nothing"
        lines.append(f"- {label(name)}: {len(record.attempts)} attempt(s); kept in fp32: "
                     f"{kept}.")
        if len(record.attempts) > 1:
            lines.append(f"  Fallback cost: {(final.size_bytes - first.size_bytes) / 1e6:+.1f}"
                         f" MB, batch-1 latency {first.p50_ms:.2f} -> {final.p50_ms:.2f} ms;"
                         f" agreement {first.metrics['agreement']:.4f} -> "
                         f"{final.metrics['agreement']:.4f}.")
    validation = manifest.task.gate_metric
    lines += ["", "## Training", "",
              f"Trainable parameters: {freeze.trainable_parameters:,} of "
              f"{freeze.total_parameters:,} ({100 * freeze.trainable_share:.1f} %), "
              f"layers {freeze.trainable_layers} of {manifest.model.layers} plus the head "
              f"(freezing plan {freeze.plan}, cached stem below layer {freeze.boundary}); "
              f"device {training.device} ({training.precision}).", "",
              f"| epoch | loss | validation {validation} | seconds |",
              "| --- | --- | --- | --- |"]
    for e in training.epochs:
        val = f"{e.validation[validation]:.4f}" if validation in e.validation else "–"
        lines.append(f"| {e.epoch} | {e.loss:.4f} | {val} | {e.seconds:.1f} |")
    lines += ["", "## Wall time per stage", ""]
    lines += [f"- {stage}: {seconds:.1f} s" for stage, seconds in manifest.timings_s.items()]
    return "\n".join(lines) + "\n"
