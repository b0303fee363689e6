"""The bundle on disk: built in a staging folder, renamed into place only when accepted.

A reader of the destination path therefore sees either nothing or a complete, gated
bundle. A refused build leaves its manifest and report at DESTINATION.rejected instead.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from edgefreeze.atomic import sync, sync_tree, write_text
from edgefreeze.errors import ConfigError, EdgefreezeError
from edgefreeze.failpoints import failpoint
from edgefreeze.hashing import file_sha256
from edgefreeze.publish.claim import bundle_lock
from edgefreeze.runtime.bundle import MANIFEST
from edgefreeze.runtime.manifest import FileRecord, Manifest
from edgefreeze.runtime.signature import SIGNATURE, sign_bundle
from edgefreeze.schema import Pipeline

REPORT = "report.md"
HTML_REPORT = "report.html"


def destination_for(pipeline: Pipeline, output: Path | None, models_dir: Path) -> Path:
    """Where the bundle goes: --output, else the pipeline's `output`, else models/NAME/vN."""
    if output:
        return output
    if pipeline.spec.output:
        return pipeline.resolve(pipeline.spec.output)
    return default_destination(models_dir, pipeline.spec.name)


def default_destination(models_dir: Path, name: str) -> Path:
    """models/NAME/vN with N one past the highest version already there."""
    versions = [
        int(m.group(1))
        for p in (models_dir / name).glob("v*")
        if (m := re.fullmatch(r"v(\d+)", p.name))
    ]
    return models_dir / name / f"v{max(versions, default=0) + 1}"


def check_destination(destination: Path) -> None:
    """Fail before any training if the bundle could never be published there."""
    if destination.exists():
        raise ConfigError(
            f"output: {destination} already exists; remove it or choose another --output"
        )
    ancestor = destination.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir() or not os.access(ancestor, os.W_OK | os.X_OK):
        raise ConfigError(
            f"output: cannot create {destination}: {ancestor} is not a writable folder"
        )


class Staging:
    """A hidden folder beside the destination, on the same file system, so that the
    final rename is atomic."""

    def __init__(self, destination: Path) -> None:
        self.destination = destination
        try:
            destination.parent.mkdir(parents=True, exist_ok=True)
            self.path = Path(
                tempfile.mkdtemp(
                    prefix=f".{destination.name}.", suffix=".partial", dir=destination.parent
                )
            )
        except OSError as exc:
            if exc.errno in FULL:
                raise EdgefreezeError(
                    f"output: no space left beside {destination}; nothing was published"
                ) from None
            raise ConfigError(
                f"output: cannot write beside {destination} ({exc.strerror})"
            ) from None

    def __enter__(self) -> Staging:
        return self

    def __exit__(self, exc_type: type | None, exc: BaseException | None, tb: object) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
        elsewhere = (
            isinstance(exc, OSError)
            and exc.filename is not None
            and not Path(exc.filename).is_relative_to(self.destination.parent)
        )
        if isinstance(exc, OSError) and exc.errno in FULL and not elsewhere:
            raise EdgefreezeError(
                f"output: no space left for the bundle beside {self.destination} "
                f"({shutil.disk_usage(self.destination.parent).free / 1e6:.0f} MB free once "
                "its staging folder was removed); nothing was published"
            ) from None

    def publish(
        self, manifest: Manifest, reports: dict[str, str], sign_key: Path | None = None
    ) -> Path:
        """Seal the staged bundle (file digests into `manifest.files`, the manifest, the
        reports by file name, the signature when there is a key) and rename it into
        place."""
        for name, text in reports.items():
            write_text(self.path / name, text)
        manifest.files = file_table(self.path)
        write_text(self.path / MANIFEST, manifest.to_json())
        if sign_key is not None:
            sign_bundle(self.path, sign_key)
        failpoint("publish")
        _seal(self.path)
        try:
            os.rename(self.path, self.destination)
        except OSError as exc:
            raise EdgefreezeError(
                f"cannot publish the bundle at {self.destination}: {exc.strerror}"
            ) from None
        sync(self.destination.parent)
        shutil.rmtree(rejected_path(self.destination), ignore_errors=True)
        return self.destination

    def reject(self, manifest: Manifest, reports: dict[str, str]) -> Path:
        """Keep only the manifest and reports, at DESTINATION.rejected, replacing an old one."""
        target = rejected_path(self.destination)
        holding = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        try:
            for name, text in reports.items():
                write_text(holding / name, text)
            write_text(holding / MANIFEST, manifest.to_json())
            _seal(holding)
            shutil.rmtree(target, ignore_errors=True)
            os.rename(holding, target)
        except BaseException:
            shutil.rmtree(holding, ignore_errors=True)
            raise
        return target


def rejected_path(destination: Path) -> Path:
    return destination.with_name(destination.name + ".rejected")


def file_table(folder: Path) -> dict[str, FileRecord]:
    """sha256 and size of every file in the bundle except the manifest itself."""
    return {
        str(p.relative_to(folder)): FileRecord(sha256=file_sha256(p), size=p.stat().st_size)
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != MANIFEST
    }


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


UMASK = _read_umask()  # read once, at import: setting it is process-wide
FULL = (errno.ENOSPC, errno.EDQUOT)


def _seal(folder: Path) -> None:
    """Before the rename that publishes a folder: its files' bytes on disk, and the
    permissions the umask gives (mkdtemp made it private; a bundle is not)."""
    sync_tree(folder)
    folder.chmod(0o777 & ~UMASK)


def check_unsigned(bundle: Path) -> None:
    """A signed bundle's manifest is not changed: the signature would no longer hold."""
    if (bundle / SIGNATURE).exists():
        raise ConfigError(
            f"{bundle} is signed; changing its manifest would void the signature: record "
            f"target checks before `edgefreeze sign`, then sign again"
        )


def update_manifest(bundle: Path, change: Callable[[Manifest], Manifest]) -> Manifest:
    """Change a published bundle's manifest: read, changed and written back (through a
    temporary name, synced) while holding the bundle's lock, so concurrent changes
    (target checks run at once) are applied one after the other and none is lost."""
    path = bundle / MANIFEST
    with bundle_lock(bundle):
        check_unsigned(bundle)  # under the lock: `sign` takes it too
        manifest = Manifest.load(path)
        failpoint("record")
        updated = change(manifest)
        write_text(path, updated.to_json())
        sync(path)
    return updated
