"""retrain --from BUNDLE: training starts from the bundle's trained top (on the tiny
checkpoint: what is loaded and checked does not depend on what the model learned)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file

from edgefreeze.backbones import load_model
from edgefreeze.freeze import PlannedModel
from edgefreeze.schema.freeze import TopKSpec
from edgefreeze.train.warm_start import load_trainable
from tests.conftest import TEXT, run_cli, write_pipeline


def test_bundle_weights_are_loaded_exactly(tiny, tiny_checkpoint):
    bundle = tiny.bundle
    saved = load_file(str(bundle / "trainable.safetensors"))
    loaded = load_model(str(tiny_checkpoint), TEXT, ["rotten", "fresh"], Path, False, seed=99)
    planned = PlannedModel.of(loaded, TopKSpec(trainable_layers=2), None, seed=0)
    before = loaded.model.classifier.weight.detach().clone()
    load_trainable(planned, TEXT.name, bundle, ["rotten", "fresh"])
    state = dict(loaded.model.named_parameters())
    assert set(saved) == {n for n, p in state.items() if p.requires_grad}
    for name, tensor in saved.items():
        assert torch.equal(state[name].detach(), tensor), name
    assert not torch.equal(before, loaded.model.classifier.weight)


def test_retrain_from_a_bundle_with_fewer_epochs(tiny, tmp_path):
    bundle = tiny.bundle
    new_rows = tmp_path / "new.csv"
    new_rows.write_text("text,category\n" + "fresh and funny,fresh\nstale and dull,rotten\n" * 5)
    result = run_cli(
        "retrain",
        str(tiny.pipeline),
        "--add",
        str(new_rows),
        "--from",
        str(bundle),
        "--epochs",
        "1",
        "--output",
        str(tmp_path / "v2"),
        "--quiet",
        "--json",
    )
    assert result.exit_code == 0, result.stderr
    manifest = json.loads((tmp_path / "v2" / "manifest.json").read_text())
    assert manifest["training"]["warm_start"]["bundle"] == str(bundle)
    assert len(manifest["training"]["epochs"]) == 1


def test_retrain_from_an_incompatible_bundle_is_refused(tiny, tmp_path):
    bundle = tiny.bundle
    pipeline = write_pipeline(tmp_path, {"freeze": {"trainable_layers": 1}}, base=tiny.pipeline)
    new_rows = tmp_path / "new.csv"
    new_rows.write_text("text,category\nfresh and funny,fresh\n")
    result = run_cli(
        "retrain",
        str(pipeline),
        "--add",
        str(new_rows),
        "--from",
        str(bundle),
        "--output",
        str(tmp_path / "v2"),
        "--quiet",
    )
    assert result.exit_code == 2
    assert "top_k (trainable_layers=2)" in result.stderr, result.stderr
    assert "top_k (trainable_layers=1)" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "v2").exists()


def test_retrain_from_a_folder_that_is_not_a_bundle_names_the_option(tmp_path):
    new_rows = tmp_path / "new.csv"
    new_rows.write_text("text,category\nfresh and funny,fresh\n")
    result = run_cli(
        "retrain",
        str(write_pipeline(tmp_path, {})),
        "--add",
        str(new_rows),
        "--from",
        str(tmp_path),
        "--output",
        str(tmp_path / "v2"),
        "--quiet",
    )
    assert result.exit_code == 2
    assert result.stderr.startswith("edgefreeze: error: --from: ")
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "v2").exists()


def test_retrain_from_a_bundle_of_other_weights_is_refused(tiny, tmp_path):
    """Same architecture and shapes, other frozen weights (a hub model of the same shape,
    say): its trained top would sit on the wrong stem."""
    copy = tmp_path / "other"
    shutil.copytree(tiny.bundle, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["model"]["frozen_sha256"] = "0" * 64
    (copy / "manifest.json").write_text(json.dumps(manifest))
    new_rows = tmp_path / "new.csv"
    new_rows.write_text("text,category\nfresh and funny,fresh\n")
    result = run_cli(
        "retrain",
        str(tiny.pipeline),
        "--add",
        str(new_rows),
        "--from",
        str(copy),
        "--output",
        str(tmp_path / "v2"),
        "--quiet",
    )
    assert result.exit_code == 2 and "another frozen stem" in result.stderr, result.stderr
    assert not (tmp_path / "v2").exists()
