"""central.health: the standard grpc.health.v1 service on a real grpc.aio server on loopback, SERVING until
stop_serving, then NOT_SERVING for good."""

import asyncio

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from central.health import CONNECTION_AGE_OPTIONS, OVERALL, add_health, stop_serving

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def _check(stub, service: str = OVERALL) -> int:
    return (await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)).status


def test_serving_until_shutdown_begins():
    async def scenario():
        server = grpc.aio.server(options=CONNECTION_AGE_OPTIONS)
        servicer = add_health(server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = health_pb2_grpc.HealthStub(channel)
                assert await _check(stub) == SERVING
                try:
                    await _check(stub, "edgefleet.v1.NoSuchService")
                    raise AssertionError("an unknown service must be NOT_FOUND")
                except grpc.aio.AioRpcError as exc:
                    assert exc.code() == grpc.StatusCode.NOT_FOUND
                await stop_serving(servicer)
                assert await _check(stub) == NOT_SERVING
                await servicer.set(OVERALL, SERVING)  # what a late caller might do while stopping
                assert await _check(stub) == NOT_SERVING, "shutdown is for good"
        finally:
            await server.stop(None)

    asyncio.run(scenario())


def test_connection_age_moves_streams_within_minutes_and_leaves_pushes_time_to_finish():
    options = dict(CONNECTION_AGE_OPTIONS)
    assert options["grpc.max_connection_age_ms"] == 5 * 60_000
    assert options["grpc.max_connection_age_ms"] + options["grpc.max_connection_age_grace_ms"] == 15 * 60_000
