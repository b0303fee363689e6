"""Bad input: exit 2, one line naming what is wrong and where, no traceback, no bundle."""

from __future__ import annotations

import csv

import pytest
import yaml

from edgefreeze.spec import load_pipeline
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


def write_csv(path, rows, header=("text", "label")):
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def test_unknown_key_names_key_file_and_line(tmp_path):
    pipeline = write_pipeline(tmp_path, {"train": {"epocs": 3}})
    line = build_expecting_error(tmp_path, pipeline)
    assert "train.epocs" in line and "unknown key" in line and str(pipeline) in line
    expected_line = next(i for i, text in enumerate(pipeline.read_text().splitlines(), 1)
                         if "epocs" in text)
    assert f"{pipeline}:{expected_line}:" in line


def test_negative_epochs(tmp_path):
    line = build_expecting_error(tmp_path, write_pipeline(tmp_path, {"train": {"epochs": -1}}))
    assert "train.epochs" in line and "greater than or equal to 1" in line


def test_malformed_yaml_names_line(tmp_path):
    pipeline = tmp_path / "broken.yaml"
    pipeline.write_text("name: x\nmodel: [unclosed\ndata:\n  source: a.csv\n")
    line = build_expecting_error(tmp_path, pipeline)
    assert "malformed YAML" in line and str(pipeline) in line


def test_missing_pipeline_file(tmp_path):
    line = build_expecting_error(tmp_path, tmp_path / "nope.yaml")
    assert "nope.yaml" in line


def test_missing_data_file(tmp_path):
    line = build_expecting_error(tmp_path, write_pipeline(tmp_path, {"data": {"source": "gone.csv"}}))
    assert "data file not found" in line and "gone.csv" in line


def test_absent_label_column(tmp_path):
    write_csv(tmp_path / "d.csv", [("good", "pos"), ("bad", "neg")] * 20, header=("text", "sentiment"))
    pipeline = write_pipeline(tmp_path, {"data": {"source": "d.csv", "sample_rows": None}})
    line = build_expecting_error(tmp_path, pipeline)
    assert "'label'" in line and "data.label_column" in line and "sentiment" in line


def test_single_class(tmp_path):
    write_csv(tmp_path / "d.csv", [(f"text {i}", "pos") for i in range(50)])
    pipeline = write_pipeline(tmp_path, {"data": {"source": "d.csv", "sample_rows": None,
                                                  "split": {"group_column": None}}})
    line = build_expecting_error(tmp_path, pipeline)
    assert "single class" in line and "'pos'" in line


def test_empty_label_names_the_row(tmp_path):
    write_csv(tmp_path / "d.csv", [("fine", "pos"), ("also", "neg"), ("no label", "")] * 10)
    pipeline = write_pipeline(tmp_path, {"data": {"source": "d.csv", "sample_rows": None,
                                                  "split": {"group_column": None}}})
    line = build_expecting_error(tmp_path, pipeline)
    assert "d.csv:4:" in line and "'label'" in line and "drop_empty" in line


def test_malformed_jsonl_names_the_line(tmp_path):
    (tmp_path / "d.jsonl").write_text('{"text": "a", "label": 1}\n{"text": "b", "label": \n')
    pipeline = write_pipeline(tmp_path, {"data": {"source": "d.jsonl", "sample_rows": None}})
    line = build_expecting_error(tmp_path, pipeline)
    assert "d.jsonl:2:" in line and "malformed JSON" in line


def test_a_number_where_text_belongs_names_the_line(tmp_path):
    (tmp_path / "d.jsonl").write_text('{"text": "a", "label": 1}\n{"text": 5, "label": 0}\n')
    pipeline = write_pipeline(tmp_path, {"data": {"source": "d.jsonl", "sample_rows": None,
                                                  "split": {"group_column": None}}})
    line = build_expecting_error(tmp_path, pipeline)
    assert "d.jsonl:2:" in line and "'text' is int 5, not text" in line
    dropping = write_pipeline(tmp_path, {"data": {"drop_empty": True}}, base=pipeline)
    line = build_expecting_error(tmp_path, dropping)  # a number is not an empty row
    assert "'text' is int 5, not text" in line


def test_max_length_beyond_the_models_positions(tmp_path):
    pipeline = write_pipeline(tmp_path, {"data": {"max_length": 600},
                                         "gate": {"sequence_lengths": None}})
    line = build_expecting_error(tmp_path, pipeline)
    assert "data.max_length: 600" in line and "512 tokens" in line


def test_too_few_rows_to_train_on(tmp_path):
    write_csv(tmp_path / "d.csv", [("great", "pos"), ("bad", "neg")])
    pipeline = write_pipeline(tmp_path, {"data": {"source": "d.csv", "sample_rows": None,
                                                  "split": {"group_column": None}}})
    line = build_expecting_error(tmp_path, pipeline)
    assert "d.csv: no rows are left for training" in line and "data.split.test" in line


def test_too_many_trainable_layers(tmp_path):
    line = build_expecting_error(tmp_path, write_pipeline(tmp_path, {"freeze": {"trainable_layers": 9}}))
    assert "freeze.trainable_layers" in line and "6 layers" in line


def test_cuda_without_a_gpu(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU; the error path needs one without")
    line = build_expecting_error(tmp_path, SMOKE, "--device", "cuda")
    assert "cuda" in line


def test_existing_output_is_not_overwritten(tmp_path):
    output = tmp_path / "out"
    output.mkdir()
    (output / "keep.txt").write_text("mine")
    result = run_cli("build", str(SMOKE), "--output", str(output), "--quiet", "--json")
    assert result.exit_code == 2 and "already exists" in result.stderr
    assert result.json()["status"] == "error"
    assert (output / "keep.txt").read_text() == "mine"


def test_gate_lengths_beyond_max_length(tmp_path):
    pipeline = write_pipeline(tmp_path, {"gate": {"sequence_lengths": [4, 8, 500]}})
    line = build_expecting_error(tmp_path, pipeline)
    assert "exceed data.max_length" in line


def test_output_under_a_file_fails_before_training(tmp_path):
    (tmp_path / "taken").write_text("a file, not a folder")
    result = run_cli("build", str(SMOKE), "--output", str(tmp_path / "taken" / "bundle"),
                     "--quiet")
    assert result.exit_code == 2 and "not a writable folder" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_unknown_kinds_list_the_known_ones(tmp_path):
    line = build_expecting_error(tmp_path, write_pipeline(tmp_path, {"task": "summarization"}))
    assert "task: unknown task 'summarization'" in line and "text-classification" in line
    pipeline = write_pipeline(tmp_path, {"quantize": {"target": "x86"}})
    line = build_expecting_error(tmp_path, pipeline)
    assert "quantize.target" in line and "avx512_vnni" in line and "arm64" in line
    line = build_expecting_error(tmp_path, write_pipeline(tmp_path, {"freeze": {"plan": 3}}))
    assert "freeze" in line and "unknown freezing plan 3" in line


def test_the_gate_metric_drop_under_its_earlier_name(tmp_path):
    both = write_pipeline(tmp_path, {"gate": {"max_accuracy_drop": 0.02}})
    assert "give one of them" in build_expecting_error(tmp_path, both)
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
    assert "through YAML aliases" in line and "refusing it" in line


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
    assert "is not a pipeline file" in line
