"""File digests shared by the builder and the torch-free runtime (stdlib only)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def content_key(example: object) -> str:
    """A short digest of an example's content: its text's UTF-8 bytes, or the JSON of
    anything else (a token list, say). Equal examples share it across builds."""
    text = example if isinstance(example, str) else json.dumps(example, sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]
