"""The history handlers without gRPC (GetMetricsHistory, ListBurstUsage): a real data dir, a real store (SQLite, and
PostgreSQL when one is reachable), callers as the TLS layer builds them, beats through central's heartbeat buffer
and a clock the test moves. The same calls over real mTLS, through the CLI, are in
tests/integration/test_history_cli.py."""

from __future__ import annotations

import pytest

from central import convert, rollups
from central.errors import InvalidArgument, PermissionDenied
from central.services import history
from central.services.base import Caller, Central, CentralSettings
from central.store import BurstUsageRecord
from central_handlers import STORES, central_with_callers, enroll
from edgefleet import histogram_buckets, pki
from edgefleet.v1 import admin_pb2, common_pb2

T0 = 1_900_000_800.0  # a round hour


@pytest.fixture(params=STORES)
def setup(request, tmp_path):
    yield from central_with_callers(tmp_path, request.param, CentralSettings(rollup_labels=("region",)), T0)


def _beat(central: Central, node_id: str, labels: dict[str, str], latencies_ms=(), usage=(), **inference) -> None:
    """One accepted beat at the clock's time, as the heartbeat servicer records it."""
    status = common_pb2.NodeStatus()
    status.inference.requests = len(latencies_ms)
    status.inference.latency_buckets.extend(histogram_buckets.counts(latencies_ms))
    for name, value in inference.items():
        setattr(status.inference, name, value)
    for u in usage:
        status.inference.upstream_usage.add(**u)
    central.beats.record_history(node_id, labels, rollups.figures(status), central.clock())


def test_a_viewer_reads_minute_and_hour_points_per_scope_with_quantiles(setup):
    central, _, viewer = setup
    _beat(central, "a", {"region": "eu"}, [40] * 98 + [900] * 2, generated_tokens=600, queue_depth=4)
    _beat(central, "b", {"region": "us"}, [8] * 10, queue_depth=2)
    central.clock.now += 60
    _beat(central, "a", {"region": "eu"}, [40] * 5)
    central.clock.now += 1
    series = dict(history.metrics_history(central, viewer, ["fleet", "label:region=eu", "node:b", "node:nobody"], 60))
    assert [(p.row.start, p.row.requests, p.row.heartbeats) for p in series["fleet"]] == [
        (T0, 110, 2),
        (T0 + 60, 5, 1),
    ]
    first = series["label:region=eu"][0]
    assert first.row.requests == 100
    assert first.tokens_per_second == 10.0
    assert 25 < first.latency_p50_ms <= 50 and 750 < first.latency_p99_ms <= 1000
    assert first.queue_depth_mean == 4.0
    assert [p.row.requests for p in series["node:b"]] == [10]
    assert series["node:nobody"] == []
    hours = dict(history.metrics_history(central, viewer, ["fleet"], 3600))
    assert [(p.row.start, p.row.requests, p.row.queue_depth_max) for p in hours["fleet"]] == [(T0, 115, 4)]
    # The default range is the last hour of minutes: an explicit range picks a part of it.
    only_second = dict(history.metrics_history(central, viewer, ["fleet"], 60, start=T0 + 60, end=T0 + 120))
    assert [p.row.requests for p in only_second["fleet"]] == [5]


def test_bad_scopes_and_ranges_are_refused_by_name(setup):
    central, _, viewer = setup
    with pytest.raises(InvalidArgument, match=r"'label:site=x'.*not 'site'"):
        history.metrics_history(central, viewer, ["fleet", "label:site=x"], 60)
    with pytest.raises(InvalidArgument, match="'nodes:a'"):
        history.metrics_history(central, viewer, ["nodes:a"], 60)
    with pytest.raises(InvalidArgument, match="at most 1000 scopes"):
        history.metrics_history(central, viewer, [f"node:{i}" for i in range(1001)], 60)
    with pytest.raises(InvalidArgument, match="at least one scope"):
        history.metrics_history(central, viewer, [], 60)
    with pytest.raises(InvalidArgument, match="start must be before end"):
        history.metrics_history(central, viewer, ["fleet"], 60, start=T0, end=T0)
    with pytest.raises(InvalidArgument, match="more than 20000"):
        history.metrics_history(central, viewer, [f"node:{i}" for i in range(1000)], 60)
    with pytest.raises(InvalidArgument, match="resolution 7"):
        convert.history_period_s(7)
    assert convert.history_period_s(admin_pb2.ROLLUP_RESOLUTION_UNSPECIFIED) == 60


def test_an_unknown_caller_may_not_read_history(setup):
    central, _, _ = setup
    stranger = Caller(pki.Identity("admin", "mallory"), "test", "00")
    with pytest.raises(PermissionDenied):
        history.metrics_history(central, stranger, ["fleet"], 60)
    with pytest.raises(PermissionDenied):
        history.list_burst_usage(central, stranger, [])


def test_burst_usage_grouped_by_tenant_class_and_label_highest_cost_first(setup):
    central, _, viewer = setup
    enroll(central, "a", {"region": "eu"})
    enroll(central, "b", {"region": "us"})
    cloud = dict(upstream="cloud", data_class="public")
    _beat(central, "a", {"region": "eu"}, usage=[
        dict(cloud, tenant="acme", requests=2, prompt_tokens=100, completion_tokens=10, cost=0.30, currency="USD"),
        dict(cloud, tenant="", requests=1, prompt_tokens=5, completion_tokens=1),
    ])  # fmt: skip
    _beat(central, "b", {"region": "us"}, usage=[
        dict(cloud, tenant="acme", requests=1, prompt_tokens=50, completion_tokens=5, cost=0.20, currency="EUR"),
        dict(upstream="backup", data_class="internal", tenant="zeta", requests=3, prompt_tokens=9),
    ])  # fmt: skip
    by_upstream = history.list_burst_usage(central, viewer, [])
    assert [(g.upstream, g.group, g.requests, g.prompt_tokens, g.currency) for g in by_upstream] == [
        ("cloud", {}, 4, 155, "mixed"),
        ("backup", {}, 3, 9, ""),
    ]
    assert by_upstream[0].cost == pytest.approx(0.5) and by_upstream[0].last_at == T0
    grouped = history.list_burst_usage(central, viewer, ["tenant", "label:region", "upstream"])
    assert [(g.upstream, g.group, g.requests, g.currency) for g in grouped] == [
        ("cloud", {"tenant": "acme", "label:region": "eu"}, 2, "USD"),
        ("cloud", {"tenant": "acme", "label:region": "us"}, 1, "EUR"),
        ("backup", {"tenant": "zeta", "label:region": "us"}, 3, ""),
        ("cloud", {"tenant": "", "label:region": "eu"}, 1, ""),
    ]
    # Since the next hour: nothing.
    assert history.list_burst_usage(central, viewer, ["data_class"], since=T0 + 3600) == []
    with pytest.raises(InvalidArgument, match="'region'"):
        history.list_burst_usage(central, viewer, ["region"])
    with pytest.raises(InvalidArgument, match="'label:'"):
        history.list_burst_usage(central, viewer, ["label:"])


def test_groups_past_the_row_bound_are_added_up_as_other():
    rows = [(BurstUsageRecord(0, "n", "cloud", f"t{i}", "public", "USD", 1, 1, 1, float(i), 5.0), {}) for i in range(5)]
    groups = history.group_usage(rows, ["tenant"], max_rows=3)
    assert [(g.group["tenant"], g.requests, g.cost) for g in groups] == [
        ("t4", 1, 4.0),
        ("(other)", 3, 3.0),  # t2, t1, t0: sorted by cost like any group, then by requests
        ("t3", 1, 3.0),
    ]


def test_burst_usage_over_several_hours_adds_each_nodes_hours_into_its_label_group(setup):
    central, _, viewer = setup
    for node_id, region in (("a", "eu"), ("b", "eu"), ("c", "us")):
        enroll(central, node_id, {"region": region})
    usage = dict(upstream="cloud", data_class="public", tenant="acme", requests=1, prompt_tokens=10, currency="USD")
    for _ in range(3):
        for node_id, region in (("a", "eu"), ("b", "eu"), ("c", "us")):
            _beat(central, node_id, {"region": region}, usage=[dict(usage, cost=0.25)])
        central.clock.now += 3600
    _beat(central, "c", {"region": "us"}, usage=[dict(usage, currency="EUR", cost=5.0)])
    groups = history.list_burst_usage(central, viewer, ["label:region"])
    assert [(g.group, g.requests, g.prompt_tokens, g.cost, g.currency, g.last_at) for g in groups] == [
        ({"label:region": "us"}, 4, 40, 5.75, "mixed", T0 + 3 * 3600),
        ({"label:region": "eu"}, 6, 60, 1.5, "USD", T0 + 2 * 3600),
    ]
    # Since a time inside the third hour: that hour and the fourth.
    recent = history.list_burst_usage(central, viewer, ["label:region"], since=T0 + 2 * 3600 + 1)
    assert [(g.group["label:region"], g.requests) for g in recent] == [("us", 2), ("eu", 2)]
    response = convert.burst_usage_response(groups)
    assert [(r.group["label:region"], r.requests, r.cost, r.currency) for r in response.rows] == [
        ("us", 4, 5.75, "mixed"),
        ("eu", 6, 1.5, "USD"),
    ]


def test_the_history_answer_carries_every_figure_of_each_point(setup):
    central, _, viewer = setup
    usage = dict(upstream="cloud", data_class="public", tenant="", requests=2, prompt_tokens=7, completion_tokens=3)
    _beat(
        central, "a", {"region": "eu"}, [40] * 98 + [900] * 2, usage=[dict(usage, cost=0.5, currency="USD")],
        generated_tokens=600, prompt_tokens=80, cached_prompt_tokens=20, cache_hits=3, cache_lookups=9,
        queue_depth=4, errors=2,
    )  # fmt: skip
    central.clock.now += 61
    series = history.metrics_history(central, viewer, ["node:a", "fleet", "node:nobody"], 60)
    response = convert.metrics_history_response(series)
    assert [s.scope for s in response.series] == ["node:a", "fleet", "node:nobody"]
    assert len(response.series[2].points) == 0
    (p,) = series[0][1]
    (m,) = response.series[0].points
    assert m.start.ToSeconds() == T0 and m.start.nanos == 0 and m.period_seconds == 60
    r = p.row
    assert (m.requests, m.errors, m.generated_tokens, m.prompt_tokens, m.cached_prompt_tokens) == (100, 2, 600, 80, 20)
    assert (m.cache_hits, m.cache_lookups, m.heartbeats, m.queue_depth_max) == (3, 9, 1, 4)
    assert (m.upstream_requests, m.upstream_prompt_tokens, m.upstream_completion_tokens) == (2, 7, 3)
    assert m.upstream_cost == r.upstream_cost == 0.5
    assert (m.tokens_per_second, m.queue_depth_mean) == (10.0, 4.0)
    assert (m.latency_p50_ms, m.latency_p99_ms) == (p.latency_p50_ms, p.latency_p99_ms)
    assert m.latency_p50_ms == histogram_buckets.quantile(r.latency_buckets, 0.5)
    assert m.latency_p99_ms == histogram_buckets.quantile(r.latency_buckets, 0.99)
    assert (m.ttft_p50_ms, m.ttft_p99_ms) == (0.0, 0.0)
    assert response.series[1].points[0] == m  # one node: the fleet's point is its point
