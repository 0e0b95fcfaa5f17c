"""The standard gRPC health service (grpc.health.v1.Health) on central's servers, for load balancers and probes.

Overall status ("" service) is SERVING from the moment the server starts and NOT_SERVING, for good, once
shutdown begins (:func:`stop_serving`), so a checker that speaks gRPC (grpc_health_probe, Kubernetes gRPC
probes, Envoy) takes the replica out before its listeners close. HAProxy in TLS passthrough cannot speak
gRPC inside the TLS it does not terminate; packaging/haproxy/README.md says what it checks instead.

Also here: the server options that make agents' long heartbeat streams move between replicas
(:data:`CONNECTION_AGE_OPTIONS`).
"""

from __future__ import annotations

import grpc
from grpc_health.v1 import health, health_pb2_grpc  # type: ignore[import-untyped]  # ships no stubs

# Every connection gets a GOAWAY after about 5 minutes (gRPC adds ±10 % jitter), so after a replica comes back
# the heartbeat streams spread to it again instead of staying where the outage pushed them. Calls in flight then
# have the grace to finish: a heartbeat stream never does and is cut at its end, and the agent reopens it at once
# without losing a beat (edge_agent.control.client.FleetClient.heartbeat); an artifact download resumes from
# its offset. The grace is long because the fleet port also takes `edgefleet model push`, one stream that
# cannot resume: a push over a fresh connection has age + grace, 15 minutes, before it is cut.
CONNECTION_AGE_OPTIONS = [
    ("grpc.max_connection_age_ms", 5 * 60_000),
    ("grpc.max_connection_age_grace_ms", 10 * 60_000),
]

OVERALL = ""  # the health service's name for the server as a whole


def add_health(server: grpc.aio.Server) -> health.aio.HealthServicer:
    """Serve grpc.health.v1.Health on `server` (before it starts), overall status SERVING; keep the servicer
    returned for :func:`stop_serving`."""
    servicer = health.aio.HealthServicer()  # starts with OVERALL: SERVING
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    return servicer


async def stop_serving(servicer: health.aio.HealthServicer) -> None:
    """Answer NOT_SERVING from now on, for every service, whatever sets them later; call it first at shutdown,
    before the servers' grace period, so checkers see the replica leave while it still answers."""
    await servicer.enter_graceful_shutdown()
