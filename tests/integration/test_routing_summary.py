"""Routing summaries from an enrolled node to `edgefleet audit routing`, over real mTLS to a real central process.

The node side is the agent's own parts: its enrollment, its RoutingAudit on a real file, encode_status, its
FleetClient's heartbeat stream, and its report spool for the beats it could not deliver. (The daemon passing
the summary into each heartbeat is wired separately; this proves the path from the summary to the operator.)
"""

import json
import time

import grpc
import pytest

from central_process import create_token, edgefleet_cli, start_central
from edge_agent.control.client import FleetClient, ModelInfo, encode_status, enroll
from edge_agent.control.identity import FleetFiles
from edge_agent.control.interval_stats import InferenceWindow
from edge_agent.control.spool import ReportSpool
from edge_agent.control.telemetry import SystemSample
from edge_agent.routing_audit import RoutingAudit, RoutingRecord, audit_path
from edgefleet import channels
from edgefleet.v1 import admin_pb2, admin_pb2_grpc


@pytest.fixture(scope="module")
def central(tmp_path_factory):
    process = start_central(tmp_path_factory.mktemp("central") / "data")
    yield process
    process.stop()


def _decide(audit, data_class, route, n):
    for i in range(n):
        audit.record(
            RoutingRecord(
                time.time(),
                "tenant-a",
                "chat",
                data_class,
                (),
                route,
                "local" if route == "local" else "queue_full",
                200,
                audit.prompt_hash(f"{data_class} prompt {i}"),
            )
        )


def _status(audit):
    """What the daemon's status source sends: this beat's counts and the chain's head."""
    system = SystemSample(0.0, 2, 0.0, 0, 0, 0, 0, (), ())
    window = InferenceWindow(15.0, 0, 0, 0, 0.0, 0.0, 0.0, 0, 0)
    return encode_status(
        "test",
        ModelInfo("m", "1", "0" * 64),
        system,
        window,
        0,
        0,
        1.0,
        time.time(),
        routing=(audit.take_summary(), audit.head),
    )


def test_heartbeat_summaries_add_up_per_node_in_edgefleet_audit_routing(central, tmp_path):
    token = create_token(central)
    files = FleetFiles(tmp_path / "box")
    identity = enroll(central.enroll_address, token.ca_fingerprint, token.token, files)
    audit = RoutingAudit(audit_path(tmp_path / "box"))
    spool = ReportSpool(tmp_path / "spool.db")
    client = FleetClient(identity, rpc_timeout_s=10)
    try:
        _decide(audit, "public", "local", 5)
        _decide(audit, "public", "upstream:cloud", 2)
        client.heartbeat(_status(audit))
        # Central was unreachable for a beat: the agent spooled its status and flushes it on reconnect.
        _decide(audit, "restricted", "refused", 3)
        spool.append("status", time.time(), _status(audit))
        _decide(audit, "public", "local", 1)
        client.heartbeat(_status(audit))
        batch = spool.peek(10)
        for _ in range(2):  # the acknowledgement was lost and the flush is retried
            client.report(batch, 0)
        assert audit.take_summary() == []

        [node] = json.loads(edgefleet_cli(central, "audit", "routing", "--json"))
        assert node["node_id"] == identity.node_id and node["hostname"]
        assert node["counts"] == [
            {"data_class": "public", "route": "local", "requests": 6},
            {"data_class": "public", "route": "upstream:cloud", "requests": 2},
            {"data_class": "restricted", "route": "refused", "requests": 3},
        ]
        assert (node["audit_sequence"], node["audit_head_hash"]) == audit.head, "the box's chain, pinned centrally"

        table = edgefleet_cli(central, "audit", "routing", "--node", identity.node_id)
        assert "NODE" in table and "REQUESTS" in table
        assert any(line.split() == [identity.node_id, "restricted", "refused", "3"] for line in table.splitlines())
        assert f"routing audit at entry {audit.head[0]}" in table
    finally:
        client.close()
        spool.close()
        audit.close()


def test_routing_totals_are_refused_to_a_node_certificate(central, tmp_path):
    token = create_token(central)
    identity = enroll(central.enroll_address, token.ca_fingerprint, token.token, FleetFiles(tmp_path / "box"))
    with (
        channels.mtls_channel(
            central.fleet_address, identity.ca_pem, identity.certificate_pem, identity.key_pem
        ) as channel,
        pytest.raises(grpc.RpcError) as err,
    ):
        admin_pb2_grpc.AdminServiceStub(channel).ListRoutingTotals(
            admin_pb2.ListRoutingTotalsRequest(node_id=identity.node_id), timeout=10
        )
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "no routing reported" in edgefleet_cli(central, "audit", "routing", "--node", identity.node_id)
