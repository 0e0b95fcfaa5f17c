"""The federated tasks: what a node computes from its own data, what central makes of the sum.

A task is small and pure: `local_update` turns the node's data (and the current
global parameters) into the vectors it contributes; `finish` turns the
aggregated vectors into what central keeps. The Flower apps in
`federated.flower_app` only move these arrays; SecAgg+ sums them.
"""

from __future__ import annotations

from collections.abc import Callable

# TaskError sits in federated.errors, below both this package and federated.local_data, which raises it too.
# It and the base types are re-exported here for the tasks' callers.
from federated.errors import TaskError
from federated.tasks.base import Arrays, LocalUpdate, Task
from federated.tasks.sensitivity import SensitivityTask
from federated.tasks.usage_stats import UsageStatsTask

__all__ = ["Arrays", "LocalUpdate", "Task", "TaskError", "get_task", "task_names"]

_FACTORIES: dict[str, Callable[[], Task]] = {"sensitivity": SensitivityTask, "usage-stats": UsageStatsTask}


def get_task(name: str) -> Task:
    if name not in _FACTORIES:
        raise TaskError(f"unknown task {name!r}; known tasks: {', '.join(sorted(_FACTORIES))}")
    return _FACTORIES[name]()


def task_names() -> list[str]:
    return sorted(_FACTORIES)
