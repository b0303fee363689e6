"""The human-readable report.md, rendered from the manifest alone."""

from __future__ import annotations

from typing import Any

from edgefreeze.figures import error, milliseconds, percent, rule_figure
from edgefreeze.runtime.forms import FORMS, REFERENCE
from edgefreeze.runtime.manifest import Manifest
from edgefreeze.tasks import TASKS, Task


def metric_label(manifest: Manifest, metric: str) -> str:
    """A metric's name as the manifest's task says people read it."""
    task = TASKS.get(manifest.task.name) or Task
    return task.metric_labels.get(metric, metric)


def label(name: str) -> str:
    """A model form's name as people read it."""
    return "PyTorch" if name == REFERENCE else FORMS[name].label if name in FORMS else name


def data_summary(manifest: Manifest) -> str:
    """Rows per split, and what a reader of the metrics must know about them."""
    data = manifest.data
    splits = data.splits
    line = "Data: " + ", ".join(f"{s.rows} {name}" for name, s in splits.items()) + " rows"
    if data.dropped_rows:
        line += f"; {data.dropped_rows} empty rows dropped"
    cut = [f"{s.truncated} {name}" for name, s in splits.items() if s.truncated]
    if cut:
        line += f"; cut to {data.max_length} tokens: {', '.join(cut)} rows"
    seen = [
        f"{s.seen_in_training} {name}"
        for name, s in splits.items()
        if name != "train" and s.seen_in_training
    ]
    if seen:
        line += (
            f"; **{', '.join(seen)} rows repeat a training row's input** (the metrics "
            "below count them)"
        )
    return line + "."


SHOWN_FLIPS = 20


def baseline_rows(manifest: Manifest) -> tuple[str, list[tuple[int, Any, Any, Any, Any]]] | None:
    """The comparison with the release in the field: a summary sentence and the first
    flipped predictions as (row, input, label, baseline, new); None without a baseline."""
    baseline = manifest.baseline
    if baseline is None:
        return None
    summary = (
        f"Baseline {baseline.bundle} ({baseline.pipeline}, built {baseline.created}), "
        f"int8 on the same {baseline.rows} held-out rows: {baseline.metric} "
        f"{baseline.baseline_value:.4f} -> {baseline.value:.4f}; {baseline.flips} "
        f"rows' predictions flip ({100 * baseline.flip_share:.1f} %; a tagger's row "
        "flips when any word's tag does)."
    )
    if not baseline.same_held_out:
        summary += (
            " The baseline was gated on other held-out rows: it may have trained on "
            "some of these, which flatters it."
        )
    if baseline.flips > SHOWN_FLIPS:
        summary += (
            f" The first {SHOWN_FLIPS} flips are shown; the manifest's "
            "`baseline.flipped` lists more."
        )
    return summary, [
        (f.row, f.input, f.target, f.baseline, f.new) for f in baseline.flipped[:SHOWN_FLIPS]
    ]


def baseline_section(manifest: Manifest) -> list[str]:
    """The new model against the release in the field, with the predictions that flip."""
    rows = baseline_rows(manifest)
    if rows is None:
        return []
    summary, flips = rows
    lines = ["", "## Against the release in the field", "", summary]
    if flips:
        lines += ["", "| row | input | label | baseline | new |", "| --- | --- | --- | --- | --- |"]
        lines += [
            "| "
            + " | ".join(str(cell).replace("|", "\\|").replace("\n", " ") for cell in flip)
            + " |"
            for flip in flips
        ]
    return lines


def sweep_section(manifest: Manifest) -> list[str]:
    """How a sweep chose this model: its trials, and the default against the best."""
    sweep = manifest.sweep
    if sweep is None:
        return []
    states = [t.state for t in sweep.trials]
    lines = [
        "",
        "## Sweep",
        "",
        f"{len(sweep.trials)} trials in {sweep.seconds:.0f} s ({states.count('complete')} "
        f"complete, {states.count('pruned')} stopped early), by {sweep.objective}.",
    ]
    if sweep.why is not None:
        lines.append(f"Shipped trial {sweep.chosen_trial}: {sweep.why}.")
    lines += ["", f"| trial | state | {sweep.objective} | settings |", "| --- | --- | --- | --- |"]
    for t in sweep.trials:
        value = "–" if t.value is None else f"{t.value:.4f}"
        mark = " (default)" if t.number == sweep.default_trial else ""
        mark += " **shipped**" if t.number == sweep.chosen_trial else ""
        settings = ", ".join(
            f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in t.params.items()
        )
        lines.append(f"| {t.number}{mark} | {t.state} | {value} | {settings} |")
    return lines


def render_report(manifest: Manifest) -> str:
    verdict = "PASSED, shipped" if manifest.gate.passed else "REFUSED, not shipped"
    lines = [
        f"# {manifest.pipeline.name}: gate {verdict}",
        "",
        f"Task {manifest.task.name}, model `{manifest.model.spec}`, data "
        f"`{manifest.data.sources['source'].origin}`, built by edgefreeze "
        f"{manifest.edgefreeze_version} on {manifest.created}.",
        "",
        data_summary(manifest),
        "",
    ]
    for section in (
        metrics_section,
        gate_section,
        quantization_section,
        baseline_section,
        sweep_section,
        training_section,
    ):
        lines += section(manifest)
    lines += ["", "## Wall time per stage", ""]
    lines += [f"- {stage}: {seconds:.1f} s" for stage, seconds in manifest.timings_s.items()]
    return "\n".join(lines) + "\n"


def metrics_section(manifest: Manifest) -> list[str]:
    metrics = manifest.metrics
    columns = list(next(iter(metrics.values())))
    lines = [
        "## Held-out metrics",
        "",
        "| model | " + " | ".join(metric_label(manifest, c) for c in columns) + " | size |",
        "| --- " * (len(columns) + 2) + "|",
    ]
    for key, measured in metrics.items():
        size = f"{manifest.sizes[key] / 1e6:.1f} MB" if key in manifest.sizes else ""
        values = [
            error(measured[c]) if c == "max_logit_error" else percent(measured[c]) for c in columns
        ]
        lines.append(f"| {label(key)} | " + " | ".join(values) + f" | {size} |")
    return lines


def gate_section(manifest: Manifest) -> list[str]:
    lines = ["", "## Gate", ""]
    lines += [
        f"- {'✅' if r.passed else '❌'} {r.what}: {rule_figure(name, r.measured)} "
        f"{'≤' if r.kind == 'max' else '≥'} {rule_figure(name, r.limit)}"
        for name, r in manifest.gate.rules.items()
    ]
    for key, shapes in manifest.shape_check.items():
        lengths = (
            f" × sequence lengths {shapes.sequence_lengths}" if shapes.sequence_lengths else ""
        )
        lines += [
            "",
            f"{label(key)} shape check: batch sizes {shapes.batch_sizes}{lengths}, "
            f"max abs logit error {error(shapes.max_logit_error)}.",
        ]
    return lines


def quantization_section(manifest: Manifest) -> list[str]:
    lines = ["", "## Quantization", ""]
    for name, record in manifest.quantize.items():
        if not record.attempts:
            lines.append(f"- {label(name)}: {record.mode}.")
            continue
        final, first = record.attempts[-1], record.attempts[0]
        kept = ", ".join(final.fp32_segments) or "nothing"
        lines.append(f"- {label(name)}: {len(record.attempts)} attempt(s); kept in fp32: {kept}.")
        if record.sensitivity:
            ranked = sorted(record.sensitivity.items(), key=lambda item: -item[1])
            lines.append(
                "  Segments by measured sensitivity (output error when quantized "
                "alone): " + ", ".join(f"{name} {error:.3g}" for name, error in ranked) + "."
            )
        if len(record.attempts) > 1:
            lines.append(
                f"  Fallback cost: {(final.size_bytes - first.size_bytes) / 1e6:+.1f}"
                f" MB, batch-1 latency {milliseconds(first.p50_ms)} -> "
                f"{milliseconds(final.p50_ms)}; agreement {percent(first.metrics['agreement'])}"
                f" -> {percent(final.metrics['agreement'])}."
            )
    return lines


def training_section(manifest: Manifest) -> list[str]:
    training, validation = manifest.training, manifest.task.gate_metric
    freeze = training.freeze
    lines = [
        "",
        "## Training",
        "",
        f"Trainable parameters: {freeze.trainable_parameters:,} of "
        f"{freeze.total_parameters:,} ({100 * freeze.trainable_share:.1f} %), "
        f"layers {freeze.trainable_layers} of {manifest.model.layers} plus the head "
        f"(freezing plan {freeze.plan}, cached stem below layer {freeze.boundary}); "
        f"device {training.device} ({training.precision}).",
        "",
        f"| epoch | loss | validation {validation} | seconds |",
        "| --- | --- | --- | --- |",
    ]
    for e in training.epochs:
        val = percent(e.validation[validation]) if validation in e.validation else "–"
        lines.append(f"| {e.epoch} | {e.loss:.4f} | {val} | {e.seconds:.1f} |")
    return lines
