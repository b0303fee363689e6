"""Every way to choose what trains: freezing plans, parameter-efficient methods,
discriminative rates, schedules, early stopping, and the gradient-flow check.

Builds run on the tiny checkpoint (MiniLM's tokenizer and six-layer shape, 64 wide): what
trains, what is cached and what is exported does not depend on the weights, and its
small sizes make exact parameter counts easy to read."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
import torch
from safetensors.torch import load_file

from edgefreeze.backbones import load_model
from edgefreeze.cache.features import LiveFeatures
from edgefreeze.context import RunContext
from edgefreeze.data import load_data
from edgefreeze.freeze import PLANS, PlanKind, Selection, make_plan
from edgefreeze.freeze.diagnostics import gradient_flow
from edgefreeze.progress import Reporter
from edgefreeze.schema import DataSpec, FreezeSpec, TrainSpec
from edgefreeze.schema.freeze import ProgressiveSpec, TopKSpec
from edgefreeze.train.loop import Examples, Splits, _lr_factor, top_outputs, train
from tests.conftest import QUICK, TEXT, run_cli, write_pipeline
from tests.tiny_text import SHAPE

CPU = torch.device("cpu")
HIDDEN, INTERMEDIATE = SHAPE["hidden_size"], SHAPE["intermediate_size"]
HEAD = HIDDEN * HIDDEN + HIDDEN + HIDDEN * 2 + 2  # the pooler's dense and a 2-way classifier


def minilm():
    return load_model("builtin:all-MiniLM-L6-v2", TEXT, ["rotten", "fresh"], Path, False, 0)


@pytest.fixture
def quick(tiny_pipeline, tmp_path):
    """The quick tiny pipeline with `changes` (the `replace` sections replaced whole)."""
    base = write_pipeline(tmp_path, QUICK, base=tiny_pipeline, name="quick.yaml")

    def pipeline(folder: Path, changes: dict, replace=("freeze",)) -> Path:
        return write_pipeline(folder, changes, base=base, replace=replace)

    return pipeline


@pytest.fixture
def build(quick):
    """A quick build through the CLI; its manifest (the build must ship)."""

    def built(folder: Path, changes: dict, replace=("freeze",)) -> dict:
        result = run_cli(
            "build", str(quick(folder, changes, replace)), "--output", str(folder / "b"), "--json"
        )
        assert result.exit_code == 0, result.stderr
        return json.loads((folder / "b" / "manifest.json").read_text()) | {"stderr": result.stderr}

    return built


def test_patterns_train_what_the_globs_name(build, tmp_path):
    manifest = build(
        tmp_path, {"freeze": {"plan": "patterns", "train": ["*.encoder.layer.5.attention.*"]}}
    )
    freeze = manifest["training"]["freeze"]
    assert freeze["trainable_layers"] == [5] and freeze["boundary"] == 5
    assert manifest["cache"]["boundary"] == 5  # cached right below what trains
    saved = load_file(str(tmp_path / "b" / "trainable.safetensors"))
    layers = {name for name in saved if ".encoder." in name}
    assert layers and all(".layer.5.attention." in name for name in layers)
    assert any(name.startswith("classifier.") for name in saved)  # the head trains too


def test_a_glob_that_matches_nothing_is_exit_2(quick, tmp_path):
    pipeline = quick(tmp_path, {"freeze": {"plan": "patterns", "train": ["*.lyaer.*"]}})
    result = run_cli("build", str(pipeline), "--output", str(tmp_path / "b"), "--quiet")
    assert (
        result.exit_code == 2 and "freeze.train: '*.lyaer.*' matches no parameter" in result.stderr
    )


def test_progressive_unfreezes_one_layer_at_a_time_above_a_fixed_boundary():
    loaded = minilm()
    plan = make_plan(ProgressiveSpec(plan="progressive", floor=2, every=2), loaded.backbone)
    assert plan.boundary == 4 and plan.cacheable
    stack = loaded.backbone.layer_stack()
    trains = {}
    for epoch in range(1, 7):
        plan.begin_epoch(loaded.model, epoch)
        trains[epoch] = [
            i for i, layer in enumerate(stack) if any(p.requires_grad for p in layer.parameters())
        ]
        assert all(p.requires_grad for p in loaded.model.classifier.parameters())
        assert [layer.training for layer in stack] == [i in trains[epoch] for i in range(6)]
    assert trains == {1: [], 2: [], 3: [5], 4: [5], 5: [4, 5], 6: [4, 5]}


def test_progressive_builds_from_one_cache(build, tmp_path):
    manifest = build(
        tmp_path, {"freeze": {"plan": "progressive", "floor": 2}, "train": {"epochs": 3}}
    )
    cache, splits = manifest["cache"], manifest["data"]["splits"]
    assert cache["boundary"] == 4  # every stage reads the activations cached at the floor
    assert cache["hits"] + cache["misses"] == splits["train"]["rows"] + splits["validation"]["rows"]
    saved = load_file(str(tmp_path / "b" / "trainable.safetensors"))
    assert {name.split(".")[3] for name in saved if ".encoder.layer." in name} == {"4", "5"}


@pytest.mark.parametrize(
    "method, marker, per_layer",
    [
        ("lora", "lora_", 2 * (8 * HIDDEN + HIDDEN * 8)),  # rank 8 on query and value
        ("ia3", "ia3_", HIDDEN + HIDDEN + INTERMEDIATE),  # scales on key, value, output's input
    ],
)
def test_peft_trains_small_weights_and_exports_them_merged(
    build, tmp_path, method, marker, per_layer
):
    """The exported graph has the adapters merged into its weights, and matches the
    unmerged PyTorch model over unseen batch sizes and lengths (the shape check)."""
    manifest = build(tmp_path, {"peft": {"method": method}, "train": {"lr_top": 1e-3}}, replace=())
    saved = load_file(str(tmp_path / "b" / "trainable.safetensors"))
    in_layers = [name for name in saved if ".encoder.layer." in name]
    assert in_layers and all(marker in name for name in in_layers)
    # In the top two layers, and the whole head.
    assert manifest["training"]["freeze"]["trainable_parameters"] == 2 * per_layer + HEAD
    assert manifest["cache"]["boundary"] == 4  # the frozen stem is still cached
    shapes = manifest["shape_check"]["fp32"]
    assert len(shapes["cells"]) == 9 and shapes["max_logit_error"] < 1e-4
    graph = onnx.load(str(tmp_path / "b" / "model.onnx"), load_external_data=False).graph
    assert not any(marker in init.name for init in graph.initializer)  # merged, not carried
    assert manifest["gate"]["passed"]


def test_peft_in_every_layer_says_there_is_nothing_to_cache(build, tmp_path):
    manifest = build(
        tmp_path, {"freeze": {"trainable_layers": 6}, "peft": {"method": "lora"}}, replace=()
    )
    assert manifest["cache"]["enabled"] is False
    assert "no frozen stem to cache; running live" in manifest["cache"]["live_reason"]
    assert "running live" in manifest["stderr"]


class OffPathSpec(FreezeSpec):
    pass


@PLANS.register("off_path")
class OffPath(PlanKind):
    """A broken plan: it trains a module the loss never reaches."""

    config = OffPathSpec

    def select(self, config, backbone) -> Selection:
        backbone.model.unused = torch.nn.Linear(4, 4)
        return Selection(
            boundary=backbone.depth,
            parts={"head": [*backbone.head_modules(), backbone.model.unused]},
        )


def test_the_gradient_flow_check_catches_a_broken_freeze(quick, tmp_path):
    pipeline = quick(tmp_path, {"freeze": {"plan": "off_path"}})
    result = run_cli("inspect", str(pipeline), "--json")
    assert result.exit_code == 1 and "unused.weight" in result.stderr, result.stderr
    assert result.json()["gradient_flow"]["missing"] == ["unused.weight", "unused.bias"]
    result = run_cli("build", str(pipeline), "--output", str(tmp_path / "b"), "--quiet")
    assert result.exit_code == 2 and "received no gradient" in result.stderr
    assert not (tmp_path / "b").exists()


def test_inspect_shows_the_plan_layer_by_layer(tiny_pipeline):
    result = run_cli("inspect", str(tiny_pipeline), "--json")
    assert result.exit_code == 0, result.stderr
    rows = {row["part"]: row for row in result.json()["rows"]}
    assert rows["layer 3"]["state"] == "frozen" and rows["layer 3"]["stem"]
    assert rows["layer 4"]["state"] == "trainable" and not rows["layer 4"]["stem"]
    assert rows["head: classifier"]["learning_rate"] == 1e-3
    assert result.json()["gradient_flow"] == {"ok": True, "missing": [], "stray": []}


def test_gradient_flow_names_a_frozen_parameter_that_learned():
    loaded = minilm()
    plan = make_plan(TopKSpec(trainable_layers=1), loaded.backbone)
    leaked = loaded.model.bert.encoder.layer[0].output.dense.weight
    leaked.requires_grad_(True)
    ids = torch.randint(1000, 2000, (2, 6))
    loaded.model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits.sum().backward()
    flow = gradient_flow(loaded.model, plan.parameters())
    assert flow["stray"] == ["bert.encoder.layer.0.output.dense.weight"] and not flow["ok"]


def test_discriminative_rates_decay_from_the_top():
    loaded = minilm()
    plan = make_plan(TopKSpec(trainable_layers=3), loaded.backbone)
    groups = plan.parameter_groups(loaded.model, {"top": 1e-4, "head": 1e-3}, 0.01, 0.5)
    rates = {group["name"]: group["lr"] for group in groups}
    assert rates == {"top.3": 2.5e-5, "top.4": 5e-5, "top.5": 1e-4, "head": 1e-3}


def test_schedules_after_warmup():
    assert _lr_factor(0, 10, 100, "linear") == 0.1 and _lr_factor(9, 10, 100, "cosine") == 1.0
    assert _lr_factor(55, 10, 100, "constant") == 1.0
    assert _lr_factor(55, 10, 100, "cosine") == pytest.approx(0.5)
    assert _lr_factor(55, 10, 100, "linear") == pytest.approx(0.5)
    assert _lr_factor(100, 10, 100, "cosine") == pytest.approx(0.0)


def test_early_stopping_keeps_the_best_epoch():
    data = load_data(
        DataSpec(
            source="builtin:rotten-tomatoes",
            sample_rows=240,
            max_length=32,
            split={"validation": 0.3},
        ),
        TEXT,
        Path,
    )
    loaded = load_model("builtin:all-MiniLM-L6-v2", TEXT, data.label_names, Path, False, 0)
    plan = make_plan(TopKSpec(trainable_layers=1), loaded.backbone)
    features = {
        name: LiveFeatures(TEXT.encode(loaded.processor, split.inputs, 32), loaded.backbone, plan)
        for name, split in (("train", data.train), ("validation", data.validation))
    }
    spec = TrainSpec(
        epochs=6, batch_size=16, lr_top=3e-4, lr_head=3e-3, early_stopping=2, seed=0, device="cpu"
    )
    splits = Splits(
        Examples(features["train"], data.train.targets),
        Examples(features["validation"], data.validation.targets),
    )
    result = train(loaded.backbone, plan, TEXT, splits, spec, RunContext(Reporter(True)))
    scores = [epoch.validation["accuracy"] for epoch in result.epochs]
    assert result.best_epoch == 1 + scores.index(max(scores))
    outputs = top_outputs(loaded.backbone, plan, TEXT, features["validation"], 16, CPU)
    kept = TEXT.metrics(outputs, data.validation.targets, outputs)["accuracy"]
    assert kept == max(scores)  # the best epoch's weights, not the last's
    with pytest.raises(Exception, match="needs a validation split"):
        train(
            loaded.backbone,
            plan,
            TEXT,
            Splits(Examples(features["train"], data.train.targets)),
            spec,
            RunContext(Reporter(True)),
        )


def test_adapters_and_virtual_tokens_export_as_part_of_the_graph(build, tmp_path):
    """Bottleneck adapters and prefix tokens are not merged: they are ops in the graph, in
    the whole model and in the split top, and both match PyTorch over the shape grid."""
    for method in ("adapter", "prefix"):
        folder = tmp_path / method
        folder.mkdir()
        manifest = build(
            folder,
            {"peft": {"method": method}, "export": {"split": True}, "train": {"lr_top": 1e-3}},
            replace=(),
        )
        for form in ("fp32", "split-fp32"):
            assert manifest["shape_check"][form]["max_logit_error"] < 1e-4, (method, form)
        saved = load_file(str(folder / "b" / "trainable.safetensors"))
        added = [name for name in saved if not name.startswith(("bert.pooler", "classifier"))]
        assert added and manifest["cache"]["boundary"] == 4, (method, added)
        assert manifest["gate"]["passed"]


def test_virtual_tokens_see_the_same_text_alone_or_padded_in_a_batch():
    from edgefreeze.schema.peft import PrefixSpec

    loaded = minilm()
    plan = make_plan(TopKSpec(trainable_layers=2), loaded.backbone, PrefixSpec(method="prefix"))
    with torch.no_grad():  # tokens as large as training makes them, so that they matter
        plan.parts["top"][0].normal_(0.0, 1.0)
    texts = ["a fine film", "a long, winding and in the end rather moving film about loss"]
    alone = TEXT.encode(loaded.processor, texts[:1], 32)
    both = TEXT.encode(loaded.processor, texts, 32)
    model = loaded.model.eval()
    with torch.no_grad():
        one = model(**{k: torch.from_numpy(v) for k, v in alone.batch([0]).items()}).logits
        padded = model(**{k: torch.from_numpy(v) for k, v in both.batch([0, 1]).items()}).logits
    torch.testing.assert_close(padded[0], one[0], atol=1e-5, rtol=1e-5)


def test_cached_features_advance_to_a_higher_boundary_exactly():
    from edgefreeze.cache.features import CachedFeatures, advance_features

    loaded = minilm()
    texts = ["a fine film", "dull", "the cast is wonderful but the script never finds it"]
    encoded = TEXT.encode(loaded.processor, texts, 32)
    low = make_plan(TopKSpec(trainable_layers=3), loaded.backbone)
    high = low.frozen_below(4, 1, "test")
    stem = LiveFeatures(encoded, loaded.backbone, low)
    arrays = [stem.batch([i], CPU)[0][0].numpy() for i in range(len(texts))]
    advanced = advance_features(CachedFeatures(arrays), loaded.backbone, low, high, CPU)
    direct = LiveFeatures(encoded, loaded.backbone, high)
    for i in range(len(texts)):
        torch.testing.assert_close(
            advanced.batch([i], CPU)[0], direct.batch([i], CPU)[0], atol=1e-5, rtol=1e-5
        )
    assert high.trainable_layers == (4, 5) and high.moves[0]["boundary"] == 4
    assert not any(p.requires_grad for p in loaded.model.bert.encoder.layer[3].parameters())


def test_auto_freezes_settled_layers_and_says_why(build, tmp_path):
    """A threshold no layer can stay above: after the second epoch the lowest training
    layer is frozen, and the rest of training reads features from the new boundary."""
    manifest = build(
        tmp_path,
        {
            "freeze": {"plan": "auto", "trainable_layers": 3, "threshold": 9.0},
            "train": {"epochs": 3},
        },
    )
    freeze = manifest["training"]["freeze"]
    assert [move["epoch"] for move in freeze["moves"]] == [2]
    assert freeze["boundary"] == 4 and freeze["trainable_layers"] == [4, 5]
    assert "gradient norm changed" in freeze["moves"][0]["why"]
    assert manifest["cache"]["boundary"] == 3  # cached where training started
    saved = load_file(str(tmp_path / "b" / "trainable.safetensors"))
    assert any(".encoder.layer.3." in name for name in saved)  # trained before it froze
    assert "froze layers below 4" in manifest["stderr"]
