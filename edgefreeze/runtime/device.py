"""Installing bundles on a device as fleets expect (Mender, RAUC, SWUpdate): two slots,
the new version checked in the inactive one, then one atomic switch; the previous
version kept for a rollback.

    ROOT/slots/a, ROOT/slots/b   two bundle folders
    ROOT/current -> slots/X      what serves (a symbolic link, replaced atomically)
    ROOT/previous -> slots/Y     what `rollback` returns to

An install copies into ROOT/slots/.incoming, fills in the files a delta update leaves out
from the serving version (when their digests are the ones the new manifest names),
checks the result where it will run (`check_here`: signature, digests, self-check), and
only then renames it into the inactive slot (named in slots/.pending until the switch)
and switches `current`. A kill at any moment leaves `current` on the old or the new
version, never a mix; the next call removes what an interrupted one left (a filled slot
never switched to goes) and sets `previous` where a killed switch did not.
"""

from __future__ import annotations

import fcntl
import os
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from edgefreeze.atomic import sync, sync_tree, write_text
from edgefreeze.errors import BundleError, CheckFailed, ConfigError
from edgefreeze.failpoints import failpoint
from edgefreeze.hashing import file_sha256
from edgefreeze.runtime.bundle import MANIFEST, Bundle
from edgefreeze.runtime.manifest import Manifest
from edgefreeze.runtime.selfcheck import DeviceCheck, check_here

SLOTS = ("a", "b")
INCOMING = ".incoming"
PENDING = ".pending"  # names the slot an install filled and has not yet switched to


@dataclass(frozen=True)
class DeviceStatus:
    """Which slot serves, which the rollback returns to, and what each holds."""

    current: str | None
    previous: str | None
    versions: dict[str, str]  # slot -> "NAME created TIME" of its bundle
    cleaned: list[str]  # what an interrupted call had left, removed now

    def as_json(self) -> dict[str, object]:
        return {
            "current": self.current,
            "previous": self.previous,
            "versions": self.versions,
            "cleaned": self.cleaned,
        }


def install(root: Path, source: Path, trusted_keys: Sequence[Path] = ()) -> DeviceCheck:
    """Check `source` (a bundle, or a delta: a bundle folder without the files the serving
    version already has) in the inactive slot and switch to it. A failed check leaves the
    serving version serving (CheckFailed exit 1, BundleError exit 2)."""
    with _locked(root) as (slots, _):
        incoming = slots / INCOMING
        current = _target(root / "current")
        try:
            check = _checked_copy(
                source, incoming, slots / current if current else None, trusted_keys
            )
        except BaseException:
            shutil.rmtree(incoming, ignore_errors=True)
            raise
        target = next(slot for slot in SLOTS if slot != current)
        if _target(root / "previous") == target:  # the version about to be replaced
            (root / "previous").unlink()
        write_text(slots / PENDING, target)  # until the switch: never served, not kept
        sync_tree(incoming)  # whole on disk before anything can point at it
        shutil.rmtree(slots / target, ignore_errors=True)
        os.rename(incoming, slots / target)
        failpoint("install-slot")
        _point(root / "current", target)
        failpoint("install-switch")
        if current:
            _point(root / "previous", current)
        (slots / PENDING).unlink()
        return check


def _checked_copy(
    source: Path, incoming: Path, serving: Path | None, trusted_keys: Sequence[Path]
) -> DeviceCheck:
    """`source` copied to `incoming`, completed from `serving` (a delta), and checked."""
    if not (source / MANIFEST).is_file():
        raise BundleError(f"{source}: not a bundle or an update (no {MANIFEST})")
    try:
        shutil.copytree(source, incoming)
    except (shutil.Error, OSError) as exc:
        raise BundleError(f"{source}: cannot copy it to {incoming} ({exc})") from None
    failpoint("install-copy")
    _fill_from(source, incoming, serving)
    check = check_here(Bundle(incoming, trusted_keys))
    if not check.passed:
        failed = "; ".join(form.describe() for form in check.forms if not form.passed)
        raise CheckFailed(f"{source}: self-check failed here, not switched: {failed}")
    return check


def rollback(root: Path) -> DeviceStatus:
    """Serve the previous version again (the switched-from one becomes `previous`)."""
    _existing(root)
    with _locked(root) as (slots, _):
        current, previous = _target(root / "current"), _target(root / "previous")
        if previous is None or current is None or previous == current:
            raise ConfigError(f"{root}: no previous version to roll back to")
        check = check_here(Bundle(slots / previous))  # it may have been left half-deleted
        if not check.passed:
            raise CheckFailed(f"{root}: the previous version fails its self-check here")
        _point(root / "current", previous)
        failpoint("rollback-switch")
        _point(root / "previous", current)
    return status(root)


def status(root: Path) -> DeviceStatus:
    """What serves, what a rollback would serve, and a clean-up of interrupted calls."""
    _existing(root)
    with _locked(root) as (slots, cleaned):
        versions = {
            slot: _version(slots / slot) for slot in SLOTS if (slots / slot / MANIFEST).exists()
        }
        return DeviceStatus(
            _target(root / "current"), _target(root / "previous"), versions, cleaned
        )


def _existing(root: Path) -> None:
    if not (root / "slots").is_dir():
        raise ConfigError(f"{root}: not a device folder (no slots/; `device install` makes one)")


@contextmanager
def _locked(root: Path) -> Iterator[tuple[Path, list[str]]]:
    """One call at a time per device root (flock: the kernel drops it when its holder
    dies); every call starts by removing what an interrupted one left (and says what)."""
    slots = root / "slots"
    try:
        slots.mkdir(parents=True, exist_ok=True)
        handle = os.open(root / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise ConfigError(f"{root}: cannot use as a device root ({exc.strerror})") from None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield slots, _clean(root, slots)
    finally:
        os.close(handle)


def _clean(root: Path, slots: Path) -> list[str]:
    """Remove a half-copied incoming folder and half-made links (a kill mid-call)."""
    leftovers = [slots / INCOMING, *root.glob(".*.link")]
    cleaned = []
    for path in leftovers:
        if path.is_symlink() or path.is_file():
            path.unlink()
        elif path.is_dir():
            shutil.rmtree(path)
        else:
            continue
        cleaned.append(path.name)
    current = _target(root / "current")
    if (slots / PENDING).exists():  # an install killed before or just after its switch
        pending = (slots / PENDING).read_text().strip()
        if pending in SLOTS and pending != current:
            shutil.rmtree(slots / pending, ignore_errors=True)
            cleaned.append(f"slots/{pending}")
        (slots / PENDING).unlink()
    previous = _target(root / "previous")
    other = next((slot for slot in SLOTS if slot != current), None)
    if current and previous in (None, current) and (slots / str(other) / MANIFEST).exists():
        _point(root / "previous", str(other))  # the link a killed switch did not set
        cleaned.append("previous")
    return cleaned


def _fill_from(source: Path, incoming: Path, serving: Path | None) -> None:
    """A delta update: every file the new manifest names and the update lacks is taken
    from the serving version, if its digest is the one named. (The manifest's schema
    already refuses names that lead out of the bundle.)"""
    manifest = Manifest.load(incoming / MANIFEST)
    for name, record in manifest.files.items():
        if (incoming / name).exists():
            continue
        have = serving / name if serving else None
        if have is None or not have.is_file() or file_sha256(have) != record.sha256:
            raise BundleError(
                f"{source}: {name} is neither in the update nor, with the digest it "
                "names, in the serving version"
            )
        (incoming / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(have, incoming / name)


def _point(link: Path, slot: str) -> None:
    """Make `link` point at slots/SLOT atomically: a new link, renamed over the old."""
    fresh = link.with_name(f".{link.name}.link")
    fresh.unlink(missing_ok=True)
    fresh.symlink_to(Path("slots") / slot)
    os.replace(fresh, link)
    sync(link.parent)  # the switch itself on disk


def _target(link: Path) -> str | None:
    return Path(os.readlink(link)).name if link.is_symlink() else None


def _version(bundle: Path) -> str:
    manifest = Manifest.load(bundle / MANIFEST)
    return f"{manifest.pipeline.name} {manifest.created}"
