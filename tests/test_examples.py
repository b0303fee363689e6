"""The example pipelines in examples/, which the README's recipes are: each builds to a
shipped bundle from the data beside it. The recipes a user copies (a CSV, a CoNLL file)
build exactly as written; the others build on a slice of rows with one epoch, with the
gate loosened to fit the few held-out rows such a slice leaves."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from seqeval.metrics import f1_score

from edgefreeze.data import load_data
from edgefreeze.runtime import Predictor
from edgefreeze.runtime.manifest import Manifest
from edgefreeze.runtime.outputs import entity_runs
from edgefreeze.schema import load_pipeline
from edgefreeze.tasks import task_for
from tests.conftest import chromium_binary, run_cli, write_pipeline
from tests.digit_images import tiny_image_checkpoint

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
SLICE = {
    "data": {"sample_rows": 240},
    "train": {"epochs": 1},
    "gate": {"max_metric_drop": 0.1, "min_agreement": 0.85},  # 48 held-out rows: 2.1 pt each
}

pytestmark = pytest.mark.build


@pytest.fixture
def examples(tmp_path) -> Path:
    """A copy of examples/: builds write nothing into the checkout."""
    return shutil.copytree(EXAMPLES, tmp_path / "examples")


def build(command: str, pipeline: Path, output: Path, *extra: str) -> dict:
    result = run_cli(command, str(pipeline), "--output", str(output), "--quiet", "--json", *extra)
    assert result.exit_code == 0, result.stderr
    return result.json()


def spec_of(pipeline: Path) -> dict:
    return load_pipeline(pipeline).spec.model_dump(mode="json")


def test_the_csv_recipe_is_what_init_writes_and_ships_as_written(examples, tmp_path):
    written = tmp_path / "written.yaml"
    result = run_cli("init", str(examples / "reviews.csv"), "--output", str(written))
    assert result.exit_code == 0, result.stderr
    recipe = spec_of(examples / "reviews.yaml")
    assert spec_of(written) == {
        **recipe,
        "data": {**recipe["data"], "source": "examples/reviews.csv"},
    }

    summary = build("build", written, tmp_path / "bundle")  # as the README's recipe does
    assert summary["status"] == "shipped" and summary["gate"]["passed"]
    assert summary["metrics"]["int8"]["accuracy"] > 0.7  # 58 % is the larger class
    texts = ["a moving, funny, tender film", "dull, and far too long"]
    predictions = Predictor(tmp_path / "bundle").predict(texts)
    assert predictions[0].label == "positive"
    # The JavaScript example reads the bundle as the Python runtime does.
    in_node = node_predictions(tmp_path / "bundle", texts, "classify.mjs")
    assert [p["label"] for p in in_node] == [p.label for p in predictions]
    for theirs, ours in zip(in_node, predictions):
        assert theirs["probabilities"] == pytest.approx(ours.probabilities, abs=1e-6)


def test_the_conll_recipe_ships_a_tagger_that_reads_as_the_gate_did(examples, tmp_path):
    pipeline, bundle, cache = examples / "films-ner.yaml", tmp_path / "bundle", tmp_path / "cache"
    summary = build("build", pipeline, bundle, "--cache-dir", str(cache))
    manifest = Manifest.load(bundle / "manifest.json")
    assert manifest.task.name == "token-classification" and manifest.gate.passed
    int8 = summary["metrics"]["int8"]
    assert int8["entity_f1"] > 0.15  # tagging everything O scores 0

    # The device's own tags, word by word, give the gate's entity F1 again.
    loaded = load_pipeline(pipeline)
    test = load_data(loaded.spec.data, task_for(loaded.spec.task), loaded.resolve).test
    names = manifest.data.label_names
    predictions = Predictor(bundle).predict(test.inputs)
    truth = [[names[i] for i in row[: len(p.tags)]] for row, p in zip(test.targets, predictions)]
    assert f1_score(truth, [p.tags for p in predictions]) == pytest.approx(
        int8["entity_f1"], abs=1e-12
    )

    # A raw text: split into words on the device, entities given as character offsets.
    text = "I loved The Dark Knight, and Shrek 2 even more."
    tagging = json.loads(run_cli("predict", str(bundle), "--json", text).stdout)
    assert len(tagging["tags"]) == 12 and tagging["words_unread"] == 0
    assert len(tagging["entities"]) == len(entity_runs(tagging["tags"])), tagging
    for entity in tagging["entities"]:
        assert entity["type"] == "FILM" and text[entity["start"] : entity["end"]] == entity["text"]
    # A word the tokenizer maps to no token (a soft hyphen) gets O and moves no tag.
    odd, plain = Predictor(bundle).predict(
        [["The", "\xad", "Dark", "Knight", "opened"], ["The", "Dark", "Knight", "opened"]]
    )
    assert odd.tags[1] == "O" and odd.tags[:1] + odd.tags[2:] == plain.tags

    # verify-target reads the tags as the gate did (this machine's Python as the target).
    checked = run_cli(
        "verify-target", str(bundle), str(pipeline), "--python", sys.executable, "--rows", "40"
    )
    assert checked.exit_code == 0, checked.stderr
    target = Manifest.load(bundle / "manifest.json").targets[0]
    assert target.metrics["agreement"] == 1.0 and target.passed

    # In Node with transformers.js: the same token ids, tags, entities and offsets on the
    # held-out sentences, and on raw texts split into words there (offsets in UTF-16 units,
    # as JavaScript indexes strings: an emoji is two).
    node = run_cli("verify-target", str(bundle), str(pipeline), "--node", "--rows", "40", "--json")
    assert node.exit_code == 0, node.stderr
    assert (node.json()["token_ids_differ"], node.json()["predictions_differ"]) == (0, 0)
    texts = ["🎬 " + " ".join(words) for words in test.inputs[:20]]
    texts += ["\ufeffThe Banger Sisters\x85opened", "Amélie\x1cand Shrek 2\u2028were\xa0fun"]
    ours = Predictor(bundle).predict(texts)
    assert sum(len(tagging.entities) for tagging in ours) > 0
    for text, theirs, mine in zip(texts, node_predictions(bundle, texts), ours):
        assert theirs["tags"] == mine.tags
        units = text.encode("utf-16-le")
        assert [
            (e["type"], e["text"], units[2 * e["start"] : 2 * e["end"]].decode("utf-16-le"))
            for e in theirs["entities"]
        ] == [(e.type, e.text, text[e.start : e.end]) for e in mine.entities]

    # Its self-check (word lists) passes here.
    assert run_cli("verify", str(bundle)).exit_code == 0

    # inspect's gradient-flow check runs on the tagger's aligned labels.
    inspected = run_cli("inspect", str(pipeline), "--json")
    assert inspected.exit_code == 0, inspected.stderr
    assert not inspected.json()["gradient_flow"]["missing"]

    # Every sentence's token activations are in the cache, one entry each.
    stored = run_cli("cache", "stats", "--cache-dir", str(cache), "--json")
    rows = sum(manifest.data.splits[s].rows for s in ("train", "validation"))
    assert manifest.cache.misses == rows and stored.json()["entries"] == rows


def test_the_image_recipe_is_what_init_writes_and_ships(examples, tmp_path):
    """No image model installs as a package, so the recipe names a hub model; here init
    names a tiny random ResNet instead (everything else as the recipe), and the gate is
    loosened for a model that has learnt nothing."""
    checkpoint = tiny_image_checkpoint("resnet", tmp_path / "resnet")
    written = examples / "written.yaml"
    result = run_cli(
        "init", str(examples / "digits"), "-o", str(written), "--model", str(checkpoint)
    )
    assert result.exit_code == 0, result.stderr
    recipe = spec_of(examples / "digits.yaml")
    assert spec_of(written) == {**recipe, "model": str(checkpoint)}

    loosened = write_pipeline(
        examples,
        {"gate": {"max_metric_drop": 0.2, "min_agreement": 0.7, "max_int8_size_share": 1.0}},
        base=written,
        name="loosened.yaml",
    )
    summary = build("build", loosened, tmp_path / "bundle")
    assert summary["status"] == "shipped"
    labels = json.loads((tmp_path / "bundle" / "labels.json").read_text())["id2label"]
    assert sorted(labels.values()) == [str(digit) for digit in range(10)]
    image = next((examples / "digits" / "7").iterdir())
    prediction = Predictor(tmp_path / "bundle").predict([image])[0]
    assert set(prediction.probabilities) == set(labels.values())
    assert sum(prediction.probabilities.values()) == pytest.approx(1.0, abs=1e-5)
    # Its self-check carries its images and passes here.
    verified = run_cli("verify", str(tmp_path / "bundle"), "--json")
    assert verified.exit_code == 0, verified.stderr
    assert len(list((tmp_path / "bundle" / "selfcheck").iterdir())) == 8

    # In Node: the image resized as Pillow resizes it (its filter, its fixed-point sums),
    # so the int8 model's outputs are the Python runtime's to the bit.
    node = run_cli(
        "verify-target", str(tmp_path / "bundle"), str(loosened), "--node", "--json"
    )  # fmt: skip
    assert node.exit_code == 0, node.stderr
    assert node.json()["predictions_differ"] == 0 and node.json()["token_ids_differ"] is None
    assert node.json()["metrics"]["max_logit_error"] == 0.0
    chromium_binary()  # and in Chromium, the images served to the page by number
    page = run_cli(
        "verify-target", str(tmp_path / "bundle"), str(loosened), "--browser", "--rows", "8",
        "--json",
    )  # fmt: skip
    assert page.exit_code == 0, page.stderr
    assert page.json()["predictions_differ"] == 0 and page.json()["metrics"]["agreement"] == 1.0
    images = [str(path) for path in sorted((examples / "digits" / "3").iterdir())[:3]]
    in_node = node_predictions(tmp_path / "bundle", images, "classify.mjs")
    ours = Predictor(tmp_path / "bundle").predict(images)
    assert [p["label"] for p in in_node] == [p.label for p in ours]


def test_the_lora_example_ships_merged_weights(examples, tmp_path):
    pipeline = write_pipeline(examples, SLICE, base=examples / "reviews-lora.yaml")
    build("build", pipeline, tmp_path / "bundle")
    manifest = Manifest.load(tmp_path / "bundle" / "manifest.json")
    freeze = manifest.training.freeze
    assert manifest.settings["peft"]["method"] == "lora"  # type: ignore[index]
    assert freeze.trainable_parameters < 0.05 * freeze.total_parameters


def test_the_auto_example_records_its_plan(examples, tmp_path):
    pipeline = write_pipeline(examples, SLICE, base=examples / "reviews-auto.yaml")
    build("build", pipeline, tmp_path / "bundle")
    manifest = Manifest.load(tmp_path / "bundle" / "manifest.json")
    assert manifest.training.freeze.plan == "auto"


def test_the_sweep_example_ships_a_trial(examples, tmp_path):
    pipeline = write_pipeline(examples, SLICE, base=examples / "reviews-sweep.yaml")
    build("sweep", pipeline, tmp_path / "bundle", "--trials", "3")
    sweep = json.loads((tmp_path / "bundle" / "manifest.json").read_text())["sweep"]
    assert len(sweep["trials"]) == 3 and sweep["why"]


def test_the_split_example_retrains_on_new_rows_and_ships_a_small_top(examples, tmp_path):
    pipeline = write_pipeline(examples, SLICE, base=examples / "reviews-split.yaml")
    build("build", pipeline, tmp_path / "v1")
    retrained = build(
        "retrain", pipeline, tmp_path / "v2", "--add", str(examples / "new-reviews.jsonl")
    )
    assert retrained["cache"]["misses"] == 24  # only the new rows pass through the stem
    for name in ("stem.onnx", "stem.int8.onnx"):
        assert (tmp_path / "v1" / name).read_bytes() == (tmp_path / "v2" / name).read_bytes()
    diff = run_cli("diff", str(tmp_path / "v1"), str(tmp_path / "v2"), "--json").json()
    payload = {form: record["payload_share"] for form, record in diff["forms"].items()}
    assert payload["split-int8"] < 0.25 < payload["int8"]


def node_predictions(bundle: Path, texts: list[str], script: str = "tag.mjs") -> list[dict]:
    """What the JavaScript example `examples/javascript/SCRIPT` prints for `texts` in Node
    (one JSON line each)."""
    done = subprocess.run(
        ["node", str(EXAMPLES / "javascript" / script), str(bundle), *texts],
        check=True,
        capture_output=True,
        text=True,
    )
    # split on newlines only: splitlines() also splits inside texts holding \x85 or \u2028
    return [json.loads(line) for line in done.stdout.split("\n") if line]
