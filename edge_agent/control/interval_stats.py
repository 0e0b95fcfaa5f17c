"""Inference figures per heartbeat window: requests, errors, tokens/s, latency, cache.

Prometheus counters are cumulative; a heartbeat wants what happened since the
previous one. ``IntervalStats`` is fed by the HTTP server (asyncio thread) and
emptied by the control thread with ``take``, so every method holds one lock.
Time is passed in (a monotonic clock value) so windows are tested without
sleeping.
"""

from __future__ import annotations

import math
import random
import threading
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class InferenceWindow:
    interval_seconds: float
    requests: int
    errors: int
    generated_tokens: int
    tokens_per_second: float
    latency_p50_ms: float
    latency_p99_ms: float
    cache_hits: int
    cache_lookups: int


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100) of ascending values; 0.0 for none.

    Nearest-rank always returns an observed latency, never an interpolation
    between two requests that no client saw.
    """
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile q must be within 0..100, got {q}")
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(q * len(sorted_values) / 100.0))
    return float(sorted_values[rank - 1])


def token_delta(previous_total: int, total: int) -> int:
    """Tokens generated between two readings of the engine's cumulative counter.

    A counter lower than before means the engine restarted from zero, so the
    new total is all that is known to have been generated since (as
    Prometheus' ``increase`` treats a counter reset).
    """
    return total - previous_total if total >= previous_total else total


class IntervalStats:
    """Counts one window at a time; ``take`` closes it and opens the next."""

    def __init__(self, now: float, generated_tokens_total: int = 0, max_samples: int = 10_000):
        if max_samples < 1:
            raise ValueError(f"max_samples must be at least 1, got {max_samples}")
        self._lock = threading.Lock()
        self._max_samples = max_samples
        # Seeded: the sampling is statistical, not a secret, and tests stay reproducible.
        self._random = random.Random(0)
        self._reset_locked(now, generated_tokens_total)

    def record_request(self, latency_s: float, error: bool) -> None:
        """Count one finished request; its latency joins the window's sample."""
        with self._lock:
            self._requests += 1
            if error:
                self._errors += 1
            # Reservoir sampling (Algorithm R): past max_samples each latency
            # replaces a kept one with probability max_samples/requests, so the
            # sample stays uniform over the whole window rather than its start,
            # while requests and errors above stay exact.
            if len(self._latencies) < self._max_samples:
                self._latencies.append(latency_s)
            else:
                slot = self._random.randrange(self._requests)
                if slot < self._max_samples:
                    self._latencies[slot] = latency_s

    def record_cache(self, hit: bool) -> None:
        """Count one response-cache lookup."""
        with self._lock:
            self._cache_lookups += 1
            if hit:
                self._cache_hits += 1

    def take(self, generated_tokens_total: int, now: float) -> InferenceWindow:
        """The figures since the previous ``take`` (or construction); starts a new window."""
        with self._lock:
            interval = max(0.0, now - self._started)
            tokens = token_delta(self._tokens_total, generated_tokens_total)
            requests, errors = self._requests, self._errors
            hits, lookups = self._cache_hits, self._cache_lookups
            latencies = self._latencies
            self._reset_locked(now, generated_tokens_total)
        latencies.sort()  # outside the lock: the server never waits on a sort
        return InferenceWindow(
            interval_seconds=interval,
            requests=requests,
            errors=errors,
            generated_tokens=tokens,
            tokens_per_second=tokens / interval if interval > 0 else 0.0,
            latency_p50_ms=percentile(latencies, 50) * 1000.0,
            latency_p99_ms=percentile(latencies, 99) * 1000.0,
            cache_hits=hits,
            cache_lookups=lookups,
        )

    def _reset_locked(self, now: float, generated_tokens_total: int) -> None:
        self._started = now
        self._tokens_total = generated_tokens_total
        self._requests = 0
        self._errors = 0
        self._latencies: list[float] = []
        self._cache_hits = 0
        self._cache_lookups = 0
