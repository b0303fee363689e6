"""The manifest schema: what a build writes reads back as itself, and bundles written
before `schema_version` still load (data/manifest-v1.json: edgefreeze 0.1's manifest of
the smoke pipeline with export.split and quantize.fp16)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from edgefreeze.errors import BundleError
from edgefreeze.publish.staging import file_table
from edgefreeze.runtime import Manifest, Predictor
from edgefreeze.runtime.forms import FORMS

V1 = Path(__file__).parent / "data" / "manifest-v1.json"


def test_a_written_manifest_reads_back_unchanged(smoke_build):
    bundle, _ = smoke_build
    text = (bundle / "manifest.json").read_text()
    manifest = Manifest.load(bundle / "manifest.json")
    assert manifest.to_json() == text
    assert set(manifest.sizes) <= set(FORMS) and set(manifest.quantize) <= set(FORMS)


def test_a_version_1_manifest_is_upgraded():
    old = json.loads(V1.read_text())
    manifest = Manifest.parse(old, V1)
    assert manifest.schema_version == 2 and manifest.task.name == "text-classification"
    assert manifest.metrics["int8"] == old["metrics"]["onnx_int8"]
    assert manifest.metrics["split-int8"] == old["metrics"]["onnx_split_int8"]
    assert manifest.sizes == {
        "fp32": old["sizes"]["onnx_fp32"],
        "int8": old["sizes"]["onnx_int8"],
        "split-fp32": old["sizes"]["onnx_split_fp32"],
        "split-int8": old["sizes"]["onnx_split_int8"],
        "fp16": old["sizes"]["onnx_fp16"],
    }
    assert manifest.quantize["fp16"].graphs["model.fp16.onnx"] == {"keep_io_types": True}
    assert manifest.export["split-fp32"].boundary == 4
    rule = manifest.gate.rules["int8.max_metric_drop"]
    assert rule.measured == old["gate"]["rules"]["onnx_int8.max_accuracy_drop"]["measured"]
    freeze = manifest.training.freeze
    assert freeze.settings == {"plan": "top_k", "trainable_layers": 2}
    assert freeze.boundary == 4 and freeze.trainable_layers == [4, 5]
    assert [e.validation["accuracy"] for e in manifest.training.epochs] == [
        e["val_accuracy"] for e in old["training"]["epochs"]
    ]
    attempt = manifest.quantize["int8"].attempts[0]
    assert attempt.metrics["agreement"] == old["quantize"]["onnx_int8"]["attempts"][0]["agreement"]
    assert manifest.model.frozen_sha256 is None  # version 1 did not record it


def test_a_version_1_manifest_without_split_export_is_upgraded_without_one():
    """A bundle built without export.split recorded only `composed`: it has no stem and
    top, so it gets no split-fp32 export record either."""
    old = json.loads(V1.read_text())
    del old["export"]["split"]
    manifest = Manifest.parse(old, V1)
    assert set(manifest.export) == {"fp32"}
    assert manifest.export["fp32"].exporter == "optimum.exporters.onnx"


def test_a_version_1_bundle_runs_on_todays_runtime(split_build, tmp_path):
    """A device that updates edgefreeze keeps running the bundle it has, every form."""
    bundle = tmp_path / "old"
    shutil.copytree(split_build.bundle, bundle)
    old = json.loads(V1.read_text())
    old["files"] = {name: record.model_dump() for name, record in file_table(bundle).items()}
    (bundle / "manifest.json").write_text(json.dumps(old))
    texts = ["a wonderful surprise", "dull and far too long"]
    for form in FORMS:
        assert Predictor(bundle, form).predict(texts) == Predictor(
            split_build.bundle, form
        ).predict(texts), form


def test_a_truncated_version_1_manifest_names_the_missing_key(tmp_path):
    old = json.loads(V1.read_text())
    del old["gate"]
    with pytest.raises(BundleError, match="'gate'.*rebuild the bundle with `edgefreeze build`"):
        Manifest.parse(old, tmp_path / "manifest.json")
