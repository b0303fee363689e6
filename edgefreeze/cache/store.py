"""The activation store: ragged arrays in append-only shard files, indexed by SQLite.

Layout under the cache root:

    index.sqlite               one row per entry: (keyset, key) -> shard, offset, shape, checksum
    KEYSET/SHARD.bin           raw little-endian arrays, appended, never rewritten in place

Why this shape:
- Each writer appends to a shard of its own and commits index rows only after the bytes
  are flushed, so a crash leaves at most unreferenced bytes, never an index row that
  points at missing data; concurrent builds on one cache never write the same file.
- SQLite (WAL mode) gives atomic, concurrent index updates without a server.
- Reads are memory-mapped: a cached epoch touches only the pages it needs, and the OS
  page cache keeps them warm across epochs and builds.
- Every entry carries a BLAKE2b checksum, checked when a build loads it; a bad or
  truncated entry is dropped and recomputed, never trained on.
- A cache is only a cache: when the index is corrupt or the folder cannot be written, the
  store says why once (`problem`, which the build reports, naming the file and the fix)
  and the build runs without it, never fails.

The cache owns exactly INDEX_FILES and, in its key-set folders, the files named like
SHARD_NAME; `edgefreeze cache clear` and `prune` never touch anything else.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import shlex
import sqlite3
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgefreeze.errors import CacheError

INDEX = "index.sqlite"
INDEX_FILES = (INDEX, f"{INDEX}-wal", f"{INDEX}-shm", f"{INDEX}-journal")
SHARD_NAME = re.compile(r"[0-9a-f]{32}\.bin")  # uuid4().hex, see ActivationStore.write
KEYSET_NAME = re.compile(r"[0-9a-f]{24}")  # describe_keyset's digest
DTYPES: dict[str, np.dtype[np.floating[Any]]] = {"fp16": np.dtype("<f2"), "fp32": np.dtype("<f4")}
SCHEMA = """
CREATE TABLE IF NOT EXISTS keysets (
    keyset TEXT PRIMARY KEY, description TEXT NOT NULL, dtype TEXT NOT NULL,
    width INTEGER NOT NULL, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS entries (
    keyset TEXT NOT NULL, key TEXT NOT NULL, shard TEXT NOT NULL, offset INTEGER NOT NULL,
    rows INTEGER NOT NULL, checksum TEXT NOT NULL, created REAL NOT NULL,
    last_used REAL NOT NULL, PRIMARY KEY (keyset, key));
CREATE INDEX IF NOT EXISTS entries_by_shard ON entries (keyset, shard);
"""


def checksum(data: bytes | memoryview | np.ndarray) -> str:
    # numpy's stubs declare an array a buffer only for Python 3.12 and later
    view = memoryview(data)  # type: ignore[arg-type]
    return hashlib.blake2b(view.cast("B"), digest_size=8).hexdigest()


@dataclass(frozen=True)
class Entry:
    key: str
    shard: str
    offset: int  # in bytes
    rows: int  # tokens (1 for a pooled vector)
    checksum: str


class ActivationStore:
    """One key set (model, tokenizer, settings) inside a cache root.

    Args:
        root: the cache folder, shared by every key set.
        keyset: the digest naming everything that determines an activation but the text.
        description: what the key set stands for (stored for `edgefreeze cache stats`).
        dtype: "fp16" or "fp32", how the arrays are stored.
        width: the hidden size; every entry is a (rows, width) array.
    """

    def __init__(
        self, root: Path, keyset: str, description: dict[str, Any], dtype: str, width: int
    ) -> None:
        self.root, self.keyset, self.width = Path(root), keyset, width
        self.dtype = DTYPES[dtype]
        self.folder = self.root / keyset
        self._maps: dict[str, np.memmap] = {}
        self.db: sqlite3.Connection | None = None
        self.problem: str | None = None  # why the store stopped being used, if it did
        try:
            self.db = open_index(self.root)
            with self.db:
                self.db.execute(
                    "INSERT OR IGNORE INTO keysets VALUES (?, ?, ?, ?, ?)",
                    (keyset, json.dumps(description, sort_keys=True), dtype, width, time.time()),
                )
            self.folder.mkdir(exist_ok=True)
        except (sqlite3.Error, OSError) as exc:
            self._give_up(exc)

    def close(self) -> None:
        self._maps.clear()
        if self.db is not None:
            self.db.close()
            self.db = None

    def _give_up(self, exc: BaseException) -> None:
        """Stop using the cache for the rest of this run: record why (the first reason),
        then every lookup misses and nothing is written, so the caller computes everything
        live and reports `problem`."""
        if self.problem is None:
            self.problem = str(cache_problem(self.root, exc))
        if self.db is not None:
            with contextlib.suppress(sqlite3.Error):
                self.db.close()
            self.db = None

    def lookup(self, keys: Iterable[str]) -> dict[str, Entry]:
        found: dict[str, Entry] = {}
        if self.db is None:
            return found
        unique = list(dict.fromkeys(keys))
        try:
            for start in range(0, len(unique), 900):  # SQLite's bound-parameter limit
                chunk = unique[start : start + 900]
                marks = ",".join("?" * len(chunk))
                rows = self.db.execute(
                    f"SELECT key, shard, offset, rows, checksum FROM entries "
                    f"WHERE keyset = ? AND key IN ({marks})",
                    (self.keyset, *chunk),
                )
                found.update({row[0]: Entry(*row) for row in rows})
        except sqlite3.Error as exc:
            self._give_up(exc)
        return found

    def load(self, entry: Entry) -> np.ndarray | None:
        """The entry's (rows, width) array, memory-mapped; None if missing or corrupt."""
        count = entry.rows * self.width
        shard = self._map(entry.shard)
        start = entry.offset // self.dtype.itemsize
        if shard is None or entry.offset % self.dtype.itemsize or start + count > shard.size:
            return None
        array = shard[start : start + count]
        if checksum(array) != entry.checksum:
            return None
        return array.reshape(entry.rows, self.width)

    def forget(self, keys: Sequence[str]) -> None:
        if self.db is None:
            return
        try:
            with self.db:
                self.db.executemany(
                    "DELETE FROM entries WHERE keyset = ? AND key = ?",
                    [(self.keyset, key) for key in keys],
                )
        except sqlite3.Error as exc:
            self._give_up(exc)

    def touch(self, keys: Sequence[str]) -> None:
        if self.db is None:
            return
        now = time.time()
        try:
            with self.db:
                self.db.executemany(
                    "UPDATE entries SET last_used = ? WHERE keyset = ? AND key = ?",
                    [(now, self.keyset, key) for key in keys],
                )
        except sqlite3.Error as exc:
            self._give_up(exc)

    def write(self, items: Sequence[tuple[str, np.ndarray]]) -> int:
        """Append arrays to a new shard, then index them; returns the bytes written
        (0 once the store has given up: the caller keeps its arrays either way)."""
        if not items or self.db is None:
            return 0
        shard = f"{uuid.uuid4().hex}.bin"
        rows, offset = [], 0
        now = time.time()
        arrays = []
        for key, array in items:
            data = np.ascontiguousarray(array, dtype=self.dtype)
            if data.ndim != 2 or data.shape[1] != self.width:
                raise ValueError(
                    f"activation {key}: shape {data.shape}, but this key set "
                    f"stores (rows, {self.width}) arrays"
                )
            arrays.append(data)
            rows.append((self.keyset, key, shard, offset, data.shape[0], checksum(data), now, now))
            offset += data.nbytes
        try:
            with open(self.folder / shard, "wb") as handle:
                for data in arrays:
                    handle.write(data.tobytes())
                handle.flush()
                os.fsync(handle.fileno())
            with self.db:
                self.db.executemany(
                    "INSERT OR REPLACE INTO entries VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows
                )
        except (sqlite3.Error, OSError) as exc:
            with contextlib.suppress(OSError):  # unindexed bytes: reclaimed by a later prune
                (self.folder / shard).unlink(missing_ok=True)
            self._give_up(exc)
            return 0
        return offset

    def _map(self, shard: str) -> np.memmap | None:
        if shard not in self._maps:
            path = self.folder / shard
            try:
                if not path.is_file() or path.stat().st_size < self.dtype.itemsize:
                    return None
                self._maps[shard] = np.memmap(path, dtype=self.dtype, mode="r")
            except (OSError, ValueError):  # unreadable: treated like a missing shard
                return None
        return self._maps[shard]


def open_index(root: Path) -> sqlite3.Connection:
    """The cache's SQLite index, created on first use; safe for concurrent processes.
    Raises sqlite3.Error or OSError as they come (see cache_problem)."""
    root.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(root / INDEX, timeout=60)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.executescript(SCHEMA)
    except BaseException:
        db.close()
        raise
    return db


def read_index(root: Path) -> sqlite3.Connection | None:
    """The index opened without creating anything and without writing to it; None if
    there is none or it holds no tables yet. Works in a folder the user cannot write."""
    path = root / INDEX
    if not path.is_file():
        return None
    uri = path.resolve().as_uri()
    writable = os.access(root, os.W_OK)
    try:
        # mode=rw where it can: the last connection to close then tidies up the -wal and
        # -shm files (a mode=ro reader leaves them). Neither mode creates a database.
        db = _tables(f"{uri}?mode={'rw' if writable else 'ro'}")
    except sqlite3.OperationalError as exc:
        if exc.sqlite_errorcode != sqlite3.SQLITE_CANTOPEN or writable:
            raise
        # A WAL database needs its -shm file, which cannot be created here; nobody can
        # be writing to this folder, so reading it as an immutable file is exact.
        db = _tables(f"{uri}?mode=ro&immutable=1")
    return db


def _tables(uri: str) -> sqlite3.Connection | None:
    """A connection to `uri` if it holds the cache's tables; None if it holds none."""
    db = sqlite3.connect(uri, uri=True, timeout=60)
    try:
        tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master")}
    except BaseException:
        db.close()
        raise
    if {"keysets", "entries"} <= tables:
        return db
    db.close()
    return None


def cache_problem(root: Path, exc: BaseException) -> CacheError:
    """What an error from the index or the cache's files means, as one line naming the
    file and what to do; exit 2 where the user can fix it (corruption, permissions)."""
    index = root / INDEX
    where = shlex.quote(str(root))
    if isinstance(exc, sqlite3.Error):
        code = (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF
        if code in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB):
            return CacheError(
                f"{index}: the activation cache's index is corrupt ({exc}); "
                f"run `edgefreeze cache clear --cache-dir {where}` to reset it"
            )
        if code in (sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_READONLY, sqlite3.SQLITE_PERM):
            return CacheError(
                f"{index}: cannot open or write the activation cache's index "
                f"({exc}); check that {root} is a folder you may write to"
            )
        if code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
            return CacheError(
                f"{index}: the activation cache is locked by another process "
                f"({exc}); try again when it has finished",
                exit_code=3,
            )
        return CacheError(f"{index}: {type(exc).__name__}: {exc}", exit_code=3)
    if isinstance(exc, OSError):
        path = exc.filename or root
        reason = exc.strerror or str(exc)
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            return CacheError(
                f"{path}: {reason}; check the permissions of the activation cache {root}"
            )
        if exc.errno in (errno.ENOTDIR, errno.EEXIST):
            return CacheError(f"{path}: {reason}; the activation cache {root} must be a folder")
        return CacheError(f"{path}: {reason}", exit_code=3)
    return CacheError(f"{root}: {type(exc).__name__}: {exc}", exit_code=3)
