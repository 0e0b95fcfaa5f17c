"""Central's handlers without gRPC: a real data dir and SQLite store, a clock the test moves."""

import pytest

from central.datadir import Authority, initialize
from central.errors import InvalidArgument, PermissionDenied, Unauthenticated
from central.services import audit, enrollment, fleet, nodes, tokens
from central.services.base import Caller, Central, CentralSettings
from central.store import OperatorRecord, SqliteFleetStore
from edgefleet import pki


class Clock:
    def __init__(self, now=1_900_000_000.0):
        self.now = now

    def __call__(self):
        return self.now


@pytest.fixture
def setup(tmp_path):
    paths = initialize(tmp_path / "central", "127.0.0.1:7443")
    store = SqliteFleetStore(paths.store)
    clock = Clock()
    central = Central(store, Authority.load(paths), CentralSettings(heartbeat_interval_s=15), "", clock)
    # An operator is an admin by its certificate's identity and serial and by its row in the store.
    store.add_operator(OperatorRecord("ops", "admin", "0f", clock.now + 86400, clock.now, "test"))
    admin = Caller(pki.Identity("admin", "ops"), "test", "0f")
    token, _ = tokens.create_token(central, admin, {"region": "eu"}, 3600, 2)
    enrolled = enrollment.enroll(central, Caller(None, "test"), token, pki.make_csr(pki.generate_key()).decode(), "box")
    node_serial = pki.serial_hex(pki.load_certificate(enrolled.certificate_pem))
    node = Caller(pki.Identity("node", enrolled.node_id), "test", node_serial)
    yield central, clock, admin, node, enrolled.node_id
    store.close()


def test_heartbeats_are_buffered_and_admin_reads_see_them(setup):
    central, clock, admin, node, node_id = setup
    fleet.heartbeat(central, node, node_id, b"", clock.now + 100)
    assert central.store.get_node(node_id).last_seen_at is None, "not written per beat"
    [view], _ = nodes.list_nodes(central, admin, {})
    assert view.state == "online" and view.record.last_seen_at == clock.now
    clock.now += 46
    assert nodes.list_nodes(central, admin, {})[0][0].state == "offline"


def test_a_certificate_that_expires_during_the_stream_is_refused(setup):
    central, clock, _admin, node, node_id = setup
    expires_at = clock.now + 10
    fleet.heartbeat(central, node, node_id, b"", expires_at)
    clock.now = expires_at
    with pytest.raises(Unauthenticated, match="expired during the stream"):
        fleet.heartbeat(central, node, node_id, b"", expires_at)
    entry = central.store.list_audit(0, 1000)[-1]
    assert (entry.action, entry.outcome) == ("fleet.heartbeat", "refused")


def test_identity_checks_on_every_message(setup):
    central, clock, admin, node, node_id = setup
    with pytest.raises(PermissionDenied, match="cannot speak as node-other"):
        fleet.heartbeat(central, node, "node-other", b"", clock.now + 100)
    with pytest.raises(PermissionDenied, match="not a node certificate"):
        fleet.heartbeat(central, admin, "ops", b"", clock.now + 100)
    with pytest.raises(PermissionDenied, match="not an admin certificate"):
        nodes.list_nodes(central, node, {})
    nodes.revoke_node(central, admin, node_id, "test")
    with pytest.raises(PermissionDenied, match="revoked"):
        fleet.heartbeat(central, node, node_id, b"", clock.now + 100)
    actions = [(e.actor, e.action, e.outcome) for e in central.store.list_audit(0, 1000)]
    assert (f"node:{node_id}", "node.list", "refused") in actions
    assert ("admin:ops", "node.revoke", "allowed") in actions


def test_nodes_are_listed_in_pages(setup):
    central, _clock, admin, _node, node_id = setup
    token, _ = tokens.create_token(central, admin, {"region": "us"}, 3600, 7)
    for _ in range(7):
        enrollment.enroll(central, Caller(None, "test"), token, pki.make_csr(pki.generate_key()).decode(), "box")
    seen, page_token, pages = [], "", 0
    while True:
        views, page_token = nodes.list_nodes(central, admin, {"region": "us"}, page_size=3, page_token=page_token)
        seen += [v.record.node_id for v in views]
        pages += 1
        if not page_token:
            break
    assert pages == 3 and len(seen) == 7 == len(set(seen)) and seen == sorted(seen)
    assert node_id not in seen, "the selector applies across pages"
    with pytest.raises(InvalidArgument, match="at most 1000"):
        nodes.list_nodes(central, admin, {}, page_size=5000)


def test_routing_counts_from_beats_and_spooled_reports_are_summed_per_node(setup):
    from central.routing import RoutingReport
    from central.store import ReportRecord

    central, clock, admin, node, node_id = setup
    fleet.heartbeat(
        central,
        node,
        node_id,
        b"",
        clock.now + 100,
        RoutingReport({("public", "local"): 4, ("public", "upstream:cloud"): 2}, 6, "h6"),
    )
    fleet.heartbeat(central, node, node_id, b"", clock.now + 100, RoutingReport({("public", "local"): 1}, 7, "h7"))
    fleet.heartbeat(central, node, node_id, b"", clock.now + 100)  # an agent without a routing audit
    spooled = {1: RoutingReport({("restricted", "refused"): 3}, 5, "h5")}
    for _ in range(2):  # a flush retried after a lost acknowledgement
        fleet.report(central, node, node_id, [ReportRecord(1, clock.now - 60, "status", b"")], 0, spooled)
    [totals] = audit.routing_totals(central, admin, "")
    assert totals.counts == [("public", "local", 5), ("public", "upstream:cloud", 2), ("restricted", "refused", 3)]
    assert (totals.audit_sequence, totals.audit_head_hash) == (7, "h7"), "the spooled report's head is older"
    assert audit.routing_totals(central, admin, node_id) == [totals]


def test_malformed_routing_is_left_out_and_the_beat_kept(setup):
    from central.routing import MAX_COUNT, RoutingReport

    central, clock, admin, node, node_id = setup
    fleet.heartbeat(
        central,
        node,
        node_id,
        b"beat",
        clock.now + 100,
        RoutingReport({("public", "local"): MAX_COUNT + 1}, 2**64 - 1, "h"),
    )
    fleet.heartbeat(central, node, node_id, b"beat", clock.now + 100, RoutingReport({("", "local"): 1}, 1, "h"))
    assert audit.routing_totals(central, admin, "") == []
    assert central.store.get_node(node_id).status == b"beat"


def test_routing_totals_are_for_admins_and_known_nodes(setup):
    from central.errors import NotFound

    central, _clock, admin, node, node_id = setup
    with pytest.raises(PermissionDenied, match="not an admin certificate"):
        audit.routing_totals(central, node, node_id)
    with pytest.raises(NotFound, match="no node"):
        audit.routing_totals(central, admin, "node-ghost")
    assert audit.routing_totals(central, admin, node_id) == [], "known, but no routing reported yet"
    entry = central.store.list_audit(0, 1000)[-1]
    assert (entry.actor, entry.action, entry.outcome) == (f"node:{node_id}", "audit.routing", "refused")


def test_routing_reports_merge_counts_and_keep_the_higher_head():
    from central import routing

    a = routing.RoutingReport({("public", "local"): 2}, 9, "h9")
    b = routing.RoutingReport({("public", "local"): 1, ("x", "refused"): 4}, 3, "h3")
    assert routing.merge(a, b) == routing.RoutingReport({("public", "local"): 3, ("x", "refused"): 4}, 9, "h9")
    assert routing.merge(b, a).audit_head_hash == "h9"
    assert routing.problem(a) == ""
    assert "pairs" in routing.problem(routing.RoutingReport({(str(i), "local"): 1 for i in range(2000)}))
    assert "head" in routing.problem(routing.RoutingReport({}, 2**63, "h"))


def test_a_heartbeat_is_decoded_once_into_the_health_the_rollout_controller_reads(setup):
    from central import convert
    from central.services import rollouts
    from edgefleet.v1 import common_pb2

    central, clock, _admin, node, node_id = setup
    status = common_pb2.NodeStatus(
        active_model=common_pb2.ModelRef(sha256="a" * 64),
        activation=common_pb2.Activation(
            model=common_pb2.ModelRef(sha256="b" * 64), state=common_pb2.ACTIVATION_STATE_FAILED, reason="bad bytes"
        ),
        inference=common_pb2.InferenceStats(requests=10, errors=2, latency_p99_ms=30.0),
    )
    fleet.heartbeat(
        central, node, node_id, status.SerializeToString(), clock.now + 100, None, convert.node_health(status)
    )
    central.beats.flush()
    health = central.store.get_node(node_id).health
    about_b = rollouts.observation_of(node_id, health, True, "b" * 64)
    assert (about_b.active_sha256, about_b.activation_state, about_b.activation_reason) == (
        "a" * 64,
        "FAILED",
        "bad bytes",
    )
    assert (about_b.error_rate, about_b.p99_ms, about_b.requests) == (0.2, 30.0, 10)
    about_c = rollouts.observation_of(node_id, health, True, "c" * 64)
    assert (about_c.activation_state, about_c.activation_reason) == ("", ""), "a stale FAILED cannot stop rollout c"
