"""Shared fixtures: the CLI driven in-process, the tiny checkpoint, and the builds the
suite reads, each made once per test run (once in all, under pytest-xdist: the first
worker to need one builds it behind a file lock, the others wait and read it)."""

from __future__ import annotations

import os

# Nothing in the suite may reach a model hub: a test that tries fails at once, offline.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import json  # noqa: E402
import shutil  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402
from click.testing import CliRunner  # noqa: E402
from filelock import FileLock  # noqa: E402

from edgefreeze.cli import main  # noqa: E402
from edgefreeze.gate import HeldOut  # noqa: E402
from edgefreeze.tasks import DEFAULT_TASK, task_for  # noqa: E402
from tests.tiny_text import tiny_minilm  # noqa: E402

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


def chromium_binary() -> str:
    """Debian's Chromium; where `make test` could not install it, the test asking is
    skipped with the fix, except in CI (CI=true), where a missing browser fails it."""
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if not binary:
        missing = "this test needs Chromium: apt-get install chromium (as root)"
        if os.environ.get("CI") == "true":
            pytest.fail(missing)
        pytest.skip(missing)
    return binary


def run_cli(*args: str) -> CliResult:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return CliResult(result.exit_code, result.stdout, result.stderr)


def write_pipeline(
    folder: Path,
    changes: dict,
    base: Path = SMOKE,
    replace: tuple[str, ...] = (),
    name: str = "pipeline.yaml",
) -> Path:
    """A copy of `base` with nested `changes` merged in, written into `folder`; the
    sections named in `replace` are replaced whole (another plan's keys do not fit)."""
    spec = yaml.safe_load(base.read_text())
    for section in replace:
        spec.pop(section, None)
    _merge(spec, changes)
    path = folder / name
    path.write_text(yaml.safe_dump(spec))
    return path


def _merge(target: dict, changes: dict) -> None:
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = value


# A build that only has to run the whole path (refusals, odd kinds): 1 epoch, few rows.
QUICK = {
    "data": {"sample_rows": 160},
    "train": {"epochs": 1},
    "gate": {"max_metric_drop": 0.2, "min_agreement": 0.5},
}


# Fixtures that build a bundle: a test that uses one is marked `build` (left out of
# `make test-quick`), like the tests that build one themselves.
BUILDS = {"smoke", "tiny", "split_build", "build"}  # build: test_plans.py's builder


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if BUILDS & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.build)


@pytest.fixture(scope="session", autouse=True)
def one_thread_per_worker() -> None:
    """Under pytest-xdist each worker is one core's worth: two workers on two cores, each
    with torch's default of one thread a core, would fight over both."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def restore_torch_threads():
    """A test that changes torch's thread count (a distributed step, a benchmark) must not
    change how every later in-process build computes."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


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


def _shared(tmp_path_factory, name: str, make: Callable[[Path], None]) -> Path:
    """The folder `name`, made by `make` once per test run: under pytest-xdist the workers
    share one base folder, and the first to get here makes it while the others wait."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # pytest-of-USER/pytest-N, shared by the run's workers
    folder, done = root / name, root / f"{name}.done"
    with FileLock(str(root / f"{name}.lock"), timeout=1800):
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)  # what a failed try left
            make(folder)
            done.touch()
    return folder


def _build(tmp_path_factory, name: str, pipeline: Callable[[Path], Path]) -> Built:
    """The pipeline that `pipeline(folder)` writes (or names), built through the CLI once
    per run, with its own cache (tests read its hits and misses) beside the bundle."""

    def make(folder: Path) -> None:
        folder.mkdir()
        path = pipeline(folder)
        result = run_cli(
            "build",
            str(path),
            "--output",
            str(folder / "bundle"),
            "--json",
            "--quiet",
            "--cache-dir",
            str(folder / "cache"),
        )
        assert result.exit_code == 0, result.stderr
        (folder.parent / f"{name}.result.json").write_text(
            json.dumps({"pipeline": str(path), **result.__dict__})
        )

    folder = _shared(tmp_path_factory, name, make)
    saved = json.loads((folder.parent / f"{name}.result.json").read_text())
    return Built(
        folder / "bundle", Path(saved.pop("pipeline")), folder / "cache", CliResult(**saved)
    )


@pytest.fixture(scope="session")
def smoke(tmp_path_factory) -> Built:
    """The smoke pipeline built once, for real (MiniLM), through the CLI."""
    return _build(tmp_path_factory, "smoke", lambda folder: SMOKE)


@pytest.fixture(scope="session")
def smoke_build(smoke) -> tuple[Path, CliResult]:
    return smoke.bundle, smoke.result


# The smoke pipeline on the tiny checkpoint. It learns next to nothing, so its gate only
# asks int8 to roughly follow PyTorch; fp32's exactness rule keeps its default.
TINY_GATE = {"max_metric_drop": 0.2, "min_agreement": 0.5}


def _tiny_pipeline(folder: Path) -> None:
    checkpoint = tiny_minilm(folder / "model")
    write_pipeline(
        folder, {"name": "tiny", "model": str(checkpoint), "gate": TINY_GATE}, name="tiny.yaml"
    )


@pytest.fixture(scope="session")
def tiny_pipeline(tmp_path_factory) -> Path:
    """The smoke pipeline with the tiny checkpoint (tests/tiny_text.py) as its model, saved
    once: the base for the tests whose behaviour does not depend on the real model
    (`write_pipeline(folder, changes, base=tiny_pipeline)`)."""
    return _shared(tmp_path_factory, "tiny-checkpoint", _tiny_pipeline) / "tiny.yaml"


@pytest.fixture(scope="session")
def tiny_checkpoint(tiny_pipeline) -> Path:
    return tiny_pipeline.parent / "model"


@pytest.fixture(scope="session")
def tiny(tmp_path_factory, tiny_pipeline) -> Built:
    """The tiny pipeline built once, through the CLI."""
    return _build(tmp_path_factory, "tiny", lambda folder: tiny_pipeline)


@pytest.fixture(scope="session")
def split_build(tmp_path_factory, tiny_pipeline) -> Built:
    """The tiny pipeline with every other form: stem + top (delta updates), fp16, and a
    statically calibrated int8."""
    return _build(
        tmp_path_factory,
        "split",
        lambda folder: write_pipeline(
            folder,
            {
                "export": {"split": True},
                "quantize": {"fp16": True, "mode": "static", "calibration_rows": 32},
            },
            base=tiny_pipeline,
        ),
    )


def fp32_held_out(data, reference, encoder) -> HeldOut:
    """The held-out split with an fp32 ONNX model's outputs standing in for PyTorch's
    (equal within 1e-5): what the quantization fallback reads. It runs no PyTorch, so
    there are no PyTorch inputs."""
    return HeldOut(
        examples=data.test.inputs,
        targets=data.test.targets,
        encoded=None,
        reference=reference,
        encoder=encoder,
        fingerprint=data.test.fingerprint(),
        label_names=data.label_names,
    )
