"""What a task is: the protocol every task implements and the update a node contributes.

Apart from the registry in `federated.tasks`, so the tasks' modules import it without importing the registry
that imports them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

import numpy as np

Arrays = list[np.ndarray]
# A run's config as Flower gives it (its UserConfig), spelled here: this module imports without flwr.
RunConfig = Mapping[str, bool | float | int | str]


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

    def initial_arrays(self, config: RunConfig) -> Arrays: ...

    def local_update(self, data_dir, global_arrays: Arrays, config: RunConfig) -> LocalUpdate: ...

    def finish(self, aggregated: Arrays, config: RunConfig, nodes: int) -> dict: ...
