"""`edgefreeze init DATA`: from a data file or image folder to a pipeline file that builds.
The CSV and image-folder recipes in examples/ are init's output (tests/test_examples.py
builds them); here: JSON lines and CoNLL to a shipped bundle, what detection picks and
why, and data it cannot read."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest

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
    assert text.startswith("# Written by `edgefreeze init` from 400 rows of a CSV file")
    spec = load_pipeline(tmp_path / "shop.yaml").spec
    defaults = type(spec).model_validate({"name": "x", "model": "m", "data": {"source": "s"}})
    for section in ("train", "freeze", "quantize", "gate", "export", "cache"):
        assert getattr(spec, section) == getattr(defaults, section), section
    assert spec.data.split.group_column == "product_id" and spec.data.max_length == 64


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
    ("name", "content", "said"),
    [
        ("data.csv", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe", "not utf-8 text"),
        ("data.csv", b"", "no header row"),
        ("data.csv", b"text\nfirst\nsecond\nthird\n", "no column looks like a label"),
        ("data.csv", b"text,label\nfirst,a\nsecond,a\n", "labels in column 'label': only 'a'"),
        ("data.jsonl", b'{"text": "a", "label": 1}\n{"text": \n', "malformed JSON"),
        ("data.csv", b"text,label\none,a\ntwo, three,b\n", "3 fields where the header names 2"),
        ("data.csv", b"text,label,label\none,a,b\n", "the header names 'label' twice"),
        ("data.csv", b"text;label\none;a\ntwo;b\n", "looks separated by tabs, semicolons"),
        ("data.csv", b"a good film,x\na bad film,y\nfilm,x\nx,y\n", "looks like data"),
        ("data.txt", b"words\nalone\n", "cannot tell its format"),
        ("data.conll", b"Paris NNP\nis VBZ\n\nRome NNP\n", "no column holds tags"),
    ],
)
def test_data_it_cannot_use_is_one_line_and_exit_2(tmp_path, name, content, said):
    (tmp_path / name).write_bytes(content)
    assert said in refused(tmp_path / name, "--output", str(tmp_path / "p.yaml"))
    assert not (tmp_path / "p.yaml").exists()


def test_options_it_cannot_use_are_one_line_and_exit_2(tmp_path):
    write_conll(tmp_path / "films.conll", film_sentences(30))
    output = ("--output", str(tmp_path / "p.yaml"))
    assert "has none" in refused(tmp_path / "films.conll", "--label-column", "x", *output)
    assert "not an encoding" in refused(tmp_path / "films.conll", "--encoding", "nope", *output)
    assert "letters, digits" in refused(tmp_path / "films.conll", "--name", "a b", *output)
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    if os.access(locked, os.W_OK):  # root writes anywhere: a file in the way instead
        locked.rmdir()
        locked.write_text("")
    assert "locked" in refused(tmp_path / "films.conll", "--output", str(locked / "p.yaml"))
    (tmp_path / "data.csv").write_text("text,label\na,x\nb,y\n")
    assert "both 'text'" in refused(
        tmp_path / "data.csv", "--text-column", "text", "--label-column", "text", *output
    )


def test_a_missing_path_an_empty_folder_and_an_existing_pipeline_are_refused(tmp_path):
    output = ("--output", str(tmp_path / "p.yaml"))
    assert "no such file or folder" in refused(tmp_path / "nothing.csv", *output)
    (tmp_path / "empty").mkdir()
    assert "no images" in refused(tmp_path / "empty", *output)
    write_conll(tmp_path / "films.conll", film_sentences(30))
    (tmp_path / "films.yaml").write_text("name: mine\n")
    assert "exists" in refused(tmp_path / "films.conll", "--output", str(tmp_path / "films.yaml"))
    assert (tmp_path / "films.yaml").read_text() == "name: mine\n"


def test_conll_tags_in_another_column_and_labels_with_newlines_are_written_safely(tmp_path):
    """A CoNLL file whose entity tags come before a part-of-speech column: init finds
    them; a label holding a newline stays inside its comment."""
    sentences = film_sentences(40)
    lines = ["-DOCSTART- O -X-", ""]
    for words, tags in sentences:
        lines += [f"{word} {tag} NN" for word, tag in zip(words, tags)] + [""]
    (tmp_path / "films.conll").write_text("\n".join(lines))
    summary = init(tmp_path / "films.conll", "--output", str(tmp_path / "films.yaml"))
    assert set(summary["labels"]) == {"O", "B-FILM", "I-FILM"}
    assert load_pipeline(tmp_path / "films.yaml").spec.data.tag_column == 1

    rows = [{"text": f"text {n}", "label": ["a\n  epochs: 99", "b"][n % 2]} for n in range(20)]
    (tmp_path / "odd.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    init(tmp_path / "odd.jsonl", "--output", str(tmp_path / "odd.yaml"))
    assert load_pipeline(tmp_path / "odd.yaml").spec.train.epochs == 3
