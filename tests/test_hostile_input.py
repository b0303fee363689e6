"""Input that is odd rather than wrong is accepted and accounted for (a document of
megabytes, a file in Windows-1252, rows repeated across the splits); input that would
make a build reach outside its folders, or score what it cannot learn, is refused."""

from __future__ import annotations

import csv
import json
import shutil

import pytest

from edgefreeze.data.sources import read_source
from edgefreeze.errors import BundleError
from edgefreeze.runtime.bundle import LABELS, MANIFEST, Bundle
from edgefreeze.schema import load_pipeline
from tests.conftest import QUICK, run_cli, write_pipeline
from tests.test_bad_input import build_expecting_error, write_csv

ACCENTED = "Un film très réussi, naïf et drôle à la fois; Amélie n'a rien à craindre."


def real_reviews(count: int) -> list[tuple[str, str]]:
    """(text, label) of the built-in corpus's first `count` reviews."""
    table = read_source("builtin:rotten-tomatoes", lambda spec: spec)
    return [(row["text"], row["category"]) for row in table.rows[:count]]


@pytest.mark.build
def test_a_document_of_megabytes_in_cp1252_is_accepted_cut_and_counted(tmp_path):
    """One CSV that is hostile three ways: written in Windows-1252, two fields of about
    3 MB (far beyond Python's csv limit of 128 KiB), and texts repeated in every split."""
    reviews = real_reviews(240)
    huge = " ".join(text for text, _ in reviews) * 80  # real sentences, about 3 MB
    rows = [(ACCENTED if i == 0 else text, label) for i, (text, label) in enumerate(reviews)]
    rows += [(huge, "fresh"), (huge[::-1], "rotten")]
    rows += [rows[i] for i in range(1, 61)]  # 60 texts twice: some land in two splits
    with open(tmp_path / "reviews.csv", "w", newline="", encoding="cp1252") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        writer.writerows(rows)
    pipeline = write_pipeline(
        tmp_path,
        {
            **QUICK,
            "data": {
                "source": "reviews.csv",
                "encoding": "cp1252",
                "max_length": 64,
                "split": {"group_column": None},
            },
        },
    )

    result = run_cli("build", str(pipeline), "--output", str(tmp_path / "b"), "--json")
    assert result.exit_code == 0, result.stderr
    data = json.loads((tmp_path / "b" / "manifest.json").read_text())["data"]
    splits = data["splits"]

    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "b")
    longer = sum(len(tokenizer(text)["input_ids"]) > 64 for text, _ in rows)
    assert sum(s["truncated"] for s in splits.values()) == longer >= 2

    seen = splits["validation"]["seen_in_training"] + splits["test"]["seen_in_training"]
    assert seen > 0
    (warning,) = [line for line in result.stderr.splitlines() if "warning" in line]
    assert "repeat a training row's input" in warning
    report = (tmp_path / "b" / "report.md").read_text()
    assert "cut to 64 tokens" in report and "repeat a training row's input" in report

    from edgefreeze.runtime import Predictor  # the accented row was read as cp1252

    assert sum(s["rows"] for s in splits.values()) == len(rows)  # none refused or lost
    assert Predictor(tmp_path / "b").predict([ACCENTED])[0].label in ("fresh", "rotten")


def test_a_file_not_in_its_encoding_names_the_line(tmp_path):
    rows = [(text, label) for text, label in real_reviews(60)]
    rows[41] = (ACCENTED, rows[41][1])
    with open(tmp_path / "reviews.csv", "w", newline="", encoding="cp1252") as handle:
        csv.writer(handle).writerows([("text", "label"), *rows])
    pipeline = write_pipeline(tmp_path, {"data": {"source": "reviews.csv"}})
    line = build_expecting_error(tmp_path, pipeline)
    assert line.startswith(f"edgefreeze: error: {tmp_path / 'reviews.csv'}:43: not utf-8 text")
    assert "data.encoding" in line


def test_an_unknown_encoding_is_a_pipeline_error(tmp_path):
    pipeline = write_pipeline(tmp_path, {"data": {"encoding": "klingon"}})
    line = build_expecting_error(tmp_path, pipeline)
    assert "data.encoding: 'klingon' is not a text encoding" in line


def test_held_out_labels_never_seen_in_training_are_named(tmp_path):
    write_csv(tmp_path / "train.csv", real_reviews(100))
    held_out = real_reviews(130)[100:] + [("A plot summary, not a review.", "plot")] * 3
    write_csv(tmp_path / "test.csv", held_out)
    pipeline = write_pipeline(
        tmp_path,
        {
            "data": {
                "source": "train.csv",
                "test": "test.csv",
                "labels": ["rotten", "fresh", "plot"],
                "split": {"group_column": None},
            }
        },
    )
    line = build_expecting_error(tmp_path, pipeline)
    assert line == (
        f"edgefreeze: error: {tmp_path / 'test.csv'}: labels ['plot'] never occur "
        "in the training split, so the model cannot learn them; add training "
        "rows for them or drop them"
    )


@pytest.mark.parametrize(
    "key, value",
    [
        ("data", {"source": "../outside.csv"}),
        ("data", {"test": "sub/../../outside.csv"}),
        ("model", "../models/bert"),
        ("output", "../elsewhere/bundle"),
        ("cache", {"dir": "../../cache"}),
    ],
)
def test_a_relative_path_out_of_the_pipelines_folder_is_refused(tmp_path, key, value):
    write_csv(tmp_path / "outside.csv", real_reviews(100))
    folder = tmp_path / "pipelines"
    folder.mkdir()
    pipeline = write_pipeline(folder, {key: value})
    line = build_expecting_error(tmp_path, pipeline)
    dotted = f"{key}.{next(iter(value))}" if isinstance(value, dict) else key
    assert f": {dotted}: " in line and "leads out of the pipeline's folder" in line
    assert not (tmp_path / "elsewhere").exists()


def test_an_absolute_path_or_one_that_stays_inside_is_taken_as_written(tmp_path):
    pipeline = load_pipeline(
        write_pipeline(
            tmp_path,
            {"data": {"source": "data/../reviews.csv", "test": str(tmp_path.parent / "t.csv")}},
        )
    )
    assert pipeline.resolve("data/../reviews.csv") == tmp_path / "reviews.csv"
    assert pipeline.resolve(str(tmp_path.parent / "t.csv")) == tmp_path.parent / "t.csv"


def test_a_bundle_cannot_name_or_link_a_file_outside_itself(smoke, tmp_path):
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    manifest = json.loads((smoke.bundle / MANIFEST).read_text())
    outside = tmp_path / "labels.json"
    shutil.copy(smoke.bundle / LABELS, outside)  # the right bytes, in the wrong place
    (bundle / LABELS).symlink_to(outside)
    (bundle / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="leads out of the bundle"):
        Bundle(bundle)

    manifest["files"]["../labels.json"] = manifest["files"][LABELS]
    (bundle / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="'../labels.json' leads out of the bundle"):
        Bundle(bundle)
