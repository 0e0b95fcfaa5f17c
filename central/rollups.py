"""Rollups of the heartbeats: what one beat adds to the per-minute and per-hour history of its scopes.

A heartbeat's inference figures cover the window since the node's previous beat. Central sums them per scope
and period: "fleet", "node:NODE_ID" and "label:KEY=VALUE" for each of the operator's rollup label keys
(``--rollup-labels``, default region and site) that the node has, each for the minute and the hour containing
the time central received the beat. Everything adds up (counts, per-bucket latency counts, cost), except the
queue depth's largest value, so the rows are kept by additive upserts (FleetStore.add_rollups) that several
replicas may make on the same rows.

Nothing here reads a clock, the network or the store. :class:`Accumulator` keeps the deltas of the beats since
the last flush (central.heartbeats.HeartbeatBuffer holds one), coalesced per row: between flushes a busy fleet
adds to a handful of fleet and label rows and to one row per beating node.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from central.errors import CentralError
from central.store.records import HOUR_S, MINUTE_S, ROLLUP_COUNTS, BurstUsageRecord, RollupRow
from edgefleet import histogram_buckets
from edgefleet.v1 import common_pb2

DEFAULT_LABEL_KEYS = ("region", "site")
FLEET = "fleet"
NODE_PREFIX = "node:"
LABEL_PREFIX = "label:"
OTHER = "(other)"
# A label value longer than this, or past the first MAX_VALUES_PER_KEY distinct values of its key that this
# central has seen, is rolled up as OTHER: a label group's rows must stay few.
MAX_VALUE_CHARS = 64
MAX_VALUES_PER_KEY = 1000
# One beat's count is taken as at most this (uint64 on the wire; the store's columns are signed 64-bit and
# add up over many beats and nodes); a cost as at most MAX_BEAT_COST.
MAX_BEAT_COUNT = 2**32
MAX_BEAT_COST = 1e9
MAX_SCOPE_CHARS = 512


class RollupError(CentralError, ValueError):
    """A malformed --rollup-labels list; the message names the key."""


def parse_label_keys(text: str) -> tuple[str, ...]:
    """`--rollup-labels`: comma-separated label keys, "" for none; RollupError naming a bad key."""
    keys = [k.strip() for k in text.split(",") if k.strip()]
    for key in keys:
        if "=" in key or len(key) > MAX_VALUE_CHARS:
            raise RollupError(f"rollup label key {key!r}: at most {MAX_VALUE_CHARS} characters, no '='")
    return tuple(dict.fromkeys(keys))


def node_scope(node_id: str) -> str:
    return NODE_PREFIX + node_id


def label_scope(key: str, value: str) -> str:
    return f"{LABEL_PREFIX}{key}={value}"


def check_scope(scope: str, label_keys: Sequence[str]) -> str | None:
    """Why `scope` is not one central keeps rollups for, or None when it is."""
    if scope == FLEET:
        return None
    if len(scope) > MAX_SCOPE_CHARS:
        return f"scope {scope[:64]!r}... is longer than {MAX_SCOPE_CHARS} characters"
    if scope.startswith(NODE_PREFIX) and len(scope) > len(NODE_PREFIX):
        return None
    if scope.startswith(LABEL_PREFIX):
        key, eq, _value = scope[len(LABEL_PREFIX) :].partition("=")
        if not eq:
            return f"scope {scope!r}: a label scope is label:KEY=VALUE"
        if key not in label_keys:
            kept = ", ".join(label_keys) or "none (--rollup-labels is empty)"
            return f"scope {scope!r}: central keeps rollups for the label keys {kept}, not {key!r}"
        return None
    return f"scope {scope!r}: expected 'fleet', 'node:NODE_ID' or 'label:KEY=VALUE'"


class LabelCap:
    """Which label values get their own group: each key's first MAX_VALUES_PER_KEY distinct values seen, of at
    most MAX_VALUE_CHARS characters; the rest are OTHER. Held in memory by one central for its lifetime."""

    def __init__(self, max_values: int = MAX_VALUES_PER_KEY, max_chars: int = MAX_VALUE_CHARS):
        self._max_values, self._max_chars = max_values, max_chars
        self._seen: dict[str, set[str]] = {}

    def value(self, key: str, value: str) -> str:
        if len(value) > self._max_chars:
            return OTHER
        seen = self._seen.setdefault(key, set())
        if value in seen:
            return value
        if len(seen) >= self._max_values:
            return OTHER
        seen.add(value)
        return value


def _count(n: int) -> int:
    return min(max(int(n), 0), MAX_BEAT_COUNT)


def _cost(x: float) -> float:
    return min(float(x), MAX_BEAT_COST) if math.isfinite(x) and x > 0 else 0.0


def _buckets(values: Sequence[int]) -> list[int]:
    return [_count(c) for c in histogram_buckets.normalized(values)]


@dataclass(frozen=True)
class BeatFigures:
    """What one heartbeat adds to each of its scopes' rows: `values` in the additive order of
    :func:`additive_values` (ROLLUP_COUNTS, upstream_cost, latency buckets, TTFT buckets) and the queue depth."""

    values: tuple
    queue_depth: int
    usage: tuple[tuple[str, str, str, str, int, int, int, float], ...]  # (upstream, tenant, data_class, currency,
    # requests, prompt_tokens, completion_tokens, cost)


def figures(status: common_pb2.NodeStatus) -> BeatFigures:
    """The figures of one beat's status (its inference window), bounded."""
    inf = status.inference
    usage = tuple(
        (
            u.upstream,
            u.tenant,
            u.data_class,
            u.currency,
            _count(u.requests),
            _count(u.prompt_tokens),
            _count(u.completion_tokens),
            _cost(u.cost),
        )
        for u in inf.upstream_usage
    )
    queue = _count(inf.queue_depth)
    counts = {
        "requests": _count(inf.requests),
        "errors": _count(inf.errors),
        "generated_tokens": _count(inf.generated_tokens),
        "prompt_tokens": _count(inf.prompt_tokens),
        "cached_prompt_tokens": _count(inf.cached_prompt_tokens),
        "cache_hits": _count(inf.cache_hits),
        "cache_lookups": _count(inf.cache_lookups),
        "heartbeats": 1,
        "queue_depth_sum": queue,
        "upstream_requests": sum(u[4] for u in usage),
        "upstream_prompt_tokens": sum(u[5] for u in usage),
        "upstream_completion_tokens": sum(u[6] for u in usage),
    }
    values = (
        *(counts[name] for name in ROLLUP_COUNTS),
        sum(u[7] for u in usage),
        *_buckets(inf.latency_buckets),
        *_buckets(inf.ttft_buckets),
    )
    return BeatFigures(values, queue, usage)


def scopes(node_id: str, labels: Mapping[str, str], label_keys: Iterable[str], cap: LabelCap) -> list[str]:
    """The scopes a node's beat counts in: the fleet, the node, and one label group per rollup key it has."""
    out = [FLEET, node_scope(node_id)]
    out.extend(label_scope(k, cap.value(k, labels[k])) for k in label_keys if k in labels)
    return out


def row(scope: str, period_s: int, start: int, values: Sequence, queue_depth_max: int) -> RollupRow:
    """A RollupRow from additive values (in BeatFigures order) and the largest queue depth."""
    n = len(ROLLUP_COUNTS)
    b = histogram_buckets.BUCKETS
    return RollupRow(
        scope,
        period_s,
        start,
        **dict(zip(ROLLUP_COUNTS, values[:n], strict=True)),
        queue_depth_max=queue_depth_max,
        upstream_cost=values[n],
        latency_buckets=tuple(values[n + 1 : n + 1 + b]),
        ttft_buckets=tuple(values[n + 1 + b :]),
    )


class Accumulator:
    """The rollup and burst usage deltas of the beats since the last take(), coalesced per row. Not thread-safe:
    its holder locks around it."""

    def __init__(self, label_keys: Sequence[str] = DEFAULT_LABEL_KEYS, cap: LabelCap | None = None):
        self.label_keys = tuple(label_keys)
        self._cap = cap or LabelCap()
        # (scope, minute start) -> [additive values list, queue_depth_max]; hours are derived at take().
        self._minutes: dict[tuple[str, int], list] = {}
        self._usage: dict[tuple[int, str, str, str, str, str], list] = {}

    def add(self, node_id: str, labels: Mapping[str, str], beat: BeatFigures, at: float) -> None:
        """Count one beat received at `at` (central's clock, unix seconds)."""
        minute = int(at) // MINUTE_S * MINUTE_S
        for scope in scopes(node_id, labels, self.label_keys, self._cap):
            held = self._minutes.get((scope, minute))
            if held is None:
                self._minutes[(scope, minute)] = [list(beat.values), beat.queue_depth]
            else:
                held[0] = list(map(operator.add, held[0], beat.values))
                if beat.queue_depth > held[1]:
                    held[1] = beat.queue_depth
        if beat.usage:
            hour = int(at) // HOUR_S * HOUR_S
            for upstream, tenant, data_class, currency, requests, prompt, completion, cost in beat.usage:
                key = (hour, node_id, upstream, tenant, data_class, currency)
                u = self._usage.get(key)
                if u is None:
                    self._usage[key] = [requests, prompt, completion, cost, at]
                else:
                    u[0] += requests
                    u[1] += prompt
                    u[2] += completion
                    u[3] += cost
                    u[4] = max(u[4], at)

    def take(self) -> tuple[list[RollupRow], list[BurstUsageRecord]]:
        """The deltas held (each minute row and the hour rows they add up to) and the burst usage; empties."""
        minutes, self._minutes = self._minutes, {}
        usage, self._usage = self._usage, {}
        hours: dict[tuple[str, int], list] = {}
        rows = []
        for (scope, start), (values, qmax) in minutes.items():
            rows.append(row(scope, MINUTE_S, start, values, qmax))
            key = (scope, start // HOUR_S * HOUR_S)
            held = hours.get(key)
            if held is None:
                hours[key] = [values, qmax]
            else:
                held[0] = list(map(operator.add, held[0], values))
                held[1] = max(held[1], qmax)
        rows.extend(row(scope, HOUR_S, start, values, qmax) for (scope, start), (values, qmax) in hours.items())
        return rows, [BurstUsageRecord(*key, *u) for key, u in usage.items()]

    def __len__(self) -> int:
        return len(self._minutes) + len(self._usage)


def merged_rows(a: Iterable[RollupRow], b: Iterable[RollupRow]) -> list[RollupRow]:
    """Two lists of deltas as one, rows of the same key added (what a failed flush keeps)."""
    held: dict[tuple[str, int, int], RollupRow] = {}
    for r in (*a, *b):
        key = (r.scope, r.period_s, r.start)
        held[key] = held[key].plus(r) if key in held else r
    return list(held.values())


def merged_usage(a: Iterable[BurstUsageRecord], b: Iterable[BurstUsageRecord]) -> list[BurstUsageRecord]:
    """Two lists of burst usage deltas as one, rows of the same key added."""
    held: dict[tuple, BurstUsageRecord] = {}
    for r in (*a, *b):
        h = held.get(r.key)
        held[r.key] = (
            r
            if h is None
            else BurstUsageRecord(
                *r.key,
                h.requests + r.requests,
                h.prompt_tokens + r.prompt_tokens,
                h.completion_tokens + r.completion_tokens,
                h.cost + r.cost,
                max(h.last_at, r.last_at),
            )
        )
    return list(held.values())
