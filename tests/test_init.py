"""`edgefreeze init DATA`: from a data file or image folder to a pipeline file that builds.
The CSV and image-folder recipes in examples/ are init's output (tests/test_examples.py
builds them); here: JSON lines and CoNLL to a shipped bundle, what detection picks and
why, and data it cannot read."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml

from edgefreeze.schema import load_pipeline
from tests.conftest import run_cli
from tests.film_titles import film_sentences, write_conll, write_jsonl

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def init(data: Path, *extra: str) -> dict:
    result = run_cli("init", str(data), "--json", *extra)
    assert result.exit_code == 0, result.stderr
    return result.json()


def refused(data: Path, *extra: str) -> str:
    """init's one line on stderr for data it cannot use (exit 2, no pipeline written)."""
    result = run_cli("init", str(data), *extra)
    assert result.exit_code == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgefreeze: error: "), result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def review_rows(count: int) -> list[dict[str, str]]:
    with open(EXAMPLES / "reviews.csv", newline="") as handle:
        return list(csv.DictReader(handle))[:count]


@pytest.mark.build
def test_json_lines_of_texts_build_and_ship_as_written(tmp_path):
    rows = review_rows(500)
    data = tmp_path / "opinions.jsonl"
    data.write_text(
        "".join(
            json.dumps({"id": n, "body": r["review"], "stars": r["sentiment"]}) + "\n"
            for n, r in enumerate(rows)
        )
    )
    summary = init(data, "--output", str(tmp_path / "opinions.yaml"))
    assert summary["task"] == "text-classification" and summary["format"] == "jsonl"
    assert summary["columns"] == {"input": "body", "target": "stars", "group": None}

    result = run_cli(
        "build", str(tmp_path / "opinions.yaml"), "--output", str(tmp_path / "b"), "-q", "--json"
    )
    assert result.exit_code == 0, result.stderr
    assert result.json()["status"] == "shipped"


@pytest.mark.build
def test_a_conll_file_builds_a_tagger_that_ships_as_written(tmp_path):
    write_conll(tmp_path / "films.conll", film_sentences(250, seed=3))
    summary = init(tmp_path / "films.conll", "--output", str(tmp_path / "films.yaml"))
    assert summary["task"] == "token-classification"
    assert set(summary["labels"]) == {"O", "B-FILM", "I-FILM"}

    result = run_cli(
        "build", str(tmp_path / "films.yaml"), "--output", str(tmp_path / "b"), "-q", "--json"
    )
    assert result.exit_code == 0, result.stderr
    assert result.json()["status"] == "shipped"


def test_json_lines_of_word_lists_are_a_tagging_task(tmp_path):
    write_jsonl(tmp_path / "films.jsonl", film_sentences(40))
    summary = init(tmp_path / "films.jsonl", "--output", str(tmp_path / "films.yaml"))
    assert summary["task"] == "token-classification"
    assert summary["columns"]["input"] == "tokens" and summary["columns"]["target"] == "tags"


def test_a_conll_file_without_its_suffix_is_recognised_and_its_format_written(tmp_path):
    write_conll(tmp_path / "films.txt", film_sentences(40))
    init(tmp_path / "films.txt", "--output", str(tmp_path / "films.yaml"))
    spec = load_pipeline(tmp_path / "films.yaml").spec
    assert spec.task == "token-classification" and spec.data.format == "conll"


def test_detection_names_its_choices_and_writes_the_schemas_defaults(tmp_path):
    """Columns by their names, a likely group column, max_length from the texts' token
    lengths; every key init did not choose is the schema's default."""
    rows = review_rows(400)
    with open(tmp_path / "shop.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["row", "product_id", "comment", "verdict"])
        writer.writerows((n, r["film"], r["review"], r["sentiment"]) for n, r in enumerate(rows))
    summary = init(tmp_path / "shop.csv", "--output", str(tmp_path / "shop.yaml"))
    assert summary["columns"] == {"input": "comment", "target": "verdict", "group": "product_id"}
    assert summary["max_length"] == 64  # review snippets: 95 % fit in 64 tokens

    text = (tmp_path / "shop.yaml").read_text()
    assert "group_column: product_id" in text and "# " in text.splitlines()[0]
    spec = load_pipeline(tmp_path / "shop.yaml").spec
    written = yaml.safe_load(text)
    defaults = type(spec).model_validate({"name": "x", "model": "m", "data": {"source": "s"}})
    for section in ("train", "freeze", "quantize", "gate", "export", "cache"):
        assert getattr(spec, section) == getattr(defaults, section), section
    assert written["train"]["lr_top"] == defaults.train.lr_top


def test_without_a_named_label_column_the_fewest_values_win_and_the_others_are_named(tmp_path):
    (tmp_path / "data.csv").write_text(
        "colour,size,sentence\n"
        + "".join(f"{['red', 'blue'][n % 2]},{n % 5},words {n}\n" for n in range(60))
    )
    init(tmp_path / "data.csv", "--output", str(tmp_path / "p.yaml"))
    line = next(
        line for line in (tmp_path / "p.yaml").read_text().splitlines() if "label_column" in line
    )
    assert "colour" in line and "also possible: size" in line


def test_data_outside_the_pipelines_folder_is_named_by_its_absolute_path(tmp_path):
    (tmp_path / "data").mkdir()
    write_conll(tmp_path / "data" / "films.conll", film_sentences(30))
    (tmp_path / "pipelines").mkdir()
    init(tmp_path / "data" / "films.conll", "--output", str(tmp_path / "pipelines" / "films.yaml"))
    spec = load_pipeline(tmp_path / "pipelines" / "films.yaml").spec
    assert spec.data.source == str((tmp_path / "data" / "films.conll").resolve())


@pytest.mark.parametrize(
    ("content", "said"),
    [
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe", "not utf-8 text"),
        (b"", "no header row"),
        (b"text\nfirst\nsecond\nthird\n", "no column looks like a label"),
        (b"text,label\nfirst,a\nsecond,a\nthird,a\n", "labels in column 'label': only 'a'"),
        (b'{"text": "a", "label": 1}\n{"text": \n', "malformed JSON"),
    ],
)
def test_data_it_cannot_use_is_one_line_and_exit_2(tmp_path, content, said):
    suffix = ".jsonl" if content.startswith(b"{") else ".csv"
    data = tmp_path / f"data{suffix}"
    data.write_bytes(content)
    assert said in refused(data, "--output", str(tmp_path / "p.yaml"))
    assert not (tmp_path / "p.yaml").exists()


def test_a_missing_path_an_empty_folder_and_an_existing_pipeline_are_refused(tmp_path):
    assert "no such file or folder" in refused(tmp_path / "nothing.csv")
    (tmp_path / "empty").mkdir()
    assert "no images" in refused(tmp_path / "empty")
    write_conll(tmp_path / "films.conll", film_sentences(30))
    (tmp_path / "films.yaml").write_text("name: mine\n")
    assert "exists" in refused(tmp_path / "films.conll", "--output", str(tmp_path / "films.yaml"))
    assert (tmp_path / "films.yaml").read_text() == "name: mine\n"
