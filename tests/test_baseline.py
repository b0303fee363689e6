"""`--baseline`: a new release is gated against the one the fleet runs, on the same
held-out rows; a worse retrain is refused with the predictions it flips listed."""

from __future__ import annotations

import json

from edgefreeze.runtime import Predictor
from tests.conftest import SMOKE, run_cli, write_pipeline


def build(pipeline, output, cache, *extra: str):
    return run_cli(
        "build",
        str(pipeline),
        "--output",
        str(output),
        "--cache-dir",
        str(cache),
        "--quiet",
        "--json",
        *extra,
    )


def test_an_equal_rebuild_passes_with_no_flips(smoke, tmp_path):
    result = build(SMOKE, tmp_path / "b", smoke.cache, "--baseline", str(smoke.bundle))
    assert result.exit_code == 0, result.stderr
    baseline = json.loads((tmp_path / "b" / "manifest.json").read_text())["baseline"]
    assert baseline["flips"] == 0 and baseline["flipped"] == []
    assert baseline["baseline_value"] == baseline["value"]
    assert baseline["same_held_out"] is True
    assert result.json()["gate"]["rules"]["baseline.max_flip_share"]["passed"]


def test_a_worse_retrain_is_refused_with_its_flips_listed(smoke, tmp_path):
    """Trained for one epoch at a hundredth of the rate: its int8 model still matches its
    own PyTorch model (the other rules pass), but it is worse than the release."""
    worse = write_pipeline(
        tmp_path,
        {
            "train": {"epochs": 1, "lr_top": 1e-6, "lr_head": 1e-5},
            "gate": {"baseline": {"bundle": str(smoke.bundle)}},
        },
    )
    result = build(worse, tmp_path / "b", smoke.cache)
    assert result.exit_code == 1, result.stderr
    assert not (tmp_path / "b").exists()
    summary = result.json()
    rules = summary["gate"]["rules"]
    assert not rules["baseline.max_metric_drop"]["passed"]
    assert not rules["baseline.max_flip_share"]["passed"]
    assert rules["int8.min_agreement"]["passed"]  # refused for the regression alone

    manifest = json.loads((tmp_path / "b.rejected" / "manifest.json").read_text())
    baseline = manifest["baseline"]
    assert baseline["flips"] > 0 and len(baseline["flipped"]) == min(baseline["flips"], 100)
    # Each listed flip is real: the release's own model predicts its "baseline" label.
    release = Predictor(smoke.bundle)
    flips = [flip for flip in baseline["flipped"] if not flip["input"].endswith("…")][:10]
    predicted = release.predict([flip["input"] for flip in flips])
    assert [p.label for p in predicted] == [flip["baseline"] for flip in flips]
    assert all(flip["baseline"] != flip["new"] for flip in flips)
    report = (tmp_path / "b.rejected" / "report.md").read_text()
    assert "## Against the release in the field" in report
    assert flips[0]["input"][:40] in report


def test_a_baseline_of_other_labels_is_refused_before_training(smoke, tmp_path):
    labels = write_pipeline(tmp_path, {"data": {"labels": ["fresh", "rotten"]}})
    result = run_cli(
        "build",
        str(labels),
        "--output",
        str(tmp_path / "b"),
        "--cache-dir",
        str(smoke.cache),
        "--baseline",
        str(smoke.bundle),
    )
    assert result.exit_code == 2
    assert "are not this build's ['fresh', 'rotten'] (in id order)" in result.stderr
    assert "» train" not in result.stderr
