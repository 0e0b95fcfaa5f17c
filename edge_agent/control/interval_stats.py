"""Inference figures per heartbeat window: requests, errors, tokens, latency and TTFT, cache, upstream usage.

Prometheus counters are cumulative; a heartbeat wants what happened since the
previous one. ``IntervalStats`` is fed by the HTTP server (asyncio thread) and
emptied by the control thread with ``take``, so every method holds one lock.
Time is passed in (a monotonic clock value) so windows are tested without
sleeping.

Latency and time to first token are kept two ways: exact per-bucket counts over
:mod:`edgefleet.histogram_buckets` (every request, so central can add them up
across nodes and minutes), and a bounded reservoir sample for the window's own
nearest-rank p50/p99.
"""

from __future__ import annotations

import math
import random
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from edgefleet import histogram_buckets, report_limits

# The upstream_usage entry that stands for every (upstream, tenant, data class) past the report's bound.
OTHER_UPSTREAM = "(other)"
MAX_UPSTREAM_USAGE = report_limits.REPEATED_BOUNDS["edgefleet.v1.InferenceStats.upstream_usage"]


@dataclass(frozen=True)
class UpstreamUsage:
    """What bursting to one upstream cost in a window, for one (tenant, data class)."""

    upstream: str
    tenant: str
    data_class: str
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0
    currency: str = ""  # "" when the upstream has no prices
    locally_counted: int = 0  # requests whose tokens the agent counted, the upstream having sent no usage

    def plus(self, other: UpstreamUsage) -> UpstreamUsage:
        return UpstreamUsage(
            self.upstream,
            self.tenant,
            self.data_class,
            self.requests + other.requests,
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
            self.cost + other.cost,
            self.currency,
            self.locally_counted + other.locally_counted,
        )


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
    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0
    # Per-bucket counts (edgefleet.histogram_buckets), every request of the window.
    latency_buckets: tuple[int, ...] = ()
    ttft_buckets: tuple[int, ...] = ()
    ttft_p50_ms: float = 0.0
    ttft_p99_ms: float = 0.0
    upstream_usage: tuple[UpstreamUsage, ...] = ()


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
    """Tokens counted between two readings of the engine's cumulative counter.

    A counter lower than before means the engine restarted from zero (a new
    model was switched in), so the new total is all that is known to have been
    counted since (as Prometheus' ``increase`` treats a counter reset).
    """
    return total - previous_total if total >= previous_total else total


def fold_usage(entries: Iterable[UpstreamUsage], limit: int = MAX_UPSTREAM_USAGE) -> list[UpstreamUsage]:
    """At most ``limit`` entries: the costliest (then the most tokens) kept as they are, the rest added up into
    one ``(other)`` entry per currency (tenant and data class ""), so no request, token or cost is lost and no
    two currencies are summed."""
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    ordered = sorted(
        entries,
        key=lambda u: (-u.cost, -(u.prompt_tokens + u.completion_tokens), -u.requests, u.upstream, u.tenant),
    )
    if len(ordered) <= limit:
        return ordered
    keep = limit
    while keep > 0 and keep + len({u.currency for u in ordered[keep:]}) > limit:
        keep -= 1
    others: dict[str, UpstreamUsage] = {}
    for u in ordered[keep:]:
        base = others.get(u.currency, UpstreamUsage(OTHER_UPSTREAM, "", "", currency=u.currency))
        others[u.currency] = base.plus(u)
    return ordered[:keep] + [others[c] for c in sorted(others)]


class _Reservoir:
    """A uniform sample of at most ``size`` values of a stream (Algorithm R), for nearest-rank percentiles."""

    def __init__(self, size: int, rand: random.Random):
        self._size = size
        self._random = rand
        self.seen = 0
        self.values: list[float] = []

    def __len__(self) -> int:
        return len(self.values)

    def add(self, value: float) -> None:
        # Past `size` each value replaces a kept one with probability size/seen, so the sample stays
        # uniform over the whole window rather than its start.
        self.seen += 1
        if len(self.values) < self._size:
            self.values.append(value)
        else:
            slot = self._random.randrange(self.seen)
            if slot < self._size:
                self.values[slot] = value


class IntervalStats:
    """Counts one window at a time; ``take`` closes it and opens the next."""

    def __init__(
        self,
        now: float,
        generated_tokens_total: int = 0,
        max_samples: int = 10_000,
        prompt_tokens_total: int = 0,
        cached_prompt_tokens_total: int = 0,
    ):
        if max_samples < 1:
            raise ValueError(f"max_samples must be at least 1, got {max_samples}")
        self._lock = threading.Lock()
        self._max_samples = max_samples
        # Seeded: the sampling is statistical, not a secret, and tests stay reproducible.
        self._random = random.Random(0)
        self._reset_locked(now, generated_tokens_total, prompt_tokens_total, cached_prompt_tokens_total)

    def record_request(self, latency_s: float, error: bool) -> None:
        """Count one finished request; its latency joins the window's buckets and sample."""
        with self._lock:
            self._requests += 1
            if error:
                self._errors += 1
            self._latency_buckets[histogram_buckets.bucket_of(latency_s * 1000.0)] += 1
            self._latencies.add(latency_s)

    def record_ttft(self, ttft_s: float) -> None:
        """Count one request's time to its first generated text."""
        with self._lock:
            self._ttft_buckets[histogram_buckets.bucket_of(ttft_s * 1000.0)] += 1
            self._ttfts.add(ttft_s)

    def record_cache(self, hit: bool) -> None:
        """Count one response-cache lookup."""
        with self._lock:
            self._cache_lookups += 1
            if hit:
                self._cache_hits += 1

    def record_upstream(self, usage: UpstreamUsage) -> None:
        """Add one upstream answer's usage (requests, tokens, cost) to its (upstream, tenant, data class)."""
        key = (usage.upstream, usage.tenant, usage.data_class, usage.currency)
        with self._lock:
            known = self._upstream.get(key)
            self._upstream[key] = usage if known is None else known.plus(usage)

    def take(
        self,
        generated_tokens_total: int,
        now: float,
        prompt_tokens_total: int = 0,
        cached_prompt_tokens_total: int = 0,
    ) -> InferenceWindow:
        """The figures since the previous ``take`` (or construction); starts a new window. The totals are the
        engine's cumulative counters now (see :func:`token_delta`)."""
        with self._lock:
            interval = max(0.0, now - self._started)
            tokens = token_delta(self._tokens_total, generated_tokens_total)
            prompt = token_delta(self._prompt_total, prompt_tokens_total)
            cached = token_delta(self._cached_total, cached_prompt_tokens_total)
            requests, errors = self._requests, self._errors
            hits, lookups = self._cache_hits, self._cache_lookups
            latencies, ttfts = self._latencies.values, self._ttfts.values
            latency_buckets, ttft_buckets = self._latency_buckets, self._ttft_buckets
            upstream = list(self._upstream.values())
            self._reset_locked(now, generated_tokens_total, prompt_tokens_total, cached_prompt_tokens_total)
        latencies.sort()  # outside the lock: the server never waits on a sort
        ttfts.sort()
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
            # Reused tokens are a part of the prompt tokens; a reset of one counter but not the other
            # (a model switch between two readings) must not report more cached than given.
            prompt_tokens=prompt,
            cached_prompt_tokens=min(cached, prompt),
            latency_buckets=tuple(latency_buckets),
            ttft_buckets=tuple(ttft_buckets),
            ttft_p50_ms=percentile(ttfts, 50) * 1000.0,
            ttft_p99_ms=percentile(ttfts, 99) * 1000.0,
            upstream_usage=tuple(fold_usage(upstream)),
        )

    def _reset_locked(self, now: float, generated_tokens_total: int, prompt_total: int, cached_total: int) -> None:
        self._started = now
        self._tokens_total = generated_tokens_total
        self._prompt_total = prompt_total
        self._cached_total = cached_total
        self._requests = 0
        self._errors = 0
        self._latencies = _Reservoir(self._max_samples, self._random)
        self._ttfts = _Reservoir(self._max_samples, self._random)
        self._latency_buckets = [0] * histogram_buckets.BUCKETS
        self._ttft_buckets = [0] * histogram_buckets.BUCKETS
        self._cache_hits = 0
        self._cache_lookups = 0
        self._upstream: dict[tuple[str, str, str, str], UpstreamUsage] = {}
