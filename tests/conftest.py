"""Shared fixtures: the CLI driven in-process, and one real smoke build per session."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from edgefreeze.cli import main

ROOT = Path(__file__).resolve().parent.parent
SMOKE = ROOT / "pipelines" / "smoke.yaml"


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


def write_pipeline(folder: Path, changes: dict, base: Path = SMOKE) -> Path:
    """A copy of `base` with nested `changes` merged in, written into `folder`."""
    spec = yaml.safe_load(base.read_text())
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


@pytest.fixture(scope="session", autouse=True)
def isolated_cache(tmp_path_factory) -> Path:
    """Every test's builds share one throwaway activation cache, never the user's."""
    root = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("EDGEFREEZE_CACHE_DIR", str(root))
        yield root


@pytest.fixture(scope="session")
def smoke_build(tmp_path_factory) -> tuple[Path, CliResult]:
    """The smoke pipeline built once, for real, through the CLI."""
    output = tmp_path_factory.mktemp("bundles") / "smoke"
    result = run_cli("build", str(SMOKE), "--output", str(output), "--json", "--quiet")
    assert result.exit_code == 0, result.stderr
    return output, result
