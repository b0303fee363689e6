"""Looking after a cache folder: stats, verify, prune, clear (`edgefreeze cache ...`)."""

from __future__ import annotations

import json
import os
import re
import shutil
import time
import uuid
from pathlib import Path

import numpy as np

from edgefreeze.cache.store import DTYPES, checksum, open_index
from edgefreeze.errors import ConfigError

ORPHAN_GRACE_S = 3600  # an unindexed shard younger than this may belong to a running build
COMPACT_BELOW = 0.5  # rewrite a shard once less than this share of its bytes is live
UNITS = {"": 1, "b": 1, "k": 1e3, "kb": 1e3, "m": 1e6, "mb": 1e6, "g": 1e9, "gb": 1e9,
         "kib": 2**10, "mib": 2**20, "gib": 2**30}


def parse_size(text: str) -> int:
    """'500MB', '2GiB', '1e9' -> bytes."""
    match = re.fullmatch(r"\s*([0-9.eE+]+)\s*([a-zA-Z]*)\s*", text)
    if not match or match.group(2).lower() not in UNITS:
        raise ConfigError(f"--max-size: cannot read {text!r} as a size (e.g. 500MB, 2GiB)")
    try:
        return int(float(match.group(1)) * UNITS[match.group(2).lower()])
    except ValueError:
        raise ConfigError(f"--max-size: cannot read {text!r} as a size (e.g. 500MB, 2GiB)") from None


def stats(root: Path) -> dict:
    """Entries and bytes per key set, and what each key set stands for."""
    if not (root / "index.sqlite").is_file():
        return {"dir": str(root), "keysets": [], "entries": 0, "bytes": 0, "disk_bytes": 0}
    db = open_index(root)
    try:
        keysets = []
        for keyset, description, dtype, width in db.execute(
                "SELECT keyset, description, dtype, width FROM keysets ORDER BY created"):
            entries, rows, last_used = db.execute(
                "SELECT COUNT(*), COALESCE(SUM(rows), 0), MAX(last_used) FROM entries "
                "WHERE keyset = ?", (keyset,)).fetchone()
            folder = root / keyset
            disk = sum(p.stat().st_size for p in folder.glob("*.bin")) if folder.is_dir() else 0
            keysets.append({"keyset": keyset, "description": json.loads(description),
                            "dtype": dtype, "entries": entries,
                            "bytes": int(rows) * width * DTYPES[dtype].itemsize,
                            "disk_bytes": disk, "last_used": last_used})
    finally:
        db.close()
    return {"dir": str(root), "keysets": keysets,
            "entries": sum(k["entries"] for k in keysets),
            "bytes": sum(k["bytes"] for k in keysets),
            "disk_bytes": sum(k["disk_bytes"] for k in keysets)}


def verify(root: Path) -> dict:
    """Check every entry's checksum; drop the bad ones so the next build recomputes them."""
    checked, bad = 0, []
    if not (root / "index.sqlite").is_file():
        return {"dir": str(root), "checked": 0, "corrupt": 0}
    db = open_index(root)
    try:
        widths = {k: (w, DTYPES[d]) for k, d, w in db.execute(
            "SELECT keyset, dtype, width FROM keysets")}
        maps: dict[Path, np.ndarray | None] = {}
        for keyset, key, shard, offset, rows, digest in db.execute(
                "SELECT keyset, key, shard, offset, rows, checksum FROM entries").fetchall():
            width, dtype = widths[keyset]
            path = root / keyset / shard
            if path not in maps:
                maps[path] = np.memmap(path, dtype=np.uint8, mode="r") if path.is_file() \
                    and path.stat().st_size else None
            data = maps[path]
            size = rows * width * dtype.itemsize
            checked += 1
            if data is None or offset + size > data.size or \
                    checksum(data[offset:offset + size]) != digest:
                bad.append((keyset, key))
        with db:
            db.executemany("DELETE FROM entries WHERE keyset = ? AND key = ?", bad)
    finally:
        db.close()
    return {"dir": str(root), "checked": checked, "corrupt": len(bad)}


def prune(root: Path, older_than_days: float | None, max_bytes: int | None) -> dict:
    """Drop entries unused for `older_than_days`, then the least recently used until the
    cache holds at most `max_bytes`; then reclaim the disk space of dropped entries."""
    if not (root / "index.sqlite").is_file():
        return {"dir": str(root), "removed": 0, "disk_bytes_before": 0, "disk_bytes_after": 0}
    before = stats(root)["disk_bytes"]
    db = open_index(root)
    removed = 0
    try:
        indexed = set(db.execute("SELECT DISTINCT keyset, shard FROM entries").fetchall())
        with db:
            if older_than_days is not None:
                cutoff = time.time() - older_than_days * 86400
                removed += db.execute("DELETE FROM entries WHERE last_used < ?",
                                      (cutoff,)).rowcount
            if max_bytes is not None:
                sizes = {k: w * DTYPES[d].itemsize for k, d, w in db.execute(
                    "SELECT keyset, dtype, width FROM keysets")}
                entries = db.execute("SELECT keyset, key, rows FROM entries "
                                     "ORDER BY last_used DESC").fetchall()
                total, doomed = 0, []
                for keyset, key, rows in entries:
                    total += rows * sizes[keyset]
                    if total > max_bytes:
                        doomed.append((keyset, key))
                db.executemany("DELETE FROM entries WHERE keyset = ? AND key = ?", doomed)
                removed += len(doomed)
        _reclaim(root, db, indexed)
    finally:
        db.close()
    return {"dir": str(root), "removed": removed, "disk_bytes_before": before,
            "disk_bytes_after": stats(root)["disk_bytes"]}


def clear(root: Path) -> dict:
    """Remove the whole cache folder's contents."""
    freed = stats(root)["disk_bytes"] if root.is_dir() else 0
    if root.is_dir():
        for child in root.iterdir():
            shutil.rmtree(child) if child.is_dir() else child.unlink()
    return {"dir": str(root), "freed_bytes": freed}


def _reclaim(root: Path, db, indexed: set[tuple[str, str]]) -> None:
    """Delete shards nobody references; rewrite mostly-dead ones with their live entries.

    A shard that was never `indexed` and is younger than ORPHAN_GRACE_S may be a running
    build's, written but not yet indexed, so it is kept until the grace period ends."""
    for keyset, dtype, width in db.execute("SELECT keyset, dtype, width FROM keysets").fetchall():
        folder = root / keyset
        if not folder.is_dir():
            continue
        item = DTYPES[dtype].itemsize * width
        live = dict(db.execute("SELECT shard, SUM(rows) FROM entries WHERE keyset = ? "
                               "GROUP BY shard", (keyset,)).fetchall())
        for path in folder.glob("*.bin"):
            size = path.stat().st_size
            if path.name not in live:
                if (keyset, path.name) in indexed or size == 0 or \
                        time.time() - path.stat().st_mtime > ORPHAN_GRACE_S:
                    path.unlink()
            elif live[path.name] * item < COMPACT_BELOW * size:
                _compact(db, folder, keyset, path, item)


def _compact(db, folder: Path, keyset: str, path: Path, item: int) -> None:
    rows = db.execute("SELECT key, offset, rows FROM entries WHERE keyset = ? AND shard = ?",
                      (keyset, path.name)).fetchall()
    data = path.read_bytes()
    new_name = f"{uuid.uuid4().hex}.bin"
    updates, offset = [], 0
    with open(folder / new_name, "wb") as handle:
        for key, old_offset, count in rows:
            handle.write(data[old_offset:old_offset + count * item])
            updates.append((new_name, offset, keyset, key))
            offset += count * item
        handle.flush()
        os.fsync(handle.fileno())
    with db:
        db.executemany("UPDATE entries SET shard = ?, offset = ? WHERE keyset = ? AND key = ?",
                       updates)
    path.unlink()
