"""Reports and gate messages print figures as people read them: drops in points, shares in
percent, errors in two significant digits; the manifest keeps the raw values."""

from __future__ import annotations

import json
import re
from pathlib import Path

from edgefreeze.figures import error, milliseconds, percent, points, rule_figure
from edgefreeze.gate.rules import Rule
from edgefreeze.publish.html_report import render_html
from edgefreeze.publish.report import render_report
from edgefreeze.runtime.manifest import Manifest

V1 = Path(__file__).parent / "data" / "manifest-v1.json"


def test_each_kind_of_figure():
    assert (points(0.0019372336), percent(0.971716389), error(9.059906e-06)) == (
        "0.19 pt",
        "97.17 %",
        "9.1e-06",
    )
    assert (error(1.02435), error(0.0), milliseconds(2.71347)) == ("1.0", "0.0", "2.71 ms")
    assert [
        rule_figure(f"int8.{rule}", 0.0125)
        for rule in ("max_metric_drop", "min_agreement", "max_size_share")
    ] == ["1.25 pt", "1.25 %", "1.25 %"]
    assert rule_figure("fp32.max_logit_error", 0.001) == "0.0010"


def test_a_failed_rule_says_by_how_much_in_its_own_units():
    rule = Rule("int8.max_metric_drop", 0.0123, 0.01, "max", "int8 accuracy drop")
    assert rule.describe() == "int8 accuracy drop: 1.23 pt (must be <= 1.00 pt) FAIL by 0.23 pt"


def test_the_reports_print_no_raw_floats():
    manifest = Manifest.parse(json.loads(V1.read_text()), V1)
    report = render_report(manifest)
    gate = report[report.index("## Gate") : report.index("## Quantization")]
    drop = manifest.gate.rules["int8.max_metric_drop"]
    assert f"int8 accuracy drop against PyTorch: {points(drop.measured)} ≤ 3.00 pt" in gate
    assert "prediction agreement with PyTorch: 98.33 % ≥ 90.00 %" in gate
    for text in (report, render_html(manifest)):
        raw = re.findall(r"(?<![\w.])0\.\d{5,}|\d\.\d{5,}e[-+]\d+", text)
        assert not raw, raw[:5]
