"""What a build tells the person or CI log watching it: stages, timings, progress bars.

Everything goes to stderr so that `--json` keeps stdout machine-readable; `--quiet`
silences all of it.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from tqdm import tqdm

from edgefreeze.interrupts import raise_pending

T = TypeVar("T")


class Reporter:
    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet
        self.timings: dict[str, float] = {}

    def info(self, message: str) -> None:
        if not self.quiet:
            tqdm.write(message, file=sys.stderr)

    def warn(self, message: str) -> None:
        """One warning line, clear of any progress bar; shown even when quiet, since a
        warning changes what the build did (a release log must say so)."""
        tqdm.write(f"edgefreeze: warning: {message}", file=sys.stderr)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time a stage; the wall time lands in the manifest. A stop that a signal asked
        for is raised at the stage's start and end, if it was swallowed on the way."""
        raise_pending()
        self.info(f"» {name}")
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = round(time.perf_counter() - start, 3)
        raise_pending()

    def progress(self, items: Iterable[T], total: int | None = None, desc: str = "") -> Iterable[T]:
        return tqdm(
            items,
            total=total,
            desc=desc,
            disable=self.quiet,
            file=sys.stderr,
            leave=False,
            dynamic_ncols=True,
            mininterval=0.5,
        )
