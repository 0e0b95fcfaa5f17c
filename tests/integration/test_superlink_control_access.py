"""Central's SuperLink answers its Control and Runtime APIs only to the certificates central makes.

A real `central serve` with its supervised SuperLink (TLS from the fleet CA, SuperNode auth), and
local callers on the same host, on loopback: without central's Control certificate every call is
refused, over every protocol the port could speak (HTTPS/1.1, plain HTTP, HTTP/2 and gRPC,
WebSocket), and the SuperLink's process tree listens on no other port. Central's own calls
(registering a node's key, starting a run whose ServerApp uses the Runtime API) still work, and the
SuperLink, sandboxed, cannot read central's keys.
"""

from __future__ import annotations

import json
import socket
import ssl
import sys

import httpx
import pytest

from central_process import create_token, edgefleet_cli, start_central, wait_for

pytestmark = pytest.mark.skipif(sys.version_info < (3, 11), reason="flwr 1.42 needs Python 3.11+")

CONTROL_PATHS = [
    "/v1/control/list-nodes",
    "/v1/control/start-run",
    "/v1/control/register-node",
    "/v1/control/list-runs",
]
RUNTIME_PATHS = ["/v1/runtime/acquire-task", "/v1/runtime/pull-task-input", "/v1/runtime/responses"]
OTHER_PATHS = ["/docs", "/openapi.json", "/v1/other", "/v1/fleet/../control/list-nodes", "//v1/control/list-nodes"]


@pytest.fixture(scope="module")
def central(tmp_path_factory):
    root = tmp_path_factory.mktemp("superlink-access")
    central = start_central(root / "central", "--superlink-listen", "127.0.0.1:0")
    try:
        address = wait_for(
            lambda: (
                (central.data_dir / "superlink-address").exists()
                and (central.data_dir / "superlink-address").read_text().strip()
            ),
            what="central to write the SuperLink's address",
        )
        host, port = address.rsplit(":", 1)
        wait_for(lambda: _accepts(host, int(port)), timeout_s=120, what="the SuperLink to accept connections")
        central.superlink = (host, int(port))
        yield central
    finally:
        central.stop()


def _accepts(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=1).close()
        return True
    except OSError:
        return False


def _url(central, path: str) -> str:
    host, port = central.superlink
    return f"https://{host}:{port}{path}"


def _client(central, cert: tuple[str, str] | None = None) -> httpx.Client:
    context = ssl.create_default_context(cafile=str(central.paths.ca_cert))
    if cert:
        context.load_cert_chain(*cert)
    return httpx.Client(verify=context, timeout=10)


def _post(client: httpx.Client, url: str) -> httpx.Response:
    return client.post(url, content=b"", headers={"content-type": "application/protobuf"})


@pytest.mark.parametrize("path", CONTROL_PATHS + RUNTIME_PATHS + OTHER_PATHS)
def test_a_local_caller_without_centrals_certificate_is_refused(central, path):
    with _client(central) as client:
        response = _post(client, _url(central, path))
    assert response.status_code == 403, response.text
    if path in CONTROL_PATHS:
        assert "only spiffe://edgefleet/central/control may call it" in response.json()["detail"]


def test_a_fleet_ca_certificate_does_not_open_the_control_api(central):
    """The admin credential is a fleet CA client certificate: not the SuperLink's client CA, so refused."""
    from central import credential as credential_file

    cred = credential_file.load(central.paths.admin_credential)
    cert, key = central.data_dir.parent / "admin.crt", central.data_dir.parent / "admin.key"
    cert.write_text(cred.certificate_pem)
    key.write_text(cred.key_pem)
    key.chmod(0o600)
    with _client(central, (str(cert), str(key))) as client:
        try:
            status = _post(client, _url(central, "/v1/control/list-nodes")).status_code
        except httpx.HTTPError:
            status = None  # the TLS handshake refused a certificate from another CA
    assert status in (None, 403)


def test_the_runtime_certificate_does_not_open_the_control_api(central):
    runtime = central.data_dir / "superlink"
    with _client(central, (str(runtime / "runtime.crt"), str(runtime / "runtime.key"))) as client:
        assert _post(client, _url(central, "/v1/control/list-nodes")).status_code == 403


def test_centrals_certificate_opens_the_control_api(central):
    flower = central.data_dir / "flower"
    with _client(central, (str(flower / "control.crt"), str(flower / "control.key"))) as client:
        response = _post(client, _url(central, "/v1/control/list-nodes"))
    assert response.status_code == 200, response.text


def test_health_and_fleet_pass_the_guard(central):
    with _client(central) as client:
        assert client.get(_url(central, "/health")).status_code == 200
        fleet = _post(client, _url(central, "/v1/fleet/pull-messages"))
    # Flower's own node auth answers (the call is unsigned); the guard let it through.
    assert fleet.status_code != 403 or "only" not in fleet.text, fleet.text


def test_plain_http_is_not_served(central):
    host, port = central.superlink
    with httpx.Client(timeout=10) as client, pytest.raises(httpx.HTTPError):
        client.post(f"http://{host}:{port}/v1/control/list-nodes")


def test_websocket_upgrade_is_refused(central):
    headers = {
        "connection": "Upgrade",
        "upgrade": "websocket",
        "sec-websocket-version": "13",
        "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==",
    }
    with _client(central) as client:
        response = client.get(_url(central, "/v1/control/list-nodes"), headers=headers)
    assert response.status_code == 403


def test_http2_is_not_spoken(central):
    """No h2 in ALPN, and an HTTP/2 preface gets no HTTP/2 answer (so no gRPC and no HTTP/2 REST)."""
    host, port = central.superlink
    context = ssl.create_default_context(cafile=str(central.paths.ca_cert))
    context.set_alpn_protocols(["h2"])
    with (
        socket.create_connection((host, port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=host) as tls,
    ):
        assert tls.selected_alpn_protocol() != "h2"
        tls.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        answer = b""
        try:
            while chunk := tls.recv(4096):
                answer += chunk
        except (OSError, ssl.SSLError):
            pass
    assert b"200 OK" not in answer
    assert not answer or answer.startswith(b"HTTP/1.1 4"), answer[:200]


def test_grpc_control_calls_fail(central):
    import grpc

    host, port = central.superlink
    credentials = grpc.ssl_channel_credentials(central.paths.ca_cert.read_bytes())
    with grpc.secure_channel(f"{host}:{port}", credentials) as channel:
        for method in ("/flwr.proto.Control/ListNodes", "/flwr.proto.Fleet/PullMessages"):
            call = channel.unary_unary(method, request_serializer=None, response_deserializer=None)
            with pytest.raises(grpc.RpcError) as failed:
                call(b"", timeout=10)
            assert failed.value.code() != grpc.StatusCode.OK


def test_the_superlink_listens_on_its_one_port(central):
    import psutil

    superlink = next(
        p for p in psutil.Process(central.pid).children() if "federated.superlink" in " ".join(p.cmdline())
    )
    tree = [superlink, *superlink.children(recursive=True)]
    listening = set()
    for process in tree:
        for conn in process.net_connections(kind="all"):
            if conn.status == psutil.CONN_LISTEN or (conn.type == socket.SOCK_DGRAM and conn.laddr):
                listening.add(conn.laddr.port if hasattr(conn.laddr, "port") else conn.laddr)
    assert listening == {central.superlink[1]}, listening


def test_the_superlink_cannot_read_centrals_keys(central):
    from federated import sandbox

    try:
        sandbox.abi_version()
    except sandbox.SandboxUnavailable as exc:
        pytest.skip(f"no Landlock here: {exc}")
    log = (central.data_dir / "flower" / "superlink.log").read_text(errors="replace")
    line = next(line for line in log.splitlines() if line.startswith("sandbox:"))
    assert "7 protected paths unreadable" in line, line
    assert not (central.data_dir / "flower" / "superlink.key").exists()
    assert oct((central.data_dir / "flower" / "control.key").stat().st_mode & 0o777) == "0o600"
    assert oct((central.data_dir / "flower").stat().st_mode & 0o777) == "0o700"


def test_central_still_drives_the_superlink(central, tmp_path):
    """Central's own Control calls: a node's key registered; a run started, its ServerApp (Runtime API,
    sandboxed) runs and reports that it lacks nodes."""
    from edge_agent.control.client import enroll
    from edge_agent.control.identity import FleetFiles

    token = create_token(central)
    enroll(central.enroll_address, token.ca_fingerprint, token.token, FleetFiles(tmp_path / "agent"))
    wait_for(
        lambda: '"fl.node.register"' in edgefleet_cli(central, "audit", "list", "--json"),
        timeout_s=60,
        what="central registering the node's Flower key",
    )
    started = json.loads(
        edgefleet_cli(
            central,
            "fl",
            "start",
            "--task",
            "usage-stats",
            "--rounds",
            "1",
            "--min-nodes",
            "2",
            "--no-secagg",
            "--wait-nodes",
            "5s",
            "--json",
        )
    )
    row = wait_for(
        lambda: (
            (r := json.loads(edgefleet_cli(central, "fl", "status", started["run"], "--json")))["status"]
            in ("completed", "failed")
            and r
        ),
        timeout_s=180,
        interval_s=0.5,
        what="the run to finish",
    )
    assert row["status"] == "failed" and "nodes needed connected" in row["error"], row


def test_the_issues_reproduction_as_user_nobody_is_refused(central):
    """The issue's attack: `nobody` POSTs list-nodes (and start-run) on loopback; once that answered 200."""
    import os
    import shutil
    import subprocess

    if os.geteuid() != 0 or not shutil.which("setpriv") or not shutil.which("curl"):
        pytest.skip("needs root, setpriv and curl to act as another user")
    host, port = central.superlink
    flower = central.data_dir / "flower"
    as_nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "curl", "-sk", "-o", "/dev/null"]
    for path in ("/v1/control/list-nodes", "/v1/control/start-run", "/v1/runtime/acquire-task"):
        done = subprocess.run(
            [*as_nobody, "-w", "%{http_code}", "-X", "POST", f"https://{host}:{port}{path}"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert done.stdout == "403", (path, done.stdout, done.stderr)
    # Nor can nobody borrow central's key: curl cannot read it.
    done = subprocess.run(
        [
            *as_nobody,
            "-w",
            "%{http_code}",
            "--cert",
            str(flower / "control.crt"),
            "--key",
            str(flower / "control.key"),
            "-X",
            "POST",
            f"https://{host}:{port}/v1/control/list-nodes",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.stdout != "200" and done.returncode != 0, (done.stdout, done.stderr)


def test_forwarded_headers_cannot_borrow_another_connections_identity(central):
    """uvicorn rewrites the client address from X-Forwarded-For (host:port) for loopback peers unless told
    not to: a caller naming central's live connection must still be refused."""
    flower = central.data_dir / "flower"
    with _client(central, (str(flower / "control.crt"), str(flower / "control.key"))) as trusted:
        protobuf = {"content-type": "application/protobuf"}
        with trusted.stream("POST", _url(central, "/v1/control/list-nodes"), content=b"", headers=protobuf) as response:
            assert response.status_code == 200
            local = response.extensions["network_stream"].get_extra_info("client_addr")
            forged = {
                **protobuf,
                "x-forwarded-for": f"{local[0]}:{local[1]}",
                "forwarded": f'for="{local[0]}:{local[1]}"',
            }
            with _client(central) as attacker:
                refused = attacker.post(_url(central, "/v1/control/list-nodes"), content=b"", headers=forged)
    assert refused.status_code == 403, refused.text
