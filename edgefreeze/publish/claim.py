"""One build at a time per output folder, and no leftovers from builds that died.

A build claims its destination with an exclusive `flock` on `.NAME.lock` beside it before
it reads any data, and keeps the claim until it has published or refused. A second build
aimed at the same folder is refused at once (exit 2) rather than racing the first to the
final rename. The kernel drops the lock when its holder dies, even by SIGKILL, so a killed
build never blocks the next one; and whoever holds the claim knows that any staging folder
for this destination belongs to a dead build, and removes it.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from edgefreeze.errors import ConfigError


class DestinationClaim:
    """The exclusive right to build into `destination` (released by `release`)."""

    def __init__(self, destination: Path) -> None:
        self.path = destination.with_name(f".{destination.name}.lock")
        try:
            destination.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(
                f"output: cannot create {destination.parent} ({exc.strerror})"
            ) from None
        self._fd: int | None = _lock(self.path, destination, wait=False)
        try:
            self.removed = remove_leftovers(destination)
        except OSError as exc:
            self.release()
            raise ConfigError(
                f"output: cannot list {destination.parent} ({exc.strerror})"
            ) from None

    def release(self) -> None:
        """Give the claim up (its lock file goes with it)."""
        if self._fd is not None:
            _unlock(self._fd, self.path)
            self._fd = None


@contextmanager
def bundle_lock(bundle: Path) -> Iterator[None]:
    """Hold the lock a build holds on its destination, waiting for whoever has it: the
    read-modify-write of a published bundle's manifest (a target check) takes it, so that
    two at once both land instead of the later rename losing the earlier's change."""
    bundle = bundle.resolve()  # "." and ".." have no name to put a lock beside
    path = bundle.with_name(f".{bundle.name}.lock")
    fd = _lock(path, bundle, wait=True)
    try:
        yield
    finally:
        _unlock(fd, path)


def _unlock(fd: int, path: Path) -> None:
    """Release and close; the lock file goes with it (see `_lock` for why that is safe),
    unless someone replaced it meanwhile: then the file is another holder's lock."""
    try:
        if os.fstat(fd).st_ino == os.stat(path).st_ino:
            path.unlink()
    except FileNotFoundError:
        pass
    finally:
        os.close(fd)


def _lock(path: Path, destination: Path, wait: bool) -> int:
    """An fd holding an exclusive flock on `path` (`wait`: until it is free, else refuse at
    once). A holder unlinks the file when it is done, so a lock taken on a file already
    unlinked is worthless: check that the locked inode is still the one at `path`, and try
    again if not."""
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            what = "the bundle's lock" if wait else "output"
            raise ConfigError(f"{what}: cannot create {path} ({exc.strerror})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise ConfigError(
                f"output: another build (pid {holder}) is writing {destination}; "
                "wait for it or choose another --output"
            ) from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            os.ftruncate(fd, 0)
            os.write(fd, str(os.getpid()).encode())
            return fd
        os.close(fd)


def remove_leftovers(destination: Path) -> list[str]:
    """Remove the staging folders of earlier builds of `destination` that died before they
    cleaned up (the caller holds the claim, so no live build owns them)."""
    name = re.escape(destination.name)
    # The names Staging gives them: mkdtemp's 8 random characters between prefix and suffix.
    ours = re.compile(rf"\.{name}\.[a-z0-9_]{{8}}\.partial|\.{name}\.rejected\.[a-z0-9_]{{8}}")
    removed = []
    for leftover in sorted(destination.parent.iterdir()):
        if ours.fullmatch(leftover.name) and leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)
            removed.append(leftover.name)
    return removed
