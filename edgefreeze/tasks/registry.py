"""The task registry: a pipeline's `task:` names one of these."""

from __future__ import annotations

from edgefreeze.registry import Registry

TASKS: Registry[type] = Registry("task")
