"""The release pipeline's side: a TUF repository folder, served as static files, that
bundles are published to (`edgefreeze repo init`, `repo add`, `repo refresh`).

Each top-level role has its own key (ROLE.pem in a key folder kept off the server):
root names the other keys, targets signs the list of files, snapshot the version of that
list, timestamp the newest snapshot. Expiry dates bound how long a device trusts what it
has: the timestamp's is short (`repo refresh` renews it from a timer), so a repository
frozen in the past, or an attacker replaying its old metadata, is refused once it lapses.
Metadata is written in the order that keeps the repository consistent for a device
reading it meanwhile: targets files, then targets, snapshot and last timestamp, each by
rename.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.serialization import load_pem_private_key
from securesystemslib.signer import CryptoSigner
from tuf.api.metadata import (
    Metadata,
    MetaFile,
    Root,
    Signed,
    Snapshot,
    TargetFile,
    Targets,
    Timestamp,
)
from tuf.api.serialization import DeserializationError
from tuf.api.serialization.json import JSONSerializer
from tuf.repository import Repository

from edgefreeze.atomic import exclusive, write_text
from edgefreeze.errors import BundleError, ConfigError
from edgefreeze.fleet.layout import (
    METADATA,
    TARGETS,
    Release,
    ReleaseFile,
    ReleaseIndex,
    file_path,
    index_path,
)
from edgefreeze.hashing import file_sha256
from edgefreeze.runtime.bundle import MANIFEST, Bundle
from edgefreeze.runtime.signature import SIGNATURE

ROLES = ("root", "targets", "snapshot", "timestamp")
ONLINE_ROLES = ("targets", "snapshot", "timestamp")  # what `repo add` signs with
EXPIRY = {
    "root": timedelta(days=365),
    "targets": timedelta(days=365),
    "snapshot": timedelta(days=30),
    "timestamp": timedelta(days=7),
}


@dataclass(frozen=True)
class PublishedRelease:
    """What `repo add` published, and what a device serving the release before fetches."""

    name: str
    release: Release
    fetched_from_previous: int | None  # bytes new since the previous release (None: first)

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.release.version,
            "files": len(self.release.files),
            "bytes": self.release.size,
            "bytes_new_since_previous": self.fetched_from_previous,
        }


def init_repository(folder: Path, keys: Path) -> list[Path]:
    """A new repository in `folder` with one key per role from `keys` (created where
    missing, readable by the owner only). Returns the key files it created."""
    if (folder / METADATA).exists():
        raise ConfigError(f"{folder}: already holds a repository ({METADATA}/ exists)")
    created = [_create_key(keys, role) for role in ROLES if not (keys / f"{role}.pem").exists()]
    with _locked(folder):
        repository = BundleRepository(folder, {role: _signer(keys, role) for role in ROLES})
        with repository.edit_root() as root:
            for role in ROLES:
                root.add_key(repository.signers[role].public_key, role)
            root.consistent_snapshot = True
        with repository.edit_targets():
            pass
        repository.do_snapshot()
        repository.do_timestamp()
    return created


def add_release(
    folder: Path, bundle_path: Path, keys: Path, trusted_keys: Sequence[Path] = ()
) -> PublishedRelease:
    """Publish the bundle at `bundle_path` as its model's next release: every file checked
    against the manifest (and the signature, with `trusted_keys`), stored under its
    digest, listed in the release index, then signed into targets, snapshot, timestamp."""
    bundle = Bundle(bundle_path, trusted_keys)
    for name in bundle.manifest.files:
        bundle.verified(name)
    extra = [SIGNATURE] if (bundle.path / SIGNATURE).is_file() else []
    names = [MANIFEST, *bundle.manifest.files, *extra]
    model = bundle.manifest.pipeline.name
    with _locked(folder):
        repository = BundleRepository(folder, {role: _signer(keys, role) for role in ONLINE_ROLES})
        index = repository.index(model)
        manifest_sha256 = file_sha256(bundle.path / MANIFEST)
        for earlier in index.releases:
            if earlier.manifest_sha256 == manifest_sha256:
                raise ConfigError(f"{bundle_path}: already released as {model} {earlier.version}")
        previous = index.latest()
        release = Release(
            version=previous.version + 1 if previous else 1,
            created=bundle.manifest.created,
            manifest_sha256=manifest_sha256,
            files={
                name: ReleaseFile(
                    sha256=file_sha256(bundle.path / name), size=(bundle.path / name).stat().st_size
                )
                for name in names
            },
        )
        index.releases.append(release)
        with repository.edit_targets() as targets:
            for name in names:
                path = file_path(model, release.version, name)
                targets.targets[path] = repository.store(path, bundle.path / name)
            text = index.model_dump_json(indent=1).encode()
            targets.targets[index_path(model)] = repository.store_bytes(index_path(model), text)
        repository.do_snapshot()
        repository.do_timestamp()
    return PublishedRelease(model, release, _new_bytes(release, previous))


def refresh_repository(folder: Path, keys: Path) -> dict[str, int]:
    """Re-sign snapshot and timestamp (the online roles) with fresh expiry dates: what a
    timer runs well within the timestamp's lifetime. Returns each role's version."""
    with _locked(folder):
        repository = BundleRepository(
            folder, {role: _signer(keys, role) for role in ("snapshot", "timestamp")}
        )
        repository.do_snapshot(force=True)
        repository.do_timestamp(force=True)
        return dict(repository.versions)


def _new_bytes(release: Release, previous: Release | None) -> int | None:
    """Bytes of `release` a device serving `previous` lacks (what its update fetches)."""
    if previous is None:
        return None
    return sum(
        file.size
        for name, file in release.files.items()
        if name not in previous.files or previous.files[name].sha256 != file.sha256
    )


@contextmanager
def _locked(folder: Path) -> Iterator[None]:
    try:
        (folder / METADATA).mkdir(parents=True, exist_ok=True)
        (folder / TARGETS).mkdir(exist_ok=True)
        with exclusive(folder / ".lock"):
            yield
    except OSError as exc:
        raise ConfigError(f"{folder}: cannot write the repository ({exc})") from None


def _create_key(keys: Path, role: str) -> Path:
    path = keys / f"{role}.pem"
    try:
        keys.mkdir(parents=True, exist_ok=True)
        handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot create the {role} key ({exc.strerror})") from None
    with os.fdopen(handle, "wb") as stream:
        stream.write(CryptoSigner.generate_ed25519().private_bytes)
    return path


def _signer(keys: Path, role: str) -> CryptoSigner:
    """The signer for `role` from keys/ROLE.pem (a PEM private key)."""
    path = keys / f"{role}.pem"
    try:
        return CryptoSigner(load_pem_private_key(path.read_bytes(), password=None))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the {role} key ({exc.strerror})") from None
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{path}: not an unencrypted PEM private key ({exc})") from None


class BundleRepository(Repository):
    """python-tuf's Repository over a folder: each role's newest version read from the
    metadata on disk (timestamp -> snapshot -> targets; the highest N.root.json), each
    new version expiring per EXPIRY, signed, checked against root's keys and written."""

    def __init__(self, folder: Path, signers: dict[str, CryptoSigner]) -> None:
        self.folder, self.signers = folder, signers
        metadata = folder / METADATA
        roots = [int(path.name.split(".")[0]) for path in metadata.glob("[0-9]*.root.json")]
        self.versions = {"root": max(roots, default=0), "timestamp": 0, "snapshot": 0, "targets": 0}
        if (metadata / "timestamp.json").exists():
            timestamp = Metadata[Timestamp].from_file(str(metadata / "timestamp.json")).signed
            snapshot_version = timestamp.snapshot_meta.version
            snapshot = self._read("snapshot", snapshot_version).signed
            self.versions.update(
                timestamp=timestamp.version,
                snapshot=snapshot_version,
                targets=snapshot.meta["targets.json"].version,
            )
        if self.versions["root"]:
            self._check_keys()

    def _check_keys(self) -> None:
        """Each signer's key is one root names for its role: checked before anything is
        written, as devices would refuse what another key signs."""
        root = self.root()
        for role, signer in self.signers.items():
            if signer.public_key.keyid not in root.roles[role].keyids:
                raise ConfigError(
                    f"{role}.pem is not the key this repository's root names for {role}"
                )

    @property
    def targets_infos(self) -> dict[str, MetaFile]:
        return {"targets.json": MetaFile(self.versions["targets"])}

    @property
    def snapshot_info(self) -> MetaFile:
        return MetaFile(self.versions["snapshot"])

    def open(self, role: str) -> Metadata[Any]:
        version = self.versions[role]
        if version:
            return self._read(role, version)
        kinds: dict[str, Callable[[], Signed]] = {
            "root": Root,
            "targets": Targets,
            "snapshot": Snapshot,
            "timestamp": Timestamp,
        }
        fresh: Metadata[Any] = Metadata(kinds[role]())
        fresh.signed.version = 0  # close() counts up to 1
        return fresh

    def close(self, role: str, md: Metadata[Any]) -> None:
        if role not in self.signers:
            raise ConfigError(f"the {role} key is needed to change {role} metadata")
        md.signed.version += 1
        md.signed.expires = datetime.now(UTC).replace(microsecond=0) + EXPIRY[role]
        md.signatures.clear()
        md.sign(self.signers[role], append=True)
        data = md.to_bytes(JSONSerializer(compact=False)).decode()
        write_text(self._path(role, md.signed.version), data)
        if role == "root":
            write_text(self.folder / METADATA / "root.json", data)  # for provisioning
        self.versions[role] = md.signed.version

    def index(self, name: str) -> ReleaseIndex:
        """`name`'s release index as the current targets metadata lists it."""
        listed = self.targets().targets.get(index_path(name))
        if listed is None:
            return ReleaseIndex(name=name)
        stored = self._stored(index_path(name), listed.hashes["sha256"])
        try:
            return ReleaseIndex.parse(stored.read_bytes(), str(stored))
        except OSError as exc:
            raise BundleError(f"{stored}: cannot read the release index ({exc.strerror})") from None

    def store(self, path: str, source: Path) -> TargetFile:
        """Copy `source` to where a device fetches target `path` (HASH.NAME); its entry."""
        entry = TargetFile.from_file(path, str(source), ["sha256"])
        stored = self._stored(path, entry.hashes["sha256"])
        if not stored.exists():
            stored.parent.mkdir(parents=True, exist_ok=True)
            partial = stored.with_name(f".{stored.name}.partial")
            shutil.copyfile(source, partial)
            os.replace(partial, stored)
        return entry

    def store_bytes(self, path: str, data: bytes) -> TargetFile:
        entry = TargetFile.from_data(path, data, ["sha256"])
        stored = self._stored(path, entry.hashes["sha256"])
        stored.parent.mkdir(parents=True, exist_ok=True)
        write_text(stored, data.decode())
        return entry

    def _stored(self, path: str, sha256: str) -> Path:
        folder, _, name = path.rpartition("/")
        return self.folder / TARGETS / folder / f"{sha256}.{name}"

    def _read(self, role: str, version: int) -> Metadata[Any]:
        path = self._path(role, version)
        try:
            return Metadata.from_file(str(path))
        except (OSError, DeserializationError) as exc:
            raise BundleError(f"{path}: cannot read the repository's metadata ({exc})") from None

    def _path(self, role: str, version: int) -> Path:
        name = "timestamp.json" if role == "timestamp" else f"{version}.{role}.json"
        return self.folder / METADATA / name
