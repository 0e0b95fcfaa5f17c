"""What central's SuperLink answers, and to whom: the layer in front of Flower's one HTTPS port.

Flower 1.42 serves every API of the SuperLink on one uvicorn port (HTTP/1.1 over TLS; uvicorn
speaks no HTTP/2, so no gRPC either): the Fleet API for SuperNodes, the Control API (register
nodes, start and stop runs, list everything) and the Runtime API (the SuperExec and the ServerApp
take and run a run's tasks), plus `/health`, `/docs` and `/openapi.json`. Flower's own gRPC
servers (Control, Fleet, health) start only when asked (environment variables and a flag that
federated.superlink never sets, and clears). Without Flower's enterprise account auth the Control
and Runtime APIs trust whoever connects, so the decision is made here, on the TLS client
certificate the connection presented (verified by the server's TLS against a CA central makes
for this SuperLink alone, see central.federation):

    /health, /v1/fleet/...   anyone (SuperNodes sign every Fleet call with their registered key)
    /v1/control/...          CONTROL_IDENTITY only: central, which alone holds that key
    /v1/runtime/...          RUNTIME_IDENTITY only: the SuperLink's own SuperExec and ServerApp
    anything else            nobody (docs, OpenAPI schema, unknown paths, any non-HTTP scope)

No address is trusted: a process on central's own host without the certificate is refused like
any other. The identity is looked up by the connection's peer address, so the server must not
rewrite it from X-Forwarded-For (federated.superlink runs uvicorn with proxy_headers off).
Nothing here reads a clock, a file or the network; `PeerRecordingProtocol` only notes, per live
connection, the identity its certificate names.
"""

from __future__ import annotations

import json
import re

CONTROL_IDENTITY = "spiffe://edgefleet/central/control"
RUNTIME_IDENTITY = "spiffe://edgefleet/superlink/runtime"

PUBLIC_PATHS = ("/health",)
# Flower's Fleet routes: /v1/fleet/<name> with a lowercase, dash-separated name.
_FLEET = re.compile(r"/v1/fleet/[a-z0-9][a-z0-9-]*\Z")
_PREFIX_IDENTITY = (("/v1/control/", CONTROL_IDENTITY), ("/v1/runtime/", RUNTIME_IDENTITY))
_ODD_PATH = re.compile(r"//|/\.\.?(/|\Z)|\\|[\x00-\x1f\x7f]")


def decide(scope_type: str, path: str, identity: str | None) -> str | None:
    """None when the request may pass; otherwise why it is refused (sent to the caller)."""
    if scope_type == "lifespan":
        return None
    if scope_type != "http":
        return f"{scope_type} connections are not served"
    if _ODD_PATH.search(path):
        return "the path is not in canonical form"
    if path in PUBLIC_PATHS or _FLEET.match(path):
        return None
    for prefix, required in _PREFIX_IDENTITY:
        if path.startswith(prefix):
            if identity == required:
                return None
            return f"{prefix.strip('/').split('/')[-1]} API: only {required} may call it"
    return "not served"


def identity_from_peercert(peercert: dict | None) -> str | None:
    """The spiffe:// URI in a verified peer certificate (ssl.SSLObject.getpeercert()), or None."""
    for kind, value in (peercert or {}).get("subjectAltName", ()):
        if kind == "URI" and isinstance(value, str) and value.startswith("spiffe://"):
            return value
    return None


# (client host, client port) of each live TLS connection -> the identity its certificate names.
PEERS: dict[tuple, str | None] = {}
_OWNERS: dict[tuple, object] = {}


def _peer_key(client) -> tuple | None:
    return tuple(client[:2]) if client else None


def make_peer_recording_protocol(base: type) -> type:
    """A uvicorn HTTP protocol class that notes each connection's verified client identity.

    asyncio calls connection_made once the TLS handshake is done, so the certificate is known
    before any request on the connection reaches the app."""

    class PeerRecordingProtocol(base):
        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            key = _peer_key(transport.get_extra_info("peername"))
            if key is not None:
                PEERS[key] = identity_from_peercert(transport.get_extra_info("peercert"))
                _OWNERS[key] = self
            self._edgefleet_peer = key

        def connection_lost(self, exc) -> None:
            key = getattr(self, "_edgefleet_peer", None)
            # Only this connection's own entry: a later connection from the same address keeps its own.
            if key is not None and _OWNERS.get(key) is self:
                PEERS.pop(key, None)
                _OWNERS.pop(key, None)
            super().connection_lost(exc)

    return PeerRecordingProtocol


class CertificateGuard:
    """ASGI middleware: pass a request only when `decide` allows it for its connection's identity."""

    def __init__(self, app, peers: dict | None = None):
        self.app = app
        self.peers = PEERS if peers is None else peers

    async def __call__(self, scope, receive, send):
        scope_type = scope.get("type", "")
        key = _peer_key(scope.get("client"))
        identity = self.peers.get(key) if key is not None else None
        reason = decide(scope_type, scope.get("path", ""), identity)
        if reason is None:
            await self.app(scope, receive, send)
        elif scope_type == "websocket":
            await send({"type": "websocket.close", "code": 1008, "reason": reason[:120]})
        elif scope_type == "http":
            body = json.dumps({"detail": reason}).encode()
            await send(
                {
                    "type": "http.response.start",
                    "status": 403,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
                }
            )
            await send({"type": "http.response.body", "body": body})
        # any other scope type: nothing is served, nothing is sent
