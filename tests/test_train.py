"""Training on the real MiniLM: determinism under a seed, and the frozen part stays fixed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from edgefreeze.backbones import load_model
from edgefreeze.cache.features import LiveFeatures
from edgefreeze.context import RunContext
from edgefreeze.data import load_data
from edgefreeze.freeze import make_plan
from edgefreeze.progress import Reporter
from edgefreeze.runtime import load_tokenizer
from edgefreeze.schema import DataSpec, TrainSpec
from edgefreeze.schema.freeze import TopKSpec
from edgefreeze.tasks.encoding import encode_texts
from edgefreeze.train.device import gradient_scaler
from edgefreeze.train.loop import NO_SCALING, Checks, Examples, Splits, set_dropout, train
from tests.conftest import TEXT
from tests.sgd_step import sgd_step

QUIET_CPU = RunContext(Reporter(quiet=True))


def short_run(seed: int, epochs: int = 1, checks: int = 0, on_check=None, mid_epoch_checks=None):
    data = load_data(
        DataSpec(source="builtin:rotten-tomatoes", sample_rows=80, max_length=32), TEXT, Path
    )
    loaded = load_model("builtin:all-MiniLM-L6-v2", TEXT, data.label_names, Path, False, seed)
    frozen_before = {k: v.clone() for k, v in loaded.model.bert.embeddings.state_dict().items()}
    plan = make_plan(TopKSpec(trainable_layers=1), loaded.backbone)
    assert plan.boundary == 5
    encoded = encode_texts(loaded.processor, data.train.inputs, 32)
    spec = TrainSpec(epochs=epochs, batch_size=16, seed=seed, device="cpu")
    features = LiveFeatures(encoded, loaded.backbone, plan)
    validation = LiveFeatures(
        encode_texts(loaded.processor, data.validation.inputs, 32), loaded.backbone, plan
    )
    splits = Splits(
        Examples(features, data.train.targets), Examples(validation, data.validation.targets)
    )
    result = train(
        loaded.backbone,
        plan,
        TEXT,
        splits,
        spec,
        QUIET_CPU,
        Checks(checks, on_check, mid_epoch_checks),
    )
    return loaded, result, frozen_before


def test_same_seed_same_model_and_losses():
    first, result_a, frozen = short_run(seed=1)
    second, result_b, _ = short_run(seed=1)
    assert result_a.step_losses == result_b.step_losses
    for (name, a), b in zip(first.model.state_dict().items(), second.model.state_dict().values()):
        assert torch.equal(a, b), name
    after = first.model.bert.embeddings.state_dict()
    assert all(torch.equal(frozen[k], after[k]) for k in frozen)
    top_before = load_model("builtin:all-MiniLM-L6-v2", TEXT, ["a", "b"], Path, False, 1).model
    assert not torch.equal(
        top_before.bert.encoder.layer[5].output.dense.weight,
        first.model.bert.encoder.layer[5].output.dense.weight,
    )


def test_other_seed_other_losses():
    _, result_a, _ = short_run(seed=1)
    _, result_b, _ = short_run(seed=2)
    assert result_a.step_losses != result_b.step_losses


def test_validation_checks_inside_epochs_leave_training_as_it_was():
    """A sweep's pruner reads the validation score at k/checks of the schedule; taking it
    must not change what trains (eval mode, no random draws), and where a check falls on
    an epoch's end it is that epoch's own score."""
    checks = []
    checked, result, _ = short_run(
        seed=1, epochs=2, checks=4, on_check=lambda k, score: checks.append((k, score))
    )
    plain, plain_result, _ = short_run(seed=1, epochs=2)
    assert result.step_losses == plain_result.step_losses
    for (name, a), b in zip(checked.model.state_dict().items(), plain.model.state_dict().values()):
        assert torch.equal(a, b), name
    assert result.steps == 8 and [k for k, _ in checks] == [1, 2, 3, 4]
    epoch_scores = [e.validation["accuracy"] for e in result.epochs]
    assert [checks[1][1], checks[3][1]] == epoch_scores

    # Only the named checks cost a validation pass inside an epoch (the sweep's pruner
    # rungs); those at an epoch's end are told anyway, the same run otherwise.
    chosen = []
    _, some, _ = short_run(
        seed=1,
        epochs=2,
        checks=4,
        mid_epoch_checks={1},
        on_check=lambda k, score: chosen.append((k, score)),
    )
    assert chosen == [checks[0], checks[1], checks[3]]
    assert some.step_losses == plain_result.step_losses


def test_runtime_tokenizer_matches_training_tokenizer(tmp_path):
    """The device tokenizes with `tokenizers` alone; it must see the ids training saw."""
    data = load_data(DataSpec(source="builtin:rotten-tomatoes", sample_rows=200), TEXT, Path)
    loaded = load_model("builtin:all-MiniLM-L6-v2", TEXT, data.label_names, Path, False, 0)
    loaded.processor.save_pretrained(tmp_path)
    texts = data.train.inputs + ["", "x" * 2000, "Ünïcödé — “quotes” and emoji 🎬"]
    expected = encode_texts(loaded.processor, texts, 24)
    tokenizer = load_tokenizer(tmp_path / "tokenizer.json", 24)
    for i, text in enumerate(texts):
        assert tokenizer.encode(text).ids == expected.inputs["input_ids"][i].tolist(), text
    assert np.all(expected.lengths() <= 24)


def test_dropout_zero_makes_the_training_forward_deterministic():
    """`train.dropout: 0` reaches SDPA attention's float `dropout_prob` too, not only the
    `nn.Dropout` layers."""
    loaded = load_model("builtin:all-MiniLM-L6-v2", TEXT, ["a", "b"], Path, False, 0)
    plan = make_plan(TopKSpec(trainable_layers=2), loaded.backbone)
    plan.begin_epoch(loaded.model, 1)
    layer = loaded.model.bert.encoder.layer[5]
    inputs = encode_texts(loaded.processor, ["a moving, funny film"] * 4, 16).batch(range(4))
    hidden = loaded.backbone.stem(
        {k: torch.from_numpy(v) for k, v in inputs.items()}, plan.boundary
    )
    mask = torch.from_numpy(inputs["attention_mask"])

    def twice() -> bool:
        first, second = (loaded.backbone.top(hidden, mask, plan.boundary) for _ in range(2))
        return torch.equal(first, second)

    assert layer.training and not twice()  # dropout on: two forwards differ
    set_dropout(plan.top, 0.0)
    assert layer.attention.self.dropout_prob == 0.0 and twice()


def _moves(precision: str, scaler: torch.amp.GradScaler = NO_SCALING) -> torch.Tensor:
    """How one plain-SGD step (lr 1), clipped to norm 0.1, moves the trainable weights."""
    before, after = sgd_step(precision=precision, scaler=scaler, max_grad_norm=0.1)
    return torch.cat([(after[n] - before[n]).flatten() for n in before])


def test_fp16_steps_on_unscaled_gradients_and_skips_an_overflow():
    exact = _moves("fp32")
    assert abs(float(torch.linalg.vector_norm(exact)) - 0.1) < 1e-5  # clipping is at work
    scaler = gradient_scaler(torch.device("cpu"), "fp16")
    assert scaler.is_enabled() and not gradient_scaler(torch.device("cpu"), "bf16").is_enabled()
    half = _moves("fp16", scaler)
    # The loss is scaled by 65536 for the backward pass; gradients clipped before they are
    # divided back would make a step 65536 times too short.
    assert float(torch.linalg.vector_norm(half - exact) / torch.linalg.vector_norm(exact)) < 0.05
    # A scale so large that fp16 gradients overflow: the step is skipped, the scale backs off.
    huge = torch.amp.GradScaler("cpu", init_scale=2.0**100)
    assert not _moves("fp16", huge).any()
    assert huge.get_scale() < 2.0**100
