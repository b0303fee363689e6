"""Bad input: exit 2, one line naming what is wrong and where, no traceback, no bundle."""

from __future__ import annotations

import csv

import pytest
import yaml

from edgefreeze.schema import load_pipeline
from tests.conftest import SMOKE, run_cli, write_pipeline


def build_expecting_error(tmp_path, pipeline, *extra: str) -> str:
    output = tmp_path / "out"
    result = run_cli("build", str(pipeline), "--output", str(output), "--quiet", *extra)
    assert result.exit_code == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert not output.exists()
    return lines[0]


def line_of(path, start: str) -> int:
    """The number of the first line of `path` whose text starts with `start`."""
    lines = path.read_text().splitlines()
    return 1 + next(i for i, line in enumerate(lines) if line.strip().startswith(start))


def write_csv(path, rows, header=("text", "label")):
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def test_unknown_key_names_key_file_and_line(tmp_path):
    pipeline = write_pipeline(tmp_path, {"train": {"epocs": 3}})
    line = build_expecting_error(tmp_path, pipeline)
    assert (
        line == f"edgefreeze: error: {pipeline}:{line_of(pipeline, 'epocs:')}: train.epocs: "
        "unknown key"
    )


def test_negative_epochs(tmp_path):
    pipeline = write_pipeline(tmp_path, {"train": {"epochs": -1}})
    line = build_expecting_error(tmp_path, pipeline)
    assert (
        line == f"edgefreeze: error: {pipeline}:{line_of(pipeline, 'epochs:')}: "
        "train.epochs: Input should be greater than or equal to 1"
    )


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_a_rate_that_is_not_a_finite_number_says_so(tmp_path, value):
    """A NaN compares false with every bound: it must be named for what it is, not
    refused with a bound's message."""
    pipeline = write_pipeline(tmp_path, {"train": {"lr_top": value}})
    line = build_expecting_error(tmp_path, pipeline)
    assert line == (
        f"edgefreeze: error: {pipeline}:{line_of(pipeline, 'lr_top:')}: "
        "train.lr_top: Input should be a finite number"
    )


def test_malformed_yaml_names_line(tmp_path):
    pipeline = tmp_path / "broken.yaml"
    pipeline.write_text("name: x\nmodel: [unclosed\ndata:\n  source: a.csv\n")
    line = build_expecting_error(tmp_path, pipeline)
    assert (
        line == f"edgefreeze: error: {pipeline}:3:5: malformed YAML: expected ',' or ']', "
        "but got ':'"
    )


def test_missing_pipeline_file(tmp_path):
    line = build_expecting_error(tmp_path, tmp_path / "nope.yaml")
    assert (
        line == f"edgefreeze: error: {tmp_path / 'nope.yaml'}: cannot read pipeline file "
        "(No such file or directory)"
    )


def test_missing_data_file(tmp_path):
    line = build_expecting_error(
        tmp_path, write_pipeline(tmp_path, {"data": {"source": "gone.csv"}})
    )
    assert line == f"edgefreeze: error: data file not found: {tmp_path / 'gone.csv'}"


def test_absent_label_column(tmp_path):
    write_csv(
        tmp_path / "d.csv", [("good", "pos"), ("bad", "neg")] * 20, header=("text", "sentiment")
    )
    pipeline = write_pipeline(tmp_path, {"data": {"source": "d.csv", "sample_rows": None}})
    line = build_expecting_error(tmp_path, pipeline)
    assert (
        line == f"edgefreeze: error: {tmp_path / 'd.csv'}: no column 'label' "
        "(data.label_column); columns are ['sentiment', 'text']"
    )


def test_single_class(tmp_path):
    write_csv(tmp_path / "d.csv", [(f"text {i}", "pos") for i in range(50)])
    pipeline = write_pipeline(
        tmp_path,
        {"data": {"source": "d.csv", "sample_rows": None, "split": {"group_column": None}}},
    )
    line = build_expecting_error(tmp_path, pipeline)
    assert (
        line == "edgefreeze: error: d.csv: the training data has a single class ('pos'); "
        "a model needs at least two to tell apart"
    )


def test_empty_label_names_the_row(tmp_path):
    write_csv(tmp_path / "d.csv", [("fine", "pos"), ("also", "neg"), ("no label", "")] * 10)
    pipeline = write_pipeline(
        tmp_path,
        {"data": {"source": "d.csv", "sample_rows": None, "split": {"group_column": None}}},
    )
    line = build_expecting_error(tmp_path, pipeline)
    assert (
        line == f"edgefreeze: error: {tmp_path / 'd.csv'}:4: empty or missing 'label' "
        "(data.source; data.drop_empty: true skips such rows)"
    )


def test_malformed_jsonl_names_the_line(tmp_path):
    (tmp_path / "d.jsonl").write_text('{"text": "a", "label": 1}\n{"text": "b", "label": \n')
    pipeline = write_pipeline(tmp_path, {"data": {"source": "d.jsonl", "sample_rows": None}})
    line = build_expecting_error(tmp_path, pipeline)
    assert line == f"edgefreeze: error: {tmp_path / 'd.jsonl'}:2: malformed JSON: Expecting value"


def test_a_number_where_text_belongs_names_the_line(tmp_path):
    (tmp_path / "d.jsonl").write_text('{"text": "a", "label": 1}\n{"text": 5, "label": 0}\n')
    pipeline = write_pipeline(
        tmp_path,
        {"data": {"source": "d.jsonl", "sample_rows": None, "split": {"group_column": None}}},
    )
    expected = (
        f"edgefreeze: error: {tmp_path / 'd.jsonl'}:2: 'text' is int 5, not text (data.source)"
    )
    assert build_expecting_error(tmp_path, pipeline) == expected
    dropping = write_pipeline(tmp_path, {"data": {"drop_empty": True}}, base=pipeline)
    assert build_expecting_error(tmp_path, dropping) == expected  # not an empty row


def test_max_length_beyond_the_models_positions(tmp_path):
    pipeline = write_pipeline(
        tmp_path, {"data": {"max_length": 600}, "gate": {"sequence_lengths": None}}
    )
    line = build_expecting_error(tmp_path, pipeline)
    assert (
        line == "edgefreeze: error: data.max_length: 600 is more than the 512 tokens "
        "builtin:all-MiniLM-L6-v2 takes"
    )


def test_too_few_rows_to_train_on(tmp_path):
    write_csv(tmp_path / "d.csv", [("great", "pos"), ("bad", "neg")])
    pipeline = write_pipeline(
        tmp_path,
        {"data": {"source": "d.csv", "sample_rows": None, "split": {"group_column": None}}},
    )
    line = build_expecting_error(tmp_path, pipeline)
    assert (
        line == "edgefreeze: error: d.csv: no rows are left for training (1 held out, 1 "
        "for validation); add rows or lower data.split.test / data.split.validation"
    )


def test_too_many_trainable_layers(tmp_path):
    line = build_expecting_error(
        tmp_path, write_pipeline(tmp_path, {"freeze": {"trainable_layers": 9}})
    )
    assert line == "edgefreeze: error: freeze.trainable_layers: 9 exceeds the model's 6 layers"


def test_cuda_without_a_gpu(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU; the error path needs one without")
    line = build_expecting_error(tmp_path, SMOKE, "--device", "cuda")
    assert (
        line == "edgefreeze: error: train.device: cuda was asked for but no CUDA device "
        "is available"
    )


def test_existing_output_is_not_overwritten(tmp_path):
    output = tmp_path / "out"
    output.mkdir()
    (output / "keep.txt").write_text("mine")
    result = run_cli("build", str(SMOKE), "--output", str(output), "--quiet", "--json")
    assert result.exit_code == 2
    assert (
        result.stderr == f"edgefreeze: error: output: {output} already exists; remove it "
        "or choose another --output\n"
    )
    assert result.json()["status"] == "error"
    assert (output / "keep.txt").read_text() == "mine"


def test_gate_lengths_beyond_max_length(tmp_path):
    pipeline = write_pipeline(tmp_path, {"gate": {"sequence_lengths": [4, 8, 500]}})
    line = build_expecting_error(tmp_path, pipeline)
    assert (
        line == f"edgefreeze: error: {pipeline}: pipeline: gate.sequence_lengths [500] "
        "exceed data.max_length"
    )


def test_output_under_a_file_fails_before_training(tmp_path):
    (tmp_path / "taken").write_text("a file, not a folder")
    result = run_cli("build", str(SMOKE), "--output", str(tmp_path / "taken" / "bundle"), "--quiet")
    assert result.exit_code == 2
    (line,) = result.stderr.strip().splitlines()
    assert line == (
        f"edgefreeze: error: output: cannot create {tmp_path / 'taken' / 'bundle'}: "
        f"{tmp_path / 'taken'} is not a writable folder"
    )


def test_unknown_kinds_list_the_known_ones(tmp_path):
    # Test modules register tasks and plans of their own (test_kinds.py), so which of those
    # the lists hold depends on what ran before in this process.
    pipeline = write_pipeline(tmp_path, {"task": "summarization"})
    line = build_expecting_error(tmp_path, pipeline)
    assert line.startswith(
        f"edgefreeze: error: {pipeline}:{line_of(pipeline, 'task:')}: task: "
        "unknown task 'summarization' (known: "
    )
    assert known(line) >= {"image-classification", "text-classification", "token-classification"}
    pipeline = write_pipeline(tmp_path, {"quantize": {"target": "x86"}})
    assert (
        build_expecting_error(tmp_path, pipeline)
        == f"edgefreeze: error: {pipeline}:{line_of(pipeline, 'target:')}: quantize.target: "
        "unknown target 'x86' (known: avx512_vnni, avx512, avx2, arm64)"
    )
    pipeline = write_pipeline(tmp_path, {"freeze": {"plan": 3}})
    line = build_expecting_error(tmp_path, pipeline)
    assert line.startswith(
        f"edgefreeze: error: {pipeline}:{line_of(pipeline, 'freeze:')}: "
        "freeze: plan: unknown freezing plan 3 (known: "
    )
    assert known(line) >= {"auto", "patterns", "progressive", "top_k"}


def known(line: str) -> set[str]:
    """The names an error line lists after "(known: "."""
    return set(line.removesuffix(")").split("(known: ")[1].split(", "))


def test_the_gate_metric_drop_under_its_earlier_name(tmp_path):
    both = write_pipeline(tmp_path, {"gate": {"max_accuracy_drop": 0.02}})
    assert (
        build_expecting_error(tmp_path, both)
        == f"edgefreeze: error: {both}:{line_of(both, 'gate:')}: gate: max_accuracy_drop is the "
        "earlier name of max_metric_drop; give one of them"
    )
    spec = yaml.safe_load(SMOKE.read_text())
    spec["gate"] = {"max_accuracy_drop": 0.02}
    (tmp_path / "old.yaml").write_text(yaml.safe_dump(spec))
    assert load_pipeline(tmp_path / "old.yaml").spec.gate.max_metric_drop == 0.02


def test_a_yaml_alias_bomb_is_refused_before_it_expands(tmp_path):
    """Nine levels of ten aliases each expand to a billion values; the file is 600 bytes."""
    levels = ['l0: &l0 ["x", "x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    for level in range(1, 9):
        levels.append(f"l{level}: &l{level} [{', '.join([f'*l{level - 1}'] * 10)}]")
    pipeline = tmp_path / "bomb.yaml"
    pipeline.write_text(SMOKE.read_text() + "\n".join(levels) + "\n")
    line = build_expecting_error(tmp_path, pipeline)
    assert (
        line == f"edgefreeze: error: {pipeline}: expands to 1,234,567,960 values through "
        "YAML aliases (at most 100,000); refusing it"
    )


def test_anchors_and_aliases_of_a_real_pipeline_still_load(tmp_path):
    text = SMOKE.read_text().replace("lr_top: 1.0e-4", "lr_top: &rate 1.0e-4")
    text = text.replace("lr_head: 1.0e-3", "lr_head: *rate")
    pipeline = tmp_path / "aliased.yaml"
    pipeline.write_text(text)
    spec = load_pipeline(pipeline).spec
    assert spec.train.lr_head == spec.train.lr_top == 1e-4


def test_a_pipeline_file_of_megabytes_is_refused(tmp_path):
    pipeline = tmp_path / "huge.yaml"
    pipeline.write_text(SMOKE.read_text() + "#" * 2_000_000 + "\n")
    line = build_expecting_error(tmp_path, pipeline)
    size = pipeline.stat().st_size
    assert (
        line == f"edgefreeze: error: {pipeline}: {size:,} bytes is not a pipeline file "
        "(at most 1,000,000)"
    )
