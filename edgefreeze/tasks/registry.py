"""The task registry: a pipeline's `task:` names one of these."""

from __future__ import annotations

from edgefreeze.registry import Registry

TASKS: Registry[type] = Registry("task")


def register_task(cls: type) -> type:
    """Class decorator: register a task under its own `name`."""
    return TASKS.register(cls.name)(cls)
