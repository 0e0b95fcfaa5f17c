"""The agent follows central's replicas: real mTLS FleetService servers on loopback (a minimal servicer, with
certificates from edgefleet.pki as central makes them), the agent's real enroll(), FleetClient and ControlLoop.

- Enrollment keeps the replicas' addresses central sends, or the enrollment host when it sends none.

- A replica that dies: the control loop goes on at the next address, within 5 s and without a failed beat.
- A connection central ages out (grpc.max_connection_age, central.health.CONNECTION_AGE_OPTIONS): the
  heartbeat stream is reopened at once, no beat fails, nothing is logged above INFO.

The same with two `central serve` replicas sharing one PostgreSQL store belongs with the store's tests.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from concurrent import futures
from dataclasses import dataclass, field

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration

from edge_agent.config import FleetConfig
from edge_agent.control.client import FleetClient, enroll
from edge_agent.control.identity import FleetFiles, FleetIdentity
from edge_agent.control.loop import ControlLoop
from edgefleet import pki
from edgefleet.v1 import common_pb2, enrollment_pb2, enrollment_pb2_grpc, fleet_pb2, fleet_pb2_grpc

INTERVAL_S = 0.2


@dataclass
class Replica(fleet_pb2_grpc.FleetServiceServicer):
    """Answers every beat at once and counts beats and streams."""

    name: str
    beats: int = 0
    streams: int = 0
    reports: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def Heartbeat(self, request_iterator, context):
        with self.lock:
            self.streams += 1
        for _ in request_iterator:
            with self.lock:
                self.beats += 1
            yield fleet_pb2.HeartbeatResponse(heartbeat_interval=Duration(nanos=int(INTERVAL_S * 1e9)))

    def ReportEvent(self, request, context):
        with self.lock:
            self.reports += len(request.reports)
        return fleet_pb2.ReportEventResponse(
            acknowledged_sequence=max((r.sequence for r in request.reports), default=0)
        )


@dataclass
class Enrollment(enrollment_pb2_grpc.EnrollmentServiceServicer):
    """Answers as central does, with the given fleet addresses; certifies any CSR as node n1."""

    ca_key: object
    ca: object
    fleet_addresses: tuple[str, ...]

    def Enroll(self, request, context):
        now = pki.utcnow()
        cert = pki.issue_certificate(
            self.ca_key,
            self.ca,
            pki.public_key_from_csr(request.csr_pem),
            pki.Identity("node", "n1"),
            not_before=now,
            not_after=now + dt.timedelta(1),
        )
        return enrollment_pb2.EnrollResponse(
            node_id="n1",
            certificate_pem=pki.certificate_pem(cert).decode(),
            ca_certificate_pem=pki.certificate_pem(self.ca).decode(),
            fleet_port=7443,
            fleet_addresses=self.fleet_addresses,
        )


@dataclass
class Pki:
    ca_key: object
    ca: object
    ca_pem: bytes
    server_chain: bytes
    server_key: bytes
    node_cert: bytes
    node_key: bytes


@pytest.fixture(scope="module")
def certs() -> Pki:
    ca_key, ca = pki.create_ca()
    server_key = pki.generate_key()
    server = pki.issue_server_certificate(ca_key, ca, server_key.public_key())
    node_key = pki.generate_key()
    now = pki.utcnow()
    node = pki.issue_certificate(
        ca_key, ca, node_key.public_key(), pki.Identity("node", "n1"), not_before=now, not_after=now + dt.timedelta(1)
    )
    return Pki(
        ca_key=ca_key,
        ca=ca,
        ca_pem=pki.certificate_pem(ca),
        server_chain=pki.certificate_pem(server) + pki.certificate_pem(ca),
        server_key=pki.private_key_pem(server_key),
        node_cert=pki.certificate_pem(node),
        node_key=pki.private_key_pem(node_key),
    )


@pytest.fixture
def serve(certs):
    """serve(replica, options) -> (server, "127.0.0.1:PORT"): a FleetService replica with mTLS as central's;
    every server is stopped afterwards."""
    servers: list[grpc.Server] = []

    def start(replica: Replica, options=()) -> tuple[grpc.Server, str]:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=8), options=list(options))
        fleet_pb2_grpc.add_FleetServiceServicer_to_server(replica, server)
        credentials = grpc.ssl_server_credentials(
            [(certs.server_key, certs.server_chain)], root_certificates=certs.ca_pem, require_client_auth=True
        )
        port = server.add_secure_port("127.0.0.1:0", credentials)
        server.start()
        servers.append(server)
        return server, f"127.0.0.1:{port}"

    yield start
    for server in servers:
        server.stop(None)


def _identity(certs: Pki, addresses: tuple[str, ...]) -> FleetIdentity:
    return FleetIdentity(
        node_id="n1",
        labels={},
        central=addresses[0],
        enroll_address="127.0.0.1:1",
        enrolled_at=time.time(),
        ca_pem=certs.ca_pem,
        certificate_pem=certs.node_cert,
        key_pem=certs.node_key,
        signing_public_key_pem=b"",
        fleet_addresses=addresses,
    )


def _status() -> bytes:
    return common_pb2.NodeStatus(agent_version="test").SerializeToString()


def _wait_for(condition, timeout_s: float, what: str) -> float:
    """Seconds until condition() holds; fails the test after timeout_s."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout_s:
            pytest.fail(f"{what}: not within {timeout_s} s")
        time.sleep(0.02)
    return time.monotonic() - start


@pytest.mark.parametrize(
    ("sent", "kept"),
    [
        (("c1.example:7443", "c2.example:7443", "c1.example:7443"), ["c1.example:7443", "c2.example:7443"]),
        ((), []),
    ],
)
def test_enrollment_keeps_the_fleet_addresses_central_sends(tmp_path, certs, sent, kept):
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    enrollment_pb2_grpc.add_EnrollmentServiceServicer_to_server(Enrollment(certs.ca_key, certs.ca, sent), server)
    port = server.add_secure_port("127.0.0.1:0", grpc.ssl_server_credentials([(certs.server_key, certs.server_chain)]))
    server.start()
    try:
        files = FleetFiles(tmp_path)
        identity = enroll(f"127.0.0.1:{port}", pki.fingerprint(certs.ca), "id.secret", files)
    finally:
        server.stop(None)
    loaded = files.load()
    assert list(loaded.fleet_addresses) == kept
    # The first replica, or (from a central that sends none) the host enrolled through at fleet_port.
    assert loaded.central == identity.central == (kept[0] if kept else "127.0.0.1:7443")
    client = FleetClient(loaded, rpc_timeout_s=1)
    assert client.addresses == (tuple(kept) or ("127.0.0.1:7443",))
    client.close()


def test_the_control_loop_moves_to_a_live_replica_when_its_replica_dies(tmp_path, serve, certs):
    a, b = Replica("a"), Replica("b")
    server_a, address_a = serve(a)
    _, address_b = serve(b)
    files = FleetFiles(tmp_path)
    files.save(_identity(certs, (address_a, address_b)))
    # rand 0: the first address (a), and the shortest jitter; backoff capped low to keep the test short.
    loop = ControlLoop(files, FleetConfig(rpc_timeout_s=2.0, max_backoff_s=2.0), _status, rand=lambda: 0.0)
    loop.start()
    try:
        _wait_for(lambda: a.beats >= 3, 10, "beats at replica a")
        assert b.beats == 0
        server_a.stop(None)  # every call at a ends now; a's port refuses from here on
        moved_s = _wait_for(lambda: b.beats >= 1, 5, "the loop's first beat at replica b")
        _wait_for(lambda: b.beats >= 3, 5, "beats at replica b")
        print(f"replica a stopped; first beat at b {moved_s:.2f} s later")
        assert loop.state == "connected"
        assert loop._failures == 0, "the beat a stream that had answered lost is sent again at once, at b"
        state = files.read_state()
        assert state is not None and state["central"] == address_b
        assert state["central_addresses"] == [address_a, address_b]
    finally:
        loop.stop()


def test_a_client_with_only_dead_addresses_fails_over_round_robin(serve, certs):
    alive = Replica("alive")
    _, address = serve(alive)
    dead = f"127.0.0.1:{_closed_port()}"
    client = FleetClient(_identity(certs, (dead, address)), rpc_timeout_s=2.0)
    try:
        assert client.address == dead
        with pytest.raises(Exception, match="central unavailable"):
            client.heartbeat(_status())
        assert client.address == address, "the failed call moved the client on"
        client.heartbeat(_status())
        assert alive.beats == 1
    finally:
        client.close()


def _closed_port() -> int:
    from edgefleet.ports import free_port

    return free_port()


def test_the_heartbeat_stream_survives_connections_central_ages_out(serve, certs, caplog):
    replica = Replica("aging")
    # What central.health.CONNECTION_AGE_OPTIONS sets, in seconds instead of minutes.
    _, address = serve(replica, [("grpc.max_connection_age_ms", 1000), ("grpc.max_connection_age_grace_ms", 300)])
    client = FleetClient(_identity(certs, (address,)), rpc_timeout_s=2.0)
    caplog.set_level(logging.INFO)
    beats = 0
    try:
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            client.heartbeat(_status())  # raises if a beat is lost
            beats += 1
            time.sleep(0.1)
    finally:
        client.close()
    print(f"{beats} beats on {replica.streams} streams over 5 s with a 1 s connection age")
    assert replica.streams >= 3, "the server aged connections out and the client opened new streams"
    assert replica.beats >= beats
    loud = [r for r in caplog.records if r.levelno > logging.INFO and r.name.startswith("edge_agent")]
    assert not loud, [r.getMessage() for r in loud]
