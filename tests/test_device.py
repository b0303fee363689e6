"""A device's installs (`edgefreeze device`): two slots, checked before the atomic switch,
the previous version kept; delta updates filled from the serving version; a kill at any
step leaves the old or the new version serving and the next call cleans up."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edgefreeze.runtime import Predictor
from edgefreeze.runtime.selfcheck import check_here
from tests.conftest import run_cli
from tests.test_signing import shifted_self_check, write_key


def install(root: Path, source: Path, *extra: str):
    return run_cli("device", "install", str(source), "--root", str(root), "--json", *extra)


def serving(root: Path) -> str:
    """The slot `current` names, after checking that what it holds is a whole, sound
    bundle (every digest, and its self-check here)."""
    current = root / "current"
    assert check_here(Predictor(current).bundle).passed
    return Path(os.readlink(current)).name


def manifest_name(bundle: Path) -> str:
    return json.loads((bundle / "manifest.json").read_text())["pipeline"]["name"]


def test_install_switches_keeps_the_previous_and_rolls_back(tiny, split_build, tmp_path):
    root = tmp_path / "device"
    first = install(root, tiny.bundle)
    assert first.exit_code == 0, first.stderr
    assert first.json()["current"] == "a" and first.json()["previous"] is None
    second = install(root, split_build.bundle)
    assert second.exit_code == 0, second.stderr
    assert (second.json()["current"], second.json()["previous"]) == ("b", "a")
    assert manifest_name(root / "current") == manifest_name(split_build.bundle)

    back = run_cli("device", "rollback", "--root", str(root), "--json")
    assert back.exit_code == 0, back.stderr
    assert (back.json()["current"], back.json()["previous"]) == ("a", "b")
    assert serving(root) == "a"


def test_a_delta_is_filled_from_the_serving_version_only_where_digests_match(
    split_build, tiny, tmp_path
):
    delta = shutil.copytree(split_build.bundle, tmp_path / "delta")
    for name in ("stem.onnx", "stem.int8.onnx"):
        (delta / name).unlink()  # what a device already has

    fresh = tmp_path / "fresh"
    assert install(fresh, tiny.bundle).exit_code == 0
    refused = install(fresh, delta)  # the serving version has no such stem
    assert refused.exit_code == 2 and "stem" in refused.stderr
    assert serving(fresh) == "a" and not (fresh / "slots" / ".incoming").exists()

    root = tmp_path / "device"
    assert install(root, split_build.bundle).exit_code == 0
    assert install(root, delta).exit_code == 0
    assert serving(root) == "b"
    assert (root / "current" / "stem.onnx").read_bytes() == (
        split_build.bundle / "stem.onnx"
    ).read_bytes()


def test_a_bundle_whose_self_check_fails_here_is_not_switched_to(tiny, tmp_path):
    root = tmp_path / "device"
    assert install(root, tiny.bundle).exit_code == 0
    broken = shifted_self_check(tiny.bundle, tmp_path / "broken", "int8", 1.0)
    result = install(root, broken)
    assert result.exit_code == 1 and "not switched" in result.stderr
    assert serving(root) == "a" and not (root / "previous").exists()
    assert sorted(p.name for p in (root / "slots").iterdir()) == ["a"]


def test_status_of_a_folder_that_is_no_device_is_one_line_and_exit_2(tmp_path):
    result = run_cli("device", "status", "--root", str(tmp_path / "typo"))
    assert result.exit_code == 2 and "not a device folder" in result.stderr
    assert not (tmp_path / "typo").exists()


def test_an_unsigned_bundle_is_refused_where_a_key_is_trusted(tiny, tmp_path):
    _, public, _ = write_key(tmp_path, "release")
    result = install(tmp_path / "device", tiny.bundle, "--trust", str(public))
    assert result.exit_code == 2 and "not signed" in result.stderr
    assert not (tmp_path / "device" / "current").exists()


def test_a_rollback_killed_between_its_links_keeps_a_way_back(tiny, split_build, tmp_path):
    root = tmp_path / "device"
    assert install(root, tiny.bundle).exit_code == 0
    assert install(root, split_build.bundle).exit_code == 0
    killed = subprocess.run(
        [sys.executable, "-m", "edgefreeze", "device", "rollback", "--root", str(root)],
        capture_output=True,
        text=True,
        env={**os.environ, "EDGEFREEZE_FAILPOINT": "rollback-switch"},
    )
    assert killed.returncode == -9, killed.stderr
    status = run_cli("device", "status", "--root", str(root), "--json").json()
    assert (status["current"], status["previous"]) == ("a", "b")
    assert serving(root) == "a"


def test_a_manifest_naming_files_outside_the_bundle_is_refused(split_build, tiny, tmp_path):
    root = tmp_path / "device"
    assert install(root, tiny.bundle).exit_code == 0
    update = shutil.copytree(split_build.bundle, tmp_path / "update")
    manifest = json.loads((update / "manifest.json").read_text())
    manifest["files"]["../../escape.onnx"] = manifest["files"]["model.onnx"]
    (update / "manifest.json").write_text(json.dumps(manifest))
    result = install(root, update)
    assert result.exit_code == 2 and "leads out of the bundle" in result.stderr
    assert serving(root) == "a" and not (tmp_path / "escape.onnx").exists()


@pytest.mark.parametrize("point", ["install-copy", "install-slot", "install-switch"])
def test_killed_at_any_step_the_device_serves_one_whole_version(tiny, split_build, tmp_path, point):
    root = tmp_path / "device"
    assert install(root, tiny.bundle).exit_code == 0
    killed = subprocess.run(
        [sys.executable, "-m", "edgefreeze", "device", "install", str(split_build.bundle)]
        + ["--root", str(root)],
        capture_output=True,
        text=True,
        env={**os.environ, "EDGEFREEZE_FAILPOINT": point},
    )
    assert killed.returncode == -9, killed.stderr
    old_or_new = {"install-copy": "a", "install-slot": "a", "install-switch": "b"}[point]
    assert serving(root) == old_or_new

    status = run_cli("device", "status", "--root", str(root), "--json").json()
    assert status["current"] == old_or_new and status["cleaned"], status
    # The way back is the old version once the new one serves; before, there is none
    # (the version a rollback would have returned to is the one this install replaces).
    assert status["previous"] == {"a": None, "b": "a"}[old_or_new]
    assert sorted(status["versions"]) == sorted({"a", old_or_new})
    assert not (root / "slots" / ".incoming").exists()
    assert install(root, split_build.bundle).exit_code == 0  # the next install completes
    assert manifest_name(root / "current") == manifest_name(split_build.bundle)
