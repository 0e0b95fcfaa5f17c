"""Task `usage-stats`: federated analytics, fleet-wide usage without any node's own figures.

Each node contributes its counts (requests per UTC hour, latency buckets, cache
hits and lookups) divided by a public scale, so they fit SecAgg+'s clipping
range; every node weighs 1, so FedAvg's mean times the number of nodes times
the scale is the fleet-wide sum. Only that sum leaves the ServerApp.
"""

from __future__ import annotations

import numpy as np

from federated import local_data
from federated.errors import TaskError
from federated.tasks.base import Arrays, LocalUpdate, RunConfig

DEFAULT_SCALE = 100_000.0
LENGTH = 24 + len(local_data.LATENCY_BUCKETS_MS) + 1 + 2


def _scale(config: RunConfig) -> float:
    scale = float(config.get("usage-scale", DEFAULT_SCALE))
    if scale <= 0:
        raise TaskError(f"usage-scale must be positive, got {scale}")
    return scale


def usage_vector(usage: local_data.Usage) -> np.ndarray:
    return np.array(
        [*usage.requests_per_hour, *usage.latency_buckets, usage.cache_hits, usage.cache_lookups], dtype=np.float64
    )


class UsageStatsTask:
    name = "usage-stats"
    clipping_range = 8.0
    # Counts must come back exact: a step of 16/2^30 is 0.0015 of a count at the default scale, so
    # sums stay exact after rounding up to hundreds of nodes (Flower's quantizer works in int32, hence 2^30;
    # the modulus leaves room for 1024 nodes' sums).
    quantization_range = 1 << 30
    modulus_range = 1 << 40

    def initial_arrays(self, config: RunConfig) -> Arrays:
        return [np.zeros(LENGTH, np.float32)]

    def local_update(self, data_dir, global_arrays: Arrays, config: RunConfig) -> LocalUpdate:
        counts = usage_vector(local_data.read_usage(data_dir))
        scaled = counts / _scale(config)
        clipped = int(np.sum(scaled > self.clipping_range))
        return LocalUpdate(
            [np.minimum(scaled, self.clipping_range).astype(np.float64)],
            weight=1,
            local_metrics={"requests": float(counts[:24].sum()), "clipped_values": float(clipped)},
        )

    def finish(self, aggregated: Arrays, config: RunConfig, nodes: int) -> dict:
        (mean,) = aggregated
        if mean.shape != (LENGTH,):
            raise TaskError(f"usage-stats parameters must be ({LENGTH},), got {mean.shape}")
        totals = np.rint(mean.astype(np.float64) * nodes * _scale(config)).astype(np.int64).tolist()
        hours, rest = totals[:24], totals[24:]
        buckets = len(local_data.LATENCY_BUCKETS_MS) + 1
        hits, lookups = rest[buckets:]
        return {
            "kind": "report",
            "nodes": nodes,
            "requests_per_hour": hours,
            # The last bucket has no upper bound (null).
            "latency_upper_ms": [*local_data.LATENCY_BUCKETS_MS, None],
            "latency_counts": rest[:buckets],
            "cache_hits": hits,
            "cache_lookups": lookups,
            "cache_hit_rate": (hits / lookups) if lookups else None,
        }
