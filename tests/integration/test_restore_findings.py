"""What a restore lost, learned back from the nodes: real centrals, a real backup and restore, a real agent.

On SQLite, and on PostgreSQL (restored into a second, empty database). Central A serves; models v1 and v2 are pushed
and two nodes enrolled (`old`, `third`), `old` assigned v1. A backup is taken (`edgefleet central backup`). After
it: a real agent (`late`, SmolLM2 on one thread) enrolls and reports; `old` renews its certificate (the agent's own
renewal call) and is assigned v2; v3 is pushed and assigned to `third`. A is killed; the backup is restored into a
new data dir (`edgefleet central restore`) and served as central B on other ports. Then:

- `late`'s running agent, pointed at B with `edge-agent central-addresses set`, is back online without enrolling
  again: B adopts it (its certificate was issued by the fleet CA after the backup);
- `old` beats with its renewed certificate and is accepted (the renewal adopted); its certificate from before the
  renewal is refused from then on; it reports generation 2 on v2, which B's registry holds: v2 is its desired model
  again (generation 3), so it is not sent back to v1;
- `third` reports v3, which the restored registry does not hold: listed as model_missing, and B leaves it without an
  assignment rather than sending it back to the backup's model;
- a node id B never knew, with a certificate the fleet CA issued before the backup, is refused, as is a
  certificate from another fleet's CA (TLS refuses it);
- `edgefleet central restore-report` (table and --json) lists each finding once; `audit verify` passes, with an
  audit entry for each change the findings made to the store.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from agent_process import start_agent
from central.client import AdminCallError
from central.datadir import Authority, initialize
from central_process import CentralProcess, create_token, edgefleet_cli, kill, start_central, wait_for
from edge_agent.control.client import CentralRefused, ControlError, FleetClient, enroll
from edge_agent.control.identity import FleetFiles, FleetIdentity
from edgefleet import pki
from edgefleet.v1 import admin_pb2, common_pb2
from postgres_db import postgres_database

PASSPHRASE = "restore findings test passphrase"
FAST = ("--heartbeat-interval", "0.5s", "--no-superlink")
AGENT_SECTIONS = {"fleet": {"max_backoff_s": 1.0, "rpc_timeout_s": 3.0}, "model": {"n_threads": 1}}


@pytest.fixture
def stoppers():
    """Whatever the test starts (centrals, agents) is stopped afterwards by its pid, last first."""
    started: list = []
    yield started.append
    for thing in reversed(started):
        thing.stop()


def edgefleet(*args: str) -> subprocess.CompletedProcess:
    """The `edgefleet` CLI as its own process, as an operator runs it."""
    return subprocess.run(
        [sys.executable, "-m", "central.cli", *args],
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, "EDGEFLEET_BACKUP_PASSPHRASE": PASSPHRASE},
    )


def push(central: CentralProcess, tmp_path: Path, version: str) -> str:
    artifact = tmp_path / f"tiny-{version}.gguf"
    artifact.write_bytes(os.urandom(4096))
    out = edgefleet_cli(central, "models", "push", str(artifact), "--name", "tiny", "--version", version, "--json")
    return json.loads(out)["sha256"]


def enroll_node(central: CentralProcess, directory: Path) -> FleetIdentity:
    token = create_token(central, region="eu")
    return enroll(central.enroll_address, token.ca_fingerprint, token.token, FleetFiles(directory))


def status(generation: int = 0, activating: tuple[str, str, str] | None = None) -> bytes:
    """A node's status as an agent sends it: the config generation it applied, the model it is switching to."""
    s = common_pb2.NodeStatus(agent_version="test", config_generation=generation)
    if activating:
        name, version, sha = activating
        s.activation.model.CopyFrom(common_pb2.ModelRef(name=name, version=version, sha256=sha))
        s.activation.state = common_pb2.ACTIVATION_STATE_DOWNLOADING
    return s.SerializeToString()


def beat(identity: FleetIdentity, address: str, node_status: bytes = b""):
    """One heartbeat through the agent's own client, over real mTLS with the node's certificate."""
    client = FleetClient(identity, rpc_timeout_s=10, addresses=[address])
    try:
        return client.heartbeat(node_status or status())
    finally:
        client.close()


def renew(identity: FleetIdentity, files: FleetFiles, address: str) -> FleetIdentity:
    """The agent's renewal: a new key, RenewCertificate, the certificate kept in its data dir."""
    client = FleetClient(identity, rpc_timeout_s=10, addresses=[address])
    try:
        key = pki.generate_key()
        files.save_certificate(pki.private_key_pem(key), client.renew_certificate(key))
    finally:
        client.close()
    return files.load()


def issued_before_backup(central: CentralProcess, like: FleetIdentity, node_id: str, backup_at: float):
    """An identity whose certificate the fleet CA issued to `node_id` an hour before the backup."""
    key = pki.generate_key()
    cert = Authority.load(central.paths).issue(
        key.public_key(), pki.Identity("node", node_id), timedelta(days=30), pki.utc(backup_at - 3600)
    )
    return replace(like, node_id=node_id, certificate_pem=pki.certificate_pem(cert), key_pem=pki.private_key_pem(key))


def report(central: CentralProcess) -> dict:
    return json.loads(edgefleet_cli(central, "central", "restore-report", "--json"))


def node_state(central: CentralProcess, node_id: str) -> str:
    """The node's state at central, "" while central has no record of it."""
    with central.admin() as admin:
        try:
            node = admin.call("GetNode", admin_pb2.GetNodeRequest(node_id=node_id)).node
        except AdminCallError as exc:
            assert "no node" in str(exc)
            return ""
    return admin_pb2.NodeState.Name(node.state)


@pytest.fixture(params=["sqlite", "postgresql"])
def stores(request):
    """(A's store, the empty one B is restored into): "" for SQLite files in the data dirs, else two databases."""
    if request.param == "sqlite":
        yield "", ""
        return
    with postgres_database() as a_url, postgres_database() as b_url:
        yield a_url, b_url


def test_a_restore_adopts_what_the_nodes_show_it_lost_and_reports_it(tmp_path, stoppers, stores):
    a_store, b_store = stores
    if a_store:  # on PostgreSQL, heartbeats take central's batched fast path first (central.heartbeats.TargetReads)
        initialize(tmp_path / "a", "127.0.0.1:0", store=a_store)
    a = start_central(tmp_path / "a", *FAST)
    stoppers(a)
    assert report(a) == {"restored": False}
    v1, v2 = push(a, tmp_path, "1.0.0"), push(a, tmp_path, "2.0.0")
    old = enroll_node(a, tmp_path / "old")
    third = enroll_node(a, tmp_path / "third")
    edgefleet_cli(a, "nodes", "assign", old.node_id, "tiny@1.0.0")
    assert beat(old, a.fleet_address).model.sha256 == v1

    archive = tmp_path / "backups" / "a.edgefleet-backup"
    archive.parent.mkdir()
    taken = edgefleet("central", "backup", "--data-dir", str(a.data_dir), "--out", str(archive), "--json")
    assert taken.returncode == 0, taken.stderr
    backup_at = datetime.fromisoformat(json.loads(taken.stdout)["created_at"].replace("Z", "+00:00")).timestamp()

    # After the backup: a real agent enrolls, `old` renews and is assigned v2, v3 goes to `third`.
    late_dir = tmp_path / "late"
    late = enroll_node(a, late_dir)
    agent = start_agent(late_dir, sections=AGENT_SECTIONS)
    stoppers(agent)
    wait_for(lambda: node_state(a, late.node_id) == "NODE_STATE_ONLINE", 120, what="the late agent online at A")
    before_renewal = old
    old = renew(old, FleetFiles(tmp_path / "old"), a.fleet_address)
    assert old.certificate_pem != before_renewal.certificate_pem
    edgefleet_cli(a, "nodes", "assign", old.node_id, "tiny@2.0.0")
    reply = beat(old, a.fleet_address)
    assert (reply.model.sha256, reply.config_generation) == (v2, 2)
    v3 = push(a, tmp_path, "3.0.0")
    edgefleet_cli(a, "nodes", "assign", third.node_id, "tiny@3.0.0")
    assert beat(third, a.fleet_address).config_generation == 1  # the backup has it at 0, unassigned

    kill(a)  # the machine is lost
    b_dir = tmp_path / "b"
    into = ["--store", b_store] if b_store else []
    restored = edgefleet("central", "restore", str(archive), "--data-dir", str(b_dir), *into)
    assert restored.returncode == 0, restored.stderr
    b = CentralProcess(b_dir, list(FAST)).start()
    stoppers(b)

    # The real agent, pointed at B, is adopted: same node id, same certificate, no enrollment.
    pointed = subprocess.run(
        [
            sys.executable,
            "-m",
            "edge_agent.cli",
            "central-addresses",
            "set",
            b.fleet_address,
            "--data-dir",
            str(late_dir),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert pointed.returncode == 0, pointed.stderr
    wait_for(lambda: node_state(b, late.node_id) == "NODE_STATE_ONLINE", 120, what="the late agent online at B")
    assert FleetFiles(late_dir).load().certificate_pem == late.certificate_pem, "not enrolled again"

    # `old`: its renewal adopted, its assignment after the backup taken back; the certificate it replaced refused.
    reply = beat(old, b.fleet_address, status(2, ("tiny", "2.0.0", v2)))
    assert (reply.model.name, reply.model.version, reply.config_generation) == ("tiny", "2.0.0", 3)
    with pytest.raises(CentralRefused, match="replaced at renewal"):
        beat(before_renewal, b.fleet_address)
    # `third`: v3 is not in the restored registry; B leaves it without an assignment.
    reply = beat(third, b.fleet_address, status(1, ("tiny", "3.0.0", v3)))
    assert reply.model is None and reply.config_generation == 2
    # Refused as always: a certificate the fleet CA issued an hour before the backup to a node B does not know (none
    # such is in a real store: nodes are never deleted), and a certificate from another fleet's CA.
    with pytest.raises(CentralRefused, match="not enrolled"):
        beat(issued_before_backup(b, third, "node-0ld0ld00", backup_at), b.fleet_address)
    stranger = start_central(tmp_path / "stranger", *FAST)
    stoppers(stranger)
    foreign = enroll_node(stranger, tmp_path / "foreign")
    with pytest.raises(ControlError):
        beat(replace(foreign, ca_pem=late.ca_pem), b.fleet_address)

    found = report(b)
    assert found["restored"] and found["audit_head_sequence"] > 0
    kinds = sorted((f["kind"], f["node_id"], f["action"]) for f in found["findings"])
    assert kinds == sorted(
        [
            ("operator_actions_after_backup", "", "listed"),
            ("node_enrolled_after_backup", late.node_id, "adopted"),
            ("certificate_renewed_after_backup", old.node_id, "adopted"),
            ("assignment_after_backup", old.node_id, "adopted"),
            ("model_missing", third.node_id, "listed"),
        ]
    )
    assert found["counts"]["node_enrolled_after_backup"] == 1
    table = edgefleet_cli(b, "central", "restore-report")
    assert "from backup" in table and late.node_id in table and "model_missing" in table

    assert json.loads(edgefleet_cli(b, "audit", "verify", "--json"))["intact"]
    entries = json.loads(edgefleet_cli(b, "audit", "list", "--json", "--limit", "1000"))
    adoptions = [e for e in entries if e["action"] == "fleet.restore_adoption"]
    # One per change made to the store: the late node, old's certificate and assignment, third's cleared one.
    assert sorted(e["target"] for e in adoptions) == sorted([late.node_id, old.node_id, old.node_id, third.node_id])
