"""Delta updates: the stem and the top as two graphs; a retrain changes only the top."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgefreeze.runtime import Predictor
from tests.conftest import run_cli, write_pipeline


@pytest.mark.parametrize("trainable_layers", [2, 0])
def test_retrain_changes_only_the_top(tmp_path, trainable_layers):
    # This test is about what changes between bundles; the gate is loosened because a
    # head-only model trained on 360 rows has small margins, and 90 held-out rows make one
    # flipped prediction 1.1 points.
    pipeline = write_pipeline(tmp_path, {"export": {"split": True},
                                         "freeze": {"trainable_layers": trainable_layers},
                                         "gate": {"max_accuracy_drop": 0.08,
                                                  "min_agreement": 0.85}})
    first = run_cli("build", str(pipeline), "--output", str(tmp_path / "v1"), "--quiet")
    assert first.exit_code == 0, first.stderr
    new_rows = tmp_path / "new.csv"
    new_rows.write_text("text,category\n" + "".join(
        f"\"new review {i}, {'a delight' if i % 2 else 'a chore'}\",{'fresh' if i % 2 else 'rotten'}\n"
        for i in range(30)))
    second = run_cli("retrain", str(pipeline), "--add", str(new_rows), "--output",
                     str(tmp_path / "v2"), "--quiet")
    assert second.exit_code == 0, second.stderr

    old, new = (json.loads((tmp_path / v / "manifest.json").read_text())["files"]
                for v in ("v1", "v2"))
    for stem in ("stem.onnx", "stem.int8.onnx"):
        assert old[stem]["sha256"] == new[stem]["sha256"], stem
    for top in ("top.onnx", "top.int8.onnx"):
        assert old[top]["sha256"] != new[top]["sha256"], top

    result = run_cli("diff", str(tmp_path / "v1"), str(tmp_path / "v2"), "--json")
    assert result.exit_code == 0, result.stderr
    forms = result.json()["forms"]
    split = forms["split-int8"]
    assert split["payload_bytes"] < forms["int8"]["payload_bytes"]
    if trainable_layers == 2:
        assert split["payload_share"] < 0.2
    else:
        # Head only: the top is the pooler and classifier, kilobytes; with the manifest,
        # nothing else travels.
        assert new["top.int8.onnx"]["size"] < 1_000_000
        assert split["payload_bytes"] - new["top.int8.onnx"]["size"] < 100_000
    assert "unchanged" == result.json()["files"]["stem.int8.onnx"]["status"]


def test_split_form_runs_on_the_device_and_matches_the_whole(smoke_split):
    composed = Predictor(smoke_split, variant="fp32").classifier
    split = Predictor(smoke_split, variant="split-fp32").classifier
    texts = ["a wonderful surprise", "dull and far too long", "not bad at all"]
    np.testing.assert_allclose(split.logits(texts), composed.logits(texts), atol=1e-4)
    manifest = json.loads((smoke_split / "manifest.json").read_text())
    assert {"onnx_split_fp32", "onnx_split_int8"} <= set(manifest["metrics"])
    assert manifest["gate"]["rules"]["onnx_split_int8.max_accuracy_drop"]["passed"]


@pytest.fixture(scope="module")
def smoke_split(tmp_path_factory):
    folder = tmp_path_factory.mktemp("split")
    pipeline = write_pipeline(folder, {"export": {"split": True}, "quantize": {"fp16": True}})
    result = run_cli("build", str(pipeline), "--output", str(folder / "bundle"), "--quiet")
    assert result.exit_code == 0, result.stderr
    return folder / "bundle"


def test_fp16_model_for_gpu_targets_is_gated_and_runs(smoke_split):
    manifest = json.loads((smoke_split / "manifest.json").read_text())
    assert "onnx_fp16" in manifest["metrics"]
    assert manifest["gate"]["rules"]["onnx_fp16.min_agreement"]["passed"]
    assert manifest["sizes"]["onnx_fp16"] < 0.55 * manifest["sizes"]["onnx_fp32"]
    predictor = Predictor(smoke_split, variant="fp16")
    fp32 = Predictor(smoke_split, variant="fp32").classifier
    texts = ["a wonderful surprise", "dull and far too long"]
    np.testing.assert_allclose(predictor.classifier.logits(texts), fp32.logits(texts), atol=5e-3)
