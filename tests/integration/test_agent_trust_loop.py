"""The agent's control loop applying trust bundles, against a real mTLS FleetService on loopback (a minimal
servicer that answers as a rotating central does, certificates from edgefleet.pki and edgefleet.trust): the real
FleetClient and ControlLoop, beat by beat.

- A CA rotation with renew_now: the bundle is applied (ca.crt holds both CAs), the node renews onto the new CA
  in the same beat, and the next beats go over the new certificate.
- A bundle that does not verify (a new CA with no cross certificate) is refused whole: trust unchanged, the
  refusal counted (the metric's callback) and reported to central as an event.
- A renewal answered from a CA the node does not trust is refused; the old certificate serves on. So is one from
  the trusted new CA for another key, another node or already expired: saving it would leave the node no
  certificate that works with its key.

The same against a real central and three real agents: tests/integration/test_agent_trust_rotation.py.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass, field

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration

from edge_agent.config import FleetConfig
from edge_agent.control.identity import FleetFiles, FleetIdentity
from edge_agent.control.loop import ControlLoop
from edge_agent.control.trust_state import TrustFiles
from edgefleet import pki
from edgefleet.trust import cross_sign
from edgefleet.v1 import common_pb2, fleet_pb2, fleet_pb2_grpc

NEW_CA_NAME = "edgefleet fleet CA 2027-01-15T08:00Z"


def _pem(cert) -> str:
    return pki.certificate_pem(cert).decode()


def _node_cert(ca_key, ca, public_key, days=30):
    now = pki.utcnow()
    return pki.issue_certificate(
        ca_key, ca, public_key, pki.Identity("node", "n1"), not_before=now, not_after=now + dt.timedelta(days)
    )


@dataclass
class RotatingCentral(fleet_pb2_grpc.FleetServiceServicer):
    """Sends `bundle` on each stream's first answer, issues renewals from `issuer`, keeps the events it gets."""

    bundle: fleet_pb2.TrustBundle
    issuer: tuple  # (ca key, ca certificate)
    answer: str = ""  # "" as central does; "other key", "other node", "expired": a renewal the node must refuse
    renewals: int = 0
    held: int = 0  # the highest report sequence received
    events: list = field(default_factory=list)
    callers: list = field(default_factory=list)  # the issuer (CN) of each beat's client certificate
    lock: threading.Lock = field(default_factory=threading.Lock)

    def Heartbeat(self, request_iterator, context):
        first = True
        for _ in request_iterator:
            cert = pki.load_certificate(context.auth_context()["x509_pem_cert"][0])
            with self.lock:
                self.callers.append(cert.issuer.rfc4514_string())
            reply = fleet_pb2.HeartbeatResponse(heartbeat_interval=Duration(seconds=1))
            if first:
                reply.trust.CopyFrom(self.bundle)
            first = False
            yield reply

    def RenewCertificate(self, request, context):
        with self.lock:
            self.renewals += 1
        ca_key, ca = self.issuer
        public_key = pki.public_key_from_csr(request.csr_pem)
        now = pki.utcnow()
        if self.answer == "other key":
            cert = _node_cert(ca_key, ca, pki.generate_key().public_key())
        elif self.answer == "other node":
            cert = pki.issue_certificate(
                ca_key, ca, public_key, pki.Identity("node", "n2"), not_before=now, not_after=now + dt.timedelta(30)
            )
        elif self.answer == "expired":
            cert = pki.issue_certificate(
                ca_key, ca, public_key, pki.Identity("node", "n1"), not_before=now - dt.timedelta(2),
                not_after=now - dt.timedelta(1),
            )  # fmt: skip
        else:
            cert = _node_cert(ca_key, ca, public_key)
        return fleet_pb2.RenewCertificateResponse(certificate_pem=_pem(cert), ca_certificate_pem=_pem(ca))

    def ReportEvent(self, request, context):
        with self.lock:
            self.events.extend(r.event.kind for r in request.reports if r.HasField("event"))
            self.held = max([self.held, *(r.sequence for r in request.reports)])
            return fleet_pb2.ReportEventResponse(acknowledged_sequence=self.held)


@dataclass
class Fleet:
    old_key: object
    old: object
    new_key: object
    new: object
    cross: object
    files: FleetFiles
    serve: Callable[[fleet_pb2_grpc.FleetServiceServicer], str]  # -> "127.0.0.1:PORT"
    identity: Callable[[str], FleetIdentity]  # the node enrolled under the old CA, at that address


@pytest.fixture
def fleet(tmp_path):
    """Old and new CAs, a node enrolled under the old one (its fleet dir written as enrollment does), and a
    server factory: serve(servicer) starts a FleetService whose certificate is the old CA's and which accepts
    client certificates from either CA (central during the overlap)."""
    old_key, old = pki.create_ca()
    new_key, new = pki.create_ca(NEW_CA_NAME)
    servers: list[grpc.Server] = []
    server_key = pki.generate_key()
    server_cert = pki.issue_server_certificate(old_key, old, server_key.public_key())

    def serve(servicer) -> str:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        fleet_pb2_grpc.add_FleetServiceServicer_to_server(servicer, server)
        credentials = grpc.ssl_server_credentials(
            [(pki.private_key_pem(server_key), pki.certificate_pem(server_cert))],
            root_certificates=pki.certificate_pem(old) + pki.certificate_pem(new),
            require_client_auth=True,
        )
        port = server.add_secure_port("127.0.0.1:0", credentials)
        server.start()
        servers.append(server)
        return f"127.0.0.1:{port}"

    node_key = pki.generate_key()
    node = _node_cert(old_key, old, node_key.public_key())

    def identity(address: str) -> FleetIdentity:
        return FleetIdentity(
            node_id="n1",
            labels={},
            central=address,
            enroll_address="127.0.0.1:1",
            enrolled_at=time.time(),
            ca_pem=pki.certificate_pem(old),
            certificate_pem=pki.certificate_pem(node),
            key_pem=pki.private_key_pem(node_key),
            signing_public_key_pem=pki.public_key_pem(pki.generate_signing_key()),
        )

    yield Fleet(old_key, old, new_key, new, cross_sign(old_key, old, new), FleetFiles(tmp_path), serve, identity)
    for server in servers:
        server.stop(None)


def _rotation_bundle(fleet: Fleet, **changes) -> fleet_pb2.TrustBundle:
    fields = {
        "version": 2,
        "ca_certificates_pem": [_pem(fleet.new), _pem(fleet.old)],
        "cross_certificates_pem": [_pem(fleet.cross)],
        "renew_now": True,
        **changes,
    }
    return fleet_pb2.TrustBundle(**fields)


def _status() -> bytes:
    return common_pb2.NodeStatus(agent_version="test").SerializeToString()


def _loop(fleet: Fleet, servicer, refused: list) -> ControlLoop:
    fleet.files.save(fleet.identity(fleet.serve(servicer)))
    return ControlLoop(
        fleet.files,
        FleetConfig(rpc_timeout_s=5.0, max_backoff_s=1.0),
        _status,
        rand=lambda: 0.0,
        on_trust_refused=lambda: refused.append(1),
    )


def _close(loop: ControlLoop) -> None:
    """What stop() closes, for a loop driven beat by beat (its thread never started)."""
    loop.client.close()
    loop.spool.close()


def test_a_ca_rotation_with_renew_now_is_applied_and_the_node_renews_onto_the_new_ca(fleet):
    servicer = RotatingCentral(_rotation_bundle(fleet), (fleet.new_key, fleet.new))
    refused: list = []
    loop = _loop(fleet, servicer, refused)
    try:
        loop.beat()
        trust = TrustFiles(fleet.files.root).load()
        assert trust.ca_fingerprints() == [pki.fingerprint(fleet.new), pki.fingerprint(fleet.old)]
        assert fleet.files.ca.read_bytes() == pki.certificate_pem(fleet.new) + pki.certificate_pem(fleet.old)
        assert servicer.renewals == 1, "renew_now: renewed in the same beat"
        cert = pki.load_certificate(fleet.files.certificate.read_bytes())
        assert cert.issuer == fleet.new.subject
        for _ in range(3):
            loop.beat()
        assert servicer.renewals == 1, "on the newest CA now: nothing more to renew"
        assert servicer.callers[0] == fleet.old.subject.rfc4514_string()
        assert set(servicer.callers[1:]) == {fleet.new.subject.rfc4514_string()}, "beats go over the new certificate"
        assert "trust_updated" in servicer.events and not refused
        assert loop.state == "connected" and loop._failures == 0
    finally:
        _close(loop)


def test_a_bundle_that_does_not_verify_is_refused_counted_and_reported(fleet):
    """Tried: the new CA offered without the cross certificate that would vouch for it."""
    servicer = RotatingCentral(_rotation_bundle(fleet, cross_certificates_pem=[]), (fleet.new_key, fleet.new))
    refused: list = []
    loop = _loop(fleet, servicer, refused)
    before = fleet.files.ca.read_bytes()
    try:
        loop.beat()
        loop.beat()  # a second beat flushes the event the first one spooled
        assert refused == [1] and loop.trust_updates_refused == 1
        assert fleet.files.ca.read_bytes() == before and not TrustFiles(fleet.files.root).state.exists()
        assert servicer.renewals == 0, "nothing applied: no renew_now either"
        assert "trust_update_refused" in servicer.events
        assert fleet.files.read_state()["trust_updates_refused"] == 1
    finally:
        _close(loop)


def test_a_renewal_from_a_ca_the_node_does_not_trust_is_refused(fleet):
    """Tried: central applies the rotation bundle, then answers the renewal from a third CA it never announced."""
    stranger = pki.create_ca("someone else's CA")
    servicer = RotatingCentral(_rotation_bundle(fleet), stranger)
    loop = _loop(fleet, servicer, [])
    before = fleet.files.certificate.read_bytes()
    try:
        loop.beat()
        assert servicer.renewals == 1
        assert fleet.files.certificate.read_bytes() == before
        assert "a CA this node does not trust" in fleet.files.read_state()["last_error"]
        loop.beat()
        assert servicer.renewals == 1, "asked once per bundle: not again at every beat"
    finally:
        _close(loop)


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        ("other key", "is not for the key this node asked with"),
        ("other node", "names node:n2, not this node (node:n1)"),
        ("expired", "has expired"),
    ],
)
def test_a_renewal_this_node_cannot_use_is_refused(fleet, answer, reason):
    """Tried: central answers the renewal from the announced, trusted new CA, but with a certificate for a key the
    node never made, for another node, or already expired. Saved, the node would hold a key and certificate that
    TLS refuses together, and could neither beat nor renew again."""
    servicer = RotatingCentral(_rotation_bundle(fleet), (fleet.new_key, fleet.new), answer=answer)
    loop = _loop(fleet, servicer, [])
    before = (fleet.files.certificate.read_bytes(), fleet.files.key.read_bytes())
    try:
        loop.beat()
        assert servicer.renewals == 1
        assert (fleet.files.certificate.read_bytes(), fleet.files.key.read_bytes()) == before
        assert reason in fleet.files.read_state()["last_error"]
        loop.beat()
        assert loop._failures == 0, "the certificate kept still works"
    finally:
        _close(loop)
