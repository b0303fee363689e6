"""Tasks: what is predicted, and everything in a build that depends on it.

One module per task, each registering its class in `TASKS`; a new task touches only its
own module (and a head per model family it supports).
"""

from edgefreeze.errors import ConfigError
from edgefreeze.runtime.inputs import INPUTS
from edgefreeze.runtime.outputs import OUTPUTS
from edgefreeze.tasks import image_classification as _image_classification  # noqa: F401
from edgefreeze.tasks import text_classification as _text_classification  # noqa: F401  (registers)
from edgefreeze.tasks import token_classification as _token_classification  # noqa: F401
from edgefreeze.tasks.base import Head, MissingValue, Outputs, Task
from edgefreeze.tasks.registry import TASKS, register_task

DEFAULT_TASK = "text-classification"  # a pipeline without `task:`


def task_for(name: str) -> Task:
    """The task a pipeline names, or one line listing the known ones; a task whose device
    input or output kind the runtime lacks is refused here, before any training."""
    kind = TASKS.get(name)
    if kind is None:
        raise ConfigError(f"task: {TASKS.unknown(name)}")
    for registry, wanted in ((INPUTS, kind.inputs), (OUTPUTS, kind.outputs)):
        if wanted not in registry:
            raise ConfigError(f"task: {name} needs the device runtime's {registry.unknown(wanted)}")
    return kind()


__all__ = [
    "DEFAULT_TASK",
    "TASKS",
    "Head",
    "MissingValue",
    "Outputs",
    "Task",
    "register_task",
    "task_for",
]
