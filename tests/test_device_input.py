"""Bad bundles and bad input on the device-side commands (predict, bench, diff): one line
naming what is wrong and where, exit 2, one JSON object with --json; never a traceback."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import run_cli


def _copy(smoke_build, tmp_path: Path) -> Path:
    copy = tmp_path / "bundle"
    shutil.copytree(smoke_build[0], copy)
    return copy


def _edit_manifest(bundle: Path, edit: Callable[[dict], object]) -> None:
    manifest = json.loads((bundle / "manifest.json").read_text())
    edit(manifest)
    (bundle / "manifest.json").write_text(json.dumps(manifest))


def _resign(bundle: Path, name: str) -> None:
    """Record `name`'s new digest in the manifest, as a consistent (not tampered) edit."""
    data = (bundle / name).read_bytes()
    _edit_manifest(
        bundle,
        lambda m: m["files"].__setitem__(
            name, {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
        ),
    )


def _assert_one_line_error(result, *fragments: str) -> None:
    assert result.exit_code == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgefreeze: error:"), result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.mark.parametrize(
    "break_it, fragment",
    [
        (lambda b: (b / "manifest.json").write_text("[]"), "expected a JSON object"),
        (lambda b: _edit_manifest(b, lambda m: m.pop("data")), "'data'"),
        (lambda b: _edit_manifest(b, lambda m: m["data"].pop("max_length")), "'data.max_length'"),
        (
            lambda b: _edit_manifest(b, lambda m: m["files"]["model.int8.onnx"].pop("sha256")),
            "files.model.int8.onnx",
        ),
        (lambda b: _edit_manifest(b, lambda m: m.__setitem__("gate", True)), "'gate'"),
        (
            lambda b: _edit_manifest(b, lambda m: m.__setitem__("schema_version", 99)),
            "schema_version 99",
        ),
        (
            lambda b: _edit_manifest(b, lambda m: m["task"].__setitem__("outputs", "boxes")),
            "unknown output kind 'boxes'",
        ),
        (
            lambda b: (b / "labels.json").write_text('{"id2label": {"0": "fresh", "1": "rotten"}}'),
            "labels.json: sha256 does not match",
        ),
    ],
    ids=[
        "list",
        "no-data",
        "no-max-length",
        "no-sha",
        "gate-not-object",
        "newer-schema",
        "unknown-task-outputs",
        "labels-swapped",
    ],
)
def test_malformed_bundle_is_one_line_and_exit_2(smoke_build, tmp_path, break_it, fragment):
    bundle = _copy(smoke_build, tmp_path)
    break_it(bundle)
    result = run_cli("predict", str(bundle), "a fine film", "--json")
    _assert_one_line_error(result, fragment)
    assert json.loads(result.stdout)["exit_code"] == 2


def test_labels_that_do_not_fit_the_model_are_refused(smoke_build, tmp_path):
    bundle = _copy(smoke_build, tmp_path)
    (bundle / "labels.json").write_text('{"id2label": {"0": "a", "1": "b", "2": "c"}}')
    _resign(bundle, "labels.json")
    _assert_one_line_error(
        run_cli("predict", str(bundle), "a fine film"), "names 3 labels", "has 2 outputs"
    )


def test_predict_file_input(smoke_build, tmp_path):
    bundle = smoke_build[0]
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes(b"fine\ncaf\xe9\n")
    _assert_one_line_error(
        run_cli("predict", str(bundle), "--file", str(latin1)), "latin1.txt:2: not UTF-8"
    )
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n")
    _assert_one_line_error(
        run_cli("predict", str(bundle), "--file", str(empty)), "empty.txt: no texts"
    )
    blanks = tmp_path / "blanks.txt"
    blanks.write_text("a wonderful film\n\n\na dull mess\n")
    result = run_cli("predict", str(bundle), "--file", str(blanks), "--json")
    assert result.exit_code == 0, result.stderr
    assert [json.loads(line)["text"] for line in result.stdout.splitlines()] == [
        "a wonderful film",
        "a dull mess",
    ]


def test_predict_names_the_models_a_bundle_has(smoke_build):
    _assert_one_line_error(
        run_cli("predict", str(smoke_build[0]), "x", "--model", "fp16"),
        "no 'fp16' model",
        "it has int8, fp32",
    )


def test_usage_errors_keep_the_contract():
    result = run_cli("bench", "somewhere", "--threads", "-3", "--json")
    _assert_one_line_error(result, "--threads", "bench --help")
    assert json.loads(result.stdout)["exit_code"] == 2


def test_bench_refuses_lengths_the_runtime_never_feeds(smoke_build):
    max_length = json.loads((smoke_build[0] / "manifest.json").read_text())["data"]["max_length"]
    result = run_cli("bench", str(smoke_build[0]), "--sequence-length", str(max_length + 1))
    _assert_one_line_error(result, f"max_length {max_length}")


def test_bench_reports_a_failed_pytorch_comparison_and_keeps_the_rest(smoke_build, tmp_path):
    bundle = _copy(smoke_build, tmp_path)
    (bundle / "config.json").write_text('{"broken": ')  # what PyTorch's run builds from
    result = run_cli("bench", str(bundle), "--runs", "10", "--threads", "1", "--json")
    assert result.exit_code == 0, result.stderr
    payload = json.loads(result.stdout)
    assert payload["pytorch"] is None and "config.json" in payload["pytorch_error"]
    assert payload["int8"]["p50_ms"] > 0 and payload["fp32"]["p50_ms"] > 0


def test_diff_of_a_bundle_with_itself_is_empty(smoke_build):
    result = run_cli("diff", str(smoke_build[0]), str(smoke_build[0]), "--json")
    assert result.exit_code == 0, result.stderr
    payload = json.loads(result.stdout)
    assert {entry["status"] for entry in payload["files"].values()} == {"unchanged"}
    assert all(form["payload_bytes"] == 0 for form in payload["forms"].values())
    assert payload["warnings"] == []


def test_diff_refuses_a_tampered_bundle(smoke_build, tmp_path):
    bundle = _copy(smoke_build, tmp_path)
    data = bytearray((bundle / "model.onnx").read_bytes())
    data[len(data) // 2] ^= 0x01
    (bundle / "model.onnx").write_bytes(bytes(data))
    _assert_one_line_error(
        run_cli("diff", str(smoke_build[0]), str(bundle)), "model.onnx", "altered"
    )
