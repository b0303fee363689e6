"""Writing a small text file so that a reader, or a crash, never sees half of it: the
text goes to a temporary name beside the destination and is renamed (or linked) into
place. The pipeline reference, `init`'s pipeline files and bundle manifests use it; bundle
folders are synced before the rename that publishes them (`sync_tree`); a device root and
a release repository are changed by one process at a time (`exclusive`)."""

from __future__ import annotations

import fcntl
import os
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


def write_text(path: Path, text: str, durable: bool = False) -> None:
    """Write `path` whole, replacing what was there; `durable`: on disk, the rename too,
    before returning (what others read next must survive a power loss)."""
    temporary = _beside(path, text, durable)
    try:
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    if durable:
        sync(path.parent)


def create_text(path: Path, text: str, check: Callable[[Path], None] | None = None) -> None:
    """Write `path`, which must not exist, after `check` has passed on the written text
    (at its temporary name). Raises FileExistsError when `path` appears meanwhile: a link
    never replaces a file, as a rename would."""
    temporary = _beside(path, text)
    try:
        if check is not None:
            check(temporary)
        os.link(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def _beside(path: Path, text: str, durable: bool = False) -> Path:
    """A new file beside `path` holding `text`, with the permissions the umask gives (a
    bundle's files must stay readable by the service that runs it)."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.partial")
    handle = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    with os.fdopen(handle, "w", encoding="utf-8") as stream:
        stream.write(text)
        if durable:
            stream.flush()
            os.fsync(stream.fileno())
    return temporary


def sync_tree(folder: Path) -> None:
    """Every file of `folder`, and the folder itself, on disk: before a rename publishes
    it, so that a machine lost right after never leaves a published folder of truncated
    files."""
    for path in folder.rglob("*"):
        if path.is_file():
            sync(path)
    sync(folder)


def sync(path: Path) -> None:
    """One file's (or folder's entries') bytes on disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def exclusive(lock: Path) -> Iterator[None]:
    """Hold an exclusive flock on the file `lock` (created, never removed) for the block:
    one writer at a time, and the kernel drops the lock when its holder dies. Raises
    OSError when the file cannot be created."""
    handle = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield
    finally:
        os.close(handle)
