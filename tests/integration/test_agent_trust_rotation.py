"""Signing-key and CA rotation across a real central and three real agents (issue 18), as an operator runs them
with the `edgefleet` CLI.

Signing key: rotated while a rollout is in flight, no agent refuses a manifest (they are re-signed and the new
key is announced by a statement the old key signed), every agent trusts both keys through the overlap and only
the new one after `keys finish-signing`; the active slot still verifies then (it took central's new signature),
also across a restart, while a manifest signed by the retired key or by a key never announced is refused.

CA: `ca rotate --now` has every agent trust the new CA through its cross certificate and renew onto it at once,
online throughout; `ca finish` refuses while a node still holds only an old-CA certificate (a node enrolled
before the rotation that never renewed), `--force` retires the old CA, the agents drop it, and that node's
certificate is then refused in the TLS handshake, while the same call with an agent's new certificate works.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time

import grpc
import httpx
import pytest

from agent_process import start_agent
from central import datadir
from central.store import open_store
from central_process import create_token, edgefleet_cli, start_central, wait_for
from edge_agent.control.artifacts import ArtifactError, ModelSlots
from edge_agent.control.client import ControlError, FleetClient, enroll
from edge_agent.control.identity import FleetFiles
from edge_agent.control.trust_state import TrustFiles
from edge_agent.models import resolve_model
from edgefleet import channels, manifest, pki, trust
from edgefleet.v1 import admin_pb2, common_pb2, fleet_pb2, fleet_pb2_grpc
from fleet_activity import assign, push, wait_active

# One decoding thread per agent: three agents share two cores (docs/configuration.md, model.n_threads).
FLEET = {"fleet": {"max_backoff_s": 1.0}, "model": {"n_threads": 1, "n_parallel": 1, "n_ctx": 512}}


@pytest.fixture(scope="module")
def rotating_fleet(tmp_path_factory):
    """A central (0.5 s heartbeats) and three agents, each ACTIVE on chat@1.0.0 (SmolLM2's bytes); chat@2.0.0 is
    the same bytes pushed again, for a cheap rollout. Every process is stopped by pid afterwards."""
    root = tmp_path_factory.mktemp("rotation")
    central = start_central(root / "central", "--heartbeat-interval", "0.5s")
    agents = []
    try:
        smol = resolve_model("smollm2-135m-instruct", "", root)
        push(central, smol.path, "chat", "1.0.0")
        push(central, smol.path, "chat", "2.0.0")
        nodes = []
        for i in range(3):
            token = create_token(central, region="eu")
            node = enroll(central.enroll_address, token.ca_fingerprint, token.token, FleetFiles(root / f"a{i}"))
            agents.append(start_agent(root / f"a{i}", sections=FLEET))
            nodes.append(node.node_id)
            assign(central, node.node_id, "chat@1.0.0")
        for node_id in nodes:
            wait_active(central, node_id, "chat@1.0.0")
        yield central, agents, nodes, root
    finally:
        for agent in agents:
            agent.stop()
        central.stop()


def _trust(central) -> admin_pb2.GetTrustResponse:
    with central.admin() as admin:
        return admin.call("GetTrust", admin_pb2.GetTrustRequest())


def _agent_trust(agent):
    return TrustFiles(agent.data_dir / "fleet").load()


def _signing_key_ids(agent) -> set[str]:
    return {k.key_id for k in _agent_trust(agent).signing_keys}


def _rollout_phase(central, rollout_id: str) -> str:
    with central.admin() as admin:
        return admin.call("GetRollout", admin_pb2.GetRolloutRequest(rollout_id=rollout_id)).rollout.phase


def _rollout_ended(central, agents, rollout_id: str) -> str:
    """The rollout's phase once it ended, "" before. A step completes only on requests the new version answered,
    so each poll asks every agent for two tokens."""
    for agent in agents:
        r = httpx.post(
            agent.base_url + "/v1/completions",
            headers={"Cache-Control": "no-store"},
            json={"model": "chat", "prompt": "Rotate:", "max_tokens": 2},
            timeout=120,
        )
        assert r.status_code == 200, r.text
    phase = _rollout_phase(central, rollout_id)
    return phase if phase in ("COMPLETED", "ROLLED_BACK", "ABORTED") else ""


def _last_heartbeat(central, node_id: str) -> float:
    with central.admin() as admin:
        node = admin.call("GetNode", admin_pb2.GetNodeRequest(node_id=node_id)).node
    return node.last_seen_at.ToNanoseconds() / 1e9


def _refusals(agent) -> float:
    return agent.metrics()["edgefleet_trust_updates_refused_total"]


def test_signing_key_rotation_with_a_rollout_in_flight(rotating_fleet):
    central, agents, nodes, _ = rotating_fleet
    old_key = pki.load_private_key(central.paths.signing_key.read_bytes())
    started = json.loads(
        edgefleet_cli(
            central, "rollout", "start", "chat@2.0.0", "--selector", "region=eu", "--canary", "33",
            "--steps", "100", "--bake", "2s", "--max-p99-ms", "120000", "--json",
        )
    )  # fmt: skip
    rotated = json.loads(edgefleet_cli(central, "keys", "rotate-signing", "--overlap", "1h", "--json"))
    assert _rollout_phase(central, started["rollout"]) == "RUNNING", "rotated while it ran"
    trust = _trust(central)
    new_id, old_id = trust.signing_keys[0].key_id, trust.signing_keys[1].key_id
    assert json.dumps(rotated).count(new_id) and new_id != old_id
    # Every agent hears of the new key from a statement the old key signed, and keeps the old one for the overlap.
    wait_for(
        lambda: all(_signing_key_ids(a) == {new_id, old_id} for a in agents),
        timeout_s=60,
        what="every agent trusting the old and the new signing key",
    )
    ended = wait_for(
        lambda: _rollout_ended(central, agents, started["rollout"]),
        timeout_s=300,
        interval_s=0.5,
        what="the rollout of chat@2.0.0 to end",
    )
    assert ended == "COMPLETED"
    for node_id in nodes:
        wait_active(central, node_id, "chat@2.0.0")
    for agent in agents:
        assert "manifest refused" not in agent.log(), agent.log()[-3000:]
        assert _refusals(agent) == 0

    edgefleet_cli(central, "keys", "finish-signing")
    wait_for(
        lambda: all(_signing_key_ids(a) == {new_id} for a in agents),
        timeout_s=60,
        what="every agent trusting the new signing key only",
    )
    data = b"bytes no agent has"
    stray = manifest.Manifest("chat", "6.6.6", "gguf", hashlib.sha256(data).hexdigest(), len(data))
    for agent in agents:
        # The slot a heartbeat named took central's new signature: it verifies with the new key alone.
        slots = ModelSlots(agent.data_dir, TrustFiles(agent.data_dir / "fleet").signing_keys)
        assert slots.active().manifest.ref == "chat@2.0.0"
        with pytest.raises(ArtifactError, match="does not verify"):
            slots.verify_manifest(*manifest.sign(stray, old_key))  # the retired key
        with pytest.raises(ArtifactError, match="does not verify"):
            slots.verify_manifest(*manifest.sign(stray, pki.generate_signing_key()))  # a key never announced
    # A restart reads the slot again: it serves chat@2.0.0, not the config's model.
    agents[0].stop()
    agents[0] = start_agent(agents[0].data_dir, sections=FLEET)
    assert "serving the fleet-assigned chat@2.0.0" in agents[0].log()
    wait_active(central, nodes[0], "chat@2.0.0")
    assert all(_refusals(a) == 0 for a in agents)


def _issuer_fingerprint(agent, trust: admin_pb2.GetTrustResponse) -> str:
    cert = pki.load_certificate((agent.data_dir / "fleet" / "node.crt").read_bytes())
    for ca in trust.cas:
        try:
            cert.verify_directly_issued_by(pki.load_certificate(ca.certificate_pem))
        except Exception:  # noqa: BLE001 - not this CA
            continue
        return ca.fingerprint
    return ""


def _fleet_call(central, ca_pem: bytes, cert_pem: bytes, key_pem: bytes, node_id: str) -> None:
    """One FleetService call (an empty report) over a fresh mTLS connection; grpc.RpcError when refused."""
    with channels.mtls_channel(central.fleet_address, ca_pem, cert_pem, key_pem) as channel:
        fleet_pb2_grpc.FleetServiceStub(channel).ReportEvent(fleet_pb2.ReportEventRequest(node_id=node_id), timeout=10)


def test_ca_rotation_renews_every_agent_and_finish_refuses_the_old_ca(rotating_fleet):
    central, agents, nodes, root = rotating_fleet
    old_ca_pem = central.paths.ca_cert.read_bytes()
    old_fp = pki.fingerprint(pki.load_certificate(old_ca_pem))
    # A node that enrolls before the rotation and never runs: its certificate stays the old CA's.
    token = create_token(central, region="bystander")
    bystander = enroll(central.enroll_address, token.ca_fingerprint, token.token, FleetFiles(root / "bystander"))

    edgefleet_cli(central, "ca", "rotate", "--now", "--json")
    rotated_at = time.time()
    trust = _trust(central)
    new_fp = trust.cas[0].fingerprint
    assert new_fp != old_fp and [ca.fingerprint for ca in trust.cas][:2] == [new_fp, old_fp]
    # Each agent trusts the new CA through the cross certificate and renews onto it at once (renew_now).
    wait_for(
        lambda: all(_issuer_fingerprint(a, trust) == new_fp for a in agents),
        timeout_s=60,
        what="every agent holding a certificate from the new CA",
    )
    for agent in agents:
        assert _agent_trust(agent).ca_fingerprints() == [new_fp, old_fp]
    # ...and stays online on it: central hears each node after its renewal.
    for node_id in nodes:
        wait_for(lambda n=node_id: _last_heartbeat(central, n) > rotated_at + 1, timeout_s=60, what=f"{node_id} online")
    # During the overlap the old CA's certificates still work, with an old-CA-only client too.
    FleetClient(bystander, rpc_timeout_s=10).report([], 0)

    edgefleet_cli(central, "admin", "renew")  # the operator's own credential onto the new CA
    assert _trust(central).on_previous_ca == [f"node:{bystander.node_id}"]
    from central.cli import main

    refused = main(
        ["--credential", str(central.paths.admin_credential), "--central", central.fleet_address, "ca", "finish"]
    )
    assert refused != 0, "ca finish refuses while a node holds only an old-CA certificate"
    finished = json.loads(edgefleet_cli(central, "ca", "finish", "--force", "--json"))
    assert f"node:{bystander.node_id}" in json.dumps(finished)
    wait_for(
        lambda: all(_agent_trust(a).ca_fingerprints() == [new_fp] for a in agents),
        timeout_s=60,
        what="every agent dropping the retired CA",
    )
    finished_at = time.time()
    for node_id in nodes:
        wait_for(
            lambda n=node_id: _last_heartbeat(central, n) > finished_at + 1, timeout_s=60, what=f"{node_id} online"
        )
    new_ca_pem = (agents[0].data_dir / "fleet" / "ca.crt").read_bytes()
    agent_files = FleetFiles(agents[0].data_dir).load()
    _fleet_call(central, new_ca_pem, agent_files.certificate_pem, agent_files.key_pem, agent_files.node_id)
    with pytest.raises(grpc.RpcError) as refusal:
        _fleet_call(central, new_ca_pem, bystander.certificate_pem, bystander.key_pem, bystander.node_id)
    assert refusal.value.code() == grpc.StatusCode.UNAVAILABLE, refusal.value  # the TLS handshake failed
    with pytest.raises(ControlError):
        FleetClient(bystander, rpc_timeout_s=10).report([], 0)
    assert all(_refusals(a) == 0 for a in agents)


def test_after_finish_signing_a_manifest_central_serves_under_the_retired_key_is_refused(rotating_fleet):
    """End to end: after `keys rotate-signing` and `keys finish-signing`, central's store is made to hold a version
    whose signature is the retired key's (as a replica whose data dir lags, or a store restored from before the
    rotation, would serve it); assigned to a node, the agent refuses the manifest before downloading a byte, and
    serves on. Tried with the agents of the tests above (rotated before) or fresh ones."""
    central, agents, nodes, root = rotating_fleet
    retired_key = pki.load_private_key(central.paths.signing_key.read_bytes())
    edgefleet_cli(central, "keys", "rotate-signing", "--overlap", "1h")
    edgefleet_cli(central, "keys", "finish-signing")
    current = trust.key_id(central.paths.signing_public_key.read_bytes())
    wait_for(
        lambda: all(_signing_key_ids(a) == {current} for a in agents),
        timeout_s=60,
        what="every agent trusting the new signing key only",
    )
    artifact = root / "stray.gguf"
    artifact.write_bytes(b"GGUF" + bytes(4096))
    push(central, artifact, "stray", "1.0.0")
    store = open_store(datadir.store_spec(central.paths))
    try:
        model = store.get_model("stray", "1.0.0")
        old_signature = base64.b64encode(retired_key.sign(model.manifest)).decode()
        assert store.replace_model_signatures([("stray", "1.0.0", old_signature)]) == 1
    finally:
        store.close()
    served_before = _active_ref(central, nodes[0])
    assign(central, nodes[0], "stray@1.0.0")
    activation = wait_for(
        lambda: _failed_activation(central, nodes[0]), timeout_s=60, what="the node refusing stray@1.0.0"
    )
    assert "manifest refused" in activation.reason and "does not verify" in activation.reason, activation
    assert activation.model.name == "stray" and activation.bytes_total == 0, "refused before downloading"
    assert _active_ref(central, nodes[0]) == served_before, "the model it served serves on"


def _active_ref(central, node_id: str) -> str:
    with central.admin() as admin:
        served = admin.call("GetNode", admin_pb2.GetNodeRequest(node_id=node_id)).node.status.active_model
    return f"{served.name}@{served.version}"


def _failed_activation(central, node_id: str):
    with central.admin() as admin:
        activation = admin.call("GetNode", admin_pb2.GetNodeRequest(node_id=node_id)).node.status.activation
    return activation if activation.state == common_pb2.ACTIVATION_STATE_FAILED else None
