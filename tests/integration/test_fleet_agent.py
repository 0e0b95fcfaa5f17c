"""A real agent (SmolLM2) enrolled to a real central over mTLS: heartbeats with live figures, offline
detection, spool-and-flush across a central restart, certificate renewal, and revocation.

Central runs with a 0.5 s heartbeat interval so offline detection (3 missed intervals) takes 1.5 s.
"""

import json
import os
import subprocess
import sys
import threading

import httpx
import pytest
from cryptography import x509

from agent_process import start_agent
from central_process import create_token, start_central, wait_for
from edge_agent.control.client import enroll
from edge_agent.control.identity import FleetFiles
from edgefleet.v1 import admin_pb2

FAST_RETRY = {"max_backoff_s": 1.0, "rpc_timeout_s": 3.0}


@pytest.fixture
def central(tmp_path):
    process = start_central(tmp_path / "central", "--heartbeat-interval", "0.5s")
    yield process
    process.stop()


@pytest.fixture
def agents():
    """Starts agents for a test and stops every one by pid afterwards, whatever the test's outcome."""
    started = []

    def start(data_dir, **kwargs):
        agent = start_agent(data_dir, **kwargs)
        started.append(agent)
        return agent

    yield start
    for agent in started:
        agent.stop()


def _enrolled_agent(central, start, data_dir, fleet=None, **labels):
    token = create_token(central, **labels)
    identity = enroll(central.enroll_address, token.ca_fingerprint, token.token, FleetFiles(data_dir))
    agent = start(data_dir, sections={"fleet": {**FAST_RETRY, **(fleet or {})}})
    return identity.node_id, agent


def _node(central, node_id, report_limit=100):
    with central.admin() as admin:
        return admin.call("GetNode", admin_pb2.GetNodeRequest(node_id=node_id, report_limit=report_limit))


def _complete(agent, prompt):
    r = httpx.post(
        agent.base_url + "/v1/completions",
        timeout=60,
        headers={"Cache-Control": "no-store"},
        json={"model": "smollm2-135m-instruct", "prompt": prompt, "max_tokens": 8, "temperature": 0.7},
    )
    assert r.status_code == 200, r.text
    return r


def _agent_state(data_dir):
    return FleetFiles(data_dir).read_state() or {}


def _cli(central, *args):
    env = {**os.environ, "EDGEFLEET_CREDENTIAL": str(central.paths.admin_credential)}
    return subprocess.run(
        [sys.executable, "-m", "central.cli", "--central", central.fleet_address, *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def test_nodes_list_shows_live_figures_from_a_running_agent(central, agents, tmp_path):
    node_id, agent = _enrolled_agent(central, agents, tmp_path / "agent", region="eu", site="fra")
    stop = threading.Event()
    failures = []

    def load():
        i = 0
        while not stop.is_set():
            try:
                _complete(agent, f"Count to {i}:")
            except AssertionError as exc:
                failures.append(exc)
                return
            i += 1

    loader = threading.Thread(target=load)
    loader.start()
    try:

        def busy_row():
            result = _cli(central, "nodes", "list", "--json")
            assert result.returncode == 0, result.stderr
            rows = [r for r in json.loads(result.stdout) if r["node"] == node_id]
            return rows and rows[0]["tokens_per_second"] > 0 and rows[0]["requests"] > 0 and rows[0]

        row = wait_for(busy_row, what="a heartbeat with inference figures")
    finally:
        stop.set()
        loader.join()
    assert not failures, failures
    assert row["status"] == "online" and row["errors"] == 0
    assert row["labels"] == {"region": "eu", "site": "fra"}
    assert row["model"].startswith("smollm2-135m-instruct@")
    assert row["p99_ms"] > 0
    assert row["agent_version"]
    table = _cli(central, "nodes", "list")
    assert node_id in table.stdout and "online" in table.stdout and "region=eu,site=fra" in table.stdout
    shown = _cli(central, "nodes", "show", node_id, "--json")
    system = json.loads(shown.stdout)["node"]["status"]["system"]
    assert int(system["memory_total_bytes"]) > 0 and system["cpu_count"] >= 1
    status = subprocess.run(
        [sys.executable, "-m", "edge_agent.cli", "status", "--json", "--data-dir", str(agent.data_dir)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    report = json.loads(status.stdout)
    assert report["node_id"] == node_id and report["control"]["state"] == "connected"
    assert report["serving"]["ready"] is True


def test_node_goes_offline_after_three_missed_intervals_and_back_online(central, agents, tmp_path):
    node_id, agent = _enrolled_agent(central, agents, tmp_path / "agent")
    wait_for(lambda: _node(central, node_id).node.state == admin_pb2.NODE_STATE_ONLINE, what="online")
    agent.stop()
    wait_for(lambda: _node(central, node_id).node.state == admin_pb2.NODE_STATE_OFFLINE, timeout_s=60, what="offline")
    agent = agents(agent.data_dir, sections={"fleet": FAST_RETRY})
    wait_for(lambda: _node(central, node_id).node.state == admin_pb2.NODE_STATE_ONLINE, what="online again")


def test_reports_are_spooled_while_central_is_down_and_flushed_in_order(central, agents, tmp_path):
    node_id, agent = _enrolled_agent(central, agents, tmp_path / "agent", fleet={"spool_max_reports": 4})
    wait_for(lambda: _agent_state(agent.data_dir).get("state") == "connected", what="connected")
    fleet_address, enroll_address = central.fleet_address, central.enroll_address
    central.stop()
    # The box keeps serving while central is away.
    for i in range(3):
        _complete(agent, f"Offline request {i}:")
    state = wait_for(
        lambda: (s := _agent_state(agent.data_dir)).get("dropped_unreported", 0) >= 1 and s,
        what="the spool to overflow its bound of 4",
    )
    assert state["state"] == "offline" and state["spooled_reports"] == 4
    central.start(fleet_address, enroll_address)

    def flushed():
        response = _node(central, node_id)
        events = [r.event.kind for r in response.reports if r.WhichOneof("body") == "event"]
        return "central_reachable" in events and response

    response = wait_for(flushed, what="the spool to be flushed")
    sequences = [r.sequence for r in response.reports]
    assert sequences == sorted(sequences) and len(set(sequences)) == len(sequences)
    observed = [r.observed_at.ToNanoseconds() for r in response.reports]
    assert observed == sorted(observed)
    assert sum(1 for r in response.reports if r.WhichOneof("body") == "status") >= 3
    assert response.node.dropped_reports >= 1, "the loss is reported, not hidden"
    wait_for(
        lambda: (
            _agent_state(agent.data_dir).get("dropped_unreported") == 0
            and _agent_state(agent.data_dir).get("spooled_reports") == 0
        ),
        what="the spool to empty",
    )


def test_agent_renews_its_certificate_at_two_thirds_of_its_lifetime(agents, tmp_path):
    # Long enough for a busy machine to start the agent and let it beat on its first certificate before the
    # renewal is due (at 20 s), and to renew it in the last third.
    lifetime_s = 30
    central = start_central(tmp_path / "central", "--heartbeat-interval", "0.5s", "--cert-lifetime", f"{lifetime_s}s")
    try:
        node_id, agent = _enrolled_agent(central, agents, tmp_path / "agent")
        first_serial = _node(central, node_id).node.certificate_serial
        cert_file = FleetFiles(agent.data_dir).certificate
        first_pem = cert_file.read_bytes()
        first_expires_ns = x509.load_pem_x509_certificate(first_pem).not_valid_after_utc.timestamp() * 1e9
        wait_for(
            lambda: _node(central, node_id).node.certificate_serial != first_serial,
            timeout_s=lifetime_s + 60,
            what="a renewed certificate",
        )
        # The new certificate works: heartbeats continue past the old one's expiry.
        wait_for(
            lambda: _node(central, node_id).node.last_seen_at.ToNanoseconds() > first_expires_ns,
            timeout_s=lifetime_s + 60,
            what="heartbeats after the first certificate expired",
        )
        assert cert_file.read_bytes() != first_pem
        assert oct(FleetFiles(agent.data_dir).key.stat().st_mode & 0o777) == "0o600"
        with central.admin() as admin:
            entries = admin.call("ListAuditEntries", admin_pb2.ListAuditEntriesRequest(limit=1000)).entries
        assert any(e.action == "fleet.renew_certificate" and e.target == node_id for e in entries)
    finally:
        central.stop()


def test_revoked_agent_is_refused_and_keeps_serving(central, agents, tmp_path):
    node_id, agent = _enrolled_agent(central, agents, tmp_path / "agent")
    wait_for(lambda: _agent_state(agent.data_dir).get("state") == "connected", what="connected")
    result = _cli(central, "nodes", "revoke", node_id, "--reason", "decommissioned")
    assert result.returncode == 0, result.stderr
    state = wait_for(lambda: (s := _agent_state(agent.data_dir)).get("state") == "refused" and s, what="refused")
    assert "revoked" in state["last_error"]
    assert _node(central, node_id).node.state == admin_pb2.NODE_STATE_REVOKED
    _complete(agent, "Still serving after revocation:")
