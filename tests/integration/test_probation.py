"""Probation on the agent: a newly activated version whose error rate breaches the limit in a heartbeat
window is switched back to the previous version by the agent itself, which reports ROLLED_BACK.

The errors are real: with one sequence slot and no admission queue, concurrent clients get 429s,
which count as errors in the agent's window."""

import threading

import httpx
import pytest

from agent_process import start_agent
from central_process import create_token, edgefleet_cli, start_central, wait_for
from edge_agent.control.client import enroll
from edge_agent.control.identity import FleetFiles
from edge_agent.models import resolve_model
from edgefleet.v1 import admin_pb2, common_pb2


@pytest.fixture
def central(tmp_path):
    process = start_central(tmp_path / "central", "--heartbeat-interval", "0.5s")
    yield process
    process.stop()


def activation(central, node_id):
    with central.admin() as admin:
        return admin.call("GetNode", admin_pb2.GetNodeRequest(node_id=node_id)).node.status.activation


def test_a_version_that_breaches_probation_is_switched_back_by_the_agent(central, tmp_path):
    smol = resolve_model("smollm2-135m-instruct", "", tmp_path)
    gemma = resolve_model("gemma-3-270m", "", tmp_path / "gemma")
    edgefleet_cli(central, "models", "push", str(smol.path), "--name", "chat", "--version", "1.0.0")
    edgefleet_cli(central, "models", "push", str(gemma.path), "--name", "chat", "--version", "1.1.0")
    token = create_token(central)
    node = enroll(central.enroll_address, token.ca_fingerprint, token.token, FleetFiles(tmp_path / "agent"))
    agent = start_agent(
        tmp_path / "agent",
        sections={
            "fleet": {"max_backoff_s": 1.0, "probation_s": 300.0, "probation_max_error_rate": 0.1},
            "model": {"n_parallel": 1},
            "scheduler": {"max_queue": 0},
        },
    )
    try:
        edgefleet_cli(central, "nodes", "assign", node.node_id, "chat@1.0.0")
        wait_for(
            lambda: (
                (a := activation(central, node.node_id)).model.version == "1.0.0"
                and a.state == common_pb2.ACTIVATION_STATE_ACTIVE
            ),
            timeout_s=120,
            what="1.0.0 ACTIVE",
        )
        edgefleet_cli(central, "nodes", "assign", node.node_id, "chat@1.1.0")
        wait_for(
            lambda: (
                (a := activation(central, node.node_id)).model.version == "1.1.0"
                and a.state == common_pb2.ACTIVATION_STATE_ACTIVE
            ),
            timeout_s=120,
            what="1.1.0 ACTIVE",
        )

        stop = threading.Event()

        def flood():
            with httpx.Client(timeout=60) as client:
                while not stop.is_set():
                    client.post(
                        agent.base_url + "/v1/completions",
                        headers={"Cache-Control": "no-store"},
                        json={"model": "chat", "prompt": "Go:", "max_tokens": 8},
                    )

        flooders = [threading.Thread(target=flood) for _ in range(6)]
        for t in flooders:
            t.start()
        try:
            rolled = wait_for(
                lambda: (a := activation(central, node.node_id)).state == common_pb2.ACTIVATION_STATE_ROLLED_BACK and a,
                timeout_s=120,
                what="ROLLED_BACK",
            )
        finally:
            stop.set()
            for t in flooders:
                t.join()
        assert rolled.model.version == "1.1.0" and "error rate" in rolled.reason
        assert httpx.get(agent.base_url + "/v1/models").json()["data"][0]["sha256"] == smol.sha256
    finally:
        agent.stop()
