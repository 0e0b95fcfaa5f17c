"""central.metrics_server: the /metrics listener on real sockets. Plain HTTP on loopback; mTLS with central's
certificate and an operator's client certificate otherwise (forced on 127.0.0.1 here, as tests bind loopback
only), judged against a real data dir's SQLite store; a listener that cannot have mTLS refuses to start."""

from __future__ import annotations

import datetime as dt
import socket
import ssl
import time

import httpx
import pytest

from central import datadir, metrics_server, rotation
from central.datadir import Authority, initialize
from central.metrics_server import Listen, MetricsListenError, MetricsServer, TlsFiles, parse_listen
from central.services import operators
from central.services import trust as trust_service
from central.services.base import Caller, Central, CentralSettings
from central.store import open_store
from edgefleet import pki
from postgres_db import postgres_database


class Clock:
    def __init__(self, now: float = 100.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_listen_addresses_parse_or_say_what_is_wrong():
    assert parse_listen("127.0.0.1:9470") == Listen("127.0.0.1", 9470)
    assert parse_listen("[::1]:0") == Listen("::1", 0)
    assert parse_listen("0.0.0.0:9470") == Listen("0.0.0.0", 9470)
    assert parse_listen("https://127.0.0.1:9470") == Listen("127.0.0.1", 9470, force_tls=True)
    assert parse_listen("off") is None and parse_listen(" OFF ") is None
    for bad in ("9470", "host:", ":9470", "host:99999", "host:http", "https://9470"):
        with pytest.raises(MetricsListenError, match="is not HOST:PORT"):
            parse_listen(bad)
    with pytest.raises(MetricsListenError, match="the only scheme is https://"):
        parse_listen("http://0.0.0.0:9470")
    assert metrics_server.is_loopback("127.0.0.1") and metrics_server.is_loopback("::1")
    assert metrics_server.is_loopback("localhost") and not metrics_server.is_loopback("0.0.0.0")
    assert not metrics_server.is_loopback("central.example.net")


def test_off_loopback_without_usable_tls_material_refuses_to_start(tmp_path):
    with pytest.raises(MetricsListenError, match="not a loopback address, so /metrics needs mTLS"):
        MetricsServer(("0.0.0.0", 0))
    missing = TlsFiles(tmp_path / "server.pem", tmp_path / "server.key", tmp_path / "ca.pem")
    with pytest.raises(MetricsListenError, match="off loopback needs mTLS, but central's certificate"):
        MetricsServer(("0.0.0.0", 0), missing)


@pytest.fixture(params=["sqlite", "postgresql"])
def central(request, tmp_path):
    """A data dir and its store: SQLite (called from the server's threads) or PostgreSQL (through central's
    worker pool)."""
    if request.param == "sqlite":
        yield from _central(tmp_path, "")
    else:
        with postgres_database() as url:
            yield from _central(tmp_path, url)


def _central(tmp_path, store_url: str):
    paths = initialize(tmp_path / "central", "127.0.0.1:7443", store=store_url)
    store = open_store(datadir.store_spec(paths))
    built = Central(store, Authority.load(paths), CentralSettings(), "", time.time)
    try:
        yield built, paths
    finally:
        built.close()
        store.close()


def test_loopback_serves_plain_http_and_only_metrics(central):
    built, paths = central
    server = metrics_server.listener(paths, "127.0.0.1:0")
    address = server.bind()
    server.serve(metrics_server.fleet_collector(built).registry())
    try:
        reply = httpx.get(f"http://{address}/metrics")
        assert reply.status_code == 200 and reply.headers["content-type"].startswith("text/plain; version=0.0.4")
        assert 'edgefleet_fleet_nodes{state="online"} 0.0' in reply.text
        assert "edgefleet_fleet_heartbeats_total 0.0" in reply.text
        assert httpx.get(f"http://{address}/").status_code == 404
    finally:
        server.stop()


def _credential_files(tmp_path, name: str, certificate_pem: str, key_pem: bytes) -> tuple[str, str]:
    cert, key = tmp_path / f"{name}.pem", tmp_path / f"{name}.key"
    cert.write_text(certificate_pem)
    key.write_bytes(key_pem)
    return str(cert), str(key)


def _get(address: str, ca_pem: str, client: tuple[str, str] | None) -> str:
    """GET /metrics over TLS checking central's certificate by its name, as Prometheus's tls_config does."""
    context = ssl.create_default_context(cadata=ca_pem)
    if client is not None:
        context.load_cert_chain(*client)
    host, port = address.rsplit(":", 1)
    chunks = []
    with (
        socket.create_connection((host, int(port)), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=pki.CENTRAL_SERVER_NAME) as tls,
    ):
        tls.sendall(b"GET /metrics HTTP/1.0\r\nHost: central\r\n\r\n")
        while chunk := tls.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks).decode()


def _issue(built: Central, role: str, name: str) -> tuple[str, bytes]:
    key = pki.generate_key()
    cert = built.authority.issue(key.public_key(), pki.Identity(role, name), dt.timedelta(days=1), pki.utcnow())
    return pki.certificate_pem(cert).decode(), pki.private_key_pem(key)


def test_mtls_lets_operators_read_and_turns_away_nodes_strangers_and_the_revoked(central, tmp_path):
    built, paths = central
    clock = Clock()
    tls = TlsFiles(paths.server_cert, paths.server_key, paths.ca_cert)
    server = MetricsServer(("127.0.0.1", 0), tls, clock=clock, require_tls=True)
    address = server.bind()
    server.serve(metrics_server.fleet_collector(built).registry(), metrics_server.operator_check(built))
    ca = paths.ca_cert.read_text()
    admin = datadir.load_credential(paths.admin_credential)
    try:
        assert server.scheme == "https"
        ok = _get(address, ca, _credential_files(tmp_path, "admin", admin.certificate_pem, admin.key_pem.encode()))
        assert ok.startswith("HTTP/1.0 200") and "edgefleet_fleet_nodes" in ok

        # A scraper's own viewer credential, as `edgefleet admin create prometheus --role viewer` makes.
        root = Caller(pki.identity_of(pki.load_certificate(admin.certificate_pem)), "test",
                      pki.serial_hex(pki.load_certificate(admin.certificate_pem)))  # fmt: skip
        key = pki.generate_key()
        issued = operators.create_operator(built, root, "prometheus", "viewer", 3600, pki.make_csr(key).decode())
        viewer = _credential_files(tmp_path, "prometheus", issued.certificate_pem, pki.private_key_pem(key))
        assert _get(address, ca, viewer).startswith("HTTP/1.0 200")

        node = _credential_files(tmp_path, "node", *_issue(built, "node", "node-1"))
        refused = _get(address, ca, node)
        assert refused.startswith("HTTP/1.0 403") and "not an operator's certificate" in refused

        # An operator's certificate central never registered (made with the CA's key, but not by central).
        stray = _credential_files(tmp_path, "stray", *_issue(built, "viewer", "mallory"))
        assert "not a registered operator" in _get(address, ca, stray)

        # Without a client certificate the handshake itself fails.
        with pytest.raises((ssl.SSLError, ConnectionResetError, BrokenPipeError)):
            _get(address, ca, None)

        operators.revoke_operator(built, root, "prometheus", "test")
        clock.now += metrics_server.AUTHORIZATION_TTL_S  # the last verdict on its certificate expires
        revoked = _get(address, ca, viewer)
        assert revoked.startswith("HTTP/1.0 403") and "was revoked" in revoked
    finally:
        server.stop()


@pytest.fixture
def sqlite_central(tmp_path):
    yield from _central(tmp_path, "")


def test_mtls_follows_a_ca_rotation_without_a_restart(sqlite_central, tmp_path):
    """Tried, through `ca rotate` and `ca finish` with the listener up: an operator renewed onto the new CA, and a
    viewer that never renewed (stranded by `ca finish --force`), before, during and after the overlap."""
    built, paths = sqlite_central
    trust_service.apply(built, rotation.load_trust(paths))
    server = MetricsServer(("127.0.0.1", 0), TlsFiles(paths.server_cert, paths.server_key, paths.ca_cert),
                           require_tls=True)  # fmt: skip
    address = server.bind()
    server.serve(metrics_server.fleet_collector(built).registry(), metrics_server.operator_check(built),
                 trust=lambda: built.trust)  # fmt: skip
    old_ca = paths.ca_cert.read_text()
    admin = datadir.load_credential(paths.admin_credential)
    admin_cert = pki.load_certificate(admin.certificate_pem)
    root = Caller(pki.identity_of(admin_cert), "test", pki.serial_hex(admin_cert))
    key = pki.generate_key()
    issued = operators.create_operator(built, root, "prometheus", "viewer", 3600, pki.make_csr(key).decode())
    stays_on_old = _credential_files(tmp_path, "prometheus", issued.certificate_pem, pki.private_key_pem(key))
    try:
        assert _get(address, old_ca, stays_on_old).startswith("HTTP/1.0 200")

        trust_service.apply(built, rotation.rotate_ca(paths, time.time()))
        new_ca = paths.ca_cert.read_text()
        key = pki.generate_key()
        renewed = operators.renew_operator(built, root, "", 3600, pki.make_csr(key).decode())
        assert pki.load_certificate(renewed.certificate_pem).issuer == pki.load_certificate(new_ca).subject
        on_new = _credential_files(tmp_path, "admin-renewed", renewed.certificate_pem, pki.private_key_pem(key))
        # The overlap: the new CA's operator gets in, and the old CA's too (its scraper trusting both CAs, as a
        # renewed credential does: OpenSSL refuses the cross certificate under the old CA's path length of 0).
        assert _get(address, new_ca, on_new).startswith("HTTP/1.0 200")
        assert _get(address, new_ca + old_ca, stays_on_old).startswith("HTTP/1.0 200")

        trust_service.apply(built, rotation.finish_ca_rotation(paths)[0])
        assert _get(address, new_ca, on_new).startswith("HTTP/1.0 200")
        # The retired CA's certificate is refused in the handshake, as on the fleet port.
        with pytest.raises((ssl.SSLError, ConnectionResetError, BrokenPipeError)):
            _get(address, new_ca, stays_on_old)
    finally:
        server.stop()
