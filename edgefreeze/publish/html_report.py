"""report.html: the report.md facts with charts, rendered from the manifest alone.

Self-contained (inline CSS and SVG, no script, nothing fetched), so it opens the same from
a bundle on a laptop, a CI artifact store or an air-gapped release machine.
"""

from __future__ import annotations

from html import escape

from edgefreeze.figures import error, percent, rule_figure
from edgefreeze.publish.report import baseline_rows, data_summary, label, metric_label
from edgefreeze.publish.svg import bar_chart, heat_map, line_chart
from edgefreeze.runtime.manifest import Manifest

STYLE = """
body { font: 14px/1.45 sans-serif; margin: 24px auto; max-width: 1180px; color: #222; }
h1 { font-size: 22px; } h2 { font-size: 17px; margin-top: 28px; border-bottom: 1px solid #ddd; }
.verdict { padding: 2px 10px; border-radius: 4px; color: #fff; }
.passed { background: #188038; } .refused { background: #c5221f; }
table { border-collapse: collapse; margin: 8px 0; }
td, th { border: 1px solid #ddd; padding: 3px 8px; text-align: right; }
td:first-child, th:first-child { text-align: left; }
.charts { display: flex; flex-wrap: wrap; gap: 16px; align-items: flex-start; }
figure { margin: 0; } figcaption { font-weight: bold; margin-bottom: 4px; }
.fail { color: #c5221f; } .pass { color: #188038; }
"""


def render_html(manifest: Manifest) -> str:
    gate = manifest.gate
    verdict = (
        '<span class="verdict passed">gate PASSED, shipped</span>'
        if gate.passed
        else '<span class="verdict refused">gate REFUSED, not shipped</span>'
    )
    body = [
        f"<h1>{escape(manifest.pipeline.name)} {verdict}</h1>",
        f"<p>Task {escape(manifest.task.name)}, model <code>{escape(manifest.model.spec)}"
        f"</code>, data <code>{escape(manifest.data.sources['source'].origin)}</code>, built "
        f"by edgefreeze {escape(manifest.edgefreeze_version)} on "
        f"{escape(manifest.created)}.</p>",
        f"<p>{escape(data_summary(manifest).replace('**', ''))}</p>",
        *_models(manifest),
        *_gate(manifest),
        *_baseline(manifest),
        *_training(manifest),
        *_confusion(manifest),
        *_quantization(manifest),
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{escape(manifest.pipeline.name)}: edgefreeze report</title>"
        f"<style>{STYLE}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )


def _figure(caption: str, svg: str) -> str:
    return f"<figure><figcaption>{escape(caption)}</figcaption>{svg}</figure>" if svg else ""


def _models(manifest: Manifest) -> list[str]:
    metric = manifest.task.gate_metric
    names = list(manifest.metrics)
    scores = {label(n): manifest.metrics[n][metric] for n in names}
    sizes = {label(n): manifest.sizes[n] / 1e6 for n in names if n in manifest.sizes}
    latency = {label(n): manifest.latency_ms[n] for n in names if n in manifest.latency_ms}
    columns = list(next(iter(manifest.metrics.values())))
    rows = ""
    for n in names:
        cells = "".join(
            f"<td>{error(v) if c == 'max_logit_error' else percent(v)}</td>"
            for c, v in ((c, manifest.metrics[n][c]) for c in columns)
        )
        size = f"{manifest.sizes[n] / 1e6:.1f}" if n in manifest.sizes else ""
        ms = f"{manifest.latency_ms[n]:.3g}" if n in manifest.latency_ms else ""
        rows += f"<tr><td>{escape(label(n))}</td>{cells}<td>{size}</td><td>{ms}</td></tr>"
    header = "".join(f"<th>{escape(metric_label(manifest, c))}</th>" for c in columns)
    return [
        "<h2>Models on the held-out split</h2>",
        f"<table><tr><th>model</th>{header}<th>size MB</th><th>batch-1 ms</th></tr>{rows}</table>",
        '<div class="charts">',
        _figure(f"held-out {metric}", bar_chart("chart-metric", scores, "")),
        _figure("size", bar_chart("chart-size", sizes, "MB")),
        _figure(
            "batch-1 latency (median, build machine)", bar_chart("chart-latency", latency, "ms")
        ),
        "</div>",
    ]


def _gate(manifest: Manifest) -> list[str]:
    rows = "".join(
        f"<tr><td>{escape(r.what)}</td><td>{rule_figure(name, r.measured)}</td>"
        f"<td>{'≤' if r.kind == 'max' else '≥'} {rule_figure(name, r.limit)}</td>"
        f'<td class="{"pass" if r.passed else "fail"}">{"pass" if r.passed else "FAIL"}</td></tr>'
        for name, r in manifest.gate.rules.items()
    )
    return [
        "<h2>Gate</h2>",
        f"<table><tr><th>rule</th><th>measured</th><th>limit</th><th></th></tr>{rows}</table>",
    ]


def _baseline(manifest: Manifest) -> list[str]:
    rows = baseline_rows(manifest)
    if rows is None:
        return []
    summary, flips = rows
    table = "".join(
        "<tr>" + "".join(f"<td>{escape(str(cell))}</td>" for cell in flip) + "</tr>"
        for flip in flips
    )
    return [
        "<h2>Against the release in the field</h2>",
        f"<p>{escape(summary)}</p>",
        "<table><tr><th>row</th><th>input</th><th>label</th><th>baseline</th><th>new</th>"
        f"</tr>{table}</table>"
        if flips
        else "",
    ]


def _training(manifest: Manifest) -> list[str]:
    training = manifest.training
    metric = manifest.task.gate_metric
    losses = [(step + 1, loss) for step, loss in enumerate(training.step_losses)]
    validation = [
        (e.epoch, e.validation[metric]) for e in training.epochs if metric in e.validation
    ]
    epoch_loss = [(e.epoch, e.loss) for e in training.epochs]
    return [
        "<h2>Training</h2>",
        '<div class="charts">',
        _figure(
            "training loss per step", line_chart("chart-loss", [("loss", losses)], "step", "loss")
        ),
        _figure(
            f"per epoch: mean training loss and validation {metric}",
            line_chart(
                "chart-validation",
                [("training loss", epoch_loss), (f"validation {metric}", validation)],
                "epoch",
                "value",
            ),
        ),
        "</div>",
    ]


def _confusion(manifest: Manifest) -> list[str]:
    if not manifest.confusion:
        return []
    labels = manifest.data.label_names
    maps = [
        heat_map(f"confusion-{name}", matrix, labels, label(name))
        for name, matrix in manifest.confusion.items()
    ]
    return [
        "<h2>Confusion matrices (rows: true label)</h2>",
        '<div class="charts">',
        *maps,
        "</div>",
    ]


def _quantization(manifest: Manifest) -> list[str]:
    rows = ""
    for name, record in manifest.quantize.items():
        for number, attempt in enumerate(record.attempts, start=1):
            metrics = ", ".join(
                f"{k} {v:.4g}" for k, v in attempt.metrics.items() if k != "max_logit_error"
            )
            rows += (
                f"<tr><td>{escape(label(name))}</td><td>{number}</td>"
                f"<td>{escape(', '.join(attempt.fp32_segments) or 'nothing')}</td>"
                f"<td>{escape(metrics)}</td><td>{attempt.size_bytes / 1e6:.1f}</td>"
                f"<td>{_percent(attempt.size_share)}</td>"
                f"<td>{attempt.p50_ms:.2f}</td>"
                f'<td class="{"pass" if attempt.passed else "fail"}">'
                f"{'pass' if attempt.passed else 'fail'}</td></tr>"
            )
    if not rows:
        return []
    return [
        "<h2>Quantization attempts</h2>",
        "<table><tr><th>model</th><th>try</th><th>kept in fp32</th><th>held-out</th>"
        f"<th>size MB</th><th>of fp32</th><th>batch-1 ms</th><th>gate</th></tr>{rows}"
        "</table>",
    ]


def _percent(share: float | None) -> str:
    return "" if share is None else f"{100 * share:.0f} %"
