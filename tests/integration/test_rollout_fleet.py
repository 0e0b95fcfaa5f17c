"""A canary rollout across three real agents under client load, then a broken version rolled back
automatically. chat@1.0.0 is SmolLM2's bytes, chat@1.1.0 gemma-3-270m's, chat@9.9.9 random bytes that
cannot load. Not one client request may fail throughout."""

import json
import os
import threading

import httpx

from agent_process import start_agent
from central_process import create_token, edgefleet_cli, wait_for
from edge_agent.control.client import enroll
from edge_agent.control.identity import FleetFiles
from edge_agent.models import resolve_model
from edgefleet.v1 import admin_pb2

FLEET = {"fleet": {"max_backoff_s": 1.0}, "model": {"n_parallel": 2, "n_ctx": 512}}


def rollout(central, rollout_id):
    with central.admin() as admin:
        return admin.call("GetRollout", admin_pb2.GetRolloutRequest(rollout_id=rollout_id)).rollout


def test_canary_rollout_then_automatic_rollback(fleet, tmp_path):
    central, agents = fleet
    smol = resolve_model("smollm2-135m-instruct", "", tmp_path)
    gemma = resolve_model("gemma-3-270m", "", tmp_path / "gemma")
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(os.urandom(1 << 20))
    for path, version in ((smol.path, "1.0.0"), (gemma.path, "1.1.0"), (broken, "9.9.9")):
        edgefleet_cli(central, "models", "push", str(path), "--name", "chat", "--version", version)

    nodes = []
    for i in range(3):
        token = create_token(central, region="eu")
        node = enroll(central.enroll_address, token.ca_fingerprint, token.token, FleetFiles(tmp_path / f"a{i}"))
        agents.append(start_agent(tmp_path / f"a{i}", sections=FLEET))
        nodes.append(node.node_id)
        edgefleet_cli(central, "nodes", "assign", node.node_id, "chat@1.0.0")

    def all_on(version):
        with central.admin() as admin:
            listed = admin.call("ListNodes", admin_pb2.ListNodesRequest()).nodes
        return all(n.status.activation.model.version == version and n.status.activation.state == 4 for n in listed)

    wait_for(lambda: all_on("1.0.0"), timeout_s=180, what="every node ACTIVE on chat@1.0.0")

    stop, failures, answered = threading.Event(), [], []

    def load(agent):
        with httpx.Client(timeout=120) as client:
            i = 0
            while not stop.is_set():
                r = client.post(
                    agent.base_url + "/v1/completions",
                    headers={"Cache-Control": "no-store"},
                    json={"model": "chat", "prompt": f"Item {i}:", "max_tokens": 4},
                )
                (answered if r.status_code == 200 else failures).append(r)
                i += 1

    loaders = [threading.Thread(target=load, args=(agent,)) for agent in agents]
    for t in loaders:
        t.start()
    try:
        started = json.loads(
            edgefleet_cli(
                central,
                "rollout",
                "start",
                "chat@1.1.0",
                "--selector",
                "region=eu",
                "--canary",
                "33",
                "--steps",
                "100",
                "--bake",
                "2s",
                "--max-p99-ms",
                "120000",
                "--json",
            )
        )
        assert started["phase"] == "RUNNING"
        canary = [n["node"] for n in started["nodes"] if n["in_step"]]
        assert len(canary) == 1 and [n["desired"] for n in started["nodes"] if not n["in_step"]] == ["1.0.0"] * 2
        done = wait_for(
            lambda: (r := rollout(central, started["rollout"])).phase in ("COMPLETED", "ROLLED_BACK") and r,
            timeout_s=300,
            what="the rollout of chat@1.1.0 to finish",
        )
        assert done.phase == "COMPLETED", done.reason
        wait_for(lambda: all_on("1.1.0"), timeout_s=120, what="every node ACTIVE on chat@1.1.0")

        bad = json.loads(
            edgefleet_cli(
                central,
                "rollout",
                "start",
                "chat@9.9.9",
                "--selector",
                "region=eu",
                "--canary",
                "33",
                "--steps",
                "100",
                "--bake",
                "2s",
                "--max-p99-ms",
                "120000",
                "--json",
            )
        )
        ended = wait_for(
            lambda: (r := rollout(central, bad["rollout"])).phase in ("COMPLETED", "ROLLED_BACK") and r,
            timeout_s=180,
            what="the broken rollout to end",
        )
    finally:
        stop.set()
        for t in loaders:
            t.join()
    assert ended.phase == "ROLLED_BACK" and "FAILED" in ended.reason
    assert all(n.desired_version == "1.1.0" for n in ended.nodes), "every node is back on its previous version"
    assert not failures, [(r.status_code, r.text[:200]) for r in failures[:3]]
    assert answered, "the load ran: requests were answered throughout"
    audit_log = edgefleet_cli(central, "audit", "list", "--limit", "1000", "--json")
    decisions = [e["detail"] for e in json.loads(audit_log) if e["action"] == "rollout.decision"]
    assert any("promoted" in d for d in decisions) and any("rolled back" in d for d in decisions)
