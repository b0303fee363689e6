"""The failures a release pipeline must tell apart, each tied to its exit code.

Exit codes are a contract (see README): 0 shipped, 1 the gate refused, 2 bad input or
configuration, 3 anything else. `GateRefused` (exit 1) lives beside the manifest it
carries, in `edgefreeze.runtime.manifest`: this module imports nothing of the package.
"""

from __future__ import annotations


class EdgefreezeError(Exception):
    """Base class: a failure with a one-line message and a stable exit code; `details`
    go into the command's --json object beside the message."""

    exit_code = 3

    def __init__(self, message: str = "", details: dict[str, object] | None = None) -> None:
        super().__init__(message)
        self.details: dict[str, object] = details or {}


class ConfigError(EdgefreezeError):
    """The pipeline file, the data or an option is wrong; the message says what and where."""

    exit_code = 2


class CacheError(EdgefreezeError):
    """The activation cache cannot be used as it is (a corrupt index, a folder that cannot
    be written); the message names the file and the fix. Exit 2 unless `exit_code` says
    the cause lies elsewhere (a full disk, a lock held too long)."""

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class CheckFailed(EdgefreezeError):
    """A check ran and found a problem (a refused gate, a corrupt cache)."""

    exit_code = 1


class BundleError(EdgefreezeError):
    """A bundle is missing, incomplete, tampered with, or was never accepted."""

    exit_code = 2
