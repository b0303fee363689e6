"""A new kind touches one place: a freezing plan and a task, each defined and registered in
this file alone, build, gate and ship through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from pydantic import Field
from safetensors.torch import load_file

from edgefreeze.backbones import load_model
from edgefreeze.errors import ConfigError
from edgefreeze.freeze import PLANS, PlanKind, Selection, make_plan
from edgefreeze.runtime import Predictor
from edgefreeze.runtime.manifest import TaskRecord
from edgefreeze.schema import FreezeSpec
from edgefreeze.tasks import register_task
from edgefreeze.tasks.text_classification import TextClassification
from tests.conftest import QUICK, SMOKE, TEXT, run_cli, write_pipeline
from tests.tiny_text import SHAPE


class NormsOnlySpec(FreezeSpec):
    layers: int = Field(2, ge=1, description="top layers whose LayerNorms train")


@PLANS.register("norms_only")
class NormsOnly(PlanKind):
    """Train only the LayerNorms of the top layers, and the head."""

    config = NormsOnlySpec

    def select(self, config: NormsOnlySpec, backbone) -> Selection:
        boundary = backbone.depth - config.layers
        norms = [
            module
            for layer in backbone.layer_stack()[boundary:]
            for module in layer.modules()
            if isinstance(module, torch.nn.LayerNorm)
        ]
        return Selection(boundary=boundary, parts={"top": norms, "head": backbone.head_modules()})


@PLANS.register("leaky")
class Leaky(PlanKind):
    """A broken plan: it trains layer 0, below its cache boundary."""

    config = FreezeSpec

    def select(self, config: FreezeSpec, backbone) -> Selection:
        return Selection(
            boundary=backbone.depth,
            parts={"top": [backbone.layer_stack()[0]], "head": backbone.head_modules()},
        )


@register_task
class TextLength(TextClassification):
    """Is a review long or short? The label comes from the text itself, and the gate
    watches macro-F1 (the classes are unbalanced)."""

    name = "text-length"
    gate_metric = "macro_f1"

    def example(self, row, input_column, target_column):
        text, _ = super().example(row, input_column, target_column)
        return text, "long" if len(text.split()) > 20 else "short"


@register_task
class MisspeltRecord(TextClassification):
    """A task whose manifest record misspells a key."""

    name = "misspelt-record"

    def record(self) -> TaskRecord:
        return TaskRecord(
            name=self.name, inputs=self.inputs, outputs=self.outputs, gate_metrc=self.gate_metric
        )


def norms_only(tmp_path, layers: int, base):
    """A pipeline with the plan: its `freeze:` replaces the base pipeline's (whose
    trainable_layers is top_k's key, unknown to this plan)."""
    return write_pipeline(
        tmp_path,
        {**QUICK, "freeze": {"plan": "norms_only", "layers": layers}},
        replace=("freeze",),
        base=base,
    )


@pytest.mark.build
def test_a_plan_registered_here_builds(tiny_pipeline, tmp_path):
    pipeline = norms_only(tmp_path, 2, tiny_pipeline)
    result = run_cli("build", str(pipeline), "--output", str(tmp_path / "b"), "--quiet", "--json")
    assert result.exit_code == 0, result.stderr
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    freeze = manifest["training"]["freeze"]
    assert freeze["plan"] == "norms_only" and freeze["settings"] == {
        "plan": "norms_only",
        "layers": 2,
    }
    assert freeze["boundary"] == 4 and manifest["cache"]["boundary"] == 4
    saved = load_file(str(tmp_path / "b" / "trainable.safetensors"))
    in_layers = {name for name in saved if ".encoder.layer." in name}
    assert in_layers and all("LayerNorm" in name for name in in_layers)
    assert {name.split(".encoder.layer.")[1].split(".")[0] for name in in_layers} == {"4", "5"}
    assert freeze["trainable_parameters"] == sum(t.numel() for t in saved.values())
    # Two LayerNorms (weight and bias) in each of two layers, the pooler and classifier.
    hidden = SHAPE["hidden_size"]
    assert (
        freeze["trainable_parameters"]
        == 2 * 2 * 2 * hidden + hidden * hidden + hidden + hidden * 2 + 2
    )
    assert manifest["gate"]["passed"]


def test_a_misspelt_record_key_fails_at_the_end_of_its_own_stage(tmp_path):
    """Not after training, export and quantization, when the manifest is assembled: the
    task's record is made in the data stage, and the build stops there, naming the stage
    and both keys."""
    pipeline = write_pipeline(tmp_path, {"task": "misspelt-record"})
    result = run_cli("build", str(pipeline), "--output", str(tmp_path / "b"))
    assert result.exit_code == 3
    stages = [line for line in result.stderr.splitlines() if line.startswith("» ")]
    assert stages == ["» data"]
    assert result.stderr.splitlines()[-1] == (
        "edgefreeze: error: the data stage's record does not fit the manifest's schema: "
        "TaskRecord.gate_metric: Field required; TaskRecord.gate_metrc: Extra inputs are not "
        "permitted (a bug in edgefreeze or in a registered task or plan)"
    )
    assert not (tmp_path / "b").exists()


def line_of(path: Path, start: str) -> int:
    """The number of the first line of `path` that starts with `start` (after indent)."""
    lines = path.read_text().splitlines()
    return 1 + next(i for i, line in enumerate(lines) if line.strip().startswith(start))


def test_a_plan_settings_error_names_its_key(tmp_path):
    pipeline = norms_only(tmp_path, 0, SMOKE)
    result = run_cli("build", str(pipeline), "--output", str(tmp_path / "b"), "--quiet")
    assert result.exit_code == 2
    assert result.stderr == (
        f"edgefreeze: error: {pipeline}:{line_of(pipeline, 'layers:')}: "
        "freeze.layers: Input should be greater than or equal to 1\n"
    )
    other_plans_key = write_pipeline(tmp_path, {"freeze": {"plan": "norms_only"}})
    result = run_cli("build", str(other_plans_key), "--output", str(tmp_path / "b"), "--quiet")
    assert result.exit_code == 2  # trainable_layers is top_k's, not this plan's
    assert result.stderr == (
        f"edgefreeze: error: {other_plans_key}:"
        f"{line_of(other_plans_key, 'trainable_layers:')}: "
        "freeze.trainable_layers: unknown key\n"
    )
    unknown = write_pipeline(tmp_path, {"freeze": {"plan": "bottom_up"}})
    result = run_cli("build", str(unknown), "--output", str(tmp_path / "b"), "--quiet")
    assert result.exit_code == 2 and "unknown freezing plan 'bottom_up'" in result.stderr
    assert "norms_only" in result.stderr and "top_k" in result.stderr  # the known ones


def test_a_plan_that_trains_the_cached_stem_is_refused():
    loaded = load_model("builtin:all-MiniLM-L6-v2", TEXT, ["a", "b"], Path, False, 0)
    with pytest.raises(ConfigError, match="trains parameters below its cache boundary"):
        make_plan(FreezeSpec(plan="leaky"), loaded.backbone)


@pytest.mark.build
def test_a_task_registered_here_builds_and_runs_on_the_device(tiny_pipeline, tmp_path):
    pipeline = write_pipeline(tmp_path, {**QUICK, "task": "text-length"}, base=tiny_pipeline)
    result = run_cli("build", str(pipeline), "--output", str(tmp_path / "b"), "--quiet", "--json")
    assert result.exit_code == 0, result.stderr
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert manifest["task"] == {
        "name": "text-length",
        "inputs": "text",
        "outputs": "label",
        "gate_metric": "macro_f1",
    }
    assert manifest["data"]["label_names"] == ["long", "short"]
    rule = manifest["gate"]["rules"]["int8.max_metric_drop"]
    drop = manifest["metrics"]["pytorch"]["macro_f1"] - manifest["metrics"]["int8"]["macro_f1"]
    assert rule["measured"] == drop and "macro_f1" in rule["what"]
    prediction = Predictor(tmp_path / "b").predict(["short and sweet"])[0]
    assert set(prediction.probabilities) == {"long", "short"}
