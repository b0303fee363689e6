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

    ROOT/refused.json            releases `edgefreeze device update` will not install:
                                 a failed self-check here, or a rollback away from them
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from edgefreeze.atomic import exclusive, sync, sync_tree, write_text
from edgefreeze.errors import BundleError, CheckFailed, ConfigError
from edgefreeze.failpoints import failpoint
from edgefreeze.hashing import file_sha256
from edgefreeze.runtime.bundle import MANIFEST, Bundle
from edgefreeze.runtime.manifest import Manifest
from edgefreeze.runtime.selfcheck import DeviceCheck, check_here

SLOTS = ("a", "b")
INCOMING = ".incoming"
PENDING = ".pending"  # names the slot an install filled and has not yet switched to
REFUSED = "refused.json"  # manifest sha256 -> why: releases `update` will not install


@dataclass(frozen=True)
class DeviceStatus:
    """Which slot serves, which the rollback returns to, and what each holds."""

    current: str | None
    previous: str | None
    versions: dict[str, str]  # slot -> "NAME created TIME" of its bundle
    cleaned: list[str]  # what an interrupted call had left, removed now
    refused: dict[str, str]  # manifest sha256 -> why this device will not update to it

    def as_json(self) -> dict[str, object]:
        return {
            "current": self.current,
            "previous": self.previous,
            "versions": self.versions,
            "cleaned": self.cleaned,
            "refused": self.refused,
        }


class Device:
    """One device root, held under its lock (`open_device`): what serves, what it has
    refused, and the install that checks a new version in the inactive slot."""

    def __init__(self, root: Path, slots: Path, cleaned: list[str]) -> None:
        self.root, self.slots, self.cleaned = root, slots, cleaned

    @property
    def current(self) -> str | None:
        return _target(self.root / "current")

    def serving(self) -> Path | None:
        """The serving bundle's folder (None before the first install)."""
        current = self.current
        return self.slots / current if current else None

    def refused(self) -> dict[str, str]:
        path = self.root / REFUSED
        try:
            loaded = json.loads(path.read_text()) if path.exists() else {}
        except (OSError, ValueError):
            loaded = None
        if not isinstance(loaded, dict):
            raise ConfigError(
                f"{path}: not the device's record of refused releases; remove it (update "
                "then forgets which releases failed here)"
            )
        return {str(digest): str(why) for digest, why in loaded.items()}

    def refuse(self, manifest: Path, why: str | None) -> None:
        """Remember that the release whose manifest is `manifest` must not be installed
        again by `update` (an explicit `install` still may); `why=None` forgets it (the
        release serves again)."""
        refused, digest = self.refused(), file_sha256(manifest)
        if why is None and digest not in refused:
            return
        if why is None:
            del refused[digest]
        else:
            refused[digest] = why
        write_text(self.root / REFUSED, json.dumps(refused, indent=1, sort_keys=True))

    def install(
        self, receive: Callable[[Path], None], source: str, trusted_keys: Sequence[Path]
    ) -> DeviceCheck:
        """`receive(folder)` writes the new version (whole, or a delta) into an empty
        folder; it is completed from the serving version, checked here, and switched to.
        A failed check leaves the serving version serving."""
        incoming, current = self.slots / INCOMING, self.current
        self.refused()  # readable, before anything is switched that would record in it
        try:
            incoming.mkdir()
            receive(incoming)
            failpoint("install-copy")
            check = self._checked(incoming, source, trusted_keys)
        except BaseException:
            shutil.rmtree(incoming, ignore_errors=True)
            raise
        target = next(slot for slot in SLOTS if slot != current)
        if _target(self.root / "previous") == target:  # the version about to be replaced
            (self.root / "previous").unlink()
        write_text(self.slots / PENDING, target)  # until the switch: never served, not kept
        sync_tree(incoming)  # whole on disk before anything can point at it
        shutil.rmtree(self.slots / target, ignore_errors=True)
        os.rename(incoming, self.slots / target)
        failpoint("install-slot")
        _point(self.root / "current", target)
        failpoint("install-switch")
        if current:
            _point(self.root / "previous", current)
        (self.slots / PENDING).unlink()
        self.refuse(self.slots / target / MANIFEST, None)
        return check

    def _checked(self, incoming: Path, source: str, trusted_keys: Sequence[Path]) -> DeviceCheck:
        """`incoming` completed from the serving version (a delta) and checked here; a
        failed self-check is remembered, so that `update` does not fetch it again."""
        if not (incoming / MANIFEST).is_file():
            raise BundleError(f"{source}: not a bundle or an update (no {MANIFEST})")
        _fill_from(source, incoming, self.serving())
        check = check_here(Bundle(incoming, trusted_keys))
        if not check.passed:
            self.refuse(incoming / MANIFEST, f"self-check failed here: {check.failures}")
            raise CheckFailed(f"{source}: self-check failed here, not switched: {check.failures}")
        return check


def install(root: Path, source: Path, trusted_keys: Sequence[Path] = ()) -> DeviceCheck:
    """Check `source` (a bundle, or a delta: a bundle folder without the files the serving
    version already has) in the inactive slot and switch to it. A failed check leaves the
    serving version serving (CheckFailed exit 1, BundleError exit 2)."""
    if not (source / MANIFEST).is_file():
        raise BundleError(f"{source}: not a bundle or an update (no {MANIFEST})")

    def receive(incoming: Path) -> None:
        try:
            shutil.copytree(source, incoming, dirs_exist_ok=True)
        except (shutil.Error, OSError) as exc:
            raise BundleError(f"{source}: cannot copy it to {incoming} ({exc})") from None

    with open_device(root) as device:
        return device.install(receive, str(source), trusted_keys)


def rollback(root: Path) -> DeviceStatus:
    """Serve the previous version again (the switched-from one becomes `previous`, and
    `update` will not install it again)."""
    _existing(root)
    with open_device(root) as device:
        current, previous = device.current, _target(root / "previous")
        if previous is None or current is None or previous == current:
            raise ConfigError(f"{root}: no previous version to roll back to")
        check = check_here(Bundle(device.slots / previous))  # it may be half-deleted
        if not check.passed:
            raise CheckFailed(f"{root}: the previous version fails its self-check here")
        _point(root / "current", previous)
        failpoint("rollback-switch")
        _point(root / "previous", current)
        device.refuse(device.slots / current / MANIFEST, "rolled back from")
        device.refuse(device.slots / previous / MANIFEST, None)
    return status(root)


def status(root: Path) -> DeviceStatus:
    """What serves, what a rollback would serve, and a clean-up of interrupted calls."""
    _existing(root)
    with open_device(root) as device:
        versions = {
            slot: _version(device.slots / slot)
            for slot in SLOTS
            if (device.slots / slot / MANIFEST).exists()
        }
        return DeviceStatus(
            device.current,
            _target(root / "previous"),
            versions,
            device.cleaned,
            device.refused(),
        )


def _existing(root: Path) -> None:
    if not (root / "slots").is_dir():
        raise ConfigError(f"{root}: not a device folder (no slots/; `device install` makes one)")


@contextmanager
def open_device(root: Path) -> Iterator[Device]:
    """One call at a time per device root (flock: the kernel drops it when its holder
    dies); every call starts by removing what an interrupted one left (and says what)."""
    slots = root / "slots"
    with ExitStack() as held:
        try:
            slots.mkdir(parents=True, exist_ok=True)
            held.enter_context(exclusive(root / ".lock"))
        except OSError as exc:
            raise ConfigError(f"{root}: cannot use as a device root ({exc.strerror})") from None
        yield Device(root, slots, _clean(root, slots))


def _clean(root: Path, slots: Path) -> list[str]:
    """Remove a half-copied incoming folder, half-made links and half-written files or
    folders (ROOT/.*.partial: the refusals record, a first update's metadata) that a kill
    mid-call left."""
    leftovers = [slots / INCOMING, *root.glob(".*.link"), *root.glob(".*.partial")]
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


def _fill_from(source: str, incoming: Path, serving: Path | None) -> None:
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
