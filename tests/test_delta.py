"""Delta updates: the stem and the top as two graphs; a retrain changes only the top.
On the tiny checkpoint: which bytes change does not depend on what the model learned."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from edgefreeze.runtime import Predictor
from edgefreeze.runtime.session import providers_for
from tests.conftest import run_cli, write_pipeline

NEW_ROWS = "text,category\n" + "".join(
    f'"new review {i}, {"a delight" if i % 2 else "a chore"}",{"fresh" if i % 2 else "rotten"}\n'
    for i in range(30)
)


def _retrain(pipeline, first, tmp_path):
    """Retrain `pipeline` on 30 new rows; compare the bundle with `first`."""
    new_rows = tmp_path / "new.csv"
    new_rows.write_text(NEW_ROWS)
    second = run_cli(
        "retrain",
        str(pipeline),
        "--add",
        str(new_rows),
        "--output",
        str(tmp_path / "v2"),
        "--quiet",
        "--json",
    )
    assert second.exit_code == 0, second.stderr
    # Each int8 form quantized once: the gate let the first attempt through, so the test
    # measures the retrain, not the fallback.
    quantized = json.loads((tmp_path / "v2" / "manifest.json").read_text())["quantize"]
    assert {
        form: len(record["attempts"]) for form, record in quantized.items() if "int8" in form
    } == {"int8": 1, "split-int8": 1}
    old, new = (
        json.loads((v / "manifest.json").read_text())["files"] for v in (first, tmp_path / "v2")
    )
    for stem in ("stem.onnx", "stem.int8.onnx"):
        assert old[stem]["sha256"] == new[stem]["sha256"], stem
    for top in ("top.onnx", "top.int8.onnx"):
        assert old[top]["sha256"] != new[top]["sha256"], top
    result = run_cli("diff", str(first), str(tmp_path / "v2"), "--json")
    assert result.exit_code == 0, result.stderr
    assert result.json()["files"]["stem.int8.onnx"]["status"] == "unchanged"
    return result.json()["forms"], new


def test_retrain_changes_only_the_top(split_build, tmp_path):
    forms, _ = _retrain(split_build.pipeline, split_build.bundle, tmp_path)
    assert forms["split-int8"]["payload_bytes"] < forms["int8"]["payload_bytes"]
    assert forms["split-int8"]["payload_share"] < 0.2


@pytest.mark.build
def test_head_only_retrain_ships_kilobytes(tiny_pipeline, tmp_path):
    pipeline = write_pipeline(
        tmp_path, {"export": {"split": True}, "freeze": {"trainable_layers": 0}}, base=tiny_pipeline
    )
    first = run_cli("build", str(pipeline), "--output", str(tmp_path / "v1"), "--quiet")
    assert first.exit_code == 0, first.stderr
    forms, new = _retrain(pipeline, tmp_path / "v1", tmp_path)
    split = forms["split-int8"]
    # Head only: the top is the pooler and classifier, kilobytes; with the manifest,
    # nothing else travels.
    assert new["top.int8.onnx"]["size"] < 1_000_000
    assert split["payload_bytes"] - new["top.int8.onnx"]["size"] < 100_000


def test_split_form_runs_on_the_device_and_matches_the_whole(split_build):
    bundle = split_build.bundle
    composed = Predictor(bundle, "fp32")
    split = Predictor(bundle, "split-fp32")
    texts = ["a wonderful surprise", "dull and far too long", "not bad at all"]
    for text in texts:
        np.testing.assert_allclose(split.outputs(text), composed.outputs(text), atol=1e-4)
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert {"split-fp32", "split-int8"} <= set(manifest["metrics"])
    assert manifest["gate"]["rules"]["split-int8.max_metric_drop"]["passed"]


def test_split_graphs_do_not_record_where_the_code_lives(split_build):
    """torch's dynamo exporter writes each node's Python stack (file paths and line numbers,
    site-packages included) into the graph: stripped, the stem's bytes do not depend on
    the checkout, the virtualenv or the code's line numbers, so a delta update from
    another machine still finds the device's stem unchanged."""
    for name in ("stem.onnx", "top.onnx", "stem.int8.onnx", "top.int8.onnx"):
        path = split_build.bundle / name
        model = onnx.load(str(path))
        assert not [p.key for n in model.graph.node for p in n.metadata_props], name
        data = path.read_bytes()
        assert b"site-packages" not in data and str(Path.cwd()).encode() not in data, name


def test_fp16_model_for_gpu_targets_is_gated_and_runs(split_build):
    bundle = split_build.bundle
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert "fp16" in manifest["metrics"]
    assert manifest["gate"]["rules"]["fp16.min_agreement"]["passed"]
    assert manifest["sizes"]["fp16"] < 0.55 * manifest["sizes"]["fp32"]
    # The gate runs the fp16 form where a GPU target would (CUDA, when ONNX Runtime has
    # it) and says where; every other form on the CPU.
    providers = manifest["runtime"]["providers"]
    assert providers["fp16"] in providers_for("fp16")
    assert {form: p for form, p in providers.items() if form != "fp16"} == dict.fromkeys(
        set(manifest["metrics"]) - {"pytorch", "fp16"}, "CPUExecutionProvider"
    )
    fp16, fp32 = Predictor(bundle, "fp16"), Predictor(bundle, "fp32")
    # Half precision keeps 11 bits: through six layers of the tiny model, whose weights
    # are drawn wide, logits near 2 move by up to 6e-3 (against fp32 rounding's 1e-6).
    for text in ["a wonderful surprise", "dull and far too long"]:
        np.testing.assert_allclose(fp16.outputs(text), fp32.outputs(text), atol=1e-2)
