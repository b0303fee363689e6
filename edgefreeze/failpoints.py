"""Named points where a build can be made to die, for drills of what a release pipeline
sees when a machine is lost mid-build.

`EDGEFREEZE_FAILPOINT=cache` makes the build SIGKILL itself right after it has stored its
first activations; the same command run again must then finish with the same model, byte
for byte. A signal sent from outside cannot land at such a point reliably (most stages
last milliseconds on a small model), which is why the points are named in the code, as
etcd's gofail and SQLite's test hooks do. Unset, a point costs one dictionary lookup.

`EDGEFREEZE_FAILPOINT=export:hold` instead stops the build at that point, says so on
stderr, and waits: for SIGUSR1, which lets it go on, or for SIGINT or SIGTERM, which stop
it there. A drill can then send a signal inside a stage, or start a second build while
the first holds its output, without racing a stage that ends in milliseconds.
"""

from __future__ import annotations

import os
import signal
import sys
import time

VARIABLE = "EDGEFREEZE_FAILPOINT"

# Each point sits inside its stage, after it has left something on disk (or in memory)
# that a rerun must cope with.
POINTS = {
    "data": "the data is read and split",
    "cache": "the first activations are stored, the rest not yet",
    "train": "the first epoch has trained",
    "export": "the fp32 model is written to the staging folder",
    "quantize": "the int8 model is written to the staging folder",
    "gate": "the gate has judged, nothing is sealed",
    "publish": "the manifest is sealed in the staging folder, not yet renamed into place",
}
# Outside a build, "record": a published manifest is read under the bundle's lock and not
# yet written back (`verify-target`'s check); and a device install's steps:
# "install-copy" (the update copied, not checked), "install-slot" (checked and in the
# inactive slot, not switched), "install-switch" (switched, `previous` not yet set).


def failpoint(name: str) -> None:
    """SIGKILL this process if `EDGEFREEZE_FAILPOINT` names this point; hold it here if it
    names the point with `:hold`."""
    wanted = os.environ.get(VARIABLE)
    if wanted == name:
        os.kill(os.getpid(), signal.SIGKILL)
    elif wanted == f"{name}:hold":
        _hold(name)


def _hold(name: str) -> None:
    """Wait at `name` until SIGUSR1 (go on); SIGINT and SIGTERM raise from their handlers
    while this sleeps, as they would from the stage's own work."""
    released: list[int] = []
    previous = signal.signal(signal.SIGUSR1, lambda signum, frame: released.append(signum))
    try:
        print(
            f"edgefreeze: holding at failpoint {name} (pid {os.getpid()}); SIGUSR1 goes on",
            file=sys.stderr,
            flush=True,
        )
        while not released:
            time.sleep(0.05)
    finally:
        signal.signal(signal.SIGUSR1, previous)
