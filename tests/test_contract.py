"""The contract's less travelled paths: where a bundle goes by default, which cache folder
wins, exit 3 and its traceback switch, the missing build extra, and a fallback that runs
out of segments."""

from __future__ import annotations

import json
import sys

import pytest

import edgefreeze.schema
from edgefreeze.cache import cache_root
from edgefreeze.context import RunContext
from edgefreeze.data import load_data
from edgefreeze.gate import held_out_outputs
from edgefreeze.progress import Reporter
from edgefreeze.publish import destination_for
from edgefreeze.quantize import PROBE_ROWS, sample_feeds
from edgefreeze.quantize.fallback import GatedQuantizer
from edgefreeze.quantize.fusion import Architecture
from edgefreeze.runtime import OnnxModel, TextInputs
from edgefreeze.runtime.forms import SPLIT_INT8
from edgefreeze.schema import CacheSpec, GateSpec, load_pipeline
from tests.conftest import QUICK, SMOKE, TEXT, fp32_held_out, run_cli, write_pipeline
from tests.tiny_text import SHAPE


@pytest.mark.build
def test_without_an_output_a_build_ships_to_the_next_models_version(
    tiny_pipeline, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    pipeline = write_pipeline(tmp_path, {**QUICK, "name": "nameless"}, base=tiny_pipeline)
    result = run_cli("build", str(pipeline), "--quiet", "--json")
    assert result.exit_code == 0, result.stderr
    assert result.json()["bundle"] == "models/nameless/v1"
    assert (tmp_path / "models" / "nameless" / "v1" / "model.int8.onnx").is_file()
    for name in ("v2", "v10", "v3.rejected", "vx"):
        (tmp_path / "models" / "nameless" / name).mkdir()
    loaded = load_pipeline(pipeline)
    assert (
        destination_for(loaded, None, tmp_path / "models")
        == tmp_path / "models" / "nameless" / "v11"
    )


def test_the_pipelines_output_is_beside_it_and_output_overrides_it(tmp_path):
    pipeline = load_pipeline(write_pipeline(tmp_path, {"output": "releases/current"}))
    assert destination_for(pipeline, None, tmp_path / "models") == tmp_path / "releases" / "current"
    assert destination_for(pipeline, tmp_path / "x", tmp_path / "models") == tmp_path / "x"


def test_which_cache_folder_wins(tmp_path, monkeypatch):
    """--cache-dir, then $EDGEFREEZE_CACHE_DIR, then the pipeline's cache.dir (beside the
    pipeline), then $XDG_CACHE_HOME/edgefreeze; off is None whatever is set."""
    settings = CacheSpec(dir="pipeline-cache")
    resolve = (tmp_path / "pipelines").joinpath
    monkeypatch.setenv("EDGEFREEZE_CACHE_DIR", str(tmp_path / "env"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root(tmp_path / "option", settings, resolve) == tmp_path / "option"
    assert cache_root(None, settings, resolve) == tmp_path / "env"
    monkeypatch.delenv("EDGEFREEZE_CACHE_DIR")
    assert cache_root(None, settings, resolve) == tmp_path / "pipelines" / "pipeline-cache"
    assert cache_root(None, CacheSpec(), resolve) == tmp_path / "xdg" / "edgefreeze"
    assert cache_root(tmp_path / "option", settings, resolve, enabled=False) is None
    assert cache_root(None, CacheSpec(enabled=False), resolve) is None


def _explode(path):
    raise RuntimeError("the disk controller caught fire")


def test_an_unexpected_error_is_exit_3_in_one_line_and_its_traceback_on_request(
    tmp_path, monkeypatch
):
    monkeypatch.setattr(edgefreeze.schema, "load_pipeline", _explode)
    result = run_cli("build", str(SMOKE), "--output", str(tmp_path / "b"), "--json")
    assert result.exit_code == 3
    assert result.stderr.strip().splitlines() == [
        "edgefreeze: unexpected error: RuntimeError: the disk controller caught fire "
        "(set EDGEFREEZE_TRACEBACK=1 for the traceback)"
    ]
    assert result.json() == {
        "exit_code": 3,
        "status": "error",
        "message": "RuntimeError: the disk controller caught fire",
    }
    monkeypatch.setenv("EDGEFREEZE_TRACEBACK", "1")
    traced = run_cli("build", str(SMOKE), "--output", str(tmp_path / "b"))
    assert traced.exit_code == 3
    assert "Traceback (most recent call last)" in traced.stderr and "_explode" in traced.stderr


def test_a_missing_build_extra_names_the_package_and_the_fix(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "optuna", None)  # import optuna now fails, as uninstalled
    monkeypatch.delitem(sys.modules, "edgefreeze.recipes.sweep", raising=False)
    result = run_cli("sweep", str(SMOKE), "--output", str(tmp_path / "b"), "--json")
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        "edgefreeze: error: this command needs the build extra "
        "(missing optuna): pip install 'edgefreeze[build]'"
    )
    assert json.loads(result.stdout)["status"] == "error"


def test_a_fallback_that_runs_out_of_segments_keeps_them_all_and_fails(split_build, tmp_path):
    """With no size cap and a gate no int8 model meets, the split top's every segment (its
    head and both layers) ends up fp32, one per attempt, and the last attempt still fails."""
    pipeline = load_pipeline(split_build.pipeline)
    data = load_data(pipeline.spec.data, TEXT, pipeline.resolve)
    bundle = split_build.bundle
    encoder = TextInputs(bundle, pipeline.spec.data.max_length)
    fp32 = [bundle / "stem.onnx", bundle / "top.onnx"]
    reference = held_out_outputs(OnnxModel(fp32), encoder, data.test.inputs, Reporter(True), "fp32")
    impossible = GateSpec(max_metric_drop=0.0, min_agreement=1.0, max_int8_size_share=1.0)
    # Dynamic, as the split graphs always are (the pipeline's static mode is for the
    # composed model).
    settings = pipeline.spec.quantize.model_copy(update={"fuse": False, "mode": "dynamic"})
    quantizer = GatedQuantizer(
        settings=settings,
        architecture=Architecture("bert", SHAPE["num_attention_heads"], SHAPE["hidden_size"]),
        task=TEXT,
        gate=impossible,
        held_out=fp32_held_out(data, reference, encoder),
        ctx=RunContext(Reporter(True)),
        probe=sample_feeds(data.train.inputs, encoder, PROBE_ROWS, seed=0),
    )
    quantized, _ = quantizer.quantize(
        SPLIT_INT8, fp32, [tmp_path / "stem.int8.onnx", tmp_path / "top.int8.onnx"]
    )
    record = quantized.model_dump()
    attempts, top = record["attempts"], record["graphs"]["top.int8.onnx"]
    assert not any(attempt["passed"] for attempt in attempts)
    assert len(attempts) == len(top["segments"]) + 1 == 4
    assert sorted(attempts[-1]["fp32_segments"]) == sorted(top["segments"])
    assert record["graphs"]["stem.int8.onnx"]["fp32_segments"] == []  # the stem stays int8
