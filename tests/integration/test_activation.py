"""An enrolled agent (a real process) switches to the versions central assigns, under client load:
download over mTLS, signature and sha256 checks, load beside the current model, warm-up, atomic switch.

chat@1.0.0 is SmolLM2's bytes and chat@1.1.0 gemma-3-270m's (same name, so clients keep asking for
"chat"); a third version of random bytes cannot load and must fail without disturbing anything.
"""

import os
import threading

import httpx

from agent_process import start_agent
from central_process import create_token, edgefleet_cli, wait_for
from edge_agent.control.client import enroll
from edge_agent.control.identity import FleetFiles
from edge_agent.models import resolve_model
from edgefleet.v1 import admin_pb2, common_pb2


def activation(central, node_id):
    with central.admin() as admin:
        node = admin.call("GetNode", admin_pb2.GetNodeRequest(node_id=node_id)).node
    return node.status.activation


def wait_state(central, node_id, version, state):
    name = common_pb2.ActivationState.Name(state)
    return wait_for(
        lambda: (a := activation(central, node_id)).model.version == version and a.state == state and a,
        timeout_s=120,
        what=f"{version} {name}",
    )


def test_versions_are_activated_live_and_a_broken_one_fails_safely(fleet, tmp_path):
    central, agents = fleet
    smol = resolve_model("smollm2-135m-instruct", "", tmp_path)
    gemma = resolve_model("gemma-3-270m", "", tmp_path / "gemma")
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(os.urandom(1 << 20))
    edgefleet_cli(central, "models", "push", str(smol.path), "--name", "chat", "--version", "1.0.0")
    edgefleet_cli(central, "models", "push", str(gemma.path), "--name", "chat", "--version", "1.1.0")
    edgefleet_cli(central, "models", "push", str(broken), "--name", "chat", "--version", "9.9.9")

    token = create_token(central)
    node = enroll(central.enroll_address, token.ca_fingerprint, token.token, FleetFiles(tmp_path / "agent"))
    agent = start_agent(tmp_path / "agent", sections={"fleet": {"max_backoff_s": 1.0}})
    agents.append(agent)

    edgefleet_cli(central, "nodes", "assign", node.node_id, "chat@1.0.0")
    wait_state(central, node.node_id, "1.0.0", common_pb2.ACTIVATION_STATE_ACTIVE)
    assert httpx.get(agent.base_url + "/v1/models").json()["data"][0]["id"] == "chat"

    # Client load on "chat" throughout the next switches: not one request may fail.
    stop, failures, answered = threading.Event(), [], []

    def load():
        with httpx.Client(timeout=120) as client:
            i = 0
            while not stop.is_set():
                r = client.post(
                    agent.base_url + "/v1/completions",
                    headers={"Cache-Control": "no-store"},
                    json={"model": "chat", "prompt": f"Item {i}:", "max_tokens": 6, "temperature": 0.7},
                )
                (answered if r.status_code == 200 else failures).append(r)
                i += 1

    loaders = [threading.Thread(target=load) for _ in range(3)]
    for t in loaders:
        t.start()
    try:
        edgefleet_cli(central, "nodes", "assign", node.node_id, "chat@1.1.0")
        wait_state(central, node.node_id, "1.1.0", common_pb2.ACTIVATION_STATE_ACTIVE)
        edgefleet_cli(central, "nodes", "assign", node.node_id, "chat@9.9.9")
        failed = wait_state(central, node.node_id, "9.9.9", common_pb2.ACTIVATION_STATE_FAILED)
    finally:
        stop.set()
        for t in loaders:
            t.join()
    assert not failures, [(r.status_code, r.text) for r in failures[:3]]
    assert answered, "the load ran: requests were answered throughout"
    assert failed.reason, "FAILED carries the reason"
    served = httpx.get(agent.base_url + "/v1/models").json()["data"][0]
    assert served["sha256"] == gemma.sha256, "the last good version serves on"

    # A restart (here: kill -9) comes back on the last activated version, from its slot.
    agent.proc.kill()
    agent.proc.wait()
    agent = start_agent(tmp_path / "agent", sections={"fleet": {"max_backoff_s": 1.0}})
    agents.append(agent)
    assert httpx.get(agent.base_url + "/v1/models").json()["data"][0]["sha256"] == gemma.sha256
