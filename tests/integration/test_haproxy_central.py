"""packaging/haproxy/haproxy.cfg: HAProxy (Debian's `haproxy`) checks it, and, rendered onto free loopback
ports, passes TLS through to real gRPC servers with central's health service (central.health) and skips a
dead one. Three servers as shipped: two live replicas and one port nothing listens on; then one live replica
is killed with SIGKILL.

Each call opens a new channel (a new TCP connection), as an agent does after losing its stream, so each is
balanced anew. Which replica answered is told by a health service name each registers for itself.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from edgefleet import channels, pki
from edgefleet.ports import free_port

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "packaging" / "haproxy" / "haproxy.cfg"

# `make test` installs it; without it these skip, except under CI=true, where a skip would hide the failure.
if shutil.which("haproxy") is None and os.environ.get("CI") != "true":
    pytestmark = pytest.mark.skip(reason="needs HAProxy: apt-get install haproxy (make test does, as root)")

# One replica: a grpc.aio server with server TLS and central.health, answering SERVING to its own name too.
REPLICA = """
import asyncio, sys
from pathlib import Path
import grpc
from grpc_health.v1 import health_pb2
from central.health import add_health

async def main(key, chain, name, port_file):
    server = grpc.aio.server()
    creds = grpc.ssl_server_credentials([(Path(key).read_bytes(), Path(chain).read_bytes())])
    port = server.add_secure_port("127.0.0.1:0", creds)
    health = add_health(server)
    await health.set(name, health_pb2.HealthCheckResponse.SERVING)
    await server.start()
    Path(port_file).write_text(str(port))
    await server.wait_for_termination()

asyncio.run(main(*sys.argv[1:]))
"""


def test_the_shipped_config_is_valid():
    result = subprocess.run(["haproxy", "-c", "-f", str(SHIPPED)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr


def render(
    config: str, fleet_port: int, enroll_port: int, replicas: list[int], check_interval: str, superlink_port: int = 0
) -> str:
    """The shipped config on loopback: the frontends on the given ports, replica i at replicas[i] (the same
    port behind every frontend), logs to stdout, and checks every check_interval."""
    rendered = config.replace("log /dev/log local0", "log stdout format raw local0")
    # 20,000 connections need 40,000 descriptors, more than a test box may allow.
    rendered = re.sub(r"^(\s*)maxconn \d+", r"\1maxconn 1000", rendered, flags=re.M)
    rendered = rendered.replace("bind :7443", f"bind 127.0.0.1:{fleet_port}")
    rendered = rendered.replace("bind :7444", f"bind 127.0.0.1:{enroll_port}")
    rendered = rendered.replace("bind :7445", f"bind 127.0.0.1:{superlink_port or free_port()}")
    rendered = rendered.replace("inter 2s", f"inter {check_interval}")
    for i, port in enumerate(replicas):
        rendered = re.sub(rf"10\.0\.0\.1{i + 1}:744[345]", f"127.0.0.1:{port}", rendered)
    directives = "\n".join(line for line in rendered.splitlines() if not line.lstrip().startswith("#"))
    assert not re.search(r"10\.0\.0\.|:744[345]\b", directives), "the shipped config changed shape:\n" + directives
    return rendered


@pytest.fixture
def processes():
    """The processes a test starts; each is stopped by its pid afterwards."""
    started: list[subprocess.Popen] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)


def _wait_for(condition, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout_s} s")
        time.sleep(0.05)


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def _start_replica(tmp_path: Path, name: str, key: Path, chain: Path, processes) -> int:
    port_file = tmp_path / f"{name}.port"
    process = subprocess.Popen(
        [sys.executable, "-c", REPLICA, str(key), str(chain), name, str(port_file)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / f"{name}.log").open("w"),
    )
    processes.append(process)
    _wait_for(lambda: port_file.exists() and port_file.read_text().strip(), 30, f"replica {name} listening")
    return int(port_file.read_text())


def _marked_down(log: Path, server: str) -> bool:
    text = log.read_text()
    return all(f"{backend}/{server} is DOWN" in text for backend in ("central_fleet", "central_enrollment"))


def _who_answers(address: str, ca_pem: bytes, names: list[str]) -> str:
    """The replica that answers one call on a new connection through `address`, verified as agents verify
    central (the fleet CA, central's name)."""
    with channels.tls_channel(address, ca_pem) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        overall = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
        assert overall.status == health_pb2.HealthCheckResponse.SERVING
        for name in names:
            try:
                stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
                return name
            except grpc.RpcError as exc:
                assert exc.code() == grpc.StatusCode.NOT_FOUND, exc
    raise AssertionError(f"none of {names} answered through {address}")


def test_haproxy_passes_tls_through_and_skips_a_dead_replica(tmp_path, processes):
    ca_key, ca = pki.create_ca()
    key = pki.generate_key()
    server = pki.issue_server_certificate(ca_key, ca, key.public_key())
    ca_pem = pki.certificate_pem(ca)
    (tmp_path / "server.key").write_bytes(pki.private_key_pem(key))
    (tmp_path / "server.crt").write_bytes(pki.certificate_pem(server) + ca_pem)
    names = ["replica-a", "replica-b"]
    ports = [_start_replica(tmp_path, n, tmp_path / "server.key", tmp_path / "server.crt", processes) for n in names]
    dead = free_port()  # the third replica: nothing listens there
    fleet_port, enroll_port = free_port(), free_port()
    config = tmp_path / "haproxy.cfg"
    config.write_text(render(SHIPPED.read_text(), fleet_port, enroll_port, [*ports, dead], "200ms"))
    log = tmp_path / "haproxy.log"
    haproxy = subprocess.Popen(["haproxy", "-db", "-f", str(config)], stdout=log.open("w"), stderr=subprocess.STDOUT)
    processes.append(haproxy)

    def up() -> bool:
        assert haproxy.poll() is None, "haproxy exited:\n" + log.read_text()
        return _listening(fleet_port) and _listening(enroll_port)

    _wait_for(up, 30, "haproxy's frontends")
    frontends = [f"127.0.0.1:{fleet_port}", f"127.0.0.1:{enroll_port}"]

    # A connection being set up at the instant its replica is marked down is cut (on-marked-down
    # shutdown-sessions; an agent reconnects as after any lost connection), so calls wait for the checks.
    _wait_for(lambda: _marked_down(log, "central-3"), 10, "the checks mark the dead replica down")
    for address in frontends:
        seen = {_who_answers(address, ca_pem, names) for _ in range(12)}
        assert seen == set(names), f"{address}: both live replicas take connections ({seen})"

    a = processes[0]
    a.kill()
    a.wait(10)
    _wait_for(lambda: _marked_down(log, "central-1"), 10, "the checks mark the killed replica down")
    for address in frontends:
        assert {_who_answers(address, ca_pem, names) for _ in range(12)} == {"replica-b"}
    sessions = [line for line in log.read_text().splitlines() if re.match(r"127\.0\.0\.1:\d+ \[", line)]
    assert sessions and not any("central-3" in line.split()[3] for line in sessions), "no session went to the dead one"
