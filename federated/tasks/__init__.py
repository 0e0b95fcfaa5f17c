"""The federated tasks: what a node computes from its own data, what central makes of the sum.

A task is small and pure: `local_update` turns the node's data (and the current
global parameters) into the vectors it contributes; `finish` turns the
aggregated vectors into what central keeps. The Flower apps in
`federated.flower_app` only move these arrays; SecAgg+ sums them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Protocol

import numpy as np

# TaskError sits in federated.errors, below both this package and federated.local_data, which raises it too;
# it is re-exported here for the tasks' callers.
from federated.errors import TaskError  # noqa: F401

Arrays = list[np.ndarray]


@dataclass(frozen=True)
class LocalUpdate:
    arrays: Arrays
    # Sent in the clear beside the masked arrays (Flower does not mask it): keep it
    # a coarse, non-sensitive weight.
    weight: int
    # Local-only figures the node logs; never sent.
    local_metrics: Mapping[str, float]


class Task(Protocol):
    name: str
    # SecAgg+ clips every value to +-clipping_range, quantizes it to quantization_range levels
    # and sums modulo modulus_range (which must exceed nodes x quantization_range).
    clipping_range: float
    quantization_range: int
    modulus_range: int

    def initial_arrays(self, config: Mapping[str, object]) -> Arrays: ...

    def local_update(self, data_dir, global_arrays: Arrays, config: Mapping[str, object]) -> LocalUpdate: ...

    def finish(self, aggregated: Arrays, config: Mapping[str, object], nodes: int) -> dict: ...


def get_task(name: str) -> Task:
    factories: dict[str, Callable[[], Task]] = _factories()
    if name not in factories:
        raise TaskError(f"unknown task {name!r}; known tasks: {', '.join(sorted(factories))}")
    return factories[name]()


def task_names() -> list[str]:
    return sorted(_factories())


def _factories() -> dict[str, Callable[[], Task]]:
    from federated.tasks.sensitivity import SensitivityTask
    from federated.tasks.usage_stats import UsageStatsTask
    return {"sensitivity": SensitivityTask, "usage-stats": UsageStatsTask}
