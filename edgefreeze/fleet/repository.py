"""The release pipeline's side: a TUF repository folder, served as static files, that
bundles are published to (`edgefreeze repo init`, `repo add`, `repo refresh`).

Each top-level role has its own key (ROLE.pem in a key folder kept off the server):
root names the other keys, targets signs the list of files, snapshot the version of that
list, timestamp the newest snapshot. Expiry dates bound how long a device trusts what it
has: the timestamp's is short (`repo refresh` renews it from a timer), so a repository
frozen in the past, or an attacker replaying its old metadata, is refused once it lapses.
Metadata is written in the order that keeps the repository consistent for a device
reading it meanwhile: targets files, then targets, snapshot and last timestamp, each
synced to disk and renamed into place.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.serialization import load_pem_private_key
from pydantic import ValidationError
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

from edgefreeze.atomic import exclusive, sync, write_text
from edgefreeze.errors import BundleError, ConfigError
from edgefreeze.fleet.layout import METADATA, TARGETS, Release, ReleaseIndex, file_path, index_path
from edgefreeze.hashing import file_sha256
from edgefreeze.runtime.bundle import MANIFEST, Bundle
from edgefreeze.runtime.manifest import FileRecord
from edgefreeze.runtime.signature import SIGNATURE

ROLES = ("root", "targets", "snapshot", "timestamp")
ONLINE_ROLES = ("targets", "snapshot", "timestamp")  # what `repo add` signs with
EXPIRY = {
    "root": timedelta(days=365),
    "targets": timedelta(days=365),
    "snapshot": timedelta(days=30),
    "timestamp": timedelta(days=7),
}
# `repo refresh` renews root and targets (when their keys are given) this long before
# they expire, and warns about those it could not renew.
RENEW_WITHIN = timedelta(days=60)
ROOT_FILE = re.compile(r"^([0-9]+)\.root\.json$")


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
    with _locked(folder, new=True):
        created = [_create_key(keys, role) for role in ROLES if not (keys / f"{role}.pem").exists()]
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
    """Publish the bundle at `bundle_path` as its model's next release: every file copied
    under its digest and checked against the manifest (the signature too, with
    `trusted_keys`), listed in the release index, then signed into targets, snapshot and
    timestamp metadata."""
    bundle = Bundle(bundle_path, trusted_keys)
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
        version = previous.version + 1 if previous else 1
        files: dict[str, FileRecord] = {}
        with repository.edit_targets() as targets:
            for name in names:
                path = file_path(model, version, name)
                expected = bundle.manifest.files.get(name)
                targets.targets[path], files[name] = repository.store(
                    path, bundle.path / name, expected.sha256 if expected else None
                )
            release = Release(
                version=version,
                created=bundle.manifest.created,
                manifest_sha256=files[MANIFEST].sha256,
                files=files,
            )
            index.releases.append(release)
            text = index.model_dump_json(indent=1)
            targets.targets[index_path(model)] = repository.store_text(index_path(model), text)
        repository.do_snapshot()
        repository.do_timestamp()
    return PublishedRelease(model, release, _new_bytes(release, previous))


def refresh_repository(folder: Path, keys: Path) -> dict[str, dict[str, Any]]:
    """Re-sign snapshot and timestamp with fresh expiry dates, and root and targets too
    where they expire within RENEW_WITHIN and their keys are in `keys`: what a timer runs
    well within the timestamp's lifetime. Returns each role's version and expiry (and a
    warning for a role that expires soon and could not be renewed)."""
    with _locked(folder):
        optional = [role for role in ("root", "targets") if (keys / f"{role}.pem").exists()]
        repository = BundleRepository(
            folder,
            {role: _signer(keys, role) for role in ("snapshot", "timestamp", *optional)},
        )
        soon = datetime.now(UTC) + RENEW_WITHIN
        for role in ("root", "targets"):
            if role in optional and repository.open(role).signed.expires < soon:
                with repository.edit(role):
                    pass
        repository.do_snapshot(force=True)
        repository.do_timestamp(force=True)
        return {role: repository.describe(role, soon) for role in ROLES}


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
def _locked(folder: Path, new: bool = False) -> Iterator[None]:
    """One writer at a time; a `new` repository in a folder that holds none, else an
    existing one."""
    metadata = folder / METADATA
    if not new and not (metadata / "timestamp.json").is_file():
        raise ConfigError(
            f"{folder}: not a repository (no {METADATA}/timestamp.json); "
            "`edgefreeze repo init` makes one"
        )
    with ExitStack() as stack:
        try:
            metadata.mkdir(parents=True, exist_ok=True)
            (folder / TARGETS).mkdir(exist_ok=True)
            stack.enter_context(exclusive(folder / ".lock"))
        except OSError as exc:
            raise ConfigError(f"{folder}: cannot write the repository ({exc.strerror})") from None
        if new and any(metadata.iterdir()):
            raise ConfigError(f"{folder}: already holds a repository ({METADATA}/ is not empty)")
        yield


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
    new version expiring per EXPIRY, signed, synced and renamed into place."""

    def __init__(self, folder: Path, signers: dict[str, CryptoSigner]) -> None:
        self.folder, self.signers = folder, signers
        metadata = folder / METADATA
        roots = [ROOT_FILE.match(path.name) for path in metadata.glob("*.root.json")]
        self.versions = {
            "root": max((int(found.group(1)) for found in roots if found), default=0),
            "timestamp": 0,
            "snapshot": 0,
            "targets": 0,
        }
        if (metadata / "timestamp.json").exists():
            timestamp = self._read("timestamp", 0).signed
            snapshot = self._read("snapshot", timestamp.snapshot_meta.version).signed
            self.versions.update(
                timestamp=timestamp.version,
                snapshot=snapshot.version,
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
        write_text(self._path(role, md.signed.version), data, durable=True)
        if role == "root":  # the file devices are provisioned with
            write_text(self.folder / METADATA / "root.json", data, durable=True)
        self.versions[role] = md.signed.version

    def describe(self, role: str, soon: datetime) -> dict[str, Any]:
        """A role's version and expiry, with a warning when it lapses before `soon`."""
        signed = self.open(role).signed
        record: dict[str, Any] = {
            "version": signed.version,
            "expires": signed.expires.isoformat(),
        }
        if signed.expires < soon:
            record["warning"] = (
                f"{role} expires {signed.expires:%Y-%m-%d}: devices refuse the repository "
                f"after that; run `repo refresh` with {role}.pem in --keys"
            )
        return record

    def index(self, name: str) -> ReleaseIndex:
        """`name`'s release index as the current targets metadata lists it."""
        listed = self.targets().targets.get(index_path(name))
        if listed is None:
            try:
                return ReleaseIndex(name=name)
            except ValidationError:
                raise ConfigError(
                    f"{name!r}: not a model name a repository holds (letters, digits, . _ -)"
                ) from None
        stored = self._stored(index_path(name), listed.hashes["sha256"])
        try:
            return ReleaseIndex.parse(stored.read_bytes(), str(stored))
        except OSError as exc:
            raise BundleError(f"{stored}: cannot read the release index ({exc.strerror})") from None

    def store(self, path: str, source: Path, expected: str | None) -> tuple[TargetFile, FileRecord]:
        """Copy `source` to where a device fetches target `path` (HASH.NAME), hashing the
        copy as it is written: what is signed is what is stored, and it must be the
        `expected` digest (the manifest's) where one is given."""
        digest, size = hashlib.sha256(), 0
        partial = self.folder / TARGETS / f".{os.getpid()}.partial"
        try:
            with source.open("rb") as reading, partial.open("wb") as writing:
                while chunk := reading.read(1 << 20):
                    digest.update(chunk)
                    writing.write(chunk)
                    size += len(chunk)
                writing.flush()
                os.fsync(writing.fileno())
            sha256 = digest.hexdigest()
            if expected is not None and sha256 != expected:
                raise BundleError(f"{source}: sha256 does not match the bundle's manifest")
            stored = self._stored(path, sha256)
            stored.parent.mkdir(parents=True, exist_ok=True)
            if not (stored.is_file() and stored.stat().st_size == size):  # a whole copy stays
                os.replace(partial, stored)
                sync(stored.parent)
        except OSError as exc:
            raise BundleError(f"{source}: cannot publish it ({exc.strerror})") from None
        finally:
            partial.unlink(missing_ok=True)
        return TargetFile(size, {"sha256": sha256}, path), FileRecord(sha256=sha256, size=size)

    def store_text(self, path: str, text: str) -> TargetFile:
        entry = TargetFile.from_data(path, text.encode(), ["sha256"])
        stored = self._stored(path, entry.hashes["sha256"])
        stored.parent.mkdir(parents=True, exist_ok=True)
        write_text(stored, text, durable=True)
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
