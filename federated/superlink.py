"""Central's Flower SuperLink: started as `python -m federated.superlink [flower-superlink flags]`.

Flower 1.42 serves its Fleet, Control and Runtime APIs on one HTTPS port, and
without Flower's enterprise account auth the Control API (start runs, register
nodes) answers anyone who can reach that port. Edge boxes must reach the Fleet
API, so this launcher runs the unchanged flower-superlink with one extra ASGI
layer in front: from any other host only `/v1/fleet/*` (node-authenticated by
Flower's SuperNode auth) and `/health` pass; Control and Runtime answer only
connections from this host (central and the ServerApp it spawns).
"""

from __future__ import annotations

import ipaddress
import json
import sys

FLEET_PREFIXES = ("/v1/fleet/", "/health")


def is_same_host(client_host: str | None, server_host: str | None) -> bool:
    if not client_host:
        return False
    try:
        client = ipaddress.ip_address(client_host)
    except ValueError:
        return False
    if client.is_loopback:
        return True
    return server_host is not None and client_host == server_host


def allowed(path: str, client_host: str | None, server_host: str | None) -> bool:
    return path.startswith(FLEET_PREFIXES) or is_same_host(client_host, server_host)


class FleetOnlyFromElsewhere:
    """ASGI middleware: refuse everything but the Fleet API to connections from other hosts."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            client = (scope.get("client") or (None, None))[0]
            server = (scope.get("server") or (None, None))[0]
            if not allowed(scope.get("path", ""), client, server):
                body = json.dumps({"detail": "only the Fleet API is served to other hosts"}).encode()
                await send(
                    {
                        "type": "http.response.start",
                        "status": 403,
                        "headers": [
                            (b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


def main() -> None:
    import flwr.superlink.main as superlink_main
    from flwr.superlink.cli import flower_superlink

    create_app = superlink_main.create_app

    def create_guarded_app(*args, **kwargs):
        app = create_app(*args, **kwargs)
        app.add_middleware(FleetOnlyFromElsewhere)
        return app

    # flower-superlink imports create_app from this module when it starts serving.
    superlink_main.create_app = create_guarded_app
    sys.argv[0] = "flower-superlink"
    flower_superlink()


if __name__ == "__main__":
    main()
