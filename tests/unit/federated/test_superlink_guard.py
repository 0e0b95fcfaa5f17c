"""federated.superlink's guard: the SuperLink's control API answers only on the same host, its Fleet API to all."""

import asyncio
import json

import pytest

from federated import superlink


@pytest.mark.parametrize(
    "path, client, server, expected",
    [
        ("/v1/fleet/PullMessages", "203.0.113.9", "10.0.0.1", True),
        ("/health", "203.0.113.9", "10.0.0.1", True),
        ("/v1/control/StartRun", "203.0.113.9", "10.0.0.1", False),
        ("/v1/runtime/PullMessages", "203.0.113.9", "10.0.0.1", False),
        ("/v1/control/StartRun", "127.0.0.1", "10.0.0.1", True),
        ("/v1/control/StartRun", "127.8.9.10", "10.0.0.1", True),
        ("/v1/runtime/PushMessages", "::1", "::", True),
        ("/v1/control/StartRun", "10.0.0.1", "10.0.0.1", True),
        ("/v1/control/StartRun", "fd00::5", "fd00::5", True),
        ("/v1/control/StartRun", "testclient", "testclient", False),
        ("/v1/control/StartRun", None, "10.0.0.1", False),
        ("/v1/control/StartRun", "", "10.0.0.1", False),
        ("/v1/control/StartRun", "10.0.0.2", None, False),
    ],
)
def test_superlink_allowed(path, client, server, expected):
    assert superlink.allowed(path, client, server) is expected


def test_is_same_host_refuses_non_ip_client_even_when_it_matches():
    assert superlink.is_same_host("localhost", "localhost") is False
    assert superlink.is_same_host("::1", None) is True
    assert superlink.is_same_host("192.168.1.5", "192.168.1.6") is False


def _call_middleware(scope):
    inner_calls, sent = [], []

    async def inner(scope, receive, send):
        inner_calls.append(scope)
        await send({"type": "http.response.start", "status": 200, "headers": []})

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    asyncio.run(superlink.FleetOnlyFromElsewhere(inner)(scope, receive, send))
    return inner_calls, sent


def _http_scope(path, client, server=("10.0.0.1", 9092)):
    return {"type": "http", "method": "POST", "path": path, "client": client, "server": server, "headers": []}


def test_middleware_refuses_remote_control_with_json_403():
    inner_calls, sent = _call_middleware(_http_scope("/v1/control/StartRun", ("203.0.113.9", 40000)))
    assert inner_calls == []
    start, body = sent
    assert start["type"] == "http.response.start" and start["status"] == 403
    headers = dict(start["headers"])
    assert headers[b"content-type"] == b"application/json"
    assert body["type"] == "http.response.body"
    assert int(headers[b"content-length"]) == len(body["body"])
    assert json.loads(body["body"]) == {"detail": "only the Fleet API is served to other hosts"}


def test_middleware_refuses_control_when_scope_has_no_client():
    scope = _http_scope("/v1/runtime/PullMessages", None)
    inner_calls, sent = _call_middleware(scope)
    assert inner_calls == [] and sent[0]["status"] == 403


def test_middleware_passes_remote_fleet_and_local_control():
    scope = _http_scope("/v1/fleet/PullMessages", ("203.0.113.9", 40000))
    inner_calls, sent = _call_middleware(scope)
    assert inner_calls == [scope] and sent[0]["status"] == 200
    scope = _http_scope("/v1/control/ListRuns", ("127.0.0.1", 40000))
    inner_calls, sent = _call_middleware(scope)
    assert inner_calls == [scope] and sent[0]["status"] == 200


def test_middleware_passes_lifespan_scope_through():
    scope = {"type": "lifespan", "asgi": {"version": "3.0"}}
    inner_calls, _ = _call_middleware(scope)
    assert inner_calls == [scope]
