"""federated.superlink_guard: Control only to central's certificate, Runtime only to the SuperLink's own,
Fleet and /health to all, nothing else to anyone; no address is trusted."""

import asyncio
import json

import pytest

from federated import superlink, superlink_guard
from federated.superlink_guard import CONTROL_IDENTITY, RUNTIME_IDENTITY, decide

NODE = "spiffe://edgefleet/node/n-1"
ADMIN = "spiffe://edgefleet/admin/root"


@pytest.mark.parametrize(
    "scope_type, path, identity, allowed",
    [
        ("http", "/health", None, True),
        ("http", "/v1/fleet/pull-messages", None, True),
        ("http", "/v1/fleet/create-node", NODE, True),
        ("http", "/v1/control/list-nodes", CONTROL_IDENTITY, True),
        ("http", "/v1/control/start-run", None, False),
        ("http", "/v1/control/start-run", RUNTIME_IDENTITY, False),
        ("http", "/v1/control/start-run", ADMIN, False),
        ("http", "/v1/control/start-run", NODE, False),
        ("http", "/v1/runtime/acquire-task", RUNTIME_IDENTITY, True),
        ("http", "/v1/runtime/acquire-task", None, False),
        ("http", "/v1/runtime/acquire-task", CONTROL_IDENTITY, False),
        ("http", "/v1/runtime/responses", None, False),
        ("http", "/docs", None, False),
        ("http", "/openapi.json", CONTROL_IDENTITY, False),
        ("http", "/", None, False),
        ("http", "/v1/fleet/", None, False),
        ("http", "/v1/fleet/../control/list-nodes", None, False),
        ("http", "/v1/fleet/./x", None, False),
        ("http", "//v1/control/list-nodes", None, False),
        ("http", "/v1/fleet/pull-messages/..", None, False),
        ("http", "/v1/fleet/a\\b", None, False),
        ("http", "/v1/fleet/pull\x00", None, False),
        ("http", "/health/x", None, False),
        ("websocket", "/v1/fleet/pull-messages", None, False),
        ("websocket", "/v1/control/list-nodes", CONTROL_IDENTITY, False),
        ("lifespan", "", None, True),
        ("webtransport", "/v1/fleet/pull-messages", None, False),
    ],
)
def test_decide(scope_type, path, identity, allowed):
    assert (decide(scope_type, path, identity) is None) is allowed


def test_refusals_say_which_certificate_is_needed():
    assert decide("http", "/v1/control/start-run", None) == f"control API: only {CONTROL_IDENTITY} may call it"
    assert decide("http", "/v1/runtime/pull-task-input", None) == f"runtime API: only {RUNTIME_IDENTITY} may call it"


def test_identity_from_peercert():
    cert = {"subject": ((("commonName", "control"),),), "subjectAltName": (("DNS", "x"), ("URI", CONTROL_IDENTITY))}
    assert superlink_guard.identity_from_peercert(cert) == CONTROL_IDENTITY
    assert superlink_guard.identity_from_peercert({}) is None
    assert superlink_guard.identity_from_peercert(None) is None
    assert superlink_guard.identity_from_peercert({"subjectAltName": (("URI", "https://x"),)}) is None


def _call(scope, peers):
    inner_calls, sent = [], []

    async def inner(scope, receive, send):
        inner_calls.append(scope)
        await send({"type": "http.response.start", "status": 200, "headers": []})

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    asyncio.run(superlink_guard.CertificateGuard(inner, peers)(scope, receive, send))
    return inner_calls, sent


def _scope(path, client=("127.0.0.1", 40000), scope_type="http"):
    return {"type": scope_type, "method": "POST", "path": path, "client": client, "server": ("127.0.0.1", 9092)}


def test_loopback_without_a_certificate_gets_a_json_403():
    inner_calls, sent = _call(_scope("/v1/control/list-nodes"), {("127.0.0.1", 40000): None})
    assert inner_calls == []
    start, body = sent
    assert start["status"] == 403
    headers = dict(start["headers"])
    assert headers[b"content-type"] == b"application/json"
    assert int(headers[b"content-length"]) == len(body["body"])
    assert "only spiffe://edgefleet/central/control" in json.loads(body["body"])["detail"]


def test_the_identity_is_the_connections_own():
    peers = {("127.0.0.1", 40000): CONTROL_IDENTITY, ("127.0.0.1", 40001): None}
    inner_calls, sent = _call(_scope("/v1/control/list-runs", ("127.0.0.1", 40000)), peers)
    assert len(inner_calls) == 1 and sent[0]["status"] == 200
    inner_calls, sent = _call(_scope("/v1/control/list-runs", ("127.0.0.1", 40001)), peers)
    assert inner_calls == [] and sent[0]["status"] == 403
    # An unknown connection, or a scope without a client, has no identity.
    inner_calls, sent = _call(_scope("/v1/control/list-runs", ("127.0.0.1", 40002)), peers)
    assert inner_calls == [] and sent[0]["status"] == 403
    inner_calls, sent = _call(_scope("/v1/control/list-runs", None), peers)
    assert inner_calls == [] and sent[0]["status"] == 403


def test_fleet_passes_without_a_certificate():
    inner_calls, sent = _call(_scope("/v1/fleet/pull-messages", ("203.0.113.9", 1)), {})
    assert len(inner_calls) == 1 and sent[0]["status"] == 200


def test_websocket_is_closed_and_lifespan_passes():
    inner_calls, sent = _call(_scope("/v1/fleet/pull-messages", scope_type="websocket"), {})
    assert inner_calls == [] and sent == [
        {"type": "websocket.close", "code": 1008, "reason": "websocket connections are not served"}
    ]
    inner_calls, _ = _call({"type": "lifespan"}, {})
    assert inner_calls == [{"type": "lifespan"}]


class _Transport:
    def __init__(self, peername, peercert):
        self.info = {"peername": peername, "peercert": peercert}

    def get_extra_info(self, name, default=None):
        return self.info.get(name, default)


def test_the_protocol_records_each_connections_identity_until_it_closes():
    made, lost = [], []

    class Base:
        def connection_made(self, transport):
            made.append(transport)

        def connection_lost(self, exc):
            lost.append(exc)

    protocol = superlink_guard.make_peer_recording_protocol(Base)()
    protocol.connection_made(_Transport(("127.0.0.1", 5555), {"subjectAltName": (("URI", CONTROL_IDENTITY),)}))
    assert superlink_guard.PEERS[("127.0.0.1", 5555)] == CONTROL_IDENTITY and len(made) == 1
    protocol.connection_lost(None)
    assert ("127.0.0.1", 5555) not in superlink_guard.PEERS and lost == [None]
    # A connection lost late does not drop a newer connection's entry for the same address.
    old, new = (
        superlink_guard.make_peer_recording_protocol(Base)(),
        superlink_guard.make_peer_recording_protocol(Base)(),
    )
    old.connection_made(_Transport(("127.0.0.1", 5557), {"subjectAltName": (("URI", CONTROL_IDENTITY),)}))
    new.connection_made(_Transport(("127.0.0.1", 5557), {}))
    old.connection_lost(None)
    assert ("127.0.0.1", 5557) in superlink_guard.PEERS and superlink_guard.PEERS[("127.0.0.1", 5557)] is None
    new.connection_lost(None)
    assert ("127.0.0.1", 5557) not in superlink_guard.PEERS
    ipv6 = superlink_guard.make_peer_recording_protocol(Base)()
    ipv6.connection_made(_Transport(("::1", 5556, 0, 0), {}))
    assert superlink_guard.PEERS[("::1", 5556)] is None
    ipv6.connection_lost(None)


def test_the_launcher_refuses_flags_that_would_open_another_port_or_drop_tls():
    base = ["--client-ca", "a", "--runtime-cert", "b", "--runtime-key", "c", "--sandbox-dir", "/tmp/x"]
    ours, flower = superlink.parse_args([*base, "--", "--host", "127.0.0.1", "--port", "9"])
    assert flower == ["--host", "127.0.0.1", "--port", "9"] and ours.client_ca == "a"
    for flag in ("--insecure", "--health-server-address=127.0.0.1:1", "--control-api-address", "--fleet-api-address"):
        with pytest.raises(SystemExit):
            superlink.parse_args([*base, "--", flag])


def test_the_launcher_command_round_trips(tmp_path):
    from pathlib import Path

    argv = superlink.command(
        tmp_path, Path("ca"), Path("rt.crt"), Path("rt.key"), ["--port", "9"], [Path("/x/ca.key"), Path("/x/db")]
    )
    ours, flower = superlink.parse_args(argv[3:])
    assert flower == ["--port", "9"]
    assert ours.sandbox_dir == tmp_path and ours.protect == [Path("/x/ca.key"), Path("/x/db")]
