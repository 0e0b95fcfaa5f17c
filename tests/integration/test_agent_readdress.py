"""Agents pointed at a central restored elsewhere, and central's addresses handed out on heartbeat streams.

- A real agent (SmolLM2, one thread) reports to a real central A. A copy of A's store is taken with SQLite's
  online backup API while A serves (what a backup holds), then the agent goes on reporting: A stops for a while,
  the agent spools, A comes back and acknowledges what it missed. A is then lost; central B starts on another
  port over a copy of A's data dir with the backed-up store (a restore). `edge-agent central-addresses set`
  points the running agent at B: it reconnects without a restart and without enrolling again (same node id,
  same certificate), sees that B holds less than A acknowledged, and sends again every report A had after the
  backup, so B ends up holding them too.
- Central sends its fleet addresses (`--fleet-addresses`) on the first response of each heartbeat stream only;
  the agent's control loop keeps them in fleet.json and stays connected.
"""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys

import pytest

from agent_process import start_agent
from central_process import CentralProcess, create_token, start_central, wait_for
from edge_agent.config import FleetConfig
from edge_agent.control.client import FleetClient, enroll
from edge_agent.control.identity import FleetFiles
from edge_agent.control.loop import ControlLoop
from edgefleet import pki
from edgefleet.v1 import admin_pb2, common_pb2

FAST = ("--heartbeat-interval", "0.5s")
AGENT_SECTIONS = {"fleet": {"max_backoff_s": 1.0, "rpc_timeout_s": 3.0}, "model": {"n_threads": 1}}


@pytest.fixture
def stoppers():
    """Whatever the test starts (centrals, agents, control loops) is stopped afterwards, last first."""
    started: list = []
    yield started.append
    for thing in reversed(started):
        thing.stop()


def _node(central: CentralProcess, node_id: str):
    with central.admin() as admin:
        return admin.call("GetNode", admin_pb2.GetNodeRequest(node_id=node_id, report_limit=1000))


def _report_keys(response) -> set[tuple[int, int, str]]:
    """(sequence, observed_at in ns, what) of each report central holds: what is the event's kind or 'status'."""
    keys = set()
    for r in response.reports:
        what = r.event.kind if r.WhichOneof("body") == "event" else "status"
        keys.add((r.sequence, r.observed_at.ToNanoseconds(), what))
    return keys


def _events(response) -> list:
    return [r.event for r in response.reports if r.WhichOneof("body") == "event"]


def _state(data_dir) -> dict:
    return FleetFiles(data_dir).read_state() or {}


def _backup_copy(central: CentralProcess, to_dir) -> int:
    """A copy of central's data dir whose store was taken with SQLite's online backup API while central serves;
    the highest report sequence it holds."""
    shutil.copytree(central.data_dir, to_dir, ignore=shutil.ignore_patterns("central.db*", "*-address", "*.log"))
    source = sqlite3.connect(f"file:{central.paths.store}?mode=ro", uri=True)
    target = sqlite3.connect(to_dir / "central.db")
    try:
        source.backup(target)
        return target.execute("SELECT coalesce(max(sequence), 0) FROM reports").fetchone()[0]
    finally:
        source.close()
        target.close()


def test_an_agent_pointed_at_a_restored_central_resends_what_the_backup_lacks(tmp_path, stoppers):
    a = start_central(tmp_path / "central-a", *FAST)
    stoppers(a)
    token = create_token(a)
    agent_dir = tmp_path / "agent"
    identity = enroll(a.enroll_address, token.ca_fingerprint, token.token, FleetFiles(agent_dir))
    certificate_before = FleetFiles(agent_dir).certificate.read_bytes()
    agent = start_agent(agent_dir, sections=AGENT_SECTIONS)
    stoppers(agent)
    wait_for(
        lambda: "agent_started" in {e.kind for e in _events(_node(a, identity.node_id))},
        what="central A to hold the agent's first report",
    )

    backup_top = _backup_copy(a, tmp_path / "central-b")
    assert backup_top >= 1

    # After the backup: A away for a while (the agent spools its beats), back, and acknowledging them.
    fleet_address, enroll_address = a.fleet_address, a.enroll_address
    a.stop()
    wait_for(lambda: _state(agent_dir).get("spooled_reports", 0) >= 2, what="the agent to spool while A is away")
    a.start(fleet_address, enroll_address)
    wait_for(
        lambda: "central_reachable" in {e.kind for e in _events(_node(a, identity.node_id))},
        what="A to hold what the agent spooled",
    )
    wait_for(lambda: _state(agent_dir).get("spooled_reports") == 0, what="the agent's spool to be acknowledged")
    held_by_a = _report_keys(_node(a, identity.node_id))
    after_backup = {k for k in held_by_a if k[0] > backup_top}
    assert len(after_backup) >= 3, f"A acknowledged statuses and events after the backup: {sorted(after_backup)}"
    a.stop()  # A is lost

    b = CentralProcess(tmp_path / "central-b", [*FAST, "--no-superlink"]).start()
    stoppers(b)
    assert b.fleet_address != fleet_address
    assert not {k for k in _report_keys(_node(b, identity.node_id)) if k[0] > backup_top}, "B is the backup"

    done = subprocess.run(
        [sys.executable, "-m", "edge_agent.cli", "central-addresses", "set", b.fleet_address, "--data-dir", agent_dir],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert b.fleet_address in done.stdout and "next reconnect" in done.stdout

    wait_for(
        lambda: (s := _state(agent_dir)).get("state") == "connected" and s.get("central") == b.fleet_address,
        what="the running agent to reconnect to B",
    )
    wait_for(
        lambda: after_backup <= _report_keys(_node(b, identity.node_id)),
        what="B to hold every report A had after the backup",
    )
    response = _node(b, identity.node_id)
    [resent] = [e for e in _events(response) if e.kind == "reports_resent"]
    assert int(resent.attributes["resent"]) >= len(after_backup) and resent.attributes["lost"] == "0"
    assert response.node.dropped_reports == 0, "nothing was lost: every report was still kept on the box"

    # The same node, on the same certificate: nothing enrolled again.
    files = FleetFiles(agent_dir)
    assert files.load().node_id == identity.node_id
    assert files.certificate.read_bytes() == certificate_before
    assert _state(agent_dir)["certificate_serial"] == pki.serial_hex(pki.load_certificate(certificate_before))
    with b.admin() as admin:
        nodes = admin.call("ListNodes", admin_pb2.ListNodesRequest()).nodes
    assert [n.node_id for n in nodes] == [identity.node_id]
    assert files.load_addresses() == (b.fleet_address, (b.fleet_address,))
    assert agent.proc.poll() is None, "the agent was never restarted"


def test_central_hands_its_addresses_on_each_streams_first_response(tmp_path, stoppers):
    central = start_central(tmp_path / "central", *FAST)
    stoppers(central)
    token = create_token(central)
    files = FleetFiles(tmp_path / "agent")
    enroll(central.enroll_address, token.ca_fingerprint, token.token, files)
    assert files.load().fleet_addresses == (), "one SQLite central hands out no list"

    listed = (central.fleet_address, "standby.invalid:7443")
    central.args.extend(["--fleet-addresses", ",".join(listed)])
    central.restart()  # the same ports, now announcing a list

    status = common_pb2.NodeStatus(agent_version="test").SerializeToString()
    client = FleetClient(files.load(), rpc_timeout_s=10)
    try:
        first, second = client.heartbeat(status), client.heartbeat(status)
    finally:
        client.close()
    assert (first.fleet_addresses, first.first_on_stream) == (listed, True)
    assert (second.fleet_addresses, second.first_on_stream) == ((), False)

    loop = ControlLoop(files, FleetConfig(rpc_timeout_s=10), lambda: status)
    loop.start()
    stoppers(loop)
    wait_for(lambda: files.load_addresses()[1] == listed, what="the loop to keep central's list in fleet.json")
    wait_for(lambda: _state(files.root.parent).get("central_addresses") == list(listed), what="the list dialled")
    assert loop.state == "connected" and loop.client.address == central.fleet_address
