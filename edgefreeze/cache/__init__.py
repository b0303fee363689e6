"""The activation cache: the frozen stem's outputs, computed once per text and reused."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from edgefreeze.cache.activations import CacheStats, fetch_activations
from edgefreeze.cache.keys import describe_keyset, text_key
from edgefreeze.cache.store import ActivationStore

__all__ = ["ActivationStore", "CacheStats", "cache_root", "describe_keyset", "fetch_activations",
           "text_key"]


def cache_root(option: str | Path | None, pipeline_dir: str | None,
               resolve: Callable[[str], Path]) -> Path:
    """Where the cache lives: --cache-dir, else $EDGEFREEZE_CACHE_DIR, else the pipeline's
    cache.dir, else $XDG_CACHE_HOME/edgefreeze (~/.cache/edgefreeze)."""
    if option:
        return Path(option).expanduser()
    if os.environ.get("EDGEFREEZE_CACHE_DIR"):
        return Path(os.environ["EDGEFREEZE_CACHE_DIR"]).expanduser()
    if pipeline_dir:
        return resolve(pipeline_dir)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "edgefreeze"
