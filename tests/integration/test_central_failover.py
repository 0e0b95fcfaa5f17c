"""No single point of failure: three central replicas on one real PostgreSQL, five real agents that know
every replica's address, and a canary rollout in progress. The leader is killed with SIGKILL once the
canary step is promoted, and the next leader once the second step is. The last replica finishes the
rollout; every step is promoted exactly once (the audit log says so, and its chain verifies); no node
shows offline for longer than the detection window; every report the agents spooled reaches central.

chat@1.0.0 is SmolLM2's bytes and chat@1.1.0 gemma-3-270m's; the blobs live in one directory every
replica is given (--blobs), as a shared mount would be.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections import Counter

import pytest

from agent_process import start_agent
from central import liveness
from central_process import central_status, create_token, edgefleet_cli, kill, start_replicas, wait_for
from edge_agent.control.client import enroll
from edge_agent.control.identity import FleetFiles
from edge_agent.models import resolve_model
from edgefleet.v1 import admin_pb2
from postgres_db import postgres_url  # noqa: F401 - the fixture

HEARTBEAT_S = 2.0
DETECTION_WINDOW_S = liveness.MISSED_INTERVALS_OFFLINE * HEARTBEAT_S
NODES = 5


def admin_call(replicas, method, request):
    """The call on the first replica that answers (the others may be dead by now)."""
    errors = []
    for replica in replicas:
        if replica.proc.poll() is not None:
            continue
        try:
            with replica.admin() as admin:
                return admin.call(method, request)
        except Exception as exc:  # noqa: BLE001 - a replica dying under the call; try the next
            errors.append(exc)
    raise AssertionError(f"no replica answered {method}: {errors}")


def leader(replicas) -> str:
    status = central_status(replicas[0].data_dir)
    live = [r["replica"] for r in status["replicas"] if r["state"] == "leader"]
    return live[0] if live else ""


class OfflineWatch(threading.Thread):
    """Samples every node's liveness as central reports it; the longest run each spent offline."""

    def __init__(self, replicas):
        super().__init__(daemon=True)
        self.replicas = replicas
        self.stop = threading.Event()
        self.offline_since: dict[str, float] = {}
        self.longest: Counter = Counter()

    def run(self):
        while not self.stop.is_set():
            try:
                nodes = admin_call(self.replicas, "ListNodes", admin_pb2.ListNodesRequest()).nodes
            except AssertionError:
                nodes = []
            now = time.monotonic()
            for n in nodes:
                if n.state == admin_pb2.NODE_STATE_OFFLINE:
                    since = self.offline_since.setdefault(n.node_id, now)
                    self.longest[n.node_id] = max(self.longest[n.node_id], now - since)
                else:
                    self.offline_since.pop(n.node_id, None)
            self.stop.wait(0.25)


def promotions(replicas) -> list[str]:
    entries = admin_call(replicas, "ListAuditEntries", admin_pb2.ListAuditEntriesRequest(limit=10_000)).entries
    return [e.detail for e in entries if e.action == "rollout.decision"]


def spooled_through(agent_dir) -> int:
    """The last sequence the agent's spool handed out (acknowledged reports are deleted from it)."""
    with sqlite3.connect(FleetFiles(agent_dir).spool) as db:
        row = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'reports'").fetchone()
    return row[0] if row else 0


@pytest.mark.timeout(900)
def test_rollout_completes_with_the_leader_killed_twice(tmp_path, postgres_url):  # noqa: F811
    (tmp_path / "shared-blobs").mkdir()
    replicas = start_replicas(
        tmp_path / "central",
        postgres_url,
        3,
        "--heartbeat-interval",
        f"{HEARTBEAT_S:g}s",
        "--blobs",
        str(tmp_path / "shared-blobs"),
    )
    agents, watch = [], OfflineWatch(replicas)
    try:
        first = replicas[0]
        smol = resolve_model("smollm2-135m-instruct", "", tmp_path)
        gemma = resolve_model("gemma-3-270m", "", tmp_path / "gemma")
        edgefleet_cli(first, "models", "push", str(smol.path), "--name", "chat", "--version", "1.0.0")
        edgefleet_cli(replicas[1], "models", "push", str(gemma.path), "--name", "chat", "--version", "1.1.0")
        addresses = [r.fleet_address for r in replicas]
        fleet = {
            "fleet": {"max_backoff_s": 1.0},
            "central": {"addresses": addresses},
            "model": {"n_parallel": 1, "n_ctx": 256},
        }
        nodes = []
        for i in range(NODES):
            via = replicas[i % 3]
            token = create_token(via, region="eu")
            node = enroll(via.enroll_address, token.ca_fingerprint, token.token, FleetFiles(tmp_path / f"a{i}"))
            agents.append(start_agent(tmp_path / f"a{i}", sections=fleet))
            nodes.append(node.node_id)
            edgefleet_cli(via, "nodes", "assign", node.node_id, "chat@1.0.0")

        def all_on(version):
            listed = admin_call(replicas, "ListNodes", admin_pb2.ListNodesRequest()).nodes
            return len(listed) == NODES and all(
                n.status.activation.model.version == version and n.status.activation.state == 4 for n in listed
            )

        wait_for(lambda: all_on("1.0.0"), timeout_s=240, what="every node ACTIVE on chat@1.0.0")
        watch.start()
        started = json.loads(
            edgefleet_cli(
                replicas[2],
                "rollout",
                "start",
                "chat@1.1.0",
                "--selector",
                "region=eu",
                "--canary",
                "20",
                "--steps",
                "60,100",
                "--bake",
                "2s",
                "--max-p99-ms",
                "120000",
                "--json",
            )
        )
        rollout_id = started["rollout"]

        for promoted in (1, 2):
            wait_for(
                lambda n=promoted: sum("promoted" in d for d in promotions(replicas)) >= n,
                timeout_s=300,
                what=f"promotion {promoted}",
            )
            chief = wait_for(lambda: leader([r for r in replicas if r.proc.poll() is None]), what="a leader")
            kill(next(r for r in replicas if r.fleet_address == chief))

        survivor = next(r for r in replicas if r.proc.poll() is None)
        done = wait_for(
            lambda: (
                (
                    r := admin_call(replicas, "GetRollout", admin_pb2.GetRolloutRequest(rollout_id=rollout_id)).rollout
                ).phase
                in ("COMPLETED", "ROLLED_BACK")
                and r
            ),
            timeout_s=300,
            what="the rollout to finish on the last replica",
        )
        assert done.phase == "COMPLETED", done.reason
        wait_for(lambda: all_on("1.1.0"), timeout_s=180, what="every node ACTIVE on chat@1.1.0")
        watch.stop.set()
        watch.join(10)

        decisions = promotions(replicas)
        promoted = Counter(d.split(" promoted")[0] for d in decisions if " promoted after " in d)
        assert promoted == Counter({"step 1 (20%)": 1, "step 2 (60%)": 1, "step 3 (100%)": 1}), decisions
        assert sum("completed" in d for d in decisions) == 1, decisions
        verified = admin_call([survivor], "VerifyAudit", admin_pb2.VerifyAuditRequest())
        assert verified.intact, verified.problem
        assert max(watch.longest.values(), default=0.0) < DETECTION_WINDOW_S, dict(watch.longest)

        # Every report spooled so far reaches the last replica, none missing.
        for i, node_id in enumerate(nodes):
            through = spooled_through(tmp_path / f"a{i}")

            def held(node_id=node_id, through=through):
                reply = admin_call([survivor], "GetNode", admin_pb2.GetNodeRequest(node_id=node_id, report_limit=1000))
                sequences = [r.sequence for r in reply.reports]
                return sequences and sequences[-1] >= through and sequences

            sequences = wait_for(held, timeout_s=60, what=f"{node_id}'s reports through {through}")
            assert sequences == list(range(sequences[0], sequences[-1] + 1)), f"{node_id}: a report went missing"
            assert sequences[0] == 1
    finally:
        watch.stop.set()
        for agent in agents:
            agent.stop()
        for replica in replicas:
            replica.stop()
