"""Named points where a build can be made to die, for drills of what a release pipeline
sees when a machine is lost mid-build.

`EDGEFREEZE_FAILPOINT=cache` makes the build SIGKILL itself right after it has stored its
first activations; the same command run again must then finish with the same model, byte
for byte. A signal sent from outside cannot land at such a point reliably (most stages
last milliseconds on a small model), which is why the points are named in the code, as
etcd's gofail and SQLite's test hooks do. Unset, a point costs one dictionary lookup.
"""

from __future__ import annotations

import os
import signal

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


def failpoint(name: str) -> None:
    """SIGKILL this process if `EDGEFREEZE_FAILPOINT` names this point."""
    if os.environ.get(VARIABLE) == name:
        os.kill(os.getpid(), signal.SIGKILL)
