"""The device's side: `edgefreeze device update --repo URL`.

python-tuf's client refreshes the repository's metadata (root, timestamp, snapshot,
targets, in that order, each checked by the specification's rules: signatures by the
keys root names, versions that never go back, expiry dates not passed) into ROOT/tuf,
then fetches the model's release index. The newest release above the serving one that
this device has not refused is fetched file by file: a file the serving version holds
with the same digest (the frozen stem after a head-only retrain) is copied locally, every
other file is downloaded and checked against the digest the signed targets name. The
result is installed as `edgefreeze device install` installs: checked here (signature,
digests, self-check) in the inactive slot, then one atomic switch.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import urllib3
from tuf.api.exceptions import DownloadError, DownloadLengthMismatchError, RepositoryError
from tuf.ngclient import Updater

from edgefreeze.errors import BundleError, CheckFailed, ConfigError, EdgefreezeError
from edgefreeze.fleet.layout import METADATA, TARGETS, Release, ReleaseIndex, file_path, index_path
from edgefreeze.hashing import file_sha256
from edgefreeze.runtime.bundle import MANIFEST
from edgefreeze.runtime.device import Device, open_device
from edgefreeze.runtime.manifest import Manifest
from edgefreeze.runtime.selfcheck import DeviceCheck

METADATA_CACHE = "tuf"  # ROOT/tuf: the metadata this device trusts, and the cached index


@dataclass
class UpdateResult:
    """What one update call did: the release it installed (None: nothing newer to
    install) and what it fetched for it."""

    name: str
    release: int | None
    serving_release: int | None  # before the call (None: not from this repository)
    fetched: list[str] = field(default_factory=list)  # files downloaded
    fetched_bytes: int = 0
    release_bytes: int = 0  # the release's whole size, for the delta's share
    check: DeviceCheck | None = None
    note: str = ""  # why nothing was installed

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "release": self.release,
            "serving_release": self.serving_release,
            "fetched": self.fetched,
            "fetched_bytes": self.fetched_bytes,
            "release_bytes": self.release_bytes,
            "note": self.note,
            **(self.check.as_json() if self.check else {}),
        }


class UnreachableRepository(EdgefreezeError):
    """The repository could not be read (network, server): exit 3, try again later."""


def update(
    root: Path,
    repository: str,
    name: str | None = None,
    bootstrap: Path | None = None,
    trusted_keys: Sequence[Path] = (),
) -> UpdateResult:
    """Bring the device at `root` to the newest release of `name` (default: the serving
    bundle's model) in the TUF repository at the URL `repository`. `bootstrap` is the
    repository's root.json: trusted on the first update, once the repository's metadata
    verifies against it; later updates trust what TUF keeps in ROOT/tuf."""
    if urlsplit(repository).scheme not in ("http", "https") or not urlsplit(repository).netloc:
        raise ConfigError(f"--repo: {repository!r} is not an http:// or https:// URL")
    with open_device(root) as device:
        serving = device.serving()
        name = name or (Manifest.load(serving / MANIFEST).pipeline.name if serving else None)
        if name is None:
            raise ConfigError(f"{root}: nothing installed yet; --name says which model to fetch")
        try:
            updater = _updater(root, repository, bootstrap)
            index = _index(updater, name, repository)
            return _update(device, updater, index, trusted_keys, repository)
        except (RepositoryError, DownloadLengthMismatchError) as exc:
            raise BundleError(
                f"{repository}: refused by TUF's rules, nothing installed "
                f"({type(exc).__name__}: {exc})"
            ) from None
        except (DownloadError, urllib3.exceptions.HTTPError) as exc:
            raise UnreachableRepository(f"{repository}: cannot download ({exc})") from None


def _update(
    device: Device,
    updater: Updater,
    index: ReleaseIndex,
    trusted_keys: Sequence[Path],
    repository: str,
) -> UpdateResult:
    serving = device.serving()
    have = Manifest.load(serving / MANIFEST) if serving else None
    serving_digest = file_sha256(serving / MANIFEST) if serving else None
    serving_release = next(
        (known.version for known in index.releases if known.manifest_sha256 == serving_digest),
        None,
    )
    refused = device.refused()
    newer = _newer(index, serving_release, have)
    result = UpdateResult(index.name, None, serving_release)
    chosen = next(
        (known for known in reversed(newer) if known.manifest_sha256 not in refused), None
    )
    if chosen is None:
        result.note = _why_nothing(index, serving_release, newer, refused)
        return result
    result.release, result.release_bytes = chosen.version, chosen.size
    kept = have.files if have else {}

    def receive(incoming: Path) -> None:
        """Download what the serving version lacks; install fills in the rest from it."""
        for name, file in chosen.files.items():
            if name in kept and kept[name].sha256 == file.sha256:
                continue
            _download(updater, index.name, chosen.version, name, file.sha256, incoming, repository)
            result.fetched.append(name)
            result.fetched_bytes += file.size

    source = f"{repository} {index.name} {chosen.version}"
    try:
        result.check = device.install(receive, source, trusted_keys)
    except CheckFailed as failed:  # --json still says what was fetched for it
        failed.details.update(result.as_json())
        raise
    return result


def _newer(index: ReleaseIndex, serving: int | None, have: Manifest | None) -> list[Release]:
    """The releases an update may install, oldest first: those above the serving one; or,
    where the serving bundle is not in the repository (installed by hand), those built
    after it, so that an update never goes back to an older model."""
    if serving is not None or have is None:
        return [known for known in index.releases if known.version > (serving or 0)]
    built = _when(have.created)
    return [known for known in index.releases if _when(known.created) > built]


def _when(created: str) -> datetime:
    """A manifest's build time (UTC where it names no zone)."""
    try:
        moment = datetime.fromisoformat(created)
    except ValueError:
        raise BundleError(f"{created!r}: not a build time (ISO 8601)") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _download(
    updater: Updater,
    model: str,
    version: int,
    name: str,
    sha256: str,
    incoming: Path,
    repository: str,
) -> None:
    """One release file into `incoming`, checked against the digest targets signs."""
    info = updater.get_targetinfo(file_path(model, version, name))
    if info is None or info.hashes.get("sha256") != sha256:
        raise BundleError(
            f"{repository}: {name} of {model} {version} is not in its targets metadata as "
            "the release index names it; nothing installed"
        )
    target = incoming / name
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        updater.download_target(info, str(target))
    except (RepositoryError, DownloadLengthMismatchError) as exc:
        raise BundleError(
            f"{repository}: {name} of {model} {version} is not the file its targets "
            f"metadata signs ({type(exc).__name__}); nothing installed"
        ) from None


def _why_nothing(
    index: ReleaseIndex, serving: int | None, newer: list[Release], refused: dict[str, str]
) -> str:
    if not index.releases:
        return f"{index.name} has no release in the repository"
    if not newer:
        at = f"{index.name} {serving}" if serving else "a bundle built after every release"
        return f"serving {at}, the newest"
    latest = newer[-1]
    return f"{index.name} {latest.version} was refused here ({refused[latest.manifest_sha256]})"


def _updater(root: Path, repository: str, bootstrap: Path | None) -> Updater:
    """A TUF client keeping its metadata in ROOT/tuf. The first time, `bootstrap`'s root
    is tried in a scratch folder and kept only once the repository's metadata verifies
    against it; a later `bootstrap` must be one of the roots the device already trusts."""
    cache = root / METADATA_CACHE
    if (cache / "root.json").exists():
        if bootstrap is not None and _read(bootstrap) not in _trusted_roots(cache):
            raise ConfigError(
                f"{bootstrap}: {cache} trusts another repository root; remove {cache} to "
                "provision this device for another repository"
            )
        return _client(cache, repository, None)
    if bootstrap is None:
        raise ConfigError(
            f"{root}: trusts no repository yet; --bootstrap names the repository's "
            "root.json (its metadata/root.json, brought to the device by a trusted path)"
        )
    scratch = root / f".{METADATA_CACHE}.partial"  # removed by the next call if killed
    shutil.rmtree(scratch, ignore_errors=True)
    _client(scratch, repository, _read(bootstrap)).refresh()
    os.rename(scratch, cache)
    return _client(cache, repository, None)


def _client(cache: Path, repository: str, bootstrap: bytes | None) -> Updater:
    try:
        (cache / TARGETS).mkdir(parents=True, exist_ok=True)
        return Updater(
            metadata_dir=str(cache),
            metadata_base_url=f"{repository.rstrip('/')}/{METADATA}/",
            target_dir=str(cache / TARGETS),
            target_base_url=f"{repository.rstrip('/')}/{TARGETS}/",
            bootstrap=bootstrap,
        )
    except (RepositoryError, ValueError) as exc:
        raise ConfigError(f"{cache}: not a TUF root this device can trust ({exc})") from None
    except OSError as exc:
        raise ConfigError(f"{cache}: cannot keep the repository's metadata ({exc})") from None


def _read(bootstrap: Path) -> bytes:
    try:
        return bootstrap.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{bootstrap}: cannot read ({exc.strerror})") from None


def _trusted_roots(cache: Path) -> list[bytes]:
    """Every root version the device has trusted (python-tuf keeps them)."""
    return [path.read_bytes() for path in (cache / "root_history").glob("*.root.json")]


def _index(updater: Updater, name: str, repository: str) -> ReleaseIndex:
    """`name`'s release index, downloaded only when it changed since the last call."""
    updater.refresh()
    info = updater.get_targetinfo(index_path(name))
    if info is None:
        raise ConfigError(f"{repository}: holds no release of {name}")
    path = updater.find_cached_target(info) or updater.download_target(info)
    index = ReleaseIndex.parse(Path(path).read_bytes(), f"{repository} {index_path(name)}")
    if index.name != name:
        raise BundleError(f"{repository}: the release index of {name} names {index.name}")
    return index
