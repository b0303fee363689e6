"""The failures a release pipeline must tell apart, each tied to its exit code.

Exit codes are a contract (see README): 0 shipped, 1 the gate refused, 2 bad input or
configuration, 3 anything else.
"""

from __future__ import annotations

from pathlib import Path


class EdgefreezeError(Exception):
    """Base class: a failure with a one-line message and a stable exit code."""

    exit_code = 3


class ConfigError(EdgefreezeError):
    """The pipeline file, the data or an option is wrong; the message says what and where."""

    exit_code = 2


class CheckFailed(EdgefreezeError):
    """A check ran and found a problem (a refused gate, a corrupt cache)."""

    exit_code = 1


class GateRefused(CheckFailed):
    """The built models failed the gate; nothing was published, the report was kept."""

    def __init__(self, message: str, manifest: dict, report_dir: Path) -> None:
        super().__init__(message)
        self.manifest = manifest
        self.report_dir = report_dir
