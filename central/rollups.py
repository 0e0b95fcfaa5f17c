"""Rollups of the heartbeats: what one beat adds to the per-minute and per-hour history of its scopes.

A heartbeat's inference figures cover the window since the node's previous beat. Central sums them per scope
and period: "fleet", "node:NODE_ID" and "label:KEY=VALUE" for each of the operator's rollup label keys
(``--rollup-labels``, default region and site) that the node has, each for the minute and the hour containing
the time central received the beat. Everything adds up (counts, per-bucket latency counts, cost), except the
queue depth's largest value, so the rows are kept by additive upserts (FleetStore.add_rollups) that several
replicas may make on the same rows.

Nothing here reads a clock, the network or the store. :class:`Accumulator` keeps the deltas of the beats
(central.heartbeats.HeartbeatBuffer holds one) per node and minute until the minute has ended: a node beating
every 15 s adds to its row four times, and the row and its share of the fleet's and label groups' rows are written
once (bench/heartbeats.py measures what that saves). Hour rows are not written from here: the leader derives each
ended hour's rows from its minute rows (FleetStore.derive_rollup_hours), and a read of the hours adds the current
hour's minutes, so a beat costs one upsert per scope and minute, not two, and an hour row is written once instead
of updated every minute (each update left a dead row version behind in PostgreSQL).
"""

from __future__ import annotations

import bisect
import itertools
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
# Distinct (upstream, tenant, data class, currency) keys of burst usage kept per node and hour; past them the node's
# usage is counted under (OTHER, OTHER, OTHER, OTHER). The strings are the node's own: a node varying them every beat
# must not add rows to central's store without bound (an agent sends at most 24 per beat, folding the rest itself).
MAX_USAGE_KEYS_PER_NODE_HOUR = 64
# The leader derives an hour's rows (FleetStore.derive_rollup_hours) once it ended this long ago: its last minutes
# are written by then (a minute written later still counts in its hour, at a little more cost).
HOUR_DERIVE_DELAY_S = 2 * MINUTE_S
_BUCKETS = histogram_buckets.BUCKETS


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
    return n if 0 <= n <= MAX_BEAT_COUNT else min(max(int(n), 0), MAX_BEAT_COUNT)


def _cost(x: float) -> float:
    if 0.0 < x <= MAX_BEAT_COST:  # the usual cost: no call
        return x
    return min(float(x), MAX_BEAT_COST) if math.isfinite(x) and x > 0 else 0.0


def _buckets(values) -> list[int]:
    counts = list(values)
    if len(counts) == histogram_buckets.BUCKETS and (not counts or max(counts) <= MAX_BEAT_COUNT):
        return counts  # the usual beat: every bucket, each count in bounds
    return [_count(c) for c in histogram_buckets.normalized(counts)]


@dataclass(frozen=True)
class BeatFigures:
    """What one heartbeat adds to each of its scopes' rows: `values` in ROLLUP_VALUE_COLUMNS order less
    queue_depth_max (ROLLUP_COUNTS, upstream_cost, latency buckets, TTFT buckets), all additive, and the queue
    depth (its largest is kept)."""

    values: tuple
    queue_depth: int
    usage: tuple[tuple[str, str, str, str, int, int, int, float], ...]  # (upstream, tenant, data_class, currency,
    # requests, prompt_tokens, completion_tokens, cost)


_COUNT_FIELDS = ROLLUP_COUNTS[:7]  # read from the InferenceStats fields of the same names
_NO_USAGE = (0, 0, 0, 0.0)


def figures(status: common_pb2.NodeStatus) -> BeatFigures:
    """The figures of one beat's status (its inference window), bounded. On every accepted beat: kept lean (the
    usual beat, every bucket and each count in bounds, is read field by field and checked with one max())."""
    inf = status.inference
    if inf.upstream_usage:
        usage = []
        requests = prompt = completion = 0
        cost = 0.0
        for u in inf.upstream_usage:
            entry = (
                u.upstream,
                u.tenant,
                u.data_class,
                u.currency,
                _count(u.requests),
                _count(u.prompt_tokens),
                _count(u.completion_tokens),
                _cost(u.cost),
            )
            usage.append(entry)
            requests += entry[4]
            prompt += entry[5]
            completion += entry[6]
            cost += entry[7]
        upstream: tuple = (requests, prompt, completion, cost)  # the last: upstream_cost
    else:
        usage, upstream = [], _NO_USAGE
    queue = inf.queue_depth  # uint32: always in bounds
    latency: Sequence[int] = inf.latency_buckets
    ttft: Sequence[int] = inf.ttft_buckets
    # In ROLLUP_COUNTS order. The wire's counts are unsigned: only their size needs a bound.
    counts = (
        inf.requests,
        inf.errors,
        inf.generated_tokens,
        inf.prompt_tokens,
        inf.cached_prompt_tokens,
        inf.cache_hits,
        inf.cache_lookups,
    )
    if len(latency) != _BUCKETS or len(ttft) != _BUCKETS:
        latency, ttft = _buckets(latency), _buckets(ttft)
    values = (*counts, 1, queue, *upstream, *latency, *ttft)  # 1: heartbeats; queue: queue_depth_sum
    if max(values) > MAX_BEAT_COUNT:
        n = len(ROLLUP_COUNTS)
        values = (*map(_count, values[:n]), values[n], *map(_count, values[n + 1 :]))
    return BeatFigures(values, queue, tuple(usage))


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


def _add_into(held: dict, key, values: Sequence, qmax: int) -> None:
    entry = held.get(key)
    if entry is None:
        held[key] = [values, qmax]
    else:
        entry[0] = tuple(map(operator.add, entry[0], values))
        if qmax > entry[1]:
            entry[1] = qmax


# Beats held per node and minute before they are added up (Accumulator.add): adding 54 values once per beat was
# the larger part of its cost; adding up to this many tuples at once, column by column, is a fraction of it.
_SUM_EVERY = 16


def _summed(held: list) -> tuple:
    """The values tuples held added up, column by column."""
    return tuple(map(sum, zip(*held, strict=True))) if len(held) > 1 else held[0]


class Accumulator:
    """The rollup and burst usage deltas of the beats not yet taken. Per node and minute as beats arrive (a beat's
    values are kept as they come and added up a few at a time); fanned out to the fleet's and the label groups'
    rows only when taken. Only minute rows: the store derives each hour's rows from them once the hour has ended
    (FleetStore.derive_rollup_hours) and adds the current hour's minutes at read time. Not thread-safe: its
    holder locks around it."""

    def __init__(self, label_keys: Sequence[str] = DEFAULT_LABEL_KEYS, cap: LabelCap | None = None):
        self.label_keys = tuple(label_keys)
        self._cap = cap or LabelCap()
        # (node_id, minute start) -> [[values tuples not yet added up], queue_depth_max, the node's latest labels]
        self._minutes: dict[tuple[str, int], list] = {}
        self._usage: dict[tuple[int, str, str, str, str, str], list] = {}
        # (node_id, hour) -> the usage keys counted for it this hour (MAX_USAGE_KEYS_PER_NODE_HOUR); past hours dropped.
        self._usage_keys: dict[tuple[str, int], set[tuple[str, str, str, str]]] = {}
        self._usage_hour = 0
        self._first_start: float = math.inf  # no minute held starts before it: take() checks it first

    def add(self, node_id: str, labels: Mapping[str, str], beat: BeatFigures, at: float) -> None:
        """Count one beat received at `at` (central's clock, unix seconds)."""
        key = (node_id, int(at) // MINUTE_S * MINUTE_S)
        held = self._minutes.get(key)
        if held is None:
            self._minutes[key] = [[beat.values], beat.queue_depth, labels]
            if key[1] < self._first_start:
                self._first_start = key[1]
        else:
            values = held[0]
            values.append(beat.values)
            if len(values) >= _SUM_EVERY:
                held[0] = [_summed(values)]
            if beat.queue_depth > held[1]:
                held[1] = beat.queue_depth
            held[2] = labels
        if beat.usage:
            hour = int(at) // HOUR_S * HOUR_S
            if hour > self._usage_hour:  # a new hour: the keys counted in earlier ones are done with
                self._usage_keys = {k: v for k, v in self._usage_keys.items() if k[1] >= hour}
                self._usage_hour = hour
            seen = self._usage_keys.setdefault((node_id, hour), set())
            for upstream, tenant, data_class, currency, requests, prompt, completion, cost in beat.usage:
                group = (upstream, tenant, data_class, currency)
                if group not in seen:
                    if len(seen) >= MAX_USAGE_KEYS_PER_NODE_HOUR - 1:
                        group = (OTHER, OTHER, OTHER, OTHER)
                    seen.add(group)
                ukey = (hour, node_id, *group)
                u = self._usage.get(ukey)
                if u is None:
                    self._usage[ukey] = [requests, prompt, completion, cost, at]
                else:
                    u[0] += requests
                    u[1] += prompt
                    u[2] += completion
                    u[3] += cost
                    u[4] = max(u[4], at)

    def take(self, closed_before: float | None = None) -> tuple[list[RollupRow], list[BurstUsageRecord]]:
        """The deltas of the minutes that ended by `closed_before` (every minute held when None) as minute rows of
        every scope, with the burst usage held; empties what it returns. While no minute has ended since the last
        take, nothing: a node beating every 15 s adds to one row four times before it is written."""
        if closed_before is None:
            taken, self._minutes = self._minutes, {}
            self._first_start = math.inf
        else:
            if self._first_start + MINUTE_S > closed_before:  # no minute held has ended: the usual flush
                return [], []
            taken = {k: v for k, v in self._minutes.items() if k[1] + MINUTE_S <= closed_before}
            for k in taken:
                del self._minutes[k]
            self._first_start = min((k[1] for k in self._minutes), default=math.inf)
        usage, self._usage = self._usage, {}
        minutes: dict[tuple[str, int], list] = {}
        cap, label_keys = self._cap, self.label_keys
        for (node_id, start), (held, qmax, labels) in taken.items():
            values = _summed(held)
            minutes[(node_scope(node_id), start)] = [values, qmax]
            _add_into(minutes, (FLEET, start), values, qmax)
            for label in label_keys:
                if label in labels:
                    _add_into(minutes, (label_scope(label, cap.value(label, labels[label])), start), values, qmax)
        rows = [row(scope, MINUTE_S, start, values, qmax) for (scope, start), (values, qmax) in minutes.items()]
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


# -- reading the rows back --------------------------------------------------------------------------------------------

_BOUNDS_MS = histogram_buckets.BOUNDS_MS
_LOWER_MS = (0.0, *_BOUNDS_MS[:-1])  # each bucket's lower bound, as histogram_buckets.quantile takes it
_TOP_MS = float(_BOUNDS_MS[-1])
_INF_BUCKET = len(_BOUNDS_MS)


def quantiles(bucket_counts: Sequence[int], qs: Sequence[float]) -> list[float]:
    """``histogram_buckets.quantile(bucket_counts, q)`` for each q, the same figures from one cumulative pass (the
    counts are added up once, each quantile's bucket found by bisection): a history answer reads four per point."""
    c = bucket_counts
    if len(c) != histogram_buckets.BUCKETS:
        c = histogram_buckets.normalized(c)
    cum = list(itertools.accumulate(c))
    total = cum[-1]
    result = []
    for q in qs:
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"quantile q must be within 0..1, got {q}")
        if not total:
            result.append(0.0)
            continue
        rank = q * total
        # The first bucket whose running count reaches the rank; for rank 0, the first that counts anything.
        i = bisect.bisect_left(cum, rank) if rank > 0 else bisect.bisect_right(cum, 0)
        if i == _INF_BUCKET:
            result.append(_TOP_MS)
            continue
        lower = _LOWER_MS[i]
        result.append(lower + (_BOUNDS_MS[i] - lower) * max(0.0, rank - (cum[i - 1] if i else 0)) / c[i])
    return result
