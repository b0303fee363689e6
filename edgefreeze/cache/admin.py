"""Looking after a cache folder: stats, verify, prune, clear (`edgefreeze cache ...`).

None of these creates the folder, and none touches a file the cache does not own: its
index (store.INDEX_FILES) and the shard files (store.SHARD_NAME) in its key-set folders.
A corrupt index, or a folder that cannot be read or written, is a CacheError (exit 2)
naming the file and the fix; `clear` works on a corrupt index, as the way to recover.
"""

from __future__ import annotations

import json
import math
import os
import re
import sqlite3
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgefreeze.cache.store import (
    DTYPES,
    INDEX,
    INDEX_FILES,
    KEYSET_NAME,
    SHARD_NAME,
    cache_problem,
    checksum,
    open_index,
    read_index,
)
from edgefreeze.errors import CacheError, ConfigError

ORPHAN_GRACE_S = 3600  # an unindexed shard younger than this may belong to a running build
COMPACT_BELOW = 0.5  # rewrite a shard once less than this share of its bytes is live
UNITS = {
    "": 1,
    "b": 1,
    "k": 1e3,
    "kb": 1e3,
    "m": 1e6,
    "mb": 1e6,
    "g": 1e9,
    "gb": 1e9,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
}


def parse_size(text: str) -> int:
    """'500MB', '2GiB', '1e9' -> bytes."""
    match = re.fullmatch(r"\s*([0-9.eE+]+)\s*([a-zA-Z]*)\s*", text)
    problem = f"--max-size: cannot read {text!r} as a size (e.g. 500MB, 2GiB)"
    if not match or match.group(2).lower() not in UNITS:
        raise ConfigError(problem)
    try:
        size = float(match.group(1)) * UNITS[match.group(2).lower()]
    except ValueError:
        raise ConfigError(problem) from None
    if not math.isfinite(size):
        raise ConfigError(f"--max-size: {text!r} is too large to be a size")
    return int(size)


@contextmanager
def _problems(root: Path) -> Iterator[None]:
    """SQLite and file-system errors -> one CacheError line naming the file and the fix."""
    try:
        yield
    except (sqlite3.Error, OSError) as exc:
        raise cache_problem(root, exc) from exc


def _shards(folder: Path) -> list[Path]:
    """The shard files in a key-set folder: only names the store writes, plain files."""
    if not folder.is_dir() or folder.is_symlink():
        return []
    return [
        path
        for path in folder.iterdir()
        if SHARD_NAME.fullmatch(path.name) and path.is_file() and not path.is_symlink()
    ]


def _keyset_folder(root: Path, keyset: str) -> Path | None:
    """Where a key set's shards live; None for a name that is not one plain folder name
    (an index edited by hand must not send prune outside the cache)."""
    if keyset in ("", ".", "..") or "/" in keyset or os.sep in keyset:
        return None
    return root / keyset


@dataclass(frozen=True)
class _Keyset:
    """A key set's row in the index, and the bytes of one activation row (one token)."""

    description: str
    dtype: str
    row_bytes: int


def _keysets(db: sqlite3.Connection) -> dict[str, _Keyset]:
    """Every key set of the index, oldest first."""
    return {
        keyset: _Keyset(description, dtype, width * DTYPES[dtype].itemsize)
        for keyset, description, dtype, width in db.execute(
            "SELECT keyset, description, dtype, width FROM keysets ORDER BY created"
        )
    }


def stats(root: Path) -> dict[str, Any]:
    """Entries and bytes per key set, and what each key set stands for. Read-only: works
    on a cache the user cannot write, and creates nothing where there is no cache."""
    result = {
        "dir": str(root),
        "exists": root.is_dir(),
        "keysets": [],
        "entries": 0,
        "bytes": 0,
        "disk_bytes": 0,
    }
    with _problems(root):
        db = read_index(root)
        if db is None:
            return result
        try:
            keysets = []
            for keyset, info in _keysets(db).items():
                entries, rows, last_used = db.execute(
                    "SELECT COUNT(*), COALESCE(SUM(rows), 0), MAX(last_used) FROM entries "
                    "WHERE keyset = ?",
                    (keyset,),
                ).fetchone()
                folder = _keyset_folder(root, keyset)
                disk = sum(p.stat().st_size for p in _shards(folder)) if folder else 0
                keysets.append(
                    {
                        "keyset": keyset,
                        "description": json.loads(info.description),
                        "dtype": info.dtype,
                        "entries": entries,
                        "bytes": int(rows) * info.row_bytes,
                        "disk_bytes": disk,
                        "last_used": last_used,
                    }
                )
        finally:
            db.close()
    return {
        **result,
        "keysets": keysets,
        "entries": sum(k["entries"] for k in keysets),
        "bytes": sum(k["bytes"] for k in keysets),
        "disk_bytes": sum(k["disk_bytes"] for k in keysets),
    }


def verify(root: Path) -> dict[str, Any]:
    """Check every entry's checksum; drop the bad ones so the next build recomputes them.
    Writes to the index only when there is something to drop."""
    checked, bad = 0, []
    with _problems(root):
        db = read_index(root)
        if db is None:
            return {"dir": str(root), "checked": 0, "corrupt": 0}
        try:
            keysets = _keysets(db)
            maps: dict[Path, np.ndarray | None] = {}
            for keyset, key, shard, offset, rows, digest in db.execute(
                "SELECT keyset, key, shard, offset, rows, checksum FROM entries"
            ).fetchall():
                checked += 1
                folder = _keyset_folder(root, keyset)
                if keyset not in keysets or folder is None or not SHARD_NAME.fullmatch(shard):
                    bad.append((keyset, key))
                    continue
                path = folder / shard
                if path not in maps:
                    maps[path] = (
                        np.memmap(path, dtype=np.uint8, mode="r")
                        if path.is_file() and path.stat().st_size
                        else None
                    )
                data = maps[path]
                size = rows * keysets[keyset].row_bytes
                if (
                    data is None
                    or offset + size > data.size
                    or checksum(data[offset : offset + size]) != digest
                ):
                    bad.append((keyset, key))
        finally:
            db.close()
        if bad:
            db = open_index(root)
            try:
                with db:
                    db.executemany("DELETE FROM entries WHERE keyset = ? AND key = ?", bad)
            finally:
                db.close()
    return {"dir": str(root), "checked": checked, "corrupt": len(bad)}


def prune(root: Path, older_than_days: float | None, max_bytes: int | None) -> dict[str, Any]:
    """Drop entries unused for `older_than_days`, then the least recently used until the
    cache holds at most `max_bytes`; then reclaim the disk space of dropped entries."""
    if not (root / INDEX).is_file():
        return {"dir": str(root), "removed": 0, "disk_bytes_before": 0, "disk_bytes_after": 0}
    before = stats(root)["disk_bytes"]
    with _problems(root):
        removed = _prune(root, older_than_days, max_bytes)
    return {
        "dir": str(root),
        "removed": removed,
        "disk_bytes_before": before,
        "disk_bytes_after": stats(root)["disk_bytes"],
    }


def _prune(root: Path, older_than_days: float | None, max_bytes: int | None) -> int:
    db = open_index(root)
    removed = 0
    try:
        indexed = set(db.execute("SELECT DISTINCT keyset, shard FROM entries").fetchall())
        with db:
            if older_than_days is not None:
                cutoff = time.time() - older_than_days * 86400
                removed += db.execute("DELETE FROM entries WHERE last_used < ?", (cutoff,)).rowcount
            if max_bytes is not None:
                sizes = {k: info.row_bytes for k, info in _keysets(db).items()}
                entries = db.execute(
                    "SELECT keyset, key, rows FROM entries ORDER BY last_used DESC"
                ).fetchall()
                total, doomed = 0, []
                for keyset, key, rows in entries:
                    total += rows * sizes.get(keyset, 0)
                    if total > max_bytes:
                        doomed.append((keyset, key))
                db.executemany("DELETE FROM entries WHERE keyset = ? AND key = ?", doomed)
                removed += len(doomed)
        _reclaim(root, db, indexed)
    finally:
        db.close()
    return removed


def clear(root: Path) -> dict[str, Any]:
    """Remove what the cache owns: its index files and the shards of its key-set folders
    (the folders too once empty). Anything else in the folder is left where it is, and
    a folder without an index that holds anything else is refused: it is not a cache.
    Works on a corrupt index, which is how one recovers from one."""
    result = {
        "dir": str(root),
        "exists": root.is_dir(),
        "freed_bytes": 0,
        "removed_files": 0,
        "left": [],
    }
    if not root.exists() and not root.is_symlink():
        return result
    with _problems(root):
        keysets = _indexed_keysets(root)
        index_files, folders, foreign = [], [], []
        for child in sorted(root.iterdir()):
            if child.is_symlink():
                foreign.append(child)
            elif child.name in INDEX_FILES and child.is_file():
                index_files.append(child)
            elif child.is_dir() and (child.name in keysets or KEYSET_NAME.fullmatch(child.name)):
                folders.append(child)
            else:
                foreign.append(child)
        if foreign and not (root / INDEX).is_file():
            raise CacheError(
                f"{root} does not look like an edgefreeze cache (no {INDEX}, and "
                f"{len(foreign)} item(s) of something else, such as "
                f"{foreign[0].name!r}); not clearing it"
            )
        for folder in [root, *folders]:  # fail before deleting anything, not half-way
            if not os.access(folder, os.W_OK | os.X_OK):
                raise CacheError(
                    f"{folder}: cannot delete files in it (permission denied); "
                    f"check the permissions of the activation cache {root}"
                )
        freed = removed = 0
        for folder in folders:
            for shard in _shards(folder):
                freed += shard.stat().st_size
                shard.unlink()
                removed += 1
            rest = sorted(folder.iterdir())
            if rest:
                foreign.extend(rest)
            else:
                folder.rmdir()
        # The journals before the database: a stale -wal beside a new index would be
        # replayed into it.
        for path in sorted(index_files, key=lambda p: p.name == INDEX):
            freed += path.stat().st_size
            path.unlink()
            removed += 1
    return {
        **result,
        "freed_bytes": freed,
        "removed_files": removed,
        "left": [str(path.relative_to(root)) for path in foreign],
    }


def _indexed_keysets(root: Path) -> set[str]:
    """The key sets the index names; empty when it is missing or unreadable."""
    try:
        db = read_index(root)
        if db is None:
            return set()
        try:
            return set(_keysets(db))
        finally:
            db.close()
    except (sqlite3.Error, OSError):
        return set()


def _reclaim(root: Path, db: sqlite3.Connection, indexed: set[tuple[str, str]]) -> None:
    """Delete shards nobody references; rewrite mostly-dead ones with their live entries.

    A shard that was never `indexed` and is younger than ORPHAN_GRACE_S may be a running
    build's, written but not yet indexed, so it is kept until the grace period ends."""
    for keyset, info in _keysets(db).items():
        folder = _keyset_folder(root, keyset)
        if folder is None or not folder.is_dir():
            continue
        item = info.row_bytes
        live = dict(
            db.execute(
                "SELECT shard, SUM(rows) FROM entries WHERE keyset = ? GROUP BY shard", (keyset,)
            ).fetchall()
        )
        for path in _shards(folder):
            size = path.stat().st_size
            if path.name not in live:
                if (
                    (keyset, path.name) in indexed
                    or size == 0
                    or time.time() - path.stat().st_mtime > ORPHAN_GRACE_S
                ):
                    path.unlink()
            elif live[path.name] * item < COMPACT_BELOW * size:
                _compact(db, folder, keyset, path, item)


def _compact(db: sqlite3.Connection, folder: Path, keyset: str, path: Path, item: int) -> None:
    rows = db.execute(
        "SELECT key, offset, rows FROM entries WHERE keyset = ? AND shard = ?", (keyset, path.name)
    ).fetchall()
    data = path.read_bytes()
    new_name = f"{uuid.uuid4().hex}.bin"
    updates, offset = [], 0
    with open(folder / new_name, "wb") as handle:
        for key, old_offset, count in rows:
            handle.write(data[old_offset : old_offset + count * item])
            updates.append((new_name, offset, keyset, key))
            offset += count * item
        handle.flush()
        os.fsync(handle.fileno())
    with db:
        db.executemany(
            "UPDATE entries SET shard = ?, offset = ? WHERE keyset = ? AND key = ?", updates
        )
    path.unlink()
