"""What the dashboard's pages show, computed from AdminService's replies: pure functions, no I/O, no clock.

Each function takes protobuf messages (or plain values) and `now` where time matters, and returns small
dataclasses the templates read. The templates only format; every count, ratio and alert is decided here.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from central.rollout import canary_order

# A certificate closer than this to its expiry is an alert (agents renew at two thirds of the lifetime).
CERT_WARN_S = 7 * 86400.0
# Alerts listed on the overview; the rest are counted.
MAX_ALERTS = 50
NO_REGION = "(none)"
ROUTE_UPSTREAM = "upstream:"
RESTRICTED = "restricted"
ACTIVATION_PROBLEMS = ("FAILED", "ROLLED_BACK")


def seconds(ts: Any) -> float | None:
    """A protobuf Timestamp as Unix seconds; None when unset (a zero Timestamp)."""
    if ts is None or (ts.seconds == 0 and ts.nanos == 0):
        return None
    return float(ts.seconds) + ts.nanos / 1e9


def ratio(part: float, whole: float) -> float | None:
    return part / whole if whole else None


def age_text(delta_s: float | None) -> str:
    """`12 s`, `4 min`, `3 h`, `2 d`; `-` for never."""
    if delta_s is None:
        return "-"
    delta_s = max(0.0, delta_s)
    if delta_s < 120:
        return f"{delta_s:.0f} s"
    if delta_s < 7200:
        return f"{delta_s / 60:.0f} min"
    if delta_s < 2 * 86400:
        return f"{delta_s / 3600:.0f} h"
    return f"{delta_s / 86400:.0f} d"


def sparkline(values: Sequence[float], width: float = 100.0, height: float = 20.0) -> str:
    """SVG polyline points for `values` scaled into width x height (the top is the largest value); "" for
    fewer than two values. Drawn on the server, so the node table needs no JavaScript."""
    if len(values) < 2:
        return ""
    top = max(values)
    step = width / (len(values) - 1)
    scale = (height - 1) / top if top > 0 else 0.0
    return " ".join(f"{i * step:.1f},{height - 0.5 - v * scale:.1f}" for i, v in enumerate(values))


# -- nodes ------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NodeRow:
    node_id: str
    hostname: str
    labels: tuple[tuple[str, str], ...]
    state: str
    model: str
    activation: str
    last_seen_age: str
    last_seen_at: float | None
    requests_per_s: float | None
    tokens_per_s: float | None
    latency_p99_ms: float | None
    ttft_p99_ms: float | None
    queue_depth: int | None
    running: int | None
    cache_hit_ratio: float | None
    cpu_percent: float | None
    memory_ratio: float | None
    requests_1h: int | None  # from the history; None when it is not available
    spark: str  # SVG points of requests per minute over the last hour; "" without history


def model_text(ref: Any) -> str:
    return f"{ref.name}@{ref.version}" if ref.name else "-"


def node_row(node: Any, now: float, history: Sequence[Any] | None) -> NodeRow:
    """One node's line: its last heartbeat's figures, and its last hour from the history (None: not available)."""
    status = node.status
    has_status = node.HasField("status") and status.HasField("inference")
    inference = status.inference
    system = status.system
    last_seen = seconds(node.last_seen_at)
    requests_1h = sum(p.requests for p in history) if history is not None else None
    return NodeRow(
        node_id=node.node_id,
        hostname=node.hostname,
        labels=tuple(sorted(node.labels.items())),
        state=_state(node),
        model=model_text(status.active_model),
        activation=activation_text(status.activation) if status.HasField("activation") else "",
        last_seen_age=age_text(now - last_seen if last_seen is not None else None),
        last_seen_at=last_seen,
        requests_per_s=ratio(inference.requests, inference.interval_seconds) if has_status else None,
        tokens_per_s=inference.tokens_per_second if has_status else None,
        latency_p99_ms=inference.latency_p99_ms if has_status and inference.requests else None,
        ttft_p99_ms=inference.ttft_p99_ms if has_status and inference.ttft_p99_ms else None,
        queue_depth=inference.queue_depth if has_status else None,
        running=inference.running if has_status else None,
        cache_hit_ratio=ratio(inference.cache_hits, inference.cache_lookups) if has_status else None,
        cpu_percent=system.cpu_percent if node.HasField("status") else None,
        memory_ratio=ratio(system.memory_used_bytes, system.memory_total_bytes) if node.HasField("status") else None,
        requests_1h=requests_1h,
        spark=sparkline([float(p.requests) for p in history]) if history else "",
    )


def enum_text(enum: Any, value: int, prefix: str) -> str:
    """An enum value's name without its prefix (`NODE_STATE_ONLINE` -> `ONLINE`); the number for a value this
    dashboard does not know (a newer central's)."""
    if value not in enum.values():
        return str(value)
    name: str = enum.Name(value)
    return name[len(prefix) :] if name.startswith(prefix) else name


def _state(node: Any) -> str:
    from edgefleet.v1 import admin_pb2

    return enum_text(admin_pb2.NodeState, node.state, "NODE_STATE_").lower()


def activation_text(activation: Any) -> str:
    from edgefleet.v1 import common_pb2

    state = enum_text(common_pb2.ActivationState, activation.state, "ACTIVATION_STATE_")
    if state == "UNSPECIFIED":
        return ""
    return f"{model_text(activation.model)} {state}"


def history_by_scope(series: Iterable[Any]) -> dict[str, list[Any]]:
    return {s.scope: list(s.points) for s in series}


# -- the overview -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Alert:
    severity: str  # "critical", "warning"
    kind: str
    subject: str
    message: str
    link: str = ""


@dataclass(frozen=True)
class RegionCount:
    region: str
    total: int
    online: int
    offline: int


@dataclass
class Overview:
    total: int
    states: list[tuple[str, int]]
    versions: list[tuple[str, int]]
    regions: list[RegionCount]
    alerts: list[Alert]
    alerts_more: int
    restricted_left: int | None  # None: routing not available


STATE_ORDER = ("online", "offline", "enrolled", "revoked")


def overview(
    nodes: Sequence[Any],
    now: float,
    objectives: Sequence[tuple[Any, Any]] | None,
    routing: Sequence[Any] | None,
) -> Overview:
    """Status counts, versions in service (online nodes' active models), nodes per region, and the alerts: a
    restricted request that left a box, offline nodes, failed activations, objectives whose alert is set, and
    certificates near expiry."""
    states = Counter(_state(n) for n in nodes)
    versions = Counter(model_text(n.status.active_model) for n in nodes if _state(n) == "online")
    regions: dict[str, list[int]] = {}
    for n in nodes:
        counts = regions.setdefault(n.labels.get("region", "") or NO_REGION, [0, 0, 0])
        counts[0] += 1
        counts[1] += _state(n) == "online"
        counts[2] += _state(n) == "offline"
    left = restricted_left(routing) if routing is not None else None
    alerts = node_alerts(nodes, now)
    if objectives is not None:
        alerts = [*objective_alerts(objectives), *alerts]
    if left:
        alerts.insert(
            0,
            Alert("critical", "residency", "fleet", f"{left} restricted requests left their box", "/residency"),
        )
    return Overview(
        total=len(nodes),
        states=[(s, states.get(s, 0)) for s in STATE_ORDER]
        + sorted((s, c) for s, c in states.items() if s not in STATE_ORDER),
        versions=sorted(versions.items(), key=lambda kv: (-kv[1], kv[0])),
        regions=[RegionCount(r, *c) for r, c in sorted(regions.items())],
        alerts=alerts[:MAX_ALERTS],
        alerts_more=max(0, len(alerts) - MAX_ALERTS),
        restricted_left=left,
    )


def node_alerts(nodes: Iterable[Any], now: float) -> list[Alert]:
    alerts: list[Alert] = []
    for n in nodes:
        state, link = _state(n), f"/nodes/{n.node_id}"
        if state == "offline":
            last = seconds(n.last_seen_at)
            since = f"last heartbeat {age_text(now - last)} ago" if last is not None else "never heard from"
            alerts.append(Alert("critical", "offline", n.node_id, f"offline: {since}", link))
        activation = n.status.activation
        name = activation_text(activation)
        if name and name.rsplit(" ", 1)[-1] in ACTIVATION_PROBLEMS:
            alerts.append(Alert("warning", "activation", n.node_id, f"{name}: {activation.reason}", link))
        expires = seconds(n.certificate_expires_at)
        if state != "revoked" and expires is not None and expires - now < CERT_WARN_S:
            when = "expired" if expires <= now else f"expires in {age_text(expires - now)}"
            alerts.append(Alert("warning", "certificate", n.node_id, f"certificate {when}", link))
    return alerts


def objective_alerts(objectives: Iterable[tuple[Any, Any]]) -> list[Alert]:
    return [
        Alert(
            "critical" if status.alert == "page" else "warning",
            "objective",
            objective.name,
            f"burn-rate alert {status.alert}: budget left {status.error_budget_remaining:.0%}",
            "/objectives",
        )
        for objective, status in objectives
        if status.alert
    ]


# -- residency --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RouteTotal:
    data_class: str
    route: str
    count: int
    left_the_box: bool


def left_the_box(data_class: str, route: str) -> bool:
    """A restricted request answered upstream: what must never happen."""
    return data_class == RESTRICTED and route.startswith(ROUTE_UPSTREAM)


def restricted_left(routing: Iterable[Any]) -> int:
    return sum(c.count for n in routing for c in n.counts if left_the_box(c.data_class, c.route))


def route_totals(routing: Iterable[Any]) -> list[RouteTotal]:
    """Requests per (data class, route) summed over the fleet, by class then route."""
    totals: Counter[tuple[str, str]] = Counter()
    for n in routing:
        for c in n.counts:
            totals[(c.data_class, c.route)] += c.count
    return [RouteTotal(dc, r, n, left_the_box(dc, r)) for (dc, r), n in sorted(totals.items())]


# -- rollouts ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StepView:
    index: int
    percent: int
    nodes: int
    active: int
    state: str  # "done", "current", "pending"


@dataclass(frozen=True)
class RolloutView:
    rollout_id: str
    model: str
    selector: tuple[tuple[str, str], ...]
    phase: str
    reason: str
    created_at: float | None
    steps: list[StepView]
    waiting_on: list[str]
    nodes: list[Any] = field(default_factory=list)


def rollout_view(rollout: Any) -> RolloutView:
    """A rollout with, per step, how many of that step's nodes (the same canary order central uses) serve the
    rolled-out version."""
    version = rollout.model.version
    by_id = {n.node_id: n for n in rollout.nodes}
    order = canary_order(rollout.rollout_id, by_id)
    steps = []
    for i, percent in enumerate(rollout.steps):
        count = max(1, -(-percent * len(order) // 100)) if order else 0
        step_nodes = [by_id[node_id] for node_id in order[:count]]
        active = sum(1 for n in step_nodes if n.active_version == version and n.activation_state == "ACTIVE")
        if rollout.phase == "COMPLETED" or i < rollout.step_index:
            state = "done"
        elif i == rollout.step_index and rollout.phase in ("RUNNING", "PAUSED"):
            state = "current"
        else:
            state = "pending"
        steps.append(StepView(i, percent, len(step_nodes), active, state))
    return RolloutView(
        rollout_id=rollout.rollout_id,
        model=model_text(rollout.model),
        selector=tuple(sorted(rollout.selector.items())),
        phase=rollout.phase,
        reason=rollout.reason,
        created_at=seconds(rollout.created_at),
        steps=steps,
        waiting_on=list(rollout.waiting_on),
        nodes=sorted(rollout.nodes, key=lambda n: n.node_id),
    )


# -- charts -----------------------------------------------------------------------------------------------------------

# (key, label, unit) of the series a node's chart draws, in order.
CHART_SERIES = (
    ("requests", "requests", "per period"),
    ("tokens_per_second", "tokens/s", "tok/s"),
    ("latency_p50_ms", "latency p50", "ms"),
    ("latency_p99_ms", "latency p99", "ms"),
    ("ttft_p99_ms", "TTFT p99", "ms"),
    ("queue_depth_max", "queue max", "requests"),
    ("upstream_requests", "burst requests", "per period"),
)
# The burst page's chart: what the fleet sent upstream, per period; it falls to 0 once the boxes catch up.
BURST_CHART_SERIES = (
    ("upstream_requests", "burst requests", "per period"),
    ("upstream_prompt_tokens", "prompt tokens sent", "per period"),
    ("upstream_completion_tokens", "completion tokens received", "per period"),
    ("requests", "all requests", "per period"),
)


def chart_data(points: Sequence[Any], series: Sequence[tuple[str, str, str]] = CHART_SERIES) -> dict[str, Any]:
    """uPlot's columns: x in Unix seconds, then one list per `series` entry (key, label, unit)."""
    return {
        "x": [p.start.seconds for p in points],
        "series": [
            {"key": key, "label": label, "unit": unit, "values": [_number(getattr(p, key)) for p in points]}
            for key, label, unit in series
        ],
    }


def _number(value: float) -> float:
    return value if math.isfinite(value) else 0.0


# -- the audit tail ---------------------------------------------------------------------------------------------------


def find_audit_head(entries_after: Callable[[int], int], hint: int = 0) -> int:
    """The newest sequence in the audit log, found with O(log n) probes of ListAuditEntries.

    `entries_after(s)` is the largest sequence in a one-entry page after `s` (0 when none); `hint` a sequence
    known to exist (the last head found), from which it gallops forward, then bisects."""
    low = hint if hint > 0 and entries_after(hint - 1) else 0  # a known entry, or the start
    first = entries_after(low)
    if not first:
        return low
    low, step = first, 1
    while entries_after(low + step - 1):  # is there an entry at or beyond low + step?
        low, step = low + step, step * 2
    high = low + step  # no entry at or beyond high
    while high - low > 1:
        mid = (low + high) // 2
        if entries_after(mid - 1):
            low = mid
        else:
            high = mid
    return low


def counts_by(values: Iterable[str]) -> list[tuple[str, int]]:
    return sorted(Counter(values).items())


def label_text(labels: Mapping[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
