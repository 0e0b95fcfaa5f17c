"""Least privilege on artifacts and reports (issue 16), each over real mTLS to a real central process.

Tried: a node fetching a registered model it is not assigned (refused and audited, the assigned node served);
a heartbeat and a spooled report with a field past its bound, and a status past the size bound (refused with
the field, its length and the limit; the node is served at its next beat and `nodes list` still works); a
spool rebuilt after corruption, numbering from 1 again under a new epoch (its reports are taken, not dropped
as duplicates, and the restart is audited); ListRoutingTotals read in pages.
"""

import hashlib
import json

import pytest

from central_process import create_token, edgefleet_cli, start_central
from edge_agent.control.client import CentralRefused, FleetClient, encode_event, enroll
from edge_agent.control.identity import FleetFiles
from edge_agent.control.spool import ReportSpool, SpooledReport
from edgefleet.v1 import admin_pb2, common_pb2


@pytest.fixture(scope="module")
def central(tmp_path_factory):
    process = start_central(tmp_path_factory.mktemp("bounds") / "central")
    yield process
    process.stop()


@pytest.fixture(scope="module")
def nodes(central, tmp_path_factory):
    """Three enrolled nodes, each with a FleetClient."""
    enrolled = []
    for i in range(3):
        token = create_token(central)
        identity = enroll(
            central.enroll_address, token.ca_fingerprint, token.token, FleetFiles(tmp_path_factory.mktemp(f"n{i}"))
        )
        enrolled.append((identity, FleetClient(identity, rpc_timeout_s=10)))
    yield enrolled
    for _, client in enrolled:
        client.close()


def _audit(central):
    with central.admin() as admin:
        return admin.call("ListAuditEntries", admin_pb2.ListAuditEntriesRequest(limit=10_000)).entries


def _status(**fields) -> bytes:
    return common_pb2.NodeStatus(agent_version="0.1.0", **fields).SerializeToString()


def test_a_node_fetching_a_model_not_assigned_to_it_is_refused_and_audited(central, nodes, tmp_path):
    (mine, my_client), (other, other_client), _ = nodes
    model = tmp_path / "m.gguf"
    model.write_bytes(b"weights" * 1000)
    edgefleet_cli(central, "models", "push", str(model), "--name", "private", "--version", "1")
    sha = hashlib.sha256(model.read_bytes()).hexdigest()
    edgefleet_cli(central, "nodes", "assign", mine.node_id, "private@1")

    assert b"".join(chunk for _, chunk, _ in my_client.fetch_artifact(sha, 0)) == model.read_bytes()
    with pytest.raises(CentralRefused, match=f"PERMISSION_DENIED: node {other.node_id} is not assigned sha256:{sha}"):
        list(other_client.fetch_artifact(sha, 0))
    last = _audit(central)[-1]
    assert (last.actor, last.action, last.outcome) == (
        f"node:{other.node_id}",
        "fleet.fetch_artifact",
        admin_pb2.AUDIT_OUTCOME_REFUSED,
    )
    assert last.detail == f"node {other.node_id} is not assigned sha256:{sha}"
    with pytest.raises(CentralRefused, match="INVALID_ARGUMENT: sha256 must be 64 lowercase hex digits"):
        list(other_client.fetch_artifact("../" * 30, 0))

    edgefleet_cli(central, "nodes", "assign", other.node_id, "private@1")
    assert b"".join(chunk for _, chunk, _ in other_client.fetch_artifact(sha, 0)) == model.read_bytes()


def test_an_oversized_status_is_refused_with_the_reason_and_the_node_is_served_after(central, nodes):
    (node, client), *_ = nodes
    too_long = common_pb2.NodeStatus(agent_version="v" * 100).SerializeToString()
    with pytest.raises(CentralRefused, match=r"INVALID_ARGUMENT: heartbeat refused: status\.agent_version is 100 "):
        client.heartbeat(too_long)
    huge = common_pb2.NodeStatus(agent_version="0.1.0")
    for i in range(60):
        huge.routing.counts.add(data_class=f"class-{i}-" + "c" * 100, route="local", count=1)
    with pytest.raises(CentralRefused, match=r"INVALID_ARGUMENT: heartbeat refused: status is \d+ bytes serialized"):
        client.heartbeat(huge.SerializeToString())
    gpus = common_pb2.NodeStatus(agent_version="0.1.0")
    gpus.system.gpus.extend(common_pb2.GpuMetrics(name="g") for _ in range(17))
    with pytest.raises(CentralRefused, match=r"status\.system\.gpus has 17 entries; at most 16"):
        client.heartbeat(gpus.SerializeToString())

    client.heartbeat(_status(uptime_seconds=42.0))  # the next beat, on a new stream, is taken
    rows = {r["node"]: r for r in json.loads(edgefleet_cli(central, "nodes", "list", "--json"))}
    assert rows[node.node_id]["status"] == "online"
    with central.admin() as admin:
        shown = admin.call("GetNode", admin_pb2.GetNodeRequest(node_id=node.node_id)).node
    assert shown.status.agent_version == "0.1.0" and shown.status.uptime_seconds == 42.0, "nothing oversized kept"


def test_an_oversized_spooled_report_is_refused_naming_its_sequence(central, nodes):
    (_, client), *_ = nodes
    # A real agent's spool clips its reports to the bounds; this one is built past them, as a rogue node would.
    oversized = SpooledReport(7, "event", 1.0, encode_event("k", "m" * 3000))
    with pytest.raises(CentralRefused, match=r"INVALID_ARGUMENT: report refused: report 7: event\.message is 3000 "):
        client.report([oversized], 0)
    client.heartbeat(_status())


def test_a_rebuilt_spool_has_its_reports_taken_not_dropped_as_duplicates(central, nodes, tmp_path):
    _, (node, client), _ = nodes
    path = tmp_path / "spool.db"
    spool = ReportSpool(path)
    for i in range(5):
        spool.append("event", float(i), encode_event("before", f"report {i}"))
    first_epoch = spool.epoch
    assert client.report(spool.peek(100), 0, spool.epoch) == 5
    spool.acknowledge(5)
    spool.close()

    path.write_bytes(b"not a database" * 100)  # the spool is lost; the agent starts a fresh one at 1
    rebuilt = ReportSpool(path)
    assert rebuilt.corrupt_rebuilds == 1 and rebuilt.epoch != first_epoch
    for i in range(2):
        assert rebuilt.append("event", 10.0 + i, encode_event("after", f"report {i}")) == i + 1
    assert client.report(rebuilt.peek(100), 0, rebuilt.epoch) == 2, "acknowledged in the new spool's numbering"
    assert client.report(rebuilt.peek(100), 0, rebuilt.epoch) == 2, "a retried flush adds nothing"
    rebuilt.close()

    with central.admin() as admin:
        reports = admin.call("GetNode", admin_pb2.GetNodeRequest(node_id=node.node_id, report_limit=20)).reports
    assert [r.event.kind for r in reports] == ["before"] * 5 + ["after"] * 2
    assert [r.sequence for r in reports] == list(range(1, 8))
    restarts = [e.detail for e in _audit(central) if "spool restarted" in e.detail]
    assert restarts == [
        f"node {node.node_id}'s spool restarted (epoch {rebuilt.epoch}, was {first_epoch}): "
        "its reports are numbered after those held"
    ]


def test_routing_totals_are_listed_in_pages(central, nodes):
    for i, (_, client) in enumerate(nodes, 1):
        status = common_pb2.NodeStatus(agent_version="0.1.0")
        status.routing.counts.add(data_class="public", route="local", count=i)
        status.routing.audit_sequence = i
        client.heartbeat(status.SerializeToString())
    ids = sorted(identity.node_id for identity, _ in nodes)
    pages, token = [], ""
    with central.admin() as admin:
        while True:
            page = admin.call("ListRoutingTotals", admin_pb2.ListRoutingTotalsRequest(page_size=2, page_token=token))
            pages.append([n.node_id for n in page.nodes])
            token = page.next_page_token
            if not token:
                break
        with pytest.raises(Exception, match="page_size must be at most 200"):
            admin.call("ListRoutingTotals", admin_pb2.ListRoutingTotalsRequest(page_size=201))
    assert pages == [ids[:2], ids[2:]]
    rows = json.loads(edgefleet_cli(central, "audit", "routing", "--json"))
    assert [r["node_id"] for r in rows] == ids
