"""AdminService on the fleet's history: the rollups of the heartbeats (GetMetricsHistory) and what bursting to
upstreams cost (ListBurstUsage). Both are reads a viewer may make."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from central import rollups
from central.errors import InvalidArgument
from central.services.base import Caller, Central, require_viewer
from central.store import BurstUsageRecord, RollupRow
from central.store.records import HOUR_S, MINUTE_S
from edgefleet import histogram_buckets

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


def point(row: RollupRow) -> Point:
    lat, ttft = row.latency_buckets, row.ttft_buckets
    return Point(
        row,
        tokens_per_second=row.generated_tokens / row.period_s,
        latency_p50_ms=histogram_buckets.quantile(lat, 0.5),
        latency_p99_ms=histogram_buckets.quantile(lat, 0.99),
        ttft_p50_ms=histogram_buckets.quantile(ttft, 0.5),
        ttft_p99_ms=histogram_buckets.quantile(ttft, 0.99),
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


def _added(g: BurstGroup, u: BurstUsageRecord | BurstGroup, currencies: frozenset[str]) -> BurstGroup:
    both = g.currencies | currencies
    return BurstGroup(
        g.upstream,
        g.group,
        g.requests + u.requests,
        g.prompt_tokens + u.prompt_tokens,
        g.completion_tokens + u.completion_tokens,
        g.cost + u.cost,
        "" if not both else next(iter(both)) if len(both) == 1 else MIXED,
        max(g.last_at, u.last_at),
        both,
    )


def group_usage(
    rows: Sequence[tuple[BurstUsageRecord, Mapping[str, str]]], keys: Sequence[str], max_rows: int = MAX_USAGE_ROWS
) -> list[BurstGroup]:
    """The rows added up per upstream and values of `keys`, by cost then requests, highest first; past `max_rows`,
    the rest added up per upstream under group values of rollups.OTHER."""
    groups: dict[tuple, BurstGroup] = {}
    for usage, labels in rows:
        values = tuple(_value(k, usage, labels) for k in keys)
        key = (usage.upstream, values)
        held = groups.get(key) or BurstGroup(usage.upstream, dict(zip(keys, values, strict=True)))
        groups[key] = _added(held, usage, frozenset([usage.currency]) if usage.currency else frozenset())
    ordered = sorted(groups.values(), key=lambda g: (-g.cost, -g.requests, g.upstream, sorted(g.group.items())))
    if len(ordered) <= max_rows:
        return ordered
    kept, rest = ordered[: max_rows - 1], ordered[max_rows - 1 :]
    other: dict[str, BurstGroup] = {}
    for g in rest:
        held = other.get(g.upstream) or BurstGroup(g.upstream, {k: rollups.OTHER for k in keys})
        other[g.upstream] = _added(held, g, g.currencies)
    return sorted([*kept, *other.values()], key=lambda g: (-g.cost, -g.requests, g.upstream, sorted(g.group.items())))


def list_burst_usage(
    central: Central, caller: Caller, group_by: Sequence[str], since: float | None = None
) -> list[BurstGroup]:
    """Burst usage since `since` (the hours that end after it; all central holds when None), grouped."""
    require_viewer(central, caller, "burst.list")
    keys = check_group_by(group_by)
    central.beats.flush(history=True)
    return group_usage(central.store.burst_usage_rows(since or 0.0), keys)
