"""Every refusal the fleet API must make, each over a real TLS handshake to a real central process.

Tried: no client certificate, a certificate from another CA, an expired certificate (these three fail in
the TLS handshake, before any handler runs), a revoked node, a node certificate on AdminService, node A's
certificate speaking as node B, a reused token, an expired token, a revoked token, a malformed token and
malformed CSRs. Each is refused with a clear status, nothing is added to the node table, and each that
reaches central's handlers leaves a `refused` entry in the audit log.
"""

import datetime as dt

import grpc
import pytest

from central.store import SqliteFleetStore, TokenRecord
from central.tokens import hash_secret, new_token
from central_process import create_token, start_central
from edge_agent.control.client import CentralRefused, EnrollError, FleetClient, enroll
from edge_agent.control.identity import FleetFiles
from edgefleet import channels, pki
from edgefleet.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    common_pb2,
    enrollment_pb2,
    enrollment_pb2_grpc,
    fleet_pb2,
    fleet_pb2_grpc,
)


@pytest.fixture(scope="module")
def central(tmp_path_factory):
    process = start_central(tmp_path_factory.mktemp("central") / "data")
    yield process
    process.stop()


def _enroll(central, tmp_path, name):
    token = create_token(central)
    files = FleetFiles(tmp_path / name)
    return enroll(central.enroll_address, token.ca_fingerprint, token.token, files)


def _node_ids(central):
    with central.admin() as admin:
        return {n.node_id for n in admin.call("ListNodes", admin_pb2.ListNodesRequest()).nodes}


def _last_audit(central):
    with central.admin() as admin:
        entries = admin.call("ListAuditEntries", admin_pb2.ListAuditEntriesRequest(limit=10_000)).entries
    return entries[-1]


def _ca_pem(central):
    return central.paths.ca_cert.read_bytes()


def _fleet_stub(central, cert_pem, key_pem, ca_pem=None):
    channel = channels.mtls_channel(central.fleet_address, ca_pem or _ca_pem(central), cert_pem, key_pem)
    return channel, fleet_pb2_grpc.FleetServiceStub(channel)


def _issue_with_fleet_ca(central, identity, not_before, not_after):
    ca_key = pki.load_private_key(central.paths.ca_key.read_bytes())
    ca_cert = pki.load_certificate(central.paths.ca_cert.read_bytes())
    key = pki.generate_key()
    cert = pki.issue_certificate(
        ca_key, ca_cert, key.public_key(), identity, not_before=not_before, not_after=not_after
    )
    return pki.certificate_pem(cert), pki.private_key_pem(key)


def _heartbeat(stub, node_id):
    """One message on a fresh Heartbeat stream; its answer or the stream's error."""
    return next(stub.Heartbeat(iter([fleet_pb2.HeartbeatRequest(node_id=node_id)]), timeout=10))


# -- refused in the TLS handshake -------------------------------------------------------


def test_no_client_certificate_is_refused_in_the_handshake(central):
    before = _node_ids(central)
    with (
        channels.tls_channel(central.fleet_address, _ca_pem(central)) as channel,
        pytest.raises(grpc.RpcError) as err,
    ):
        admin_pb2_grpc.AdminServiceStub(channel).ListNodes(admin_pb2.ListNodesRequest(), timeout=10)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert _node_ids(central) == before


def test_certificate_from_another_ca_is_refused_in_the_handshake(central):
    other_key, other_ca = pki.create_ca("impostor CA")
    key = pki.generate_key()
    now = pki.utcnow()
    cert = pki.issue_certificate(
        other_key,
        other_ca,
        key.public_key(),
        pki.Identity("admin", "admin"),
        not_before=now - dt.timedelta(minutes=1),
        not_after=now + dt.timedelta(days=1),
    )
    before = _node_ids(central)
    channel = channels.mtls_channel(
        central.fleet_address, _ca_pem(central), pki.certificate_pem(cert), pki.private_key_pem(key)
    )
    with channel, pytest.raises(grpc.RpcError) as err:
        admin_pb2_grpc.AdminServiceStub(channel).ListNodes(admin_pb2.ListNodesRequest(), timeout=10)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert _node_ids(central) == before


def test_expired_certificate_is_refused_in_the_handshake(central, tmp_path):
    node = _enroll(central, tmp_path, "expired")
    now = pki.utcnow()
    cert_pem, key_pem = _issue_with_fleet_ca(
        central, pki.Identity("node", node.node_id), now - dt.timedelta(days=2), now - dt.timedelta(days=1)
    )
    channel, stub = _fleet_stub(central, cert_pem, key_pem)
    with channel, pytest.raises(grpc.RpcError) as err:
        _heartbeat(stub, node.node_id)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE


# -- refused by central's handlers, with an audit entry ----------------------------------------


def test_revoked_node_is_refused_on_its_next_beat(central, tmp_path):
    node = _enroll(central, tmp_path, "revoked")
    client = FleetClient(node, rpc_timeout_s=10)
    status = common_pb2.NodeStatus(agent_version="test").SerializeToString()
    try:
        client.heartbeat(status)  # accepted while enrolled
        with central.admin() as admin:
            admin.call("RevokeNode", admin_pb2.RevokeNodeRequest(node_id=node.node_id, reason="stolen box"))
        with pytest.raises(CentralRefused, match=r"PERMISSION_DENIED.*revoked"):
            client.heartbeat(status)  # the same stream, the same unexpired certificate
    finally:
        client.close()
    entry = _last_audit(central)
    assert (entry.actor, entry.action, entry.target) == (f"node:{node.node_id}", "fleet.heartbeat", node.node_id)
    assert entry.outcome == admin_pb2.AUDIT_OUTCOME_REFUSED


def test_node_certificate_is_refused_on_admin_service(central, tmp_path):
    node = _enroll(central, tmp_path, "nosy")
    channel = channels.mtls_channel(central.fleet_address, _ca_pem(central), node.certificate_pem, node.key_pem)
    before = _node_ids(central)
    with channel, pytest.raises(grpc.RpcError) as err:
        admin_pb2_grpc.AdminServiceStub(channel).CreateToken(admin_pb2.CreateTokenRequest(), timeout=10)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "not an admin certificate" in err.value.details()
    entry = _last_audit(central)
    assert (entry.actor, entry.action, entry.outcome) == (
        f"node:{node.node_id}",
        "token.create",
        admin_pb2.AUDIT_OUTCOME_REFUSED,
    )
    assert _node_ids(central) == before


def test_node_cannot_heartbeat_as_another_node(central, tmp_path):
    a = _enroll(central, tmp_path, "a")
    b = _enroll(central, tmp_path, "b")
    channel, stub = _fleet_stub(central, a.certificate_pem, a.key_pem)
    with channel, pytest.raises(grpc.RpcError) as err:
        _heartbeat(stub, b.node_id)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert f"certificate of {a.node_id} cannot speak as {b.node_id}" in err.value.details()
    entry = _last_audit(central)
    assert (entry.actor, entry.target, entry.outcome) == (
        f"node:{a.node_id}",
        b.node_id,
        admin_pb2.AUDIT_OUTCOME_REFUSED,
    )
    with central.admin() as admin:
        node_b = admin.call("GetNode", admin_pb2.GetNodeRequest(node_id=b.node_id)).node
    assert not node_b.HasField("last_seen_at"), "B's record must not change"


def test_admin_certificate_cannot_use_fleet_service(central):
    cred = central.credential()
    channel, stub = _fleet_stub(central, cred.certificate_pem, cred.key_pem)
    with channel, pytest.raises(grpc.RpcError) as err:
        _heartbeat(stub, "admin")
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_reused_token_is_refused(central, tmp_path):
    token = create_token(central, uses=1)
    enroll(central.enroll_address, token.ca_fingerprint, token.token, FleetFiles(tmp_path / "first"))
    before = _node_ids(central)
    with pytest.raises(EnrollError, match="used up"):
        enroll(central.enroll_address, token.ca_fingerprint, token.token, FleetFiles(tmp_path / "second"))
    assert _node_ids(central) == before
    assert not FleetFiles(tmp_path / "second").enrolled()
    entry = _last_audit(central)
    assert (entry.actor, entry.action, entry.outcome) == (
        f"token:{token.info.token_id}",
        "node.enroll",
        admin_pb2.AUDIT_OUTCOME_REFUSED,
    )


def test_expired_token_is_refused(central, tmp_path):
    # Written straight into central's store file by a second process, as a replica would: no sleeping.
    token_id, secret = new_token()
    store = SqliteFleetStore(central.paths.store)
    store.add_token(TokenRecord(token_id, hash_secret(secret), {}, 1.0, 2.0, 1, 1, False, "admin:test"))
    store.close()
    fingerprint = pki.fingerprint(pki.load_certificate(_ca_pem(central)))
    before = _node_ids(central)
    with pytest.raises(EnrollError, match="expired"):
        enroll(central.enroll_address, fingerprint, f"{token_id}.{secret}", FleetFiles(tmp_path / "late"))
    assert _node_ids(central) == before
    assert _last_audit(central).detail == f"bootstrap token {token_id} has expired"


def test_revoked_and_unknown_tokens_are_refused(central, tmp_path):
    token = create_token(central)
    with central.admin() as admin:
        admin.call("RevokeToken", admin_pb2.RevokeTokenRequest(token_id=token.info.token_id))
    with pytest.raises(EnrollError, match="revoked"):
        enroll(central.enroll_address, token.ca_fingerprint, token.token, FleetFiles(tmp_path / "r"))
    wrong_secret = token.token.split(".")[0] + "." + "x" * 32
    with pytest.raises(EnrollError, match="unknown bootstrap token"):
        enroll(central.enroll_address, token.ca_fingerprint, wrong_secret, FleetFiles(tmp_path / "w"))
    with pytest.raises(EnrollError, match="malformed"):
        enroll(central.enroll_address, token.ca_fingerprint, "not-a-token", FleetFiles(tmp_path / "m"))


@pytest.mark.parametrize(
    "csr_pem, message",
    [
        ("", "empty"),
        ("-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n", "not a PEM CSR"),
        ("hello", "not a PEM CSR"),
    ],
)
def test_malformed_csr_is_refused(central, csr_pem, message):
    token = create_token(central)
    before = _node_ids(central)
    ca_pem = channels.discover_ca(central.enroll_address, token.ca_fingerprint)
    with channels.tls_channel(central.enroll_address, ca_pem) as channel, pytest.raises(grpc.RpcError) as err:
        enrollment_pb2_grpc.EnrollmentServiceStub(channel).Enroll(
            enrollment_pb2.EnrollRequest(token=token.token, csr_pem=csr_pem), timeout=10
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in err.value.details()
    assert _node_ids(central) == before
    entry = _last_audit(central)
    assert (entry.action, entry.outcome) == ("node.enroll", admin_pb2.AUDIT_OUTCOME_REFUSED)
    # The token was not spent by the refused request.
    with central.admin() as admin:
        tokens = admin.call("ListTokens", admin_pb2.ListTokensRequest()).tokens
    assert next(t for t in tokens if t.token_id == token.info.token_id).uses_left == 1


def test_csr_for_a_key_tls_does_not_accept_is_refused(central):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP521R1())  # a curve we do not accept
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x")]))
        .sign(key, hashes.SHA256())
    )
    token = create_token(central)
    ca_pem = channels.discover_ca(central.enroll_address, token.ca_fingerprint)
    with channels.tls_channel(central.enroll_address, ca_pem) as channel, pytest.raises(grpc.RpcError) as err:
        enrollment_pb2_grpc.EnrollmentServiceStub(channel).Enroll(
            enrollment_pb2.EnrollRequest(
                token=token.token, csr_pem=csr.public_bytes(serialization.Encoding.PEM).decode()
            ),
            timeout=10,
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "secp521r1" in err.value.details()


def test_wrong_ca_fingerprint_is_refused_before_sending_the_token(central, tmp_path):
    before = _node_ids(central)
    with pytest.raises(EnrollError, match="did not present a CA with fingerprint"):
        enroll(central.enroll_address, "sha256:" + "ab" * 32, "abcdef." + "a" * 32, FleetFiles(tmp_path / "pin"))
    assert _node_ids(central) == before


def test_audit_log_chain_verifies(central):
    with central.admin() as admin:
        check = admin.call("VerifyAudit", admin_pb2.VerifyAuditRequest())
    assert check.intact and check.entries_checked > 5
