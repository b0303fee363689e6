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
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DTYPES = {"fp16": np.dtype("<f2"), "fp32": np.dtype("<f4")}
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
    return hashlib.blake2b(memoryview(data).cast("B"), digest_size=8).hexdigest()


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

    def __init__(self, root: Path, keyset: str, description: dict, dtype: str, width: int) -> None:
        self.root, self.keyset, self.width = Path(root), keyset, width
        self.dtype = DTYPES[dtype]
        self.folder = self.root / keyset
        self.folder.mkdir(parents=True, exist_ok=True)
        self.db = open_index(self.root)
        with self.db:
            self.db.execute("INSERT OR IGNORE INTO keysets VALUES (?, ?, ?, ?, ?)",
                            (keyset, json.dumps(description, sort_keys=True), dtype, width,
                             time.time()))
        self._maps: dict[str, np.memmap] = {}

    def close(self) -> None:
        self._maps.clear()
        self.db.close()

    def lookup(self, keys: Iterable[str]) -> dict[str, Entry]:
        found: dict[str, Entry] = {}
        unique = list(dict.fromkeys(keys))
        for start in range(0, len(unique), 900):  # SQLite's bound-parameter limit
            chunk = unique[start:start + 900]
            marks = ",".join("?" * len(chunk))
            rows = self.db.execute(
                f"SELECT key, shard, offset, rows, checksum FROM entries "
                f"WHERE keyset = ? AND key IN ({marks})", (self.keyset, *chunk))
            found.update({row[0]: Entry(*row) for row in rows})
        return found

    def load(self, entry: Entry) -> np.ndarray | None:
        """The entry's (rows, width) array, memory-mapped; None if missing or corrupt."""
        count = entry.rows * self.width
        shard = self._map(entry.shard)
        start = entry.offset // self.dtype.itemsize
        if shard is None or entry.offset % self.dtype.itemsize or start + count > shard.size:
            return None
        array = shard[start:start + count]
        if checksum(array) != entry.checksum:
            return None
        return array.reshape(entry.rows, self.width)

    def forget(self, keys: Sequence[str]) -> None:
        with self.db:
            self.db.executemany("DELETE FROM entries WHERE keyset = ? AND key = ?",
                                [(self.keyset, key) for key in keys])

    def touch(self, keys: Sequence[str]) -> None:
        now = time.time()
        with self.db:
            self.db.executemany("UPDATE entries SET last_used = ? WHERE keyset = ? AND key = ?",
                                [(now, self.keyset, key) for key in keys])

    def write(self, items: Sequence[tuple[str, np.ndarray]]) -> int:
        """Append arrays to a new shard, then index them; returns the bytes written."""
        if not items:
            return 0
        shard = f"{uuid.uuid4().hex}.bin"
        rows, offset = [], 0
        now = time.time()
        with open(self.folder / shard, "wb") as handle:
            for key, array in items:
                data = np.ascontiguousarray(array, dtype=self.dtype)
                assert data.ndim == 2 and data.shape[1] == self.width, data.shape
                handle.write(data.tobytes())
                rows.append((self.keyset, key, shard, offset, data.shape[0], checksum(data),
                             now, now))
                offset += data.nbytes
            handle.flush()
            os.fsync(handle.fileno())
        with self.db:
            self.db.executemany("INSERT OR REPLACE INTO entries VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                                rows)
        return offset

    def _map(self, shard: str) -> np.memmap | None:
        if shard not in self._maps:
            path = self.folder / shard
            if not path.is_file() or path.stat().st_size < self.dtype.itemsize:
                return None
            self._maps[shard] = np.memmap(path, dtype=self.dtype, mode="r")
        return self._maps[shard]


def open_index(root: Path) -> sqlite3.Connection:
    """The cache's SQLite index, created on first use; safe for concurrent processes."""
    root.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(root / "index.sqlite", timeout=60)
    db.execute("PRAGMA journal_mode=WAL")
    db.executescript(SCHEMA)
    return db
