"""The dashboard's decisions, on protobuf messages built here: counts, alerts, residency, rollout steps, the
audit head search, sparklines, and the loopback / Host / CSP rules."""

from __future__ import annotations

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from central.dashboard import security, views
from central.rollout import canary_order
from edgefleet.v1 import admin_pb2, common_pb2

NOW = 1_800_000_000.0


def _ts(seconds: float) -> Timestamp:
    ts = Timestamp()
    ts.FromNanoseconds(int(seconds * 1e9))
    return ts


def _node(
    node_id, state=admin_pb2.NODE_STATE_ONLINE, region="", model=("m", "1"), cert_left_s=30 * 86400, activation=None
):
    node = admin_pb2.Node(
        node_id=node_id,
        hostname=f"host-{node_id}",
        state=state,
        labels={"region": region} if region else {},
        last_seen_at=_ts(NOW - 5),
        certificate_expires_at=_ts(NOW + cert_left_s),
    )
    node.status.active_model.name, node.status.active_model.version = model
    node.status.inference.interval_seconds = 10
    node.status.inference.requests = 20
    node.status.inference.tokens_per_second = 33.5
    node.status.inference.cache_hits, node.status.inference.cache_lookups = 1, 4
    node.status.system.memory_used_bytes, node.status.system.memory_total_bytes = 1, 2
    for key, value in (activation or {}).items():
        setattr(node.status.activation, key, value)
    return node


def _routing(node_id, *counts):
    return admin_pb2.NodeRouting(
        node_id=node_id, counts=[common_pb2.RouteCount(data_class=c, route=r, count=n) for c, r, n in counts]
    )


def test_overview_counts_states_versions_and_regions():
    nodes = [
        _node("a", region="eu"),
        _node("b", region="eu", model=("m", "2")),
        _node("c", region="us", state=admin_pb2.NODE_STATE_OFFLINE),
        _node("d", state=admin_pb2.NODE_STATE_ENROLLED),
    ]
    o = views.overview(nodes, NOW, objectives=[], routing=[])
    assert o.total == 4
    assert dict(o.states) == {"online": 2, "offline": 1, "enrolled": 1, "revoked": 0}
    assert o.versions == [("m@1", 1), ("m@2", 1)], "online nodes only"
    assert [(r.region, r.total, r.online, r.offline) for r in o.regions] == [
        (views.NO_REGION, 1, 0, 0),
        ("eu", 2, 2, 0),
        ("us", 1, 0, 1),
    ]
    assert [(a.kind, a.subject) for a in o.alerts] == [("offline", "c")]
    assert o.restricted_left == 0


def test_alerts_name_failed_activations_objectives_certificates_and_residency():
    failed = _node("f", activation={"state": common_pb2.ACTIVATION_STATE_FAILED, "reason": "bad sha256"})
    failed.status.activation.model.name, failed.status.activation.model.version = "m", "2"
    expiring = _node("e", cert_left_s=3600)
    objective = admin_pb2.Objective(name="eu-latency")
    burning = admin_pb2.ObjectiveStatus(alert="page", error_budget_remaining=0.25)
    calm = admin_pb2.ObjectiveStatus(alert="")
    routing = [_routing("f", ("restricted", "upstream:cloud", 2), ("restricted", "local", 9))]
    o = views.overview(
        [failed, expiring],
        NOW,
        objectives=[(objective, burning), (admin_pb2.Objective(name="x"), calm)],
        routing=routing,
    )
    kinds = [(a.severity, a.kind, a.subject) for a in o.alerts]
    assert kinds[0] == ("critical", "residency", "fleet"), "a restricted request that left comes first"
    assert ("critical", "objective", "eu-latency") in kinds and all(s != "x" for _, _, s in kinds)
    assert ("warning", "activation", "f") in kinds
    assert ("warning", "certificate", "e") in kinds
    assert o.restricted_left == 2
    assert any("bad sha256" in a.message for a in o.alerts)


def test_overview_without_objectives_or_routing_says_unknown_not_zero():
    o = views.overview([_node("a")], NOW, objectives=None, routing=None)
    assert o.restricted_left is None


def test_alerts_are_capped_and_counted():
    nodes = [_node(f"n{i}", state=admin_pb2.NODE_STATE_OFFLINE) for i in range(views.MAX_ALERTS + 7)]
    o = views.overview(nodes, NOW, objectives=[], routing=[])
    assert len(o.alerts) == views.MAX_ALERTS and o.alerts_more == 7


def test_restricted_left_counts_only_restricted_requests_answered_upstream():
    routing = [
        _routing("a", ("restricted", "local", 5), ("restricted", "refused", 3), ("public", "upstream:cloud", 7)),
        _routing("b", ("restricted", "upstream:cloud", 1), ("confidential", "upstream:x", 4)),
    ]
    assert views.restricted_left(routing) == 1
    totals = views.route_totals(routing)
    assert [(t.data_class, t.route, t.count, t.left_the_box) for t in totals] == [
        ("confidential", "upstream:x", 4, False),
        ("public", "upstream:cloud", 7, False),
        ("restricted", "local", 5, False),
        ("restricted", "refused", 3, False),
        ("restricted", "upstream:cloud", 1, True),
    ]


def test_node_row_figures_and_history():
    points = [admin_pb2.RollupPoint(requests=n) for n in (3, 0, 5)]
    row = views.node_row(_node("a", region="eu"), NOW, points)
    assert row.requests_per_s == 2.0 and row.tokens_per_s == 33.5
    assert row.cache_hit_ratio == 0.25 and row.memory_ratio == 0.5
    assert row.requests_1h == 8 and row.spark
    assert row.last_seen_age == "5 s" and row.state == "online" and row.labels == (("region", "eu"),)
    unknown = views.node_row(admin_pb2.Node(node_id="x"), NOW, None)
    assert unknown.requests_1h is None and unknown.requests_per_s is None and unknown.spark == ""
    assert unknown.last_seen_age == "-" and unknown.model == "-"


def test_sparkline_scales_into_the_box():
    assert views.sparkline([]) == views.sparkline([1.0]) == ""
    points = [tuple(map(float, p.split(","))) for p in views.sparkline([0, 10, 5], 100, 20).split()]
    assert [x for x, _ in points] == [0.0, 50.0, 100.0]
    assert points[1][1] < points[2][1] < points[0][1], "higher values are drawn higher (smaller y)"
    assert all(0 <= y <= 20 for _, y in points)
    assert views.sparkline([0, 0]) == "0.0,19.5 100.0,19.5"


def _rollout(node_ids, steps, step_index, phase, active=()):
    rollout = admin_pb2.Rollout(
        rollout_id="r1",
        steps=steps,
        step_index=step_index,
        phase=phase,
        model=common_pb2.ModelRef(name="m", version="2"),
    )
    for node_id in node_ids:
        on = node_id in active
        rollout.nodes.add(
            node_id=node_id, active_version="2" if on else "1", activation_state="ACTIVE" if on else "DOWNLOADING"
        )
    return rollout


def test_rollout_steps_follow_centrals_canary_order():
    ids = [f"n{i}" for i in range(10)]
    order = canary_order("r1", ids)
    view = views.rollout_view(_rollout(ids, [10, 50, 100], 1, "RUNNING", active=order[:3]))
    assert [(s.percent, s.nodes, s.active, s.state) for s in view.steps] == [
        (10, 1, 1, "done"),
        (50, 5, 3, "current"),
        (100, 10, 3, "pending"),
    ]
    done = views.rollout_view(_rollout(ids, [10, 100], 1, "COMPLETED", active=ids))
    assert [s.state for s in done.steps] == ["done", "done"] and done.steps[-1].active == 10
    empty = views.rollout_view(_rollout([], [100], 0, "RUNNING"))
    assert [(s.nodes, s.active) for s in empty.steps] == [(0, 0)]


@pytest.mark.parametrize("first,last", [(1, 0), (1, 1), (1, 2), (1, 3), (1, 100), (1, 1025), (40, 39), (40, 977)])
@pytest.mark.parametrize("hint", [0, 1, 5, 300, 5000])
def test_find_audit_head_finds_the_newest_sequence_in_few_probes(first, last, hint):
    """The log holds first..last (nothing when last < first; a pruned log starts past 1)."""
    probes = []

    def entries_after(sequence):
        probes.append(sequence)
        if last < first:
            return 0
        nxt = max(sequence + 1, first)
        return nxt if nxt <= last else 0

    head = views.find_audit_head(entries_after, hint)
    assert head == (last if last >= first else 0)
    assert len(probes) <= 4 + 2 * max(1, last).bit_length()


def test_chart_data_columns():
    points = [admin_pb2.RollupPoint(start=_ts(60 * i), requests=i, latency_p99_ms=float("nan")) for i in range(3)]
    data = views.chart_data(points)
    assert data["x"] == [0, 60, 120]
    series = {s["key"]: s["values"] for s in data["series"]}
    assert series["requests"] == [0, 1, 2]
    assert series["latency_p99_ms"] == [0.0, 0.0, 0.0], "no NaN reaches JSON"


def test_age_text():
    assert [views.age_text(s) for s in (None, -3, 0, 119, 120, 7199, 7200, 3 * 86400)] == [
        "-",
        "0 s",
        "0 s",
        "119 s",
        "2 min",
        "120 min",
        "2 h",
        "3 d",
    ]


# -- security ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text,expected",
    [("127.0.0.1:8700", ("127.0.0.1", 8700)), ("[::1]:0", ("::1", 0)), ("localhost:80", ("localhost", 80))],
)
def test_parse_listen(text, expected):
    assert security.parse_listen(text) == expected


@pytest.mark.parametrize("text", ["8700", "127.0.0.1", "host:port", "h:70000", ""])
def test_parse_listen_refuses(text):
    with pytest.raises(ValueError, match="HOST:PORT"):
        security.parse_listen(text)


def test_only_loopback_unless_allowed():
    assert security.listen_problem("127.0.0.1", False, []) is None
    assert security.listen_problem("::1", False, []) is None
    assert security.listen_problem("localhost", False, []) is None
    assert "--allow-remote" in security.listen_problem("10.0.0.5", False, [])
    assert "--allow-remote" in security.listen_problem("0.0.0.0", False, [])
    assert security.listen_problem("10.0.0.5", True, []) is None
    assert "--allow-host" in security.listen_problem("0.0.0.0", True, [])
    assert security.listen_problem("0.0.0.0", True, ["ops.example"]) is None


def test_host_header_must_name_the_listen_address():
    allowed = security.allowed_hosts("127.0.0.1", 8700)
    for good in ("127.0.0.1:8700", "localhost:8700", "LOCALHOST:8700", "[::1]:8700"):
        assert security.host_allowed(good, allowed), good
    for bad in ("evil.example:8700", "127.0.0.1:8701", "127.0.0.1", "", None, "localhost.evil.example:8700"):
        assert not security.host_allowed(bad, allowed), bad
    remote = security.allowed_hosts("0.0.0.0", 8700, ["ops.example"])
    assert remote == {"ops.example:8700"}
    assert security.allowed_hosts("10.0.0.5", 80) == {"10.0.0.5:80", "10.0.0.5"}


def test_the_policy_allows_nothing_inline_and_no_framing():
    csp = security.CONTENT_SECURITY_POLICY
    assert "script-src 'self';" in csp and "style-src 'self';" in csp
    assert "unsafe" not in csp and "frame-ancestors 'none'" in csp
    assert security.HEADERS["x-frame-options"] == "DENY"
