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

import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
    repository's root.json, trusted on first use (later calls trust what TUF keeps)."""
    with open_device(root) as device:
        serving = device.serving()
        name = name or (Manifest.load(serving / MANIFEST).pipeline.name if serving else None)
        if name is None:
            raise ConfigError(f"{root}: nothing installed yet; --name says which model to fetch")
        updater = _updater(root, repository, bootstrap)
        try:
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
    serving_digest = file_sha256(serving / MANIFEST) if serving else None
    serving_release = next(
        (known.version for known in index.releases if known.manifest_sha256 == serving_digest),
        None,
    )
    refused = device.refused()
    newer = [known for known in index.releases if known.version > (serving_release or 0)]
    result = UpdateResult(index.name, None, serving_release)
    chosen = next(
        (known for known in reversed(newer) if known.manifest_sha256 not in refused), None
    )
    if chosen is None:
        result.note = _why_nothing(index, serving_release, newer, refused)
        return result
    result.release, result.release_bytes = chosen.version, chosen.size

    def receive(incoming: Path) -> None:
        for name, file in chosen.files.items():
            have = serving / name if serving else None
            target = incoming / name
            target.parent.mkdir(parents=True, exist_ok=True)
            if have is not None and have.is_file() and file_sha256(have) == file.sha256:
                shutil.copyfile(have, target)
                continue
            info = updater.get_targetinfo(file_path(index.name, chosen.version, name))
            if info is None or info.hashes.get("sha256") != file.sha256:
                raise BundleError(
                    f"{repository}: {name} of {index.name} {chosen.version} is not in its "
                    "targets metadata as the release index names it; nothing installed"
                )
            try:
                updater.download_target(info, str(target))
            except (RepositoryError, DownloadLengthMismatchError) as exc:
                raise BundleError(
                    f"{repository}: {name} of {index.name} {chosen.version} is not the file "
                    f"its targets metadata signs ({type(exc).__name__}); nothing installed"
                ) from None
            result.fetched.append(name)
            result.fetched_bytes += info.length

    source = f"{repository} {index.name} {chosen.version}"
    try:
        result.check = device.install(receive, source, trusted_keys)
    except CheckFailed as failed:  # --json still says what was fetched for it
        failed.details.update(result.as_json())
        raise
    return result


def _why_nothing(
    index: ReleaseIndex, serving: int | None, newer: list[Release], refused: dict[str, str]
) -> str:
    if not index.releases:
        return f"{index.name} has no release in the repository"
    if not newer:
        return f"serving {index.name} {serving}, the newest release"
    latest = newer[-1]
    return f"{index.name} {latest.version} was refused here ({refused[latest.manifest_sha256]})"


def _updater(root: Path, repository: str, bootstrap: Path | None) -> Updater:
    """A TUF client keeping its metadata in ROOT/tuf: the root this device trusts (from
    `bootstrap` the first time) and what the last refresh checked."""
    cache = root / METADATA_CACHE
    trusted: bytes | None = None
    if not (cache / "root.json").exists():
        if bootstrap is None:
            raise ConfigError(
                f"{root}: trusts no repository yet; --bootstrap names the repository's "
                "root.json (its metadata/root.json, brought to the device by a trusted path)"
            )
        try:
            trusted = bootstrap.read_bytes()
        except OSError as exc:
            raise ConfigError(f"{bootstrap}: cannot read ({exc.strerror})") from None
    try:
        (cache / TARGETS).mkdir(parents=True, exist_ok=True)
        return Updater(
            metadata_dir=str(cache),
            metadata_base_url=f"{repository.rstrip('/')}/{METADATA}/",
            target_dir=str(cache / TARGETS),
            target_base_url=f"{repository.rstrip('/')}/{TARGETS}/",
            bootstrap=trusted,
        )
    except (RepositoryError, ValueError) as exc:
        where = bootstrap or cache / "root.json"
        raise ConfigError(f"{where}: not a TUF root this device can trust ({exc})") from None


def _index(updater: Updater, name: str, repository: str) -> ReleaseIndex:
    """`name`'s release index, downloaded only when it changed since the last call."""
    updater.refresh()
    info = updater.get_targetinfo(index_path(name))
    if info is None:
        raise ConfigError(f"{repository}: holds no release of {name}")
    path = updater.find_cached_target(info) or updater.download_target(info)
    return ReleaseIndex.parse(Path(path).read_bytes(), f"{repository} {index_path(name)}")
