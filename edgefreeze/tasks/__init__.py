"""Tasks: what is predicted, and everything in a build that depends on it.

One module per task, each registering its class in `TASKS`; a new task touches only its
own module (and a head per model family it supports).
"""

from edgefreeze.errors import ConfigError
from edgefreeze.tasks import text_classification as _text_classification  # noqa: F401  (registers)
from edgefreeze.tasks.base import Head, MissingValue, Outputs, Task
from edgefreeze.tasks.registry import TASKS

DEFAULT_TASK = "text-classification"  # a pipeline without `task:`


def task_for(name: str) -> Task:
    """The task a pipeline names, or one line listing the known ones."""
    kind = TASKS.get(name)
    if kind is None:
        raise ConfigError(f"task: {TASKS.unknown(name)}")
    return kind()


__all__ = ["DEFAULT_TASK", "TASKS", "Head", "MissingValue", "Outputs", "Task", "task_for"]
