"""Data sources, label maps and group-aware splits on real files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from edgefreeze.data import load_data
from edgefreeze.data.sources import rotten_tomatoes
from edgefreeze.data.split import split_indices
from edgefreeze.schema import DataSpec
from tests.conftest import TEXT


def test_builtin_rotten_tomatoes_matches_the_corpus():
    table = rotten_tomatoes()
    categories = [row["category"] for row in table.rows]
    assert categories.count("fresh") == 7403 and categories.count("rotten") == 5405


def test_split_keeps_every_film_in_one_split():
    spec = DataSpec(source="builtin:rotten-tomatoes", split={"group_column": "movie_name"})
    table = rotten_tomatoes()
    films = [row["movie_name"] for row in table.rows]
    test, val, train = split_indices(len(films), [0.2, 0.1], seed=0, groups=films)
    sets = [{films[i] for i in part} for part in (test, val, train)]
    assert not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2])
    assert sorted(test + val + train) == list(range(len(films)))
    assert abs(len(test) / len(films) - 0.2) < 0.01
    data = load_data(spec, TEXT, Path)
    assert len(data.train) + len(data.validation) + len(data.test) == len(films)


def test_split_is_deterministic_under_a_seed_and_changes_with_it():
    groups = [i // 3 for i in range(300)]
    assert split_indices(300, [0.2], 7, groups) == split_indices(300, [0.2], 7, groups)
    assert split_indices(300, [0.2], 7, groups) != split_indices(300, [0.2], 8, groups)


def test_csv_and_jsonl_give_the_same_data(tmp_path):
    rows = [
        {"review": f"review number {i}", "stars": "good" if i % 3 else "bad"} for i in range(60)
    ]
    with open(tmp_path / "d.csv", "w") as handle:
        handle.write("review,stars\n" + "".join(f"{r['review']},{r['stars']}\n" for r in rows))
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    common = {"text_column": "review", "label_column": "stars", "split": {"seed": 3}}
    from_csv = load_data(DataSpec(source="d.csv", **common), TEXT, lambda p: tmp_path / p)
    from_jsonl = load_data(DataSpec(source="d.jsonl", **common), TEXT, lambda p: tmp_path / p)
    assert from_csv.label_names == ["bad", "good"]
    assert from_csv.fingerprint() == from_jsonl.fingerprint()


def test_separate_test_file_and_explicit_label_order(tmp_path):
    def write(name, n):
        (tmp_path / name).write_text(
            "".join(json.dumps({"text": f"{name} {i}", "label": i % 2}) + "\n" for i in range(n))
        )

    write("train.jsonl", 50)
    write("test.jsonl", 10)
    spec = DataSpec(
        source="train.jsonl", test="test.jsonl", labels=["1", "0"], split={"validation": 0.0}
    )
    data = load_data(spec, TEXT, lambda p: tmp_path / p)
    assert len(data.test) == 10 and len(data.train) == 50 and data.validation is None
    assert data.label_names == ["1", "0"]
    assert data.test.targets.tolist() == [1, 0] * 5  # label "0" has id 1


def test_fingerprint_changes_when_one_row_changes():
    spec = DataSpec(source="builtin:rotten-tomatoes", sample_rows=100)
    data = load_data(spec, TEXT, Path)
    before = data.train.fingerprint()
    texts = list(data.train.inputs)
    texts[0] += "!"
    changed = type(data.train)(texts, np.array(data.train.targets))
    assert changed.fingerprint() != before
    relabelled = type(data.train)(list(data.train.inputs), 1 - data.train.targets)
    assert relabelled.fingerprint() != before
