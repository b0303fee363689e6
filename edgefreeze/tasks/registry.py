"""The task registry: a pipeline's `task:` names one of these."""

from __future__ import annotations

from edgefreeze.registry import Registry
from edgefreeze.tasks.base import Task

TASKS: Registry[type[Task]] = Registry("task")


def register_task(cls: type[Task]) -> type[Task]:
    """Class decorator: register a task under its own `name`."""
    return TASKS.register(cls.name)(cls)
