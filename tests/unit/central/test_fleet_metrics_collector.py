"""central.fleet_metrics without a server: counters from heartbeats' statuses, histograms from their bucket
counts, the cap on label-value combinations, the store snapshot's cache and the pure summaries it is made of.
The listener itself (plain HTTP on loopback, mTLS off it) is tested in test_metrics_listener.py, and the whole
against a real Prometheus in tests/integration/test_prometheus_fleet.py."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from central import federation, fleet_metrics
from central.fleet_metrics import OTHER, FleetMetrics, StoreSnapshot
from central.routing import RoutingReport
from central.store import FederatedRunRecord, NodeRecord
from edgefleet import histogram_buckets
from edgefleet.v1 import common_pb2

ROOT = Path(__file__).resolve().parents[3]


class Clock:
    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def _status(
    requests=0, errors=0, latencies_ms=(), ttfts_ms=(), queue=0, usage=(), **inference
) -> common_pb2.NodeStatus:
    status = common_pb2.NodeStatus()
    inf = status.inference
    inf.requests, inf.errors, inf.queue_depth = requests, errors, queue
    for name, value in inference.items():
        setattr(inf, name, value)
    if latencies_ms:
        inf.latency_buckets.extend(histogram_buckets.counts(latencies_ms))
    if ttfts_ms:
        inf.ttft_buckets.extend(histogram_buckets.counts(ttfts_ms))
    for u in usage:
        inf.upstream_usage.add(**u)
    return status


def _snapshot(**over) -> StoreSnapshot:
    values = {
        "nodes_by_state": {"online": 2, "offline": 1, "enrolled": 0, "revoked": 0},
        "nodes_by_model": {("chat", "1.0.0"): 2},
        "rollouts_by_state": {"running": 1},
        "runs_by_state": {"completed": 1},
    }
    values.update(over)
    return StoreSnapshot(**values)


def _metrics(clock=None, reads=None, **kwargs) -> FleetMetrics:
    def read():
        if reads is not None:
            reads.append(1)
        return _snapshot()

    return FleetMetrics(("region", "site"), 1.0, read, ("rate limited", "unknown token"), clock or Clock(), **kwargs)


def _samples(metrics: FleetMetrics) -> dict[tuple[str, frozenset], float]:
    """(sample name, its labels) -> value, from the text exposition Prometheus reads."""
    text = generate_latest(metrics.registry()).decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def _value(samples, name, **labels) -> float:
    return samples[(name, frozenset(labels.items()))]


# -- pure parts -------------------------------------------------------------------------------------------------------


def test_rollup_keys_become_valid_prometheus_label_names():
    assert fleet_metrics.label_names(("region", "site")) == ("region", "site")
    assert fleet_metrics.label_names(("topology.k8s/zone", "9rack")) == ("topology_k8s_zone", "label_9rack")
    # A name the families use themselves would collide: prefixed.
    assert fleet_metrics.label_names(("tenant", "le", "state")) == ("label_tenant", "label_le", "label_state")
    with pytest.raises(ValueError, match="give the Prometheus label 'a_b' twice"):
        fleet_metrics.label_names(("a.b", "a-b"))


def test_one_status_contributes_every_counter_its_histograms_routing_and_burst():
    status = _status(
        requests=5,
        errors=1,
        latencies_ms=(3, 40, 40, 900, 200_000),
        ttfts_ms=(7, 30),
        generated_tokens=70,
        prompt_tokens=90,
        cache_hits=2,
        cache_lookups=6,
        usage=[
            {
                "upstream": "cloud",
                "tenant": "t1",
                "prompt_tokens": 11,
                "completion_tokens": 4,
                "cost": 0.25,
                "currency": "EUR",
            },
            {"upstream": "cloud", "tenant": "", "prompt_tokens": 3, "cost": float("nan"), "currency": "EUR"},
        ],
    )
    report = RoutingReport({("public", "local"): 4, ("restricted", "local"): 1, ("public", "upstream:cloud"): 0})
    got = fleet_metrics.contributions(status, report)
    buckets = histogram_buckets.BUCKETS
    assert len(got.group) == fleet_metrics.GROUP_WIDTH == 6 + 2 * buckets
    assert got.group[:6] == [5, 1, 70, 90, 2, 6]  # requests, errors, generated, prompt, cache hits, lookups
    assert list(got.group[6 : 6 + buckets]) == histogram_buckets.counts((3, 40, 40, 900, 200_000))
    assert list(got.group[6 + buckets :]) == histogram_buckets.counts((7, 30))
    by = {(k, own): amount for k, own, amount in got.keyed}
    assert by[("routed", ("public", "local"))] == 4 and by[("routed", ("restricted", "local"))] == 1
    assert ("routed", ("public", "upstream:cloud")) not in by  # nothing routed: no contribution
    assert by[("burst_tokens", ("cloud", "t1", "prompt"))] == 11
    assert by[("burst_tokens", ("cloud", "t1", "completion"))] == 4
    assert by[("burst_tokens", ("cloud", "", "prompt"))] == 3
    assert by[("burst_cost", ("cloud", "t1", "EUR"))] == 0.25
    assert ("burst_cost", ("cloud", "", "EUR")) not in by  # a NaN cost is no cost
    # An older agent sends no buckets: zeros; a newer one with more bounds: folded into +Inf.
    older = fleet_metrics.contributions(_status(requests=1), None)
    assert older.group[6:] == [0] * 2 * buckets and older.keyed == []
    newer = _status(requests=1)
    newer.inference.latency_buckets.extend([1] * (buckets + 2))
    assert fleet_metrics.contributions(newer, None).group[6 : 6 + buckets] == [1] * (buckets - 1) + [3]


def test_a_malformed_routing_summary_is_left_out_and_the_rest_counted():
    bad = RoutingReport({("", "local"): 3})
    got = fleet_metrics.contributions(_status(requests=3), bad)
    assert got.keyed == [] and got.group[0] == 3


def test_summaries_of_nodes_rollouts_and_runs():
    def node(node_id, last_seen, model="", revoked=None):
        status = common_pb2.NodeStatus()
        if model:
            status.active_model.name, status.active_model.version = model.split("@")
        return NodeRecord(node_id, {}, "h", 0.0, "t", "s", 0.0, last_seen, status.SerializeToString(), revoked)

    nodes = [
        node("a", 99.0, "chat@1.0.0"),
        node("b", 98.0, "chat@1.0.0"),
        node("c", 97.0, "chat@1.1.0"),
        node("d", 10.0, "chat@1.0.0"),  # offline: not counted by model
        node("e", None),
        node("f", 99.0, "chat@1.0.0", revoked=50.0),
    ]
    states, models = fleet_metrics.summarize_nodes(nodes, heartbeat_interval_s=5.0, now=100.0)
    assert states == {"online": 3, "offline": 1, "enrolled": 1, "revoked": 1}
    assert models == {("chat", "1.0.0"): 2, ("chat", "1.1.0"): 1}

    rows = [("r1", "{}", json.dumps({"phase": p}), 0.0) for p in ("RUNNING", "COMPLETED", "COMPLETED")]
    rows.append(("r4", "{}", "not json", 0.0))
    assert fleet_metrics.rollout_states(rows) == {
        "running": 1, "paused": 0, "completed": 2, "rolled_back": 0, "aborted": 0, "unknown": 1
    }  # fmt: skip

    def run(run_id, imported_at=None, model=""):
        return FederatedRunRecord(run_id, "usage-stats", {}, "admin", 0.0, model, imported_at)

    records = [run(1, 5.0), run(2, 6.0), run(3), run(4), run(5, 7.0)]
    reports = {1: {"status": "completed"}, 2: {"status": "failed"}, 3: {"status": "running"}, 4: None, 5: None}
    assert fleet_metrics.run_states(records, reports) == {
        federation.PENDING: 1,
        federation.WAITING: 0,
        federation.RUNNING: 1,
        federation.COMPLETED: 1,
        federation.FAILED: 1,
        fleet_metrics.FINISHED: 1,  # imported, but this replica cannot read its report
    }


def test_gauge_counts_beyond_the_cap_are_summed_under_other():
    counts = {(f"m{i}", "1"): 10 - i for i in range(6)}
    capped = fleet_metrics.capped_counts(counts, 2, cap=4)
    assert capped == {("m0", "1"): 10, ("m1", "1"): 9, ("m2", "1"): 8, (OTHER, OTHER): 7 + 6 + 5}


# -- the collector ----------------------------------------------------------------------------------------------------


def test_counters_and_histograms_add_up_per_label_group_never_per_node():
    clock = Clock()
    metrics = _metrics(clock)
    eu = {"region": "eu", "site": "fra", "rack": "r1"}
    metrics.heartbeat("node-a", _status(requests=3, errors=1, latencies_ms=(4, 60, 60), ttfts_ms=(20,)), eu)
    metrics.heartbeat("node-b", _status(requests=2, latencies_ms=(4, 3000), queue=4), eu)
    metrics.heartbeat("node-c", _status(requests=7, queue=2), {"region": "us"})  # no site label: ""
    metrics.heartbeat("node-a", _status(requests=1, latencies_ms=(50,), queue=1), eu)
    s = _samples(metrics)
    assert _value(s, "edgefleet_fleet_heartbeats_total") == 4
    assert _value(s, "edgefleet_fleet_requests_total", region="eu", site="fra") == 6
    assert _value(s, "edgefleet_fleet_requests_total", region="us", site="") == 7
    assert _value(s, "edgefleet_fleet_request_errors_total", region="eu", site="fra") == 1
    assert not any("node" in str(labels) or "rack" in str(labels) for _, labels in s)
    # Cumulative buckets in seconds from the per-bucket counts, +Inf = _count; no _sum (heartbeats carry none).
    eu_fra = {"region": "eu", "site": "fra"}
    assert _value(s, "edgefleet_fleet_request_duration_seconds_bucket", le="0.005", **eu_fra) == 2
    assert _value(s, "edgefleet_fleet_request_duration_seconds_bucket", le="0.05", **eu_fra) == 3
    assert _value(s, "edgefleet_fleet_request_duration_seconds_bucket", le="0.1", **eu_fra) == 5
    assert _value(s, "edgefleet_fleet_request_duration_seconds_bucket", le="2.0", **eu_fra) == 5
    assert _value(s, "edgefleet_fleet_request_duration_seconds_bucket", le="3.0", **eu_fra) == 6
    assert _value(s, "edgefleet_fleet_request_duration_seconds_bucket", le="+Inf", **eu_fra) == 6
    assert _value(s, "edgefleet_fleet_request_duration_seconds_count", **eu_fra) == 6
    assert ("edgefleet_fleet_request_duration_seconds_sum", frozenset(eu_fra.items())) not in s
    assert _value(s, "edgefleet_fleet_time_to_first_token_seconds_count", **eu_fra) == 1
    # The queue depth is each node's last report, summed over the nodes beating recently.
    assert _value(s, "edgefleet_fleet_queue_depth", **eu_fra) == 1 + 4
    assert _value(s, "edgefleet_fleet_queue_depth", region="us", site="") == 2
    clock.now += 3.5  # past 3 heartbeat intervals: those nodes are no longer online
    metrics.heartbeat("node-c", _status(queue=9), {"region": "us"})
    s = _samples(metrics)
    assert _value(s, "edgefleet_fleet_queue_depth", region="us", site="") == 9
    assert ("edgefleet_fleet_queue_depth", frozenset(eu_fra.items())) not in s
    assert _value(s, "edgefleet_fleet_requests_total", region="eu", site="fra") == 6  # counters stay


def test_routing_and_burst_counters_carry_their_own_labels_and_the_rollup_labels():
    metrics = _metrics()
    status = _status(usage=[{"upstream": "cloud", "tenant": "acme", "prompt_tokens": 10, "completion_tokens": 5,
                             "cost": 0.5, "currency": "USD"}])  # fmt: skip
    routing = RoutingReport({("public", "upstream:cloud"): 2, ("restricted", "local"): 3})
    metrics.heartbeat("n1", status, {"region": "ap"}, routing)
    metrics.heartbeat("n1", status, {"region": "ap"}, routing)
    s = _samples(metrics)
    ap = {"region": "ap", "site": ""}
    assert _value(s, "edgefleet_fleet_routed_requests_total", data_class="public", route="upstream:cloud", **ap) == 4
    assert _value(s, "edgefleet_fleet_routed_requests_total", data_class="restricted", route="local", **ap) == 6
    tokens = "edgefleet_fleet_burst_tokens_total"
    assert _value(s, tokens, upstream="cloud", tenant="acme", direction="prompt", **ap) == 20
    assert _value(s, tokens, upstream="cloud", tenant="acme", direction="completion", **ap) == 10
    assert _value(s, "edgefleet_fleet_burst_cost_total", upstream="cloud", tenant="acme", currency="USD", **ap) == 1.0


def test_each_family_holds_at_most_the_cap_of_label_combinations_the_rest_under_other():
    metrics = _metrics(max_series=5)
    for i in range(12):
        routing = RoutingReport({(f"class{i}", "local"): 1})
        metrics.heartbeat(f"n{i}", _status(requests=10 + i, latencies_ms=(5,)), {"region": f"r{i}"}, routing)
    s = _samples(metrics)
    requests = {
        dict(labels)["region"]: v for (name, labels), v in s.items() if name == "edgefleet_fleet_requests_total"
    }
    assert len(requests) == 5
    assert requests == {"r0": 10, "r1": 11, "r2": 12, "r3": 13, OTHER: sum(10 + i for i in range(4, 12))}
    assert dict(next(labels for (name, labels) in s if name == "edgefleet_fleet_requests_total" and
                     dict(labels)["region"] == OTHER)) == {"region": OTHER, "site": OTHER}  # fmt: skip
    routed = [dict(labels) for (name, labels) in s if name == "edgefleet_fleet_routed_requests_total"]
    assert len(routed) == 5 and {"data_class": OTHER, "route": OTHER, "region": OTHER, "site": OTHER} in routed
    counts = [v for (name, _), v in s.items() if name == "edgefleet_fleet_request_duration_seconds_count"]
    assert len(counts) == 5 and sum(counts) == 12
    # Refusal reasons a caller can never choose are bounded too; the known ones are there from the start, at 0.
    assert _value(s, "edgefleet_fleet_enrollment_refusals_total", reason="rate limited") == 0
    assert _value(s, "edgefleet_fleet_enrollment_refusals_total", reason="unknown token") == 0


def test_enrollment_outcomes_are_counted_by_reason():
    metrics = _metrics()
    metrics.enrolled()
    metrics.enrolled()
    for reason in ("unknown token", "unknown token", "rate limited"):
        metrics.enrollment_refused(reason)
    s = _samples(metrics)
    assert _value(s, "edgefleet_fleet_enrollments_total") == 2
    assert _value(s, "edgefleet_fleet_enrollment_refusals_total", reason="unknown token") == 2
    assert _value(s, "edgefleet_fleet_enrollment_refusals_total", reason="rate limited") == 1


def test_the_store_is_read_at_most_once_per_ttl_and_a_failed_read_keeps_the_last_figures():
    clock, reads = Clock(), []
    metrics = _metrics(clock, reads)
    for _ in range(20):  # a scrape storm
        s = _samples(metrics)
    assert len(reads) == 1
    assert _value(s, "edgefleet_fleet_nodes", state="online") == 2
    assert _value(s, "edgefleet_fleet_nodes_by_model", model="chat", version="1.0.0") == 2
    assert _value(s, "edgefleet_fleet_rollouts", state="running") == 1
    assert _value(s, "edgefleet_fleet_federated_runs", state="completed") == 1
    clock.now += fleet_metrics.SNAPSHOT_TTL_S
    _samples(metrics)
    assert len(reads) == 2

    def broken():
        raise OSError("store down")

    metrics._read_snapshot = broken
    clock.now += fleet_metrics.SNAPSHOT_TTL_S
    s = _samples(metrics)
    assert _value(s, "edgefleet_fleet_nodes", state="online") == 2


def test_every_central_metric_is_in_the_docs_table():
    source = (ROOT / "central" / "fleet_metrics.py").read_text()
    names = set(re.findall(r'"(edgefleet_fleet_[a-z_]+)"', source))
    assert len(names) == 19
    counters = {f.name for f in fleet_metrics.FAMILIES if f.kind == "counter"}
    counters |= {"edgefleet_fleet_heartbeats", "edgefleet_fleet_enrollments", "edgefleet_fleet_enrollment_refusals"}
    docs = (ROOT / "docs" / "fleet.md").read_text()
    for name in names:
        assert f"`{name}_total`" in docs if name in counters else f"`{name}`" in docs, name
