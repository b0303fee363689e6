"""The activation cache on the real MiniLM and real files: exactness, keys, corruption,
concurrency, incremental retraining."""

from __future__ import annotations

import json
import multiprocessing
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from edgefreeze.backbones import load_model
from edgefreeze.cache import ActivationStore, describe_keyset, fetch_activations
from edgefreeze.cache.features import CachedFeatures, LiveFeatures
from edgefreeze.context import RunContext
from edgefreeze.data import load_data
from edgefreeze.freeze import frozen_digest, make_plan
from edgefreeze.gate import reference_outputs
from edgefreeze.progress import Reporter
from edgefreeze.schema import DataSpec, TrainSpec
from edgefreeze.schema.freeze import TopKSpec
from edgefreeze.tasks.encoding import encode_texts
from edgefreeze.train.loop import Examples, Splits, train
from tests.conftest import QUICK, SMOKE, TEXT, run_cli, write_pipeline

QUIET = Reporter(quiet=True)
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def rows():
    return load_data(
        DataSpec(
            source="builtin:rotten-tomatoes",
            sample_rows=120,
            max_length=40,
            split={"validation": 0.0},
        ),
        TEXT,
        Path,
    )


def fresh_model(rows, trainable_layers: int):
    loaded = load_model("builtin:all-MiniLM-L6-v2", TEXT, rows.label_names, Path, False, seed=0)
    return loaded, make_plan(TopKSpec(trainable_layers=trainable_layers), loaded.backbone)


def keyset(loaded, plan, max_length=40, dtype="fp16"):
    return describe_keyset(
        frozen_digest(loaded.model),
        loaded.backbone,
        loaded.processor,
        TEXT.name,
        max_length,
        plan,
        dtype,
    )


def open_store(root, loaded, plan, dtype="fp32"):
    name, description = keyset(loaded, plan, dtype=dtype)
    return ActivationStore(root, name, description, dtype, loaded.backbone.hidden_size)


def fetch(store, texts, encoded, loaded, plan):
    keys = [TEXT.example_key(text) for text in texts]
    return fetch_activations(store, keys, encoded, loaded.backbone, plan, RunContext(QUIET))


@pytest.mark.parametrize("trainable_layers", [2, 0])
def test_cached_training_equals_uncached_training(rows, tmp_path, trainable_layers):
    """Same seed, fp32 cache: the same per-step losses and the same final model."""
    spec = TrainSpec(epochs=2, batch_size=16, seed=3, device="cpu", warmup=0.2, precision="fp32")
    results = {}
    for source in ("live", "cached"):
        loaded, plan = fresh_model(rows, trainable_layers)
        encoded = encode_texts(loaded.processor, rows.train.inputs, 40)
        if source == "live":
            features = LiveFeatures(encoded, loaded.backbone, plan)
        else:
            store = open_store(tmp_path, loaded, plan)
            arrays, stats = fetch(store, rows.train.inputs, encoded, loaded, plan)
            assert stats.misses == len(rows.train) and stats.hits == 0
            features = CachedFeatures(arrays)
        result = train(
            loaded.backbone,
            plan,
            TEXT,
            Splits(Examples(features, rows.train.targets)),
            spec,
            RunContext(QUIET),
        )
        test_encoded = encode_texts(loaded.processor, rows.test.inputs, 40)
        logits = np.stack(reference_outputs(loaded.model, TEXT, test_encoded, CPU))
        results[source] = (np.array(result.step_losses), logits)
    np.testing.assert_allclose(results["cached"][0], results["live"][0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(results["cached"][1], results["live"][1], atol=1e-4)


def test_keyset_changes_with_everything_an_activation_depends_on(rows):
    loaded, plan = fresh_model(rows, 2)
    base = keyset(loaded, plan)[0]
    assert keyset(loaded, plan)[0] == base
    assert keyset(loaded, plan, max_length=41)[0] != base
    assert keyset(loaded, plan, dtype="fp32")[0] != base
    deeper = make_plan(TopKSpec(trainable_layers=3), loaded.backbone)
    assert keyset(loaded, deeper)[0] != base
    head_only = make_plan(TopKSpec(trainable_layers=0), loaded.backbone)
    assert keyset(loaded, head_only)[1]["kept_rows"] == 1  # the head reads one row
    plan = make_plan(TopKSpec(trainable_layers=2), loaded.backbone)
    # Training the top does not change the stem's key; touching a stem weight does.
    with torch.no_grad():
        loaded.model.classifier.weight.add_(1.0)
        loaded.model.bert.encoder.layer[5].output.dense.weight.add_(1.0)
    assert keyset(loaded, plan)[0] == base
    with torch.no_grad():
        loaded.model.bert.encoder.layer[3].output.dense.weight[0, 0] += 1e-3
    assert keyset(loaded, plan)[0] != base
    other, other_plan = fresh_model(rows, 2)
    before = keyset(other, other_plan)[0]
    other.processor.add_tokens(["edgefreezeword"])
    assert keyset(other, other_plan)[0] != before


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_corrupted_cache_is_detected_and_recomputed(rows, tmp_path, damage):
    loaded, plan = fresh_model(rows, 2)
    encoded = encode_texts(loaded.processor, rows.train.inputs, 40)
    store = open_store(tmp_path, loaded, plan)
    expected, _ = fetch(store, rows.train.inputs, encoded, loaded, plan)
    expected = [np.array(a) for a in expected]
    store.close()
    shard = next((tmp_path / store.keyset).glob("*.bin"))
    data = bytearray(shard.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0xFF
    else:
        data = data[: len(data) // 3]
    shard.write_bytes(bytes(data))

    store = open_store(tmp_path, loaded, plan)
    arrays, stats = fetch(store, rows.train.inputs, encoded, loaded, plan)
    assert stats.corrupt >= 1 and stats.misses == stats.corrupt
    assert stats.hits == len(rows.train) - stats.corrupt
    for got, want in zip(arrays, expected):
        np.testing.assert_allclose(np.asarray(got), want, atol=1e-4)  # batch padding noise
    store.close()
    store = open_store(tmp_path, loaded, plan)  # the recomputed entries were stored again
    _, stats = fetch(store, rows.train.inputs, encoded, loaded, plan)
    assert stats.hits == len(rows.train) and stats.corrupt == 0


def _writer(root: str, worker: int) -> None:
    store = ActivationStore(Path(root), "k" * 24, {"test": True}, "fp16", 8)
    rng = np.random.default_rng(worker)
    for batch in range(20):
        keys = [f"{k:04d}" for k in range(batch * 10, batch * 10 + 15)]  # overlapping
        store.write(
            [
                (key, np.full((1 + int(key) % 5, 8), int(key), dtype=np.float32))
                for key in keys
                if rng.random() < 0.9
            ]
        )
    store.close()


def test_concurrent_writers_leave_a_consistent_cache(tmp_path):
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_writer, args=(str(tmp_path), w)) for w in range(3)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=120)
        assert w.exitcode == 0
    store = ActivationStore(tmp_path, "k" * 24, {"test": True}, "fp16", 8)
    entries = store.lookup(f"{k:04d}" for k in range(205))
    assert len(entries) > 150
    for key, entry in entries.items():
        array = store.load(entry)
        assert array is not None and array.shape == (1 + int(key) % 5, 8)
        assert np.all(array == int(key))


def test_retrain_passes_only_new_rows_through_the_stem(tiny, tmp_path):
    cache = tmp_path / "cache"
    shutil.copytree(tiny.cache, cache)  # the first build's cache, as it left it
    new_rows = tmp_path / "new.jsonl"
    extra = [
        {
            "text": f"A brand new review, number {i}, {'loved' if i % 2 else 'hated'} it.",
            "category": "fresh" if i % 2 else "rotten",
        }
        for i in range(40)
    ]
    new_rows.write_text("".join(json.dumps(row) + "\n" for row in extra))
    second = run_cli(
        "retrain",
        str(tiny.pipeline),
        "--add",
        str(new_rows),
        "--output",
        str(tmp_path / "v2"),
        "--quiet",
        "--json",
        "--cache-dir",
        str(cache),
    )
    assert second.exit_code == 0, second.stderr
    before, after = tiny.result.json()["cache"], second.json()["cache"]
    assert before["hits"] == 0
    assert after["misses"] == 40 and after["hits"] == before["misses"]
    manifest = json.loads((tmp_path / "v2" / "manifest.json").read_text())
    first = json.loads((tiny.bundle / "manifest.json").read_text())
    assert (
        manifest["data"]["splits"]["train"]["rows"] == first["data"]["splits"]["train"]["rows"] + 40
    )
    assert manifest["data"]["sources"]["added_1"]["origin"] == str(new_rows)


def test_retrain_rejects_rows_with_an_unknown_label(tmp_path):
    new_rows = tmp_path / "new.csv"
    new_rows.write_text("text,category\nfine film,fresh\nodd film,lukewarm\n")
    result = run_cli(
        "retrain", str(SMOKE), "--add", str(new_rows), "--output", str(tmp_path / "out"), "--quiet"
    )
    assert result.exit_code == 2
    assert "lukewarm" in result.stderr and len(result.stderr.strip().splitlines()) == 1


@pytest.mark.build
def test_a_build_on_a_corrupt_cache_index_warns_once_and_runs_uncached(tiny_pipeline, tmp_path):
    """A cache is only a cache: a broken index costs the build its speed-up, not its result."""
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "index.sqlite").write_text("this is not a database\n")
    pipeline = write_pipeline(tmp_path, QUICK, base=tiny_pipeline)
    result = run_cli(
        "build",
        str(pipeline),
        "--output",
        str(tmp_path / "out"),
        "--quiet",
        "--json",
        "--cache-dir",
        str(cache),
    )
    assert result.exit_code == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("edgefreeze:")]
    assert len(warnings) == 1 and str(cache / "index.sqlite") in warnings[0]
    assert "edgefreeze cache clear" in warnings[0]
    info = result.json()["cache"]
    assert info["hits"] == 0 and info["bytes_written"] == 0 and "corrupt" in info["problem"]
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["cache"]["problem"] == info["problem"]
    assert (cache / "index.sqlite").read_text() == "this is not a database\n"  # the user's call
    assert run_cli("cache", "clear", "--cache-dir", str(cache)).exit_code == 0
    assert list(cache.iterdir()) == []
