"""Several `central serve` replicas on one real PostgreSQL, each a real process on its own ports.

Tried: a revocation made on one replica against the node's open heartbeat stream on another; twenty
enrollments racing over two replicas for a ten-use token; `central status` naming the leader; the leader
killed with SIGKILL (no clean hand-over) and a follower taking over; a clean stop handing the lock on.
The failover under a live rollout with real agents is tests/integration/test_central_failover.py.
"""

from __future__ import annotations

import queue
import threading

import grpc
import pytest

from central_process import central_status as status_of
from central_process import create_token, kill, start_replicas, wait_for
from edge_agent.control.client import EnrollError, enroll
from edge_agent.control.identity import FleetFiles
from edgefleet import channels
from edgefleet.v1 import admin_pb2, common_pb2, fleet_pb2, fleet_pb2_grpc
from postgres_db import postgres_url  # noqa: F401 - the fixture


@pytest.fixture
def replicas(tmp_path, postgres_url):  # noqa: F811
    started = start_replicas(tmp_path, postgres_url, 2, "--heartbeat-interval", "0.5s")
    yield started
    for replica in started:
        replica.stop()


def central_status(replica) -> dict:
    return status_of(replica.data_dir)


def leader_of(replicas) -> str:
    """The replica id `central status` names as leader, once one leads."""

    def leader():
        status = central_status(replicas[0])
        return (
            status["leader"]["replica"]
            if status["leader"] and any(r["state"] == "leader" for r in status["replicas"])
            else ""
        )

    return wait_for(leader, timeout_s=30, what="a leader")


def test_status_lists_every_replica_and_one_leader(replicas):
    leader = leader_of(replicas)
    status = central_status(replicas[1])
    assert status["store"].startswith("postgresql://")
    assert {r["fleet_address"] for r in status["replicas"]} == {r.fleet_address for r in replicas}
    assert [r["state"] for r in status["replicas"]].count("leader") == 1
    assert leader in {r.fleet_address for r in replicas}
    # The leader says so in its log; so does the follower.
    by_address = {r.fleet_address: r for r in replicas}
    wait_for(lambda: "is the leader (term" in by_address[leader].log(), what="the leader's log line")
    follower = next(r for r in replicas if r.fleet_address != leader)
    assert "follower" in follower.log()


def test_revocation_on_one_replica_refuses_the_node_on_another_at_its_next_message(replicas, tmp_path):
    a, b = replicas
    token = create_token(a)
    files = FleetFiles(tmp_path / "node")
    node = enroll(a.enroll_address, token.ca_fingerprint, token.token, files)
    channel = channels.mtls_channel(
        b.fleet_address, files.ca.read_bytes(), files.certificate.read_bytes(), files.key.read_bytes()
    )
    outbox: queue.Queue = queue.Queue()

    def requests():
        while (request := outbox.get()) is not None:
            yield request

    beat = fleet_pb2.HeartbeatRequest(node_id=node.node_id, status=common_pb2.NodeStatus(agent_version="test"))
    stream = fleet_pb2_grpc.FleetServiceStub(channel).Heartbeat(requests(), timeout=60)
    try:
        outbox.put(beat)
        next(stream)  # accepted by replica B while enrolled
        with a.admin() as admin:
            admin.call("RevokeNode", admin_pb2.RevokeNodeRequest(node_id=node.node_id, reason="stolen box"))
        outbox.put(beat)  # the same stream on replica B, the same unexpired certificate
        with pytest.raises(grpc.RpcError) as refused:
            next(stream)
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "revoked" in refused.value.details()
    finally:
        outbox.put(None)
        channel.close()
    with b.admin() as admin:
        entries = admin.call("ListAuditEntries", admin_pb2.ListAuditEntriesRequest(limit=10_000)).entries
    refusals = [e for e in entries if e.action == "fleet.heartbeat" and e.target == node.node_id]
    assert [e.outcome for e in refusals] == [admin_pb2.AUDIT_OUTCOME_REFUSED]


def test_two_replicas_racing_twenty_enrollments_for_a_ten_use_token_enroll_exactly_ten(replicas, tmp_path):
    a, b = replicas
    token = create_token(a, uses=10)
    start = threading.Barrier(20)
    enrolled, refused, other = [], [], []

    def attempt(i: int) -> None:
        replica = replicas[i % 2]
        start.wait()
        try:
            enrolled.append(
                enroll(replica.enroll_address, token.ca_fingerprint, token.token, FleetFiles(tmp_path / f"n{i}"))
            )
        except EnrollError as exc:
            (refused if "token" in str(exc) else other).append(str(exc))

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not other, other
    assert (len(enrolled), len(refused)) == (10, 10)
    for replica in (a, b):
        with replica.admin() as admin:
            listed = admin.call("ListNodes", admin_pb2.ListNodesRequest()).nodes
            tokens = admin.call("ListTokens", admin_pb2.ListTokensRequest()).tokens
            verified = admin.call("VerifyAudit", admin_pb2.VerifyAuditRequest())
        assert {n.node_id for n in listed} == {n.node_id for n in enrolled}
        assert [t.uses_left for t in tokens] == [0]
        assert verified.intact, verified.problem


def test_a_follower_takes_over_when_the_leader_is_killed(replicas):
    leader = leader_of(replicas)
    term = central_status(replicas[0])["leader"]["term"]
    dead = next(r for r in replicas if r.fleet_address == leader)
    survivor = next(r for r in replicas if r is not dead)
    kill(dead)
    wait_for(
        lambda: central_status(survivor)["leader"]["replica"] == survivor.fleet_address,
        timeout_s=30,
        what="the survivor to lead",
    )
    status = central_status(survivor)
    assert status["leader"]["term"] == term + 1
    assert {r["replica"]: r["state"] for r in status["replicas"]}[survivor.fleet_address] == "leader"


def test_a_clean_stop_hands_the_lock_on_and_leaves_the_list(replicas):
    leader = leader_of(replicas)
    stopping = next(r for r in replicas if r.fleet_address == leader)
    survivor = next(r for r in replicas if r is not stopping)
    assert stopping.stop() == 0
    wait_for(
        lambda: central_status(survivor)["leader"]["replica"] == survivor.fleet_address,
        timeout_s=30,
        what="the survivor to lead",
    )
    assert [r["replica"] for r in central_status(survivor)["replicas"]] == [survivor.fleet_address]


def test_a_replica_with_another_fleets_data_dir_refuses_the_store(replicas, tmp_path, postgres_url):  # noqa: F811
    from central.datadir import DataDirError, initialize
    from central_process import CentralProcess

    # `init` on a database that holds a fleet is refused outright...
    with pytest.raises(DataDirError, match="already holds a fleet"):
        initialize(tmp_path / "stranger", "127.0.0.1:0", store=postgres_url)
    # ...and a data dir of another CA pointed at it with --store does not serve.
    initialize(tmp_path / "other", "127.0.0.1:0")
    with pytest.raises(RuntimeError, match=r"exited with 2:[\s\S]*belongs to the fleet whose CA is"):
        CentralProcess(tmp_path / "other", ["--store", postgres_url, "--no-superlink"]).start()
    status = central_status(replicas[0])
    assert len(status["replicas"]) == 2, "the stranger never joined"
