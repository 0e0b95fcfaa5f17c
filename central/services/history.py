"""AdminService on the fleet's history: the rollups of the heartbeats (GetMetricsHistory) and what bursting to
upstreams cost (ListBurstUsage). Both are reads a viewer may make."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from central import rollups
from central.errors import InvalidArgument
from central.services.base import Caller, Central, require_viewer
from central.store import BurstUsageRecord, RollupRow
from central.store.records import HOUR_S, MINUTE_S

MAX_SCOPES = 1000
# Points in one answer, all scopes together: about 150 bytes each, so an answer stays under the 4 MiB a gRPC
# client takes by default.
MAX_POINTS = 20_000
# How far back an answer reaches by default: an hour of minutes, a day of hours.
DEFAULT_SPAN_S = {MINUTE_S: HOUR_S, HOUR_S: 24 * HOUR_S}
GROUP_KEYS = ("tenant", "data_class")
LABEL_GROUP_PREFIX = "label:"
MAX_GROUP_BY = 8
# Rows of one burst usage answer; the groups past them (the cheapest) are added up in one row per upstream whose
# group values read OTHER.
MAX_USAGE_ROWS = 5000
MIXED = "mixed"


@dataclass(frozen=True)
class Point:
    """One rollup row as an operator reads it: the row, and what is derived from it."""

    row: RollupRow
    tokens_per_second: float
    latency_p50_ms: float
    latency_p99_ms: float
    ttft_p50_ms: float
    ttft_p99_ms: float
    queue_depth_mean: float


_P50_P99 = (0.5, 0.99)


def point(row: RollupRow) -> Point:
    """The point of a row: thousands per answer (a page of 100 nodes' last hour is 6,000), so each histogram's
    quantiles come from one cumulative pass over its buckets (rollups.quantiles)."""
    lat_p50, lat_p99 = rollups.quantiles(row.latency_buckets, _P50_P99)
    ttft_p50, ttft_p99 = rollups.quantiles(row.ttft_buckets, _P50_P99)
    return Point(
        row,
        tokens_per_second=row.generated_tokens / row.period_s,
        latency_p50_ms=lat_p50,
        latency_p99_ms=lat_p99,
        ttft_p50_ms=ttft_p50,
        ttft_p99_ms=ttft_p99,
        queue_depth_mean=row.queue_depth_sum / row.heartbeats if row.heartbeats else 0.0,
    )


def metrics_history(
    central: Central,
    caller: Caller,
    scopes: Sequence[str],
    period_s: int,
    start: float | None = None,
    end: float | None = None,
) -> list[tuple[str, list[Point]]]:
    """Each scope's points of `period_s` (60 or 3600) starting in [start, end), oldest first, in the order asked.
    `end` defaults to now, `start` to DEFAULT_SPAN_S before `end`."""
    require_viewer(central, caller, "metrics.history")
    if period_s not in DEFAULT_SPAN_S:
        raise InvalidArgument(f"resolution must be a minute or an hour, not {period_s} s")
    if not scopes:
        raise InvalidArgument("name at least one scope: 'fleet', 'node:NODE_ID' or 'label:KEY=VALUE'")
    if len(scopes) > MAX_SCOPES:
        raise InvalidArgument(f"at most {MAX_SCOPES} scopes per call, got {len(scopes)}")
    for scope in scopes:
        problem = rollups.check_scope(scope, central.settings.rollup_labels)
        if problem:
            raise InvalidArgument(problem)
    end = central.clock() if end is None else end
    start = end - DEFAULT_SPAN_S[period_s] if start is None else start
    if not (math.isfinite(start) and math.isfinite(end)) or start >= end:
        raise InvalidArgument(f"start must be before end (got start {start:.0f}, end {end:.0f})")
    periods = math.ceil((end - (start // period_s * period_s)) / period_s)
    unique = list(dict.fromkeys(scopes))
    if periods * len(unique) > MAX_POINTS:
        raise InvalidArgument(
            f"{len(unique)} scopes over {periods} periods may be {periods * len(unique)} points, more than"
            f" {MAX_POINTS}: ask for fewer scopes, a shorter range, or hours instead of minutes"
        )
    central.beats.flush(history=True)
    series = central.store.rollup_series(unique, period_s, start, end)
    return [(scope, [point(r) for r in series[scope]]) for scope in scopes]


@dataclass(frozen=True)
class BurstGroup:
    """What one group (an upstream and the values of the other group_by entries) sent to upstreams."""

    upstream: str
    group: dict[str, str]
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0
    currency: str = ""  # "" unpriced, MIXED when the group's rows were priced in different currencies
    last_at: float = 0.0
    currencies: frozenset[str] = field(default=frozenset(), repr=False, compare=False)


def check_group_by(group_by: Sequence[str]) -> list[str]:
    """The group_by entries, deduplicated ("upstream", always grouped by, dropped); InvalidArgument naming a bad one."""
    if len(group_by) > MAX_GROUP_BY:
        raise InvalidArgument(f"at most {MAX_GROUP_BY} group_by entries, got {len(group_by)}")
    keys = []
    for key in group_by:
        if key == "upstream":
            continue
        label = key[len(LABEL_GROUP_PREFIX) :] if key.startswith(LABEL_GROUP_PREFIX) else None
        if key not in GROUP_KEYS and not (label and len(label) <= rollups.MAX_VALUE_CHARS):
            raise InvalidArgument(
                f"group_by {key[:80]!r}: expected 'tenant', 'data_class' or 'label:KEY' (a node label's key)"
            )
        keys.append(key)
    return list(dict.fromkeys(keys))


def _value(key: str, usage: BurstUsageRecord, labels: Mapping[str, str]) -> str:
    if key == "tenant":
        return usage.tenant
    if key == "data_class":
        return usage.data_class
    return labels.get(key[len(LABEL_GROUP_PREFIX) :], "")


class _Sums:
    """One group's figures as they are added up (one object per group, not one per row added)."""

    __slots__ = ("requests", "prompt_tokens", "completion_tokens", "cost", "last_at", "currencies")

    def __init__(self) -> None:
        self.requests = self.prompt_tokens = self.completion_tokens = 0
        self.cost = self.last_at = 0.0
        self.currencies: set[str] = set()

    def add(self, u: BurstUsageRecord | BurstGroup, currencies: Iterable[str]) -> None:
        self.requests += u.requests
        self.prompt_tokens += u.prompt_tokens
        self.completion_tokens += u.completion_tokens
        self.cost += u.cost
        if u.last_at > self.last_at:
            self.last_at = u.last_at
        self.currencies.update(currencies)

    def group(self, upstream: str, group: dict[str, str]) -> BurstGroup:
        c = self.currencies
        currency = "" if not c else next(iter(c)) if len(c) == 1 else MIXED
        return BurstGroup(
            upstream,
            group,
            self.requests,
            self.prompt_tokens,
            self.completion_tokens,
            self.cost,
            currency,
            self.last_at,
            frozenset(c),
        )


def _by_cost(g: BurstGroup) -> tuple:
    return (-g.cost, -g.requests, g.upstream, sorted(g.group.items()))


def group_usage(
    rows: Iterable[tuple[BurstUsageRecord, Mapping[str, str]]], keys: Sequence[str], max_rows: int = MAX_USAGE_ROWS
) -> list[BurstGroup]:
    """The rows added up per upstream and values of `keys`, by cost then requests, highest first; past `max_rows`,
    the rest added up per upstream under group values of rollups.OTHER."""
    sums: dict[tuple[str, tuple[str, ...]], _Sums] = {}
    for usage, labels in rows:
        key = (usage.upstream, tuple(_value(k, usage, labels) for k in keys))
        held = sums.get(key)
        if held is None:
            held = sums[key] = _Sums()
        held.add(usage, (usage.currency,) if usage.currency else ())
    ordered = sorted(
        (s.group(upstream, dict(zip(keys, values, strict=True))) for (upstream, values), s in sums.items()),
        key=_by_cost,
    )
    if len(ordered) <= max_rows:
        return ordered
    kept, rest = ordered[: max_rows - 1], ordered[max_rows - 1 :]
    other: dict[str, _Sums] = {}
    for g in rest:
        held = other.get(g.upstream)
        if held is None:
            held = other[g.upstream] = _Sums()
        held.add(g, g.currencies)
    return sorted([*kept, *(s.group(u, {k: rollups.OTHER for k in keys}) for u, s in other.items())], key=_by_cost)


def list_burst_usage(
    central: Central, caller: Caller, group_by: Sequence[str], since: float | None = None
) -> list[BurstGroup]:
    """Burst usage since `since` (the hours that end after it; all central holds when None), grouped. The store adds
    up each node's hours (a day of 1,000 bursting nodes is 24,000 hourly rows, 1,000 totals) and reads each node's
    labels once."""
    require_viewer(central, caller, "burst.list")
    keys = check_group_by(group_by)
    central.beats.flush(history=True)
    return group_usage(central.store.burst_usage_totals(since or 0.0), keys)
