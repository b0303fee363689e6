"""Ctrl-C and SIGTERM stop a command, and no stop is lost.

A signal handler's exception is raised wherever the main thread happens to be. When that
is inside a `__del__` or a garbage-collector callback (a progress bar being closed, say),
Python prints "Exception ignored" and carries on, and a build would then finish and
publish as if it had never been stopped. So the handlers also record the stop, and every
stage boundary (`raise_pending`, called by `Reporter.stage`) raises it again.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager


class Terminated(BaseException):
    """SIGTERM (a CI job cancelled, a pod evicted): exit 128 + 15, like a shell would."""


_pending: list[type[BaseException]] = []


def _stop(kind: type[BaseException]) -> Callable[[int, object], None]:
    def handler(signum: int, frame: object) -> None:
        _pending.append(kind)
        raise kind()

    return handler


@contextmanager
def stopping_on_signals() -> Iterator[None]:
    """SIGINT raises KeyboardInterrupt and SIGTERM `Terminated`, recorded, for the block
    (main thread only; a SIGINT the caller's shell ignores, as for a background job, stays
    ignored). The previous handlers come back afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)}
    if previous[signal.SIGINT] is not signal.SIG_IGN:
        signal.signal(signal.SIGINT, _stop(KeyboardInterrupt))
    signal.signal(signal.SIGTERM, _stop(Terminated))
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, signal.SIG_DFL if handler is None else handler)
        _pending.clear()


def raise_pending() -> None:
    """Raise a stop that a signal asked for, if its exception was swallowed on the way."""
    if _pending:
        raise _pending[0]()
