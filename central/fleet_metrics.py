"""Central's fleet metrics for Prometheus: what the store says (gauges) and what heartbeats said (counters).

Two kinds of figures, as the names say (docs/fleet.md, "Central's metrics"):

- Gauges read from the store at scrape time, through a :class:`StoreSnapshot` kept for SNAPSHOT_TTL_S, so a
  scrape storm costs the store one read every few seconds: nodes by state and by model version, rollouts by
  phase, federated runs by state. Every replica reports the whole fleet: aggregate them with max(), not sum().
- Counters (and one gauge) kept in this process from each accepted heartbeat's ``NodeStatus.inference`` and
  routing summary, and from enrollment's outcomes: process counters of the replica that received the beats;
  sum them over replicas.

Inference figures are rolled up by the operator's rollup label keys (``region``, ``site``), each a Prometheus
label whose value is the node's label ("" when it has none), never by node id; a beat carries its node's labels
(read with the desired state it is answered with). Each metric family holds at most MAX_SERIES label-value
combinations; beyond that a new combination is counted under one series whose every label reads OTHER.

Nothing here touches the network; the store is read only through the ``read_snapshot`` callable the caller
passes (central.server gives one that goes through central's worker pool when the store is remote).
"""

from __future__ import annotations

import json
import logging
import math
import operator
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import cast

from prometheus_client.core import CollectorRegistry, CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

from central import federation, liveness, routing
from central import rollout as rollout_logic
from central.routing import RoutingReport
from central.store import FederatedRunRecord, FleetStore, NodeRecord
from edgefleet import histogram_buckets
from edgefleet.v1 import common_pb2

log = logging.getLogger(__name__)

OTHER = "(other)"
MAX_SERIES = 1000  # label-value combinations per metric family, the OTHER series included
SNAPSHOT_TTL_S = 5.0
# Label names the families use themselves: a rollup key of that name is exported as label_<key>.
RESERVED_LABELS = frozenset(
    {"le", "state", "model", "version", "reason", "data_class", "route", "upstream", "tenant", "direction", "currency"}
)
NODE_STATES = (liveness.ONLINE, liveness.OFFLINE, liveness.ENROLLED, liveness.REVOKED)
ROLLOUT_STATES = tuple(p.lower() for p in rollout_logic.PHASES)
# A run that ended, on a replica that cannot read its report (it does not run the SuperLink).
FINISHED = "finished"
RUN_STATES = (
    federation.PENDING, federation.WAITING, federation.RUNNING, federation.COMPLETED, federation.FAILED, FINISHED,
)  # fmt: skip
LE = (*(floatToGoString(b / 1000) for b in histogram_buckets.BOUNDS_MS), "+Inf")


# -- the families -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Family:
    name: str  # without _total
    kind: str  # "counter" or "histogram"
    labels: tuple[str, ...]  # the family's own labels, before the rollup labels
    help: str


# Labelled by the rollup labels only, and kept together per label group as one flat vector of counts (one addition
# per beat): the counters' values in this order, then each histogram's per-bucket counts.
GROUP_COUNTERS = (
    Family("edgefleet_fleet_requests", "counter", (), "completed HTTP API requests on the nodes"),
    Family("edgefleet_fleet_request_errors", "counter", (), "requests answered with a 5xx or 429"),
    Family("edgefleet_fleet_generated_tokens", "counter", (), "tokens generated"),
    Family("edgefleet_fleet_prompt_tokens", "counter", (), "prompt tokens given to the engines"),
    Family("edgefleet_fleet_cache_hits", "counter", (), "response cache lookups that found an answer"),
    Family("edgefleet_fleet_cache_lookups", "counter", (), "response cache lookups"),
)
GROUP_HISTOGRAMS = (
    Family("edgefleet_fleet_request_duration_seconds", "histogram", (), "request latency on the nodes (no _sum)"),
    Family(
        "edgefleet_fleet_time_to_first_token_seconds", "histogram", (), "time to first token on the nodes (no _sum)"
    ),
)
GROUP_WIDTH = len(GROUP_COUNTERS) + len(GROUP_HISTOGRAMS) * histogram_buckets.BUCKETS
_NO_BUCKETS = (0,) * histogram_buckets.BUCKETS
# Labelled by labels of their own too (data class and route, upstream and tenant...), then the rollup labels.
KEYED = {
    "routed": Family(
        "edgefleet_fleet_routed_requests",
        "counter",
        ("data_class", "route"),
        'requests by data class and route ("local", "upstream:NAME", "refused")',
    ),
    "burst_tokens": Family(
        "edgefleet_fleet_burst_tokens",
        "counter",
        ("upstream", "tenant", "direction"),
        'tokens sent to (direction="prompt") and received from ("completion") upstreams',
    ),
    "burst_cost": Family(
        "edgefleet_fleet_burst_cost",
        "counter",
        ("upstream", "tenant", "currency"),
        "what bursting to upstreams cost at their configured prices",
    ),
}
FAMILIES = (*GROUP_COUNTERS, *GROUP_HISTOGRAMS, *KEYED.values())

Contribution = tuple[str, tuple[str, ...], float]  # (KEYED family, its own label values, amount)


@dataclass(frozen=True)
class Beat:
    """What one accepted heartbeat adds: its group vector (GROUP_WIDTH counts) and its KEYED contributions."""

    group: list[int]
    keyed: list[Contribution]


def label_names(rollup_keys: Sequence[str]) -> tuple[str, ...]:
    """The Prometheus label name of each rollup key: characters outside [a-zA-Z0-9_] become "_", a leading digit
    or a name a family uses itself (RESERVED_LABELS) gets a "label_" prefix. Two keys that end up with one
    name are an error (ValueError), as their series would mix."""
    names: list[str] = []
    for key in rollup_keys:
        name = re.sub(r"[^a-zA-Z0-9_]", "_", key)
        if not name or name[0].isdigit() or name in RESERVED_LABELS or name.startswith("__"):
            name = "label_" + name.lstrip("_")
        if name in names:
            raise ValueError(f"rollup label keys {list(rollup_keys)} give the Prometheus label {name!r} twice")
        names.append(name)
    return tuple(names)


def contributions(status: common_pb2.NodeStatus, routing_report: RoutingReport | None) -> Beat:
    """What one accepted heartbeat adds to the counters, before its rollup labels: pure."""
    inf = status.inference
    group = [inf.requests, inf.errors, inf.generated_tokens, inf.prompt_tokens, inf.cache_hits, inf.cache_lookups]
    group += _buckets(inf.latency_buckets)
    group += _buckets(inf.ttft_buckets)
    keyed: list[Contribution] = []
    if routing_report is not None and not routing.problem(routing_report):
        keyed.extend(("routed", pair, count) for pair, count in sorted(routing_report.counts.items()) if count)
    for usage in inf.upstream_usage:
        who = (usage.upstream, usage.tenant)
        if usage.prompt_tokens:
            keyed.append(("burst_tokens", (*who, "prompt"), usage.prompt_tokens))
        if usage.completion_tokens:
            keyed.append(("burst_tokens", (*who, "completion"), usage.completion_tokens))
        if usage.currency and math.isfinite(usage.cost) and usage.cost > 0:
            keyed.append(("burst_cost", (*who, usage.currency), usage.cost))
    return Beat(group, keyed)


def _buckets(counts: Sequence[int]) -> Sequence[int]:
    """A heartbeat's bucket counts as BUCKETS entries (histogram_buckets.normalized, without its copy when they
    already are; none from an older agent)."""
    if len(counts) == histogram_buckets.BUCKETS:
        return counts
    return histogram_buckets.normalized(counts) if len(counts) else _NO_BUCKETS


class Series:
    """One family's values by label-value tuple, at most `cap` tuples: the first cap - 1 distinct tuples as they
    come, everything after under the one tuple of OTHERs. A value is a number or a list of counts."""

    def __init__(self, width: int, cap: int = MAX_SERIES):
        if cap < 2:
            raise ValueError(f"a series cap below 2 leaves no room besides {OTHER}, got {cap}")
        self.cap = cap
        self.values: dict[tuple[str, ...], float | list[int]] = {}
        self._other = (OTHER,) * width

    def key(self, key: tuple[str, ...]) -> tuple[str, ...]:
        if key in self.values or len(self.values) < self.cap - 1:
            return key
        return self._other

    def add(self, key: tuple[str, ...], amount: float | list[int]) -> None:
        key = self.key(key)
        held = self.values.get(key)
        if isinstance(amount, list):
            self.values[key] = amount if held is None else list(map(operator.add, held, amount))  # type: ignore[arg-type]
        else:
            self.values[key] = (held or 0) + amount  # type: ignore[operator]

    def touch(self, key: tuple[str, ...]) -> None:
        """Make the series exist (at 0) so that queries on it return data before anything happened."""
        key = self.key(key)
        self.values.setdefault(key, 0)


def capped_counts(counts: Mapping[tuple, int], width: int, cap: int = MAX_SERIES) -> dict[tuple, int]:
    """A gauge's counts with at most `cap` label tuples: the largest first, the rest summed under OTHERs."""
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    kept = dict(ranked[: cap - 1]) if len(ranked) > cap else dict(ranked)
    rest = sum(v for _, v in ranked[cap - 1 :]) if len(ranked) > cap else 0
    if rest:
        kept[(OTHER,) * width] = kept.get((OTHER,) * width, 0) + rest
    return kept


# -- what the store says ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StoreSnapshot:
    nodes_by_state: dict[str, int]
    nodes_by_model: dict[tuple[str, str], int]  # online nodes by the (model, version) they serve
    rollouts_by_state: dict[str, int]
    runs_by_state: dict[str, int]


def summarize_nodes(
    nodes: Iterable[NodeRecord], heartbeat_interval_s: float, now: float
) -> tuple[dict[str, int], dict[tuple[str, str], int]]:
    """(nodes by state, online nodes by the (model, version) they serve): pure."""
    states: Counter[str] = Counter({s: 0 for s in NODE_STATES})
    models: Counter[tuple[str, str]] = Counter()
    for node in nodes:
        state = liveness.node_state(node, heartbeat_interval_s, now)
        states[state] += 1
        if state == liveness.ONLINE and node.status:
            active = _active_model(node.status)
            if active is not None:
                models[active] += 1
    return dict(states), dict(models)


def _active_model(status: bytes) -> tuple[str, str] | None:
    message = common_pb2.NodeStatus()
    try:
        message.ParseFromString(status)
    except Exception:  # noqa: BLE001 - a status central kept but cannot read counts as no model
        return None
    ref = message.active_model
    return (ref.name, ref.version) if ref.name else None


def rollout_states(rows: Iterable[tuple[str, str, str, float]]) -> dict[str, int]:
    """Rollouts by phase (lowercase) from the store's (id, spec, state JSON, created_at) rows: pure."""
    states: Counter[str] = Counter({s: 0 for s in ROLLOUT_STATES})
    for _, _, state, _ in rows:
        try:
            phase = json.loads(state).get("phase", "")
        except (ValueError, AttributeError):
            phase = ""
        states[str(phase).lower() if phase in rollout_logic.PHASES else "unknown"] += 1
    return dict(states)


def run_states(records: Iterable[FederatedRunRecord], reports: Mapping[int, dict | None]) -> dict[str, int]:
    """Federated runs by state, from the store's records and each run's own report where this replica can read it
    (`reports` by run id; the replica that runs the SuperLink can): pure. Without its report a run whose outcome
    central imported counts as "finished", and one not imported yet as pending."""
    states: Counter[str] = Counter({s: 0 for s in RUN_STATES})
    for record in records:
        report = reports.get(record.run_id)
        status, _ = federation.run_status("", "", "", report)
        if record.imported_at is not None and status not in (federation.COMPLETED, federation.FAILED):
            status = FINISHED
        states[status] += 1
    return dict(states)


def read_store_snapshot(
    store: FleetStore, heartbeat_interval_s: float, now: float, results_dir: Path | None
) -> StoreSnapshot:
    """The store's side of the metrics: three reads (nodes, rollouts, federated runs), and each unfinished
    run's report file when this replica runs the SuperLink (`results_dir`)."""
    by_state, by_model = summarize_nodes(store.list_nodes(), heartbeat_interval_s, now)
    records = store.list_federated_runs()
    reports = {
        r.run_id: federation.read_report(results_dir, r.run_id) if results_dir is not None else None for r in records
    }
    return StoreSnapshot(by_state, by_model, rollout_states(store.list_rollouts()), run_states(records, reports))


# -- the collector ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _LastBeat:
    """A node's last beat to this replica: its rollup label values, queue depth and (monotonic) time."""

    values: tuple[str, ...]
    queue_depth: int
    at: float


class FleetMetrics:
    """The collector behind central's /metrics (prometheus_client's custom collector protocol: `collect`).

    Thread-safe: heartbeats arrive on central's event loop, enrollments on the enrollment thread, scrapes on the
    metrics server's threads. `clock` is monotonic seconds (snapshot age, nodes' last beats)."""

    def __init__(
        self,
        rollup_keys: Sequence[str],
        heartbeat_interval_s: float,
        read_snapshot: Callable[[], StoreSnapshot],
        refusal_reasons: Sequence[str] = (),
        clock: Callable[[], float] = time.monotonic,
        max_series: int = MAX_SERIES,
        snapshot_ttl_s: float = SNAPSHOT_TTL_S,
    ):
        self.rollup_keys = tuple(rollup_keys)
        self.label_names = label_names(self.rollup_keys)
        self._interval_s = heartbeat_interval_s
        self._read_snapshot = read_snapshot
        self._clock = clock
        self._cap = max_series
        self._ttl_s = snapshot_ttl_s
        self._lock = threading.Lock()  # the counters and the node table; never held over a store read
        self._snapshot_lock = threading.Lock()  # one store read at a time
        self._snapshot: StoreSnapshot | None = None
        self._snapshot_at = -math.inf
        width = len(self.rollup_keys)
        self._groups = Series(width, max_series)  # rollup label values -> GROUP_WIDTH counts
        self._keyed = {k: Series(len(f.labels) + width, max_series) for k, f in KEYED.items()}
        self._heartbeats = 0
        self._enrollments = 0
        self._refusals = Series(1, max_series)
        for reason in refusal_reasons:
            self._refusals.touch((reason,))
        self._last: dict[str, _LastBeat] = {}  # node id -> its last beat here, for the queue depth gauge

    # -- what the servers call --

    def heartbeat(
        self,
        node_id: str,
        status: common_pb2.NodeStatus,
        labels: Mapping[str, str],
        routing_report: RoutingReport | None = None,
    ) -> None:
        """An accepted beat of the node with these `labels`; `routing_report` is what its status says of routing
        (central.convert.routing_report), left out when malformed."""
        beat = contributions(status, routing_report)
        values = tuple(labels.get(k, "") for k in self.rollup_keys)
        with self._lock:
            self._heartbeats += 1
            self._groups.add(values, beat.group)
            for key, own, amount in beat.keyed:
                self._keyed[key].add((*own, *values), amount)
            self._last[node_id] = _LastBeat(values, status.inference.queue_depth, self._clock())

    def enrolled(self) -> None:
        with self._lock:
            self._enrollments += 1

    def enrollment_refused(self, reason: str) -> None:
        with self._lock:
            self._refusals.add((reason,), 1)

    # -- what Prometheus reads --

    def registry(self) -> CollectorRegistry:
        """A registry of its own holding only this collector (no process or platform collectors)."""
        registry = CollectorRegistry(auto_describe=False)
        registry.register(self)
        return registry

    def collect(self) -> Iterator:
        snapshot = self._fresh_snapshot()
        with self._lock:
            heartbeats, enrollments = self._heartbeats, self._enrollments
            refusals = dict(self._refusals.values)
            groups = {key: list(v) for key, v in self._groups.values.items()}  # type: ignore[arg-type]
            keyed = {k: dict(s.values) for k, s in self._keyed.items()}
            queue = self._queue_depths_locked()
        if snapshot is not None:
            yield from self._store_families(snapshot)
        yield CounterMetricFamily("edgefleet_fleet_heartbeats", "heartbeats this replica accepted", heartbeats)
        yield CounterMetricFamily("edgefleet_fleet_enrollments", "nodes this replica enrolled", enrollments)
        refused = CounterMetricFamily(
            "edgefleet_fleet_enrollment_refusals", "enrollment calls this replica refused, by reason", labels=["reason"]
        )
        for (reason,), count in sorted(refusals.items()):
            refused.add_metric([reason], cast(float, count))
        yield refused
        names = list(self.label_names)
        for i, family in enumerate(GROUP_COUNTERS):
            counter = CounterMetricFamily(family.name, family.help, labels=names)
            for values, vector in sorted(groups.items()):
                counter.add_metric(list(values), vector[i])
            yield counter
        for i, family in enumerate(GROUP_HISTOGRAMS):
            start = len(GROUP_COUNTERS) + i * histogram_buckets.BUCKETS
            yield self._histogram(
                family, {values: v[start : start + histogram_buckets.BUCKETS] for values, v in groups.items()}
            )
        for key, family in KEYED.items():
            counter = CounterMetricFamily(family.name, family.help, labels=[*family.labels, *names])
            for values, value in sorted(keyed[key].items()):
                counter.add_metric(list(values), cast(float, value))
            yield counter
        depth = GaugeMetricFamily(
            "edgefleet_fleet_queue_depth",
            "requests waiting on the online nodes that last beat to this replica, by their last beat",
            labels=list(self.label_names),
        )
        for values, total in sorted(capped_counts(queue, len(self.label_names), self._cap).items()):
            depth.add_metric(list(values), total)
        yield depth

    # -- inside --

    def _fresh_snapshot(self) -> StoreSnapshot | None:
        with self._snapshot_lock:
            if self._clock() - self._snapshot_at >= self._ttl_s:
                try:
                    self._snapshot = self._read_snapshot()
                except Exception as exc:  # noqa: BLE001 - a store down for a moment: the last snapshot serves
                    log.warning("fleet metrics: cannot read the store (%s); serving the last figures read", exc)
                self._snapshot_at = self._clock()
            return self._snapshot

    def _queue_depths_locked(self) -> dict[tuple[str, ...], int]:
        """Queue depths summed by label values, over the nodes whose last beat here is recent enough for them to
        be online; the others are forgotten."""
        online_after = self._clock() - liveness.MISSED_INTERVALS_OFFLINE * self._interval_s
        depths: Counter[tuple[str, ...]] = Counter()
        for node_id, beat in list(self._last.items()):
            if beat.at < online_after:
                del self._last[node_id]
            else:
                depths[beat.values] += beat.queue_depth
        return dict(depths)

    def _histogram(self, family: Family, values: dict[tuple[str, ...], list[int]]) -> HistogramMetricFamily:
        names = list(self.label_names)
        histogram = HistogramMetricFamily(family.name, family.help, labels=names)
        for key, counts in sorted(values.items()):
            cumulative: list[tuple[str, float]] = []
            running = 0
            for le, n in zip(LE, counts, strict=True):
                running += n
                cumulative.append((le, running))
            histogram.add_metric(list(key), cumulative, None)
            # Heartbeats carry bucket counts, not sums: _count without _sum.
            labels = dict(zip(names, key, strict=True))
            histogram.samples.append(Sample(family.name + "_count", labels, running, None, None))
        return histogram

    def _store_families(self, snapshot: StoreSnapshot) -> Iterator:
        nodes = GaugeMetricFamily("edgefleet_fleet_nodes", "enrolled nodes by state (from the store)", labels=["state"])
        for state, count in sorted(snapshot.nodes_by_state.items()):
            nodes.add_metric([state], count)
        yield nodes
        models = GaugeMetricFamily(
            "edgefleet_fleet_nodes_by_model",
            "online nodes by the model version they serve (from the store)",
            labels=["model", "version"],
        )
        for (name, version), count in sorted(capped_counts(snapshot.nodes_by_model, 2, self._cap).items()):
            models.add_metric([name, version], count)
        yield models
        rollouts = GaugeMetricFamily("edgefleet_fleet_rollouts", "rollouts by phase (from the store)", labels=["state"])
        for state, count in sorted(snapshot.rollouts_by_state.items()):
            rollouts.add_metric([state], count)
        yield rollouts
        runs = GaugeMetricFamily(
            "edgefleet_fleet_federated_runs", "federated learning runs by state (from the store)", labels=["state"]
        )
        for state, count in sorted(snapshot.runs_by_state.items()):
            runs.add_metric([state], count)
        yield runs
