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
from pathlib import Path

from edgefreeze.errors import ConfigError


class DestinationClaim:
    """The exclusive right to build into `destination` (released by `release`)."""

    def __init__(self, destination: Path) -> None:
        self.path = destination.with_name(f".{destination.name}.lock")
        try:
            destination.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"output: cannot create {destination.parent} "
                              f"({exc.strerror})") from None
        self._fd: int | None = _lock(self.path, destination)
        try:
            self.removed = remove_leftovers(destination)
        except OSError as exc:
            self.release()
            raise ConfigError(f"output: cannot list {destination.parent} "
                              f"({exc.strerror})") from None

    def release(self) -> None:
        """Give the claim up; the lock file goes with it (see `_lock` for why that is safe),
        unless someone replaced it meanwhile: then the file is another build's lock."""
        if self._fd is None:
            return
        try:
            if os.fstat(self._fd).st_ino == os.stat(self.path).st_ino:
                self.path.unlink()
        except FileNotFoundError:
            pass
        finally:
            os.close(self._fd)
            self._fd = None


def _lock(path: Path, destination: Path) -> int:
    """An fd holding an exclusive flock on `path`. A holder unlinks the file when it is done,
    so a lock taken on a file already unlinked is worthless: check that the locked inode is
    still the one at `path`, and try again if not."""
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise ConfigError(f"output: cannot create {path} ({exc.strerror})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise ConfigError(f"output: another build (pid {holder}) is writing {destination}; "
                              "wait for it or choose another --output") from None
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
