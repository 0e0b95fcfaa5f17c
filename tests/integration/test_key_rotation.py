"""Key rotation against a real `central serve` over real mTLS on loopback (issue 18).

CA rotation: while the rotation overlaps, a client that trusts only the old CA, one that trusts only the new and one
that trusts both all reach the fleet port (BoringSSL builds leaf -> cross -> old CA for the first); a node renews
onto the new CA and is told the bundle; `ca finish` is refused while someone holds only an old-CA certificate, and
once forced a certificate the old CA signed is refused, in the handshake and on a connection made before. Signing
key rotation: manifests re-signed, the statement chain walks a node's keys forward, and an audit anchor the old key
signed still verifies.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc  # type: ignore[import-untyped]

from central.client import AdminCallError
from central_process import CentralProcess, create_token, edgefleet_cli, start_central, start_replicas, wait_for
from edge_agent.control.client import enroll
from edge_agent.control.identity import FleetFiles
from edgefleet import channels, manifest, pki, trust
from edgefleet.v1 import admin_pb2, admin_pb2_grpc, fleet_pb2, fleet_pb2_grpc
from postgres_db import postgres_database

# What `ca rotate` changes in the data dir: what an operator copies to the other replicas (docs/operations.md).
CA_ROTATION_FILES = ("ca.key", "ca.crt", "ca-previous.crt", "ca-cross.crt", "server.crt", "trust.json")


def _enroll(central, root: Path, name: str):
    token = create_token(central)
    return enroll(central.enroll_address, token.ca_fingerprint, token.token, FleetFiles(root / name))


def _reach(address: str, roots: bytes, cert_pem: bytes, key_pem: bytes) -> str:
    """ "ok" when a health check over mTLS with these roots and this client certificate passes, else the code."""
    with channels.mtls_channel(address, roots, cert_pem, key_pem) as channel:
        try:
            health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
        except grpc.RpcError as exc:
            return exc.code().name
    return "ok"


def _beat(channel, node_id: str) -> fleet_pb2.HeartbeatResponse:
    stub = fleet_pb2_grpc.FleetServiceStub(channel)
    return next(stub.Heartbeat(iter([fleet_pb2.HeartbeatRequest(node_id=node_id)]), timeout=10))


def _renew(channel, node_id: str) -> tuple[fleet_pb2.RenewCertificateResponse, bytes]:
    key = pki.generate_key()
    reply = fleet_pb2_grpc.FleetServiceStub(channel).RenewCertificate(
        fleet_pb2.RenewCertificateRequest(node_id=node_id, csr_pem=pki.make_csr(key).decode()), timeout=10
    )
    return reply, pki.private_key_pem(key)


def _pems(bundle: str | list[str]) -> list[bytes]:
    text = "".join(bundle) if isinstance(bundle, list) else bundle
    marker = "-----END CERTIFICATE-----"
    return [(part.strip() + "\n" + marker + "\n").encode() for part in text.split(marker) if part.strip()]


@pytest.fixture()
def central(tmp_path):
    process = start_central(tmp_path / "central")
    yield process
    process.stop()


def test_ca_rotation_overlap_renewal_and_finish(central, tmp_path):
    old_ca = central.paths.ca_cert.read_bytes()
    renewing = _enroll(central, tmp_path, "renewing")  # renews onto the new CA during the overlap
    lagging = _enroll(central, tmp_path, "lagging")  # never renews: stranded by `ca finish --force`
    with channels.mtls_channel(central.fleet_address, old_ca, renewing.certificate_pem, renewing.key_pem) as ch:
        first = _beat(ch, renewing.node_id).trust
    assert [p.encode() for p in first.ca_certificates_pem] == [old_ca] and not first.cross_certificates_pem

    rotated = json.loads(edgefleet_cli(central, "ca", "rotate", "--json"))
    new_fp = rotated["current"]["fingerprint"]
    assert rotated["previous"]["fingerprint"] == pki.fingerprint(pki.load_certificate(old_ca))
    new_ca = central.paths.ca_cert.read_bytes()
    assert pki.fingerprint(pki.load_certificate(new_ca)) == new_fp

    # A node that trusts only the old CA, with its old certificate, still reaches central and hears the bundle.
    with channels.mtls_channel(central.fleet_address, old_ca, renewing.certificate_pem, renewing.key_pem) as ch:
        assert _reach(central.fleet_address, old_ca, renewing.certificate_pem, renewing.key_pem) == "ok"
        bundle = _beat(ch, renewing.node_id).trust
        assert bundle.version > first.version and not bundle.renew_now
        offered = [pki.load_certificate(p) for p in bundle.ca_certificates_pem]
        cross = [pki.load_certificate(p) for p in bundle.cross_certificates_pem]
        accepted = trust.accept_ca_bundle([pki.load_certificate(old_ca)], offered, cross, None)
        assert [pki.fingerprint(c) for c in accepted] == [new_fp, pki.fingerprint(pki.load_certificate(old_ca))]
        reply, new_key = _renew(ch, renewing.node_id)
    renewed = reply.certificate_pem.encode()
    assert pki.load_certificate(renewed).issuer == pki.load_certificate(new_ca).subject
    assert _pems(reply.ca_certificate_pem) == [new_ca, old_ca]  # the bundle, newest first

    # During the overlap: old-only, new-only and both, with the renewed (new-CA) certificate; old-only with an old one.
    assert _reach(central.fleet_address, old_ca, renewed, new_key) == "ok"
    assert _reach(central.fleet_address, new_ca, renewed, new_key) == "ok"
    assert _reach(central.fleet_address, new_ca + old_ca, renewed, new_key) == "ok"
    assert _reach(central.fleet_address, new_ca, lagging.certificate_pem, lagging.key_pem) == "ok"
    # A node enrolling now pins the new CA (token create prints its fingerprint) and gets a new-CA certificate.
    joined = _enroll(central, tmp_path, "joined")
    assert pki.load_certificate(joined.certificate_pem).issuer == pki.load_certificate(new_ca).subject
    with channels.mtls_channel(central.fleet_address, new_ca, renewed, new_key) as ch:
        assert _beat(ch, renewing.node_id).trust.version == bundle.version

    status = json.loads(edgefleet_cli(central, "ca", "status", "--json"))
    assert sorted(status["on_previous_ca"]) == ["admin:admin", f"node:{lagging.node_id}"]
    # `ca finish` names who would be stranded.
    with central.admin() as admin, pytest.raises(AdminCallError) as refused:
        admin.call("FinishCaRotation", admin_pb2.FinishCaRotationRequest())
    assert "admin:admin" in str(refused.value) and f"node:{lagging.node_id}" in str(refused.value)

    edgefleet_cli(central, "admin", "renew")  # the data dir's admin credential, renewed in place onto the new CA
    held = json.loads(edgefleet_cli(central, "ca", "status", "--json"))["on_previous_ca"]
    assert held == [f"node:{lagging.node_id}"]
    # A connection the lagging node opened before the finish, to see it cut after.
    early = channels.mtls_channel(central.fleet_address, old_ca, lagging.certificate_pem, lagging.key_pem)
    _beat(early, lagging.node_id)

    finished = json.loads(edgefleet_cli(central, "ca", "finish", "--force", "--json"))
    assert finished["stranded"] == [f"node:{lagging.node_id}"]
    # A certificate the old CA signed: refused in the handshake, and on the connection made before.
    assert _reach(central.fleet_address, new_ca + old_ca, lagging.certificate_pem, lagging.key_pem) == "UNAVAILABLE"
    with pytest.raises(grpc.RpcError) as cut:
        _beat(early, lagging.node_id)
    assert cut.value.code() == grpc.StatusCode.UNAUTHENTICATED and "retired" in cut.value.details()
    early.close()
    # The renewed node goes on; central's bundle now lists the new CA only.
    with channels.mtls_channel(central.fleet_address, new_ca, renewed, new_key) as ch:
        after = _beat(ch, renewing.node_id).trust
    assert [p.encode() for p in after.ca_certificates_pem] == [new_ca] and not after.cross_certificates_pem
    assert after.version > bundle.version

    # A restart serves the same trust.
    central.restart()
    assert _reach(central.fleet_address, new_ca, renewed, new_key) == "ok"
    assert _reach(central.fleet_address, new_ca + old_ca, lagging.certificate_pem, lagging.key_pem) == "UNAVAILABLE"
    with channels.mtls_channel(central.fleet_address, new_ca, renewed, new_key) as ch:
        assert _beat(ch, renewing.node_id).trust.version == after.version


def test_ca_rotate_now_asks_nodes_to_renew_and_the_enrollment_port_serves_both_cas(central, tmp_path):
    node = _enroll(central, tmp_path, "node")
    old_ca = central.paths.ca_cert.read_bytes()
    edgefleet_cli(central, "ca", "rotate", "--now")
    with channels.mtls_channel(central.fleet_address, old_ca, node.certificate_pem, node.key_pem) as ch:
        assert _beat(ch, node.node_id).trust.renew_now
    chain_fps = {pki.fingerprint(pki.load_certificate(old_ca))}
    chain_fps.add(pki.fingerprint(pki.load_certificate(central.paths.ca_cert.read_bytes())))
    for fp in chain_fps:  # a join command printed before the rotation pins the old CA: central still shows it
        assert channels.discover_ca(central.enroll_address, fp) is not None
    # Rotating again before finishing is refused with what to do.
    with central.admin() as admin, pytest.raises(AdminCallError, match="finish it first"):
        admin.call("RotateCa", admin_pb2.RotateCaRequest())


def test_signing_key_rotation_resigns_manifests_and_keeps_old_anchors_valid(central, tmp_path):
    node = _enroll(central, tmp_path, "node")
    artifact = tmp_path / "tiny.gguf"
    artifact.write_bytes(b"GGUF" + bytes(1000))
    edgefleet_cli(central, "models", "push", str(artifact), "--name", "tiny", "--version", "1.0.0")
    edgefleet_cli(central, "nodes", "assign", node.node_id, "tiny@1.0.0")
    old_key = central.paths.signing_public_key.read_bytes()
    # Archive (and prune) the audit log so far: its anchor is signed by the key about to be rotated away.
    with central.admin() as admin:
        last = admin.call("ListAuditEntries", admin_pb2.ListAuditEntriesRequest(limit=10_000)).entries[-1].sequence
    edgefleet_cli(central, "audit", "archive", "--before-sequence", str(last), "--out", str(tmp_path / "audit.jsonl"))

    rotated = json.loads(edgefleet_cli(central, "keys", "rotate-signing", "--overlap", "1h", "--json"))
    assert rotated["manifests_resigned"] == 1 and rotated["previous"]["state"] == "previous"
    new_key = central.paths.signing_public_key.read_bytes()
    assert trust.key_id(new_key) == rotated["current"]["key_id"] != trust.key_id(old_key)

    ca = central.paths.ca_cert.read_bytes()
    with channels.mtls_channel(central.fleet_address, ca, node.certificate_pem, node.key_pem) as ch:
        reply = _beat(ch, node.node_id)
    signed = reply.desired.manifest
    assert manifest.verify(signed.body, signed.signature, new_key).ref == "tiny@1.0.0"
    with pytest.raises(manifest.ManifestError):
        manifest.verify(signed.body, signed.signature, old_key)
    statements = [(s.body, s.signature) for s in reply.trust.signing_key_statements]
    keys = trust.walk_signing_keys([trust.TrustedKey(trust.key_id(old_key), old_key)], statements, time.time())
    assert [k.key_id for k in keys] == [trust.key_id(old_key), trust.key_id(new_key)]

    verified = json.loads(edgefleet_cli(central, "audit", "verify", "--json"))
    assert verified["intact"], verified
    edgefleet_cli(
        central,
        "audit",
        "verify",
        "--archive",
        str(tmp_path / "audit.jsonl"),
        "--signing-key",
        str(central.paths.signing_history),
    )

    edgefleet_cli(central, "keys", "finish-signing")
    with channels.mtls_channel(central.fleet_address, ca, node.certificate_pem, node.key_pem) as ch:
        statements = [(s.body, s.signature) for s in _beat(ch, node.node_id).trust.signing_key_statements]
    keys = trust.walk_signing_keys([trust.TrustedKey(trust.key_id(old_key), old_key)], statements, time.time())
    assert [k.key_id for k in keys] == [trust.key_id(new_key)]
    listed = json.loads(edgefleet_cli(central, "keys", "list", "--json"))
    assert [(k["key_id"], k["state"]) for k in listed] == [
        (trust.key_id(new_key), "current"),
        (trust.key_id(old_key), "retired"),
    ]
    # A restart keeps all of it, and the anchor the old key signed still verifies.
    central.restart()
    assert json.loads(edgefleet_cli(central, "audit", "verify", "--json"))["intact"]
    with central.admin() as admin:
        model = admin.call("GetModel", admin_pb2.GetModelRequest(name="tiny", version="1.0.0"))
    manifest.verify(model.manifest.body, model.manifest.signature, new_key)


def test_boringssl_needs_the_cross_certificate_before_the_new_root():
    """Why central.rotation.TrustState.fleet_chain_pem orders the chain [server, cross, new CA]: a client that trusts
    only the old CA follows the first certificate naming the issuer, and a self-signed new root met first ends it."""
    import concurrent.futures

    from grpc_health.v1 import health  # type: ignore[import-untyped]

    old_key, old = pki.create_ca("edgefleet fleet CA")
    new_key, new = pki.create_ca("edgefleet fleet CA 2")
    cross = trust.cross_sign(old_key, old, new)
    server_key = pki.generate_key()
    leaf = pki.issue_server_certificate(new_key, new, server_key.public_key())
    client_key = pki.generate_key()
    now = pki.utcnow()
    client = pki.issue_certificate(
        old_key,
        old,
        client_key.public_key(),
        pki.Identity("node", "n"),
        not_before=now,
        not_after=now + dt.timedelta(days=1),
    )
    pem = pki.certificate_pem
    results = {}
    for name, chain in (
        ("cross first", pem(leaf) + pem(cross) + pem(new)),
        ("root first", pem(leaf) + pem(new) + pem(cross)),
    ):
        server = grpc.server(concurrent.futures.ThreadPoolExecutor(2))
        health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
        credentials = grpc.ssl_server_credentials(
            [(pki.private_key_pem(server_key), chain)], root_certificates=pem(new) + pem(old), require_client_auth=True
        )
        port = server.add_secure_port("127.0.0.1:0", credentials)
        server.start()
        try:
            results[name] = _reach(f"127.0.0.1:{port}", pem(old), pem(client), pki.private_key_pem(client_key))
        finally:
            server.stop(0)
    assert results == {"cross first": "ok", "root first": "UNAVAILABLE"}


def test_replicas_follow_a_rotation_once_its_files_are_copied(tmp_path):
    """PostgreSQL replicas: the rotation happens in the data dir of the replica that got the call. The other logs
    that its data dir lags the store, serves the copied files without a restart, and a replica started from a copy
    made before the rotation refuses to start, naming the files to copy."""
    with postgres_database() as url:
        first, second = start_replicas(tmp_path / "replicas", url, 2)
        stale = None
        try:
            node = _enroll(first, tmp_path, "node")
            before = tmp_path / "before-rotation"
            shutil.copytree(second.data_dir, before)
            old_ca = first.paths.ca_cert.read_bytes()
            edgefleet_cli(first, "ca", "rotate")
            new_ca = first.paths.ca_cert.read_bytes()
            wait_for(lambda: "lags the fleet's trust" in second.log(), timeout_s=120, what="the lag logged")
            assert "copy ca.key, ca.crt" in second.log()

            for name in CA_ROTATION_FILES:
                shutil.copy2(first.data_dir / name, second.data_dir / name)
            shutil.copytree(first.paths.retired, second.paths.retired, dirs_exist_ok=True)
            wait_for(lambda: "reloaded the data dir's trust files" in second.log(), timeout_s=120, what="a reload")
            # The second replica now serves the new chain and accepts a certificate the first issued from the new CA.
            with channels.mtls_channel(first.fleet_address, old_ca, node.certificate_pem, node.key_pem) as ch:
                reply, new_key = _renew(ch, node.node_id)
            renewed = reply.certificate_pem.encode()
            assert _reach(second.fleet_address, new_ca, renewed, new_key) == "ok"
            with channels.mtls_channel(second.fleet_address, new_ca, renewed, new_key) as ch:
                assert [p.encode() for p in _beat(ch, node.node_id).trust.ca_certificates_pem] == [new_ca, old_ca]

            stale = CentralProcess(before, ["--no-superlink"])
            with pytest.raises(RuntimeError, match=r"copy ca\.key, ca\.crt"):
                stale.start()
        finally:
            for process in (first, second, stale):
                if process is not None:
                    process.stop()


def test_a_join_command_from_before_a_ca_rotation_is_refused_with_what_to_do(central, tmp_path):
    """A token made before `ca rotate` pins the old CA; central now issues from the new one, so the agent refuses the
    answer (it cannot tell a rotation from an impostor by the reply alone) and says to make a new token; the new
    token's fingerprint enrolls."""
    from edge_agent.control.client import EnrollError

    old = create_token(central)
    edgefleet_cli(central, "ca", "rotate")
    with pytest.raises(EnrollError, match="edgefleet token create"):
        enroll(central.enroll_address, old.ca_fingerprint, old.token, FleetFiles(tmp_path / "stale"))
    identity = _enroll(central, tmp_path, "fresh")
    assert (
        pki.load_certificate(identity.certificate_pem).issuer
        == pki.load_certificate(central.paths.ca_cert.read_bytes()).subject
    )


def test_operators_through_a_ca_rotation(central, tmp_path):
    """An operator on the old CA holds `ca finish` back like a node does; `edgefleet admin renew` moves a credential
    onto the new CA (both CAs as its `ca` during the overlap, the new one only once renewed after the finish); a
    viewer that never renewed is refused after `ca finish --force`: in the handshake and, on a connection made
    before, at every AdminService call, the federated-learning ones included."""
    from central import credential

    old_ca = central.paths.ca_cert.read_bytes()
    stale_file = tmp_path / "stale.credential"
    edgefleet_cli(central, "admin", "create", "stale", "--role", "viewer", "--out", str(stale_file))
    stale = credential.load(stale_file)
    edgefleet_cli(central, "ca", "rotate")
    new_ca = central.paths.ca_cert.read_bytes()

    edgefleet_cli(central, "admin", "renew")
    admin = credential.load(central.paths.admin_credential)
    assert pki.load_certificate(admin.certificate_pem).issuer == pki.load_certificate(new_ca).subject
    assert _pems(admin.ca_pem) == [new_ca, old_ca]
    with central.admin() as call, pytest.raises(AdminCallError) as refused:
        call.call("FinishCaRotation", admin_pb2.FinishCaRotationRequest())
    assert "viewer:stale" in str(refused.value), "an operator on the previous CA holds the finish back"

    early = channels.mtls_channel(central.fleet_address, old_ca, stale.certificate_pem.encode(), stale.key_pem.encode())
    stub = admin_pb2_grpc.AdminServiceStub(early)
    stub.ListNodes(admin_pb2.ListNodesRequest(), timeout=10)
    stub.ListFederatedRuns(admin_pb2.ListFederatedRunsRequest(), timeout=10)
    assert json.loads(edgefleet_cli(central, "ca", "finish", "--force", "--json"))["stranded"] == ["viewer:stale"]
    for method, request in (
        (stub.ListNodes, admin_pb2.ListNodesRequest()),
        (stub.ListFederatedRuns, admin_pb2.ListFederatedRunsRequest()),
        (stub.GetFederatedRun, admin_pb2.GetFederatedRunRequest(run_id=1)),
    ):
        with pytest.raises(grpc.RpcError) as cut:
            method(request, timeout=10)
        assert cut.value.code() == grpc.StatusCode.UNAUTHENTICATED and "retired" in cut.value.details(), method
    early.close()
    assert _reach(central.fleet_address, new_ca + old_ca, stale.certificate_pem.encode(), stale.key_pem.encode()) == (
        "UNAVAILABLE"
    )

    edgefleet_cli(central, "admin", "renew")  # after the finish: the credential stops trusting the retired CA
    assert _pems(credential.load(central.paths.admin_credential).ca_pem) == [new_ca]
    edgefleet_cli(central, "nodes", "list")
