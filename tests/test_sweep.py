"""`edgefreeze sweep`: trials from one cache, the best by validation shipped as trained.

On the tiny checkpoint: which trial wins does not matter here, only that the sweep keeps
its books (trials, states, the cache filled once) and ships what it says it chose."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgefreeze.data import load_data
from edgefreeze.runtime import Predictor
from edgefreeze.runtime.manifest import Manifest
from edgefreeze.spec import load_pipeline
from tests.conftest import QUICK, TEXT, run_cli, write_pipeline

SWEEP = {**QUICK, "data": {"sample_rows": 240}}


@pytest.mark.build
def test_sweep_ships_the_best_trial_trained_from_one_cache_fill(tiny_pipeline, tmp_path):
    pipeline = write_pipeline(tmp_path, {**SWEEP, "sweep": {"epochs": [1, 2]}},
                              base=tiny_pipeline)
    result = run_cli("sweep", str(pipeline), "--trials", "6", "--output",
                     str(tmp_path / "b"), "--quiet", "--json",
                     "--cache-dir", str(tmp_path / "cache"))
    assert result.exit_code == 0, result.stderr
    manifest = Manifest.load(tmp_path / "b" / "manifest.json")
    sweep = manifest.sweep
    assert len(sweep.trials) == 6 and sweep.best_trial == result.json()["sweep"]["best_trial"]
    done = [t for t in sweep.trials if t.state == "complete"]
    assert sweep.best_value == max(t.value for t in done)
    assert len({json.dumps(t.params, sort_keys=True) for t in sweep.trials}) == 6
    # Successive halving: a trial is stopped at a sixth or at half of its own schedule
    # (the first always goes on), and one that goes on past half runs to its end.
    assert sweep.pruner == "SuccessiveHalvingPruner" and sweep.trials[0].state == "complete"
    # Five of the six are stopped on the tiny model, on one thread and on two alike.
    assert sum(t.state == "pruned" for t in sweep.trials) >= 3
    for trial in sweep.trials:
        share = trial.epochs_run / trial.params["epochs"]
        stops = [1.0] if trial.state == "complete" else [1 / 6, 1 / 2]
        assert any(share == pytest.approx(stop, abs=1e-3) for stop in stops), trial

    # The bundle is the best trial's model, with its settings recorded.
    best = sweep.best_params
    settings = manifest.settings
    assert settings["train"]["lr_top"] == best["lr_top"]
    assert settings["train"]["lr_head"] == best["lr_head"]
    assert len(manifest.training.epochs) == best["epochs"]
    assert settings["freeze"]["trainable_layers"] == best["trainable_layers"]
    assert manifest.training.freeze.boundary == 6 - best["trainable_layers"]
    assert manifest.training.epochs[-1].validation["accuracy"] == sweep.best_value

    # The stem ran once for all six trials: every train and validation row missed once.
    splits = manifest.data.splits
    assert manifest.cache.misses == splits["train"].rows + splits["validation"].rows
    assert manifest.cache.boundary == 4  # the pipeline's trainable_layers: 2


@pytest.mark.build
def test_trials_above_the_cache_read_moved_activations_that_match_the_model(tiny_pipeline, tmp_path):
    """A head-only trial trains on activations moved from the cached boundary (4) to the
    top: its validation score must be the shipped model's own on the validation split."""
    pipeline = write_pipeline(tmp_path, {**SWEEP, "sweep": {"trainable_layers": [0, 0],
                                                            "epochs": [2, 2]}},
                              base=tiny_pipeline)
    result = run_cli("sweep", str(pipeline), "--trials", "2", "--output",
                     str(tmp_path / "b"), "--quiet", "--cache-dir", str(tmp_path / "cache"))
    assert result.exit_code == 0, result.stderr
    manifest = Manifest.load(tmp_path / "b" / "manifest.json")
    assert manifest.training.freeze.boundary == 6 and manifest.cache.boundary == 4
    loaded = load_pipeline(pipeline)
    validation = load_data(loaded.spec.data, TEXT, loaded.resolve).validation
    predictor = Predictor(tmp_path / "b", "fp32")
    predicted = [p.label for p in predictor.predict(validation.inputs)]
    names = manifest.data.label_names
    accuracy = np.mean([names.index(p) == t for p, t in zip(predicted, validation.targets)])
    assert accuracy == pytest.approx(manifest.training.epochs[-1].validation["accuracy"],
                                     abs=1.5 / len(predicted))  # fp16 cache: one flip at most


@pytest.mark.parametrize(("sweep", "message"), [
    ({"trainable_layers": [0, 3]}, "sweep.trainable_layers: at most 2"),
    ({"rank": [4, 16]}, "sweep.rank: needs a peft method"),
    ({"lr_top": [1.0e-3, 1.0e-5]}, "sweep.lr_top: [low, high]"),
    ({"epochs": [0, 2]}, "sweep.epochs: [low, high] with 0 < low"),
])
def test_a_space_it_cannot_search_is_one_line_and_exit_2(tiny_pipeline, tmp_path, sweep,
                                                         message):
    pipeline = write_pipeline(tmp_path, {**SWEEP, "sweep": sweep},
                              base=tiny_pipeline)
    result = run_cli("sweep", str(pipeline), "--trials", "2", "--output", str(tmp_path / "b"))
    assert result.exit_code == 2 and message in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "b").exists()


def test_without_a_validation_split_there_is_nothing_to_choose_by(tiny_pipeline, tmp_path):
    pipeline = write_pipeline(tmp_path, {**SWEEP, "data": {"split": {"validation": 0.0}}},
                              base=tiny_pipeline)
    result = run_cli("sweep", str(pipeline), "--trials", "2", "--output", str(tmp_path / "b"))
    assert result.exit_code == 2 and "sweep: needs a validation split" in result.stderr
