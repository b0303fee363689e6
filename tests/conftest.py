"""Shared fixtures: the CLI driven in-process, and the real builds the suite reads, each
trained once per session."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from edgefreeze.cli import main
from edgefreeze.tasks import DEFAULT_TASK, task_for

ROOT = Path(__file__).resolve().parent.parent
# An older ONNX Runtime, as fleets that do not upgrade run (`make install` unpacks it).
OLD_ORT = ROOT / ".venv" / "targets" / "onnxruntime-1.20.1"
SMOKE = ROOT / "pipelines" / "smoke.yaml"
TEXT = task_for(DEFAULT_TASK)  # text classification, the task of every pipeline here


@dataclass
class CliResult:
    exit_code: int
    stdout: str
    stderr: str

    def json(self) -> dict:
        return json.loads(self.stdout)


def run_cli(*args: str) -> CliResult:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return CliResult(result.exit_code, result.stdout, result.stderr)


def write_pipeline(folder: Path, changes: dict, base: Path = SMOKE,
                   replace: tuple[str, ...] = ()) -> Path:
    """A copy of `base` with nested `changes` merged in, written into `folder`; the
    sections named in `replace` are replaced whole (another plan's keys do not fit)."""
    spec = yaml.safe_load(base.read_text())
    for section in replace:
        spec.pop(section, None)
    _merge(spec, changes)
    path = folder / "pipeline.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _merge(target: dict, changes: dict) -> None:
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = value


# A build that only has to run the whole path (refusals, odd kinds): 1 epoch, few rows.
QUICK = {"data": {"sample_rows": 160}, "train": {"epochs": 1},
         "gate": {"max_metric_drop": 0.2, "min_agreement": 0.5}}


@pytest.fixture(scope="session", autouse=True)
def isolated_cache(tmp_path_factory) -> Path:
    """Every test's builds share one throwaway activation cache, never the user's."""
    root = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("EDGEFREEZE_CACHE_DIR", str(root))
        yield root


@dataclass
class Built:
    """A bundle built through the CLI, with the pipeline file and cache it was built from."""

    bundle: Path
    pipeline: Path
    cache: Path
    result: CliResult


def _build(folder: Path, pipeline: Path) -> Built:
    cache = folder / "cache"  # its own, so tests can read its hits and misses
    result = run_cli("build", str(pipeline), "--output", str(folder / "bundle"), "--json",
                     "--quiet", "--cache-dir", str(cache))
    assert result.exit_code == 0, result.stderr
    return Built(folder / "bundle", pipeline, cache, result)


@pytest.fixture(scope="session")
def smoke(tmp_path_factory) -> Built:
    """The smoke pipeline built once, for real, through the CLI."""
    return _build(tmp_path_factory.mktemp("smoke"), SMOKE)


@pytest.fixture(scope="session")
def smoke_build(smoke) -> tuple[Path, CliResult]:
    return smoke.bundle, smoke.result


@pytest.fixture(scope="session")
def split_build(tmp_path_factory) -> Built:
    """The smoke pipeline with every other form: stem + top (delta updates), fp16, and a
    statically calibrated int8."""
    folder = tmp_path_factory.mktemp("split")
    pipeline = write_pipeline(folder, {
        "export": {"split": True},
        "quantize": {"fp16": True, "mode": "static", "calibration_rows": 32}})
    return _build(folder, pipeline)
