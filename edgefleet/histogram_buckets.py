"""Fixed latency buckets shared by the agent's heartbeats and central's rollups.

A heartbeat carries per-bucket request counts instead of only its window's quantiles, because quantiles
cannot be added: central sums bucket counts across nodes and minutes, then reads any quantile, or the share
of requests under an objective's bound, from the sum. The bounds are fixed here and never reordered (an
agent and a central of different versions must agree); a new bound may only be appended before +Inf with a
version bump of both sides. They include the round figures objectives are written in (500 ms, 1 s, 2 s).

Counts are per bucket, not cumulative: entry i counts values in (BOUNDS_MS[i-1], BOUNDS_MS[i]]; the last
entry, index len(BOUNDS_MS), counts what is above the last bound.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence

# Upper bounds, milliseconds.
BOUNDS_MS: tuple[float, ...] = (
    5, 10, 25, 50, 100, 200, 300, 500, 750, 1000, 1500, 2000, 3000, 5000, 10000, 20000, 30000, 60000, 120000,
)  # fmt: skip
BUCKETS = len(BOUNDS_MS) + 1


def bucket_of(value_ms: float) -> int:
    """The index of the bucket a value falls in."""
    return bisect.bisect_left(BOUNDS_MS, value_ms)


def counts(values_ms: Iterable[float]) -> list[int]:
    """Per-bucket counts of the values."""
    result = [0] * BUCKETS
    for v in values_ms:
        result[bucket_of(v)] += 1
    return result


def normalized(bucket_counts: Sequence[int]) -> list[int]:
    """``bucket_counts`` as exactly BUCKETS entries: an empty list (an older agent) is all zeros; extra
    entries (a newer agent with more bounds) are folded into +Inf, which only overstates latency."""
    result = [int(c) for c in bucket_counts[:BUCKETS]] + [0] * max(0, BUCKETS - len(bucket_counts))
    result[-1] += sum(int(c) for c in bucket_counts[BUCKETS:])
    return result


def merged(a: Sequence[int], b: Sequence[int]) -> list[int]:
    """The counts of both."""
    return [x + y for x, y in zip(normalized(a), normalized(b), strict=True)]


def quantile(bucket_counts: Sequence[int], q: float) -> float:
    """The q-quantile (0..1) in milliseconds, interpolated linearly inside its bucket as Prometheus's
    ``histogram_quantile`` does; 0.0 with no counts. A quantile in the +Inf bucket reads as the last bound,
    as in Prometheus (the best that is known: at least that)."""
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile q must be within 0..1, got {q}")
    c = normalized(bucket_counts)
    total = sum(c)
    if total == 0:
        return 0.0
    rank = q * total
    seen = 0
    for i, n in enumerate(c):
        if n and seen + n >= rank:
            if i == len(BOUNDS_MS):
                return float(BOUNDS_MS[-1])
            lower = BOUNDS_MS[i - 1] if i else 0.0
            return lower + (BOUNDS_MS[i] - lower) * max(0.0, rank - seen) / n
        seen += n
    return float(BOUNDS_MS[-1])


def count_at_most(bucket_counts: Sequence[int], threshold_ms: float) -> float:
    """How many values were at most ``threshold_ms``: exact at a bound, interpolated linearly inside a
    bucket otherwise (so an objective's bound should be one of BOUNDS_MS); nothing in +Inf counts."""
    c = normalized(bucket_counts)
    below = 0.0
    lower = 0.0
    for i, bound in enumerate(BOUNDS_MS):
        if threshold_ms >= bound:
            below += c[i]
            lower = bound
            continue
        if threshold_ms > lower:
            below += c[i] * (threshold_ms - lower) / (bound - lower)
        break
    return below
