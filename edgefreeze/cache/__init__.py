"""The activation cache: the frozen stem's outputs, computed once per text and reused."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from edgefreeze.cache.activations import CacheStats, fetch_activations
from edgefreeze.cache.keys import describe_keyset
from edgefreeze.cache.store import ActivationStore
from edgefreeze.errors import ConfigError
from edgefreeze.schema import CacheSpec

__all__ = ["ActivationStore", "CacheStats", "cache_root", "describe_keyset", "fetch_activations"]


def cache_root(
    option: str | Path | None,
    settings: CacheSpec | None,
    resolve: Callable[[str], Path],
    enabled: bool | None = None,
) -> Path | None:
    """Where the cache lives: --cache-dir, else $EDGEFREEZE_CACHE_DIR, else the pipeline's
    cache.dir, else $XDG_CACHE_HOME/edgefreeze (~/.cache/edgefreeze). A setting that
    names a file (or a path under one) is exit 2, naming the setting. None when the cache
    is off (`enabled`, the command line's say, else the pipeline's `cache.enabled`)."""
    if enabled is None:
        enabled = settings.enabled if settings else True
    if not enabled:
        return None
    pipeline_dir = settings.dir if settings else None
    if option:
        return _folder(Path(option).expanduser(), "--cache-dir")
    if os.environ.get("EDGEFREEZE_CACHE_DIR"):
        return _folder(
            Path(os.environ["EDGEFREEZE_CACHE_DIR"]).expanduser(), "EDGEFREEZE_CACHE_DIR"
        )
    if pipeline_dir:
        return _folder(resolve(pipeline_dir), "the pipeline's cache.dir")
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return _folder(Path(base) / "edgefreeze", "the default cache folder")


def _folder(path: Path, setting: str) -> Path:
    """`path` unless it, or the nearest of its parents that exists, is not a folder."""
    for existing in (path, *path.parents):
        if existing.exists() or existing.is_symlink():
            if not existing.is_dir():
                what = "is" if existing == path else f"is under {existing}, which is"
                raise ConfigError(
                    f"{setting}: {path} {what} a file, not a folder; the "
                    "activation cache must be a folder"
                )
            break
    return path
