"""A fleet's updates: device bundles cut to the forms a device runs (`slim`), a TUF
repository a release pipeline publishes to (`repo`), and devices that update from it over
HTTP (`device update`), fetching only what changed and refusing what TUF's rules or the
self-check refuse."""

from __future__ import annotations

import hashlib
import json
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from edgefreeze.fleet import repository
from edgefreeze.runtime import Predictor
from tests.conftest import run_cli
from tests.test_device import serving
from tests.test_signing import shifted_self_check, write_key

FORM = "split-int8"  # what the devices here run


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base's name
        pass


@dataclass
class Served:
    folder: Path
    url: str
    keys: Path

    def add(self, bundle: Path) -> dict:
        added = run_cli(
            "repo", "add", str(self.folder), str(bundle), "--keys", str(self.keys), "--json"
        )
        assert added.exit_code == 0, added.stderr
        return added.json()

    def update(self, root: Path, *extra: str):
        return run_cli(
            "device",
            "update",
            "--root",
            str(root),
            "--repo",
            self.url,
            "--json",
            "--bootstrap",
            str(self.folder / "metadata" / "root.json"),
            *extra,
        )


@pytest.fixture
def served(tmp_path) -> Iterator[Served]:
    """A new repository, served over HTTP on 127.0.0.1 while the test runs."""
    folder, keys = tmp_path / "repo", tmp_path / "keys"
    made = run_cli("repo", "init", str(folder), "--keys", str(keys), "--json")
    assert made.exit_code == 0, made.stderr
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(QuietHandler, directory=str(folder)))
    thread = threading.Thread(target=partial(server.serve_forever, poll_interval=0.05), daemon=True)
    thread.start()
    try:
        yield Served(folder, f"http://127.0.0.1:{server.server_address[1]}", keys)
    finally:
        server.shutdown()
        server.server_close()


def device_bundle(bundle: Path, output: Path, *extra: str) -> Path:
    cut = run_cli("slim", str(bundle), "--model", FORM, "--output", str(output), "--json", *extra)
    assert cut.exit_code == 0, cut.stderr
    return output


def digests(bundle: Path) -> dict[str, str]:
    return {
        str(path.relative_to(bundle)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in bundle.rglob("*")
        if path.is_file()
    }


@pytest.fixture
def releases(split_build, tmp_path) -> list[Path]:
    """Three device bundles of the tiny split build: the first; a second whose self-check
    outputs moved by a hair (its manifest and self-check change, its models do not); a
    third whose self-check no device can pass."""
    second = shifted_self_check(split_build.bundle, tmp_path / "full-2", FORM, 1e-6)
    third = shifted_self_check(split_build.bundle, tmp_path / "full-3", FORM, 1.0)
    return [
        device_bundle(full, tmp_path / f"device-bundle-{number}")
        for number, full in enumerate((split_build.bundle, second, third), start=1)
    ]


def test_a_device_bundle_keeps_its_forms_and_passes_every_check(split_build, tmp_path):
    _, public, _ = write_key(tmp_path, "release")
    cut = device_bundle(
        split_build.bundle, tmp_path / "cut", "--sign-key", str(tmp_path / "release.pem")
    )
    manifest = json.loads((cut / "manifest.json").read_text())
    assert set(manifest["files"]) == {
        path for path in digests(cut) if path not in ("manifest.json", "model.sig")
    }
    assert "model.onnx" not in manifest["files"] and "stem.onnx" not in manifest["files"]
    assert "trainable.safetensors" in manifest["slim"]["dropped"]
    checked = run_cli("verify", str(cut), "--trust", str(public), "--json")
    assert checked.exit_code == 0, checked.stderr
    assert list(checked.json()["self_check"]) == [FORM]
    texts = ["a warm, funny film", "dull and far too long"]
    whole = Predictor(split_build.bundle, FORM).predict(texts)
    assert Predictor(cut).predict(texts) == whole  # its one form is the default

    assert (
        run_cli("slim", str(cut), "--model", "int8", "--output", str(tmp_path / "x")).exit_code == 2
    )
    assert not (tmp_path / "x").exists()


def test_devices_fetch_only_what_changed_and_skip_what_failed_here(served, releases, tmp_path):
    first, second, third = releases
    root = tmp_path / "device"
    added = served.add(first)
    assert added["version"] == 1 and added["bytes_new_since_previous"] is None
    installed = served.update(root, "--name", "tiny")
    assert installed.exit_code == 0, installed.stderr
    assert installed.json()["release"] == 1
    assert set(installed.json()["fetched"]) == set(digests(first))

    changed = {
        name for name, digest in digests(second).items() if digests(first).get(name) != digest
    }
    assert changed == {"manifest.json", "selfcheck.json"}
    added = served.add(second)
    assert added["bytes_new_since_previous"] == sum((second / n).stat().st_size for n in changed)
    updated = served.update(root)  # the model: the serving bundle's
    assert updated.exit_code == 0, updated.stderr
    assert (updated.json()["release"], updated.json()["serving_release"]) == (2, 1)
    assert set(updated.json()["fetched"]) == changed  # the models came from the serving slot
    assert serving(root) == "b" and digests(root / "current") == digests(second)

    served.add(third)
    failed = served.update(root)
    assert failed.exit_code == 1 and "self-check failed" in failed.stderr
    assert serving(root) == "b" and not (root / "slots" / ".incoming").exists()
    again = served.update(root)  # not fetched again
    assert again.exit_code == 0 and again.json()["status"] == "up-to-date"
    assert again.json()["fetched"] == [] and "3 was refused here" in again.json()["note"]

    back = run_cli("device", "rollback", "--root", str(root))
    assert back.exit_code == 0 and serving(root) == "a"
    after = served.update(root)  # release 2 was rolled back from: it stays away too
    assert after.exit_code == 0 and after.json()["status"] == "up-to-date"
    assert serving(root) == "a"


def test_tuf_refuses_altered_files_expired_and_replayed_metadata(
    served, releases, tmp_path, monkeypatch
):
    first, second, _ = releases
    root = tmp_path / "device"
    served.add(first)
    assert served.update(root, "--name", "tiny").exit_code == 0
    old_timestamp = (served.folder / "metadata" / "timestamp.json").read_bytes()
    served.add(second)

    stored = next((served.folder / "targets" / "tiny" / "2").glob("*.selfcheck.json"))
    original = stored.read_bytes()
    stored.write_bytes(original.replace(b"]", b"}", 1))  # a server or a path that alters it
    altered = served.update(root)
    assert altered.exit_code == 2 and "selfcheck.json" in altered.stderr
    assert serving(root) == "a" and not (root / "slots" / ".incoming").exists()
    stored.write_bytes(original)
    assert served.update(root).exit_code == 0 and serving(root) == "b"

    timestamp = served.folder / "metadata" / "timestamp.json"
    newest = timestamp.read_bytes()
    timestamp.write_bytes(old_timestamp)  # replayed
    replayed = served.update(root)
    assert replayed.exit_code == 2 and "BadVersionNumberError" in replayed.stderr
    timestamp.write_bytes(newest)

    monkeypatch.setitem(repository.EXPIRY, "timestamp", timedelta(days=-1))
    assert run_cli("repo", "refresh", str(served.folder), "--keys", str(served.keys)).exit_code == 0
    expired = served.update(root)  # a repository frozen in the past
    assert expired.exit_code == 2 and "ExpiredMetadataError" in expired.stderr
    assert serving(root) == "b"


def test_the_repository_refuses_what_it_cannot_publish(served, releases, tmp_path):
    first = releases[0]
    served.add(first)
    again = run_cli("repo", "add", str(served.folder), str(first), "--keys", str(served.keys))
    assert again.exit_code == 2 and "already released as tiny 1" in again.stderr
    again = run_cli("repo", "init", str(served.folder), "--keys", str(served.keys))
    assert again.exit_code == 2 and "already holds a repository" in again.stderr

    other = tmp_path / "other-keys"
    other.mkdir()
    shutil.copy(served.keys / "snapshot.pem", other)
    made = run_cli("repo", "init", str(tmp_path / "other-repo"), "--keys", str(other))
    assert made.exit_code == 0  # and with it, keys of its own for the other roles
    wrong = run_cli("repo", "refresh", str(served.folder), "--keys", str(other))
    assert wrong.exit_code == 2 and "timestamp.pem is not the key" in wrong.stderr
    missing = run_cli("repo", "add", str(served.folder), str(first), "--keys", str(tmp_path))
    assert missing.exit_code == 2 and "targets.pem" in missing.stderr
    not_bundle = run_cli(
        "repo", "add", str(served.folder), str(tmp_path), "--keys", str(served.keys)
    )
    assert not_bundle.exit_code == 2
    assert (
        run_cli(
            "device",
            "update",
            "--root",
            str(tmp_path / "d"),
            "--repo",
            served.url,
            "--name",
            "tiny",
        ).exit_code
        == 2
    )  # trusts no repository yet


def test_an_update_never_goes_back_to_an_older_model(served, releases, tmp_path):
    """A device serving a bundle the repository does not list (installed by hand) takes
    only releases built after it."""
    served.add(releases[0])
    for built, expected in (
        ("2999-01-01T00:00:00+00:00", "up-to-date"),
        ("2000-01-01", "installed"),
    ):
        hand = shutil.copytree(releases[0], tmp_path / f"hand-{built[:4]}")
        manifest = json.loads((hand / "manifest.json").read_text())
        (hand / "manifest.json").write_text(json.dumps({**manifest, "created": built}))
        root = tmp_path / f"device-{built[:4]}"
        assert run_cli("device", "install", str(hand), "--root", str(root)).exit_code == 0
        updated = served.update(root, "--name", "tiny")
        assert updated.exit_code == 0, updated.stderr
        assert updated.json()["status"] == expected


def test_a_device_keeps_the_root_it_was_provisioned_with(served, releases, tmp_path):
    served.add(releases[0])
    root = tmp_path / "device"
    assert served.update(root, "--name", "tiny").exit_code == 0
    other = tmp_path / "other"
    assert (
        run_cli("repo", "init", str(other), "--keys", str(tmp_path / "other-keys")).exit_code == 0
    )
    swapped = run_cli(
        "device",
        "update",
        "--root",
        str(root),
        "--repo",
        served.url,
        "--bootstrap",
        str(other / "metadata" / "root.json"),
    )
    assert swapped.exit_code == 2 and "trusts another repository root" in swapped.stderr

    fresh = tmp_path / "fresh"  # provisioned with a root this repository does not sign by
    wrong = run_cli(
        "device",
        "update",
        "--root",
        str(fresh),
        "--repo",
        served.url,
        "--name",
        "tiny",
        "--bootstrap",
        str(other / "metadata" / "root.json"),
    )
    assert wrong.exit_code == 2 and "refused by TUF's rules" in wrong.stderr
    assert not (fresh / "tuf").exists()  # nothing kept of a root that did not verify
    assert served.update(fresh, "--name", "tiny").exit_code == 0  # the right one, later
    bad_url = run_cli("device", "update", "--root", str(fresh), "--repo", "file:///srv/repo")
    assert bad_url.exit_code == 2 and "not an http" in bad_url.stderr


def test_refresh_renews_what_expires_soon_and_warns_of_what_it_cannot(
    served, tmp_path, monkeypatch
):
    monkeypatch.setattr(repository, "RENEW_WITHIN", timedelta(days=400))
    online = tmp_path / "online-keys"  # snapshot and timestamp only
    online.mkdir()
    for role in ("snapshot", "timestamp"):
        shutil.copy(served.keys / f"{role}.pem", online)
    partial = run_cli("repo", "refresh", str(served.folder), "--keys", str(online), "--json")
    assert partial.exit_code == 0, partial.stderr
    roles = partial.json()["roles"]
    assert roles["root"]["version"] == 1 and "warning" in roles["targets"]
    renewed = run_cli("repo", "refresh", str(served.folder), "--keys", str(served.keys), "--json")
    assert renewed.exit_code == 0, renewed.stderr
    roles = renewed.json()["roles"]
    assert (roles["root"]["version"], roles["targets"]["version"]) == (2, 2)
    assert (served.folder / "metadata" / "2.root.json").is_file()

    nothing = tmp_path / "not-a-repository"
    refused = run_cli("repo", "refresh", str(nothing), "--keys", str(served.keys))
    assert refused.exit_code == 2 and "not a repository" in refused.stderr
    assert not nothing.exists()
