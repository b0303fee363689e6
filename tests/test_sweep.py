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
from edgefreeze.schema import load_pipeline
from tests.conftest import QUICK, TEXT, run_cli, write_pipeline

SWEEP = {**QUICK, "data": {"sample_rows": 240}}


@pytest.mark.build
def test_sweep_ships_the_best_trial_trained_from_one_cache_fill(tiny_pipeline, tmp_path):
    pipeline = write_pipeline(tmp_path, {**SWEEP, "sweep": {"epochs": [1, 2]}}, base=tiny_pipeline)
    result = run_cli(
        "sweep",
        str(pipeline),
        "--trials",
        "6",
        "--output",
        str(tmp_path / "b"),
        "--quiet",
        "--json",
        "--cache-dir",
        str(tmp_path / "cache"),
    )
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

    # The pipeline's own settings are the first trial; the bundle is the chosen trial's
    # model (the default, unless the best beat it beyond the noise), its settings recorded.
    assert sweep.default_trial == 0 and sweep.trials[0].params == {
        "lr_top": 1e-4,
        "lr_head": 1e-3,
        "epochs": 1,
        "trainable_layers": 2,
    }
    assert sweep.chosen_trial in (sweep.default_trial, sweep.best_trial)
    chosen = sweep.trials[sweep.chosen_trial]
    settings = manifest.settings
    assert settings["train"]["lr_top"] == chosen.params["lr_top"]
    assert settings["train"]["lr_head"] == chosen.params["lr_head"]
    assert len(manifest.training.epochs) == chosen.params["epochs"]
    assert settings["freeze"]["trainable_layers"] == chosen.params["trainable_layers"]
    assert manifest.training.freeze.boundary == 6 - chosen.params["trainable_layers"]
    assert manifest.training.epochs[-1].validation["accuracy"] == chosen.value

    # The stem ran once for all six trials: every train and validation row missed once.
    splits = manifest.data.splits
    assert manifest.cache.misses == splits["train"].rows + splits["validation"].rows
    assert manifest.cache.boundary == 4  # the pipeline's trainable_layers: 2


@pytest.mark.build
def test_trials_above_the_cache_read_moved_activations_that_match_the_model(
    tiny_pipeline, tmp_path
):
    """A head-only trial trains on activations moved from the cached boundary (4) to the
    top: its validation score must be the shipped model's own on the validation split.
    The pipeline's own settings (the first trial) barely move its random head, and
    `confidence: 0` ships the best by validation score, so the head-only trial ships."""
    pipeline = write_pipeline(
        tmp_path,
        {
            **SWEEP,
            "train": {"lr_top": 1.0e-9, "lr_head": 1.0e-9, "epochs": 1},
            "sweep": {
                "trainable_layers": [0, 0],
                "epochs": [2, 2],
                "lr_head": [0.05, 0.05],
                "confidence": 0.0,
            },
        },
        base=tiny_pipeline,
    )
    result = run_cli(
        "sweep",
        str(pipeline),
        "--trials",
        "2",
        "--output",
        str(tmp_path / "b"),
        "--quiet",
        "--cache-dir",
        str(tmp_path / "cache"),
    )
    assert result.exit_code == 0, result.stderr
    manifest = Manifest.load(tmp_path / "b" / "manifest.json")
    assert manifest.training.freeze.boundary == 6 and manifest.cache.boundary == 4
    loaded = load_pipeline(pipeline)
    validation = load_data(loaded.spec.data, TEXT, loaded.resolve).validation
    predictor = Predictor(tmp_path / "b", "fp32")
    predicted = [p.label for p in predictor.predict(validation.inputs)]
    names = manifest.data.label_names
    accuracy = np.mean([names.index(p) == t for p, t in zip(predicted, validation.targets)])
    assert accuracy == pytest.approx(
        manifest.training.epochs[-1].validation["accuracy"], abs=1.5 / len(predicted)
    )  # fp16 cache: one flip at most


@pytest.mark.parametrize(
    ("sweep", "message"),
    [
        ({"trainable_layers": [0, 3]}, "sweep.trainable_layers: at most 2"),
        ({"rank": [4, 16]}, "sweep.rank: needs a peft method"),
        ({"lr_top": [1.0e-3, 1.0e-5]}, "sweep.lr_top: [low, high]"),
        ({"epochs": [0, 2]}, "sweep.epochs: [low, high] with 0 < low"),
    ],
)
def test_a_space_it_cannot_search_is_one_line_and_exit_2(tiny_pipeline, tmp_path, sweep, message):
    pipeline = write_pipeline(tmp_path, {**SWEEP, "sweep": sweep}, base=tiny_pipeline)
    result = run_cli("sweep", str(pipeline), "--trials", "2", "--output", str(tmp_path / "b"))
    assert result.exit_code == 2 and message in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "b").exists()


def test_without_a_validation_split_there_is_nothing_to_choose_by(tiny_pipeline, tmp_path):
    pipeline = write_pipeline(
        tmp_path, {**SWEEP, "data": {"split": {"validation": 0.0}}}, base=tiny_pipeline
    )
    result = run_cli("sweep", str(pipeline), "--trials", "2", "--output", str(tmp_path / "b"))
    assert result.exit_code == 2 and "sweep: needs a validation split" in result.stderr


@pytest.mark.build
def test_when_no_trial_beats_the_pipelines_own_settings_they_ship(tmp_path):
    """Every trial searched at rates too small to move MiniLM: the pipeline's own settings,
    always the first trial, ship, and the output says why."""
    pipeline = write_pipeline(
        tmp_path,
        {
            **SWEEP,
            "data": {"sample_rows": 400},
            "train": {"epochs": 2, "lr_top": 3e-4},
            "sweep": {"lr_top": [1e-9, 1e-8], "lr_head": [1e-9, 1e-8]},
        },
    )
    result = run_cli(
        "sweep",
        str(pipeline),
        "--trials",
        "3",
        "--output",
        str(tmp_path / "b"),
        "--json",
        "--cache-dir",
        str(tmp_path / "cache"),
    )
    assert result.exit_code == 0, result.stderr
    sweep = Manifest.load(tmp_path / "b" / "manifest.json").sweep
    assert sweep.default_trial == sweep.chosen_trial == 0
    assert sweep.trials[0].value > max(t.value or 0.0 for t in sweep.trials[1:])
    assert sweep.why == (
        "the pipeline's own settings (trial 0) scored best, validation "
        f"accuracy {sweep.trials[0].value:.4f}"
    )
    assert f"  sweep: {sweep.why}\n" in result.stderr
    report = (tmp_path / "b" / "report.md").read_text()
    assert f"Shipped trial 0: {sweep.why}." in report and "| 0 (default) **shipped** |" in report
    settings = Manifest.load(tmp_path / "b" / "manifest.json").settings["train"]
    assert (settings["lr_top"], settings["lr_head"]) == (3e-4, 1e-3)


def test_the_paired_bootstrap_needs_more_than_luck():
    """One row more right in a thousand is ahead in about 63 % of resamples (the row is
    drawn at least once): noise. Fifty rows more right is ahead in every one."""
    from edgefreeze.gate.paired import compare

    targets = np.ones(1000, dtype=np.int64)
    right, wrong = np.array([0.0, 1.0]), np.array([1.0, 0.0])

    def model(correct: int) -> list[np.ndarray]:
        return [right if row < correct else wrong for row in range(1000)]

    lucky = compare(TEXT, model(801), model(800), targets)
    assert (lucky.challenger, lucky.default) == (0.801, 0.8)
    assert 0.58 < lucky.ahead < 0.68 and not lucky.better
    better = compare(TEXT, model(850), model(800), targets)
    assert better.ahead == 1.0 and better.better
    assert not compare(TEXT, model(800), model(800), targets).better  # ties are not ahead
