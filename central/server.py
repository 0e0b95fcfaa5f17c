"""`edgefleet central serve`: the enrollment server (server TLS) and the fleet/admin server (mTLS).

Two gRPC servers in one asyncio loop, because the ports differ in what they
demand of the client: 7444 takes anyone with a bootstrap token, 7443 only a
certificate signed by the fleet CA (checked in the TLS handshake, before any
handler runs).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
from dataclasses import replace
from pathlib import Path

import grpc

from central.blobs import LocalBlobStore
from central.coordinator import CentralSettings, Coordinator
from central.datadir import Authority, CentralPaths
from central.heartbeats import FLUSH_INTERVAL_S
from central.servicers import AdminServicer, EnrollmentServicer, FleetServicer
from central.store import SqliteFleetStore
from edgefleet import pki
from edgefleet.v1 import admin_pb2_grpc, enrollment_pb2_grpc, fleet_pb2_grpc

log = logging.getLogger(__name__)

# Agents ping every 30 s on idle connections so NATs and central notice dead peers; allow it.
SERVER_OPTIONS = [
    ("grpc.keepalive_time_ms", 60_000),
    ("grpc.keepalive_timeout_ms", 20_000),
    ("grpc.http2.min_ping_interval_without_data_ms", 20_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.max_receive_message_length", 8 * 1024 * 1024),  # pushes come in chunks of 1 MiB
]


class ListenError(Exception):
    """A port could not be bound."""


def _bind(server: grpc.aio.Server, listen: str, credentials) -> str:
    try:
        port = server.add_secure_port(listen, credentials)
    except RuntimeError as exc:
        raise ListenError(f"cannot listen on {listen}: {exc}") from exc
    if not port:
        raise ListenError(f"cannot listen on {listen}: the address is in use or not local")
    host = listen.rsplit(":", 1)[0]
    return f"{host}:{port}"


async def serve(paths: CentralPaths, settings: CentralSettings, fleet_listen: str, enroll_listen: str,
                advertise_host: str = "", superlink_listen: str | None = None) -> None:
    authority = Authority.load(paths)
    store = SqliteFleetStore(paths.store)
    server_key = paths.server_key.read_bytes()
    # The chain carries the CA so an enrolling agent can find it and check it against its pinned fingerprint.
    chain = paths.server_cert.read_bytes() + paths.ca_cert.read_bytes()
    ca_pem = paths.ca_cert.read_bytes()

    enroll_server = grpc.aio.server(options=SERVER_OPTIONS)
    fleet_server = grpc.aio.server(options=SERVER_OPTIONS)
    enroll_address = _bind(enroll_server, enroll_listen, grpc.ssl_server_credentials([(server_key, chain)]))
    fleet_address = _bind(fleet_server, fleet_listen, grpc.ssl_server_credentials(
        [(server_key, chain)], root_certificates=ca_pem, require_client_auth=True))
    settings = replace(settings, fleet_port=_port(fleet_address),
                       enroll_address=f"{advertise_host or _reachable_host(enroll_address)}:{_port(enroll_address)}")

    fed = _federation(paths, authority, superlink_listen, advertise_host)
    if fed is not None:
        settings = replace(settings, superlink_port=fed.port)
    coordinator = Coordinator(store, authority, settings, paths.signing_public_key.read_text(),
                              blobs=LocalBlobStore(paths.blobs),
                              signing_key=pki.load_private_key(paths.signing_key.read_bytes()))
    if fed is not None:
        coordinator.federation = fed
        fed.reconcile_hook = coordinator.reconcile_federation
        fed.start()
        _write_address(paths.root / "superlink-address", f"{fed.host}:{fed.port}")
    enrollment_pb2_grpc.add_EnrollmentServiceServicer_to_server(EnrollmentServicer(coordinator), enroll_server)
    fleet_pb2_grpc.add_FleetServiceServicer_to_server(FleetServicer(coordinator), fleet_server)
    admin_pb2_grpc.add_AdminServiceServicer_to_server(AdminServicer(coordinator), fleet_server)
    await enroll_server.start()
    await fleet_server.start()
    # Tests and the local-fleet launcher read the bound addresses (ports may be chosen at run time).
    _write_address(paths.enroll_address_file, enroll_address)
    _write_address(paths.fleet_address_file, fleet_address)
    log.info("central serving: fleet/admin (mTLS) on %s, enrollment (TLS) on %s; CA %s",
             fleet_address, enroll_address, authority.fingerprint)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    flusher = asyncio.create_task(_flush_heartbeats(coordinator, stop))
    await stop.wait()
    log.info("central stopping")
    await asyncio.gather(enroll_server.stop(grace=5), fleet_server.stop(grace=5))
    await flusher
    if fed is not None:
        await asyncio.to_thread(fed.stop)
    coordinator.flush_heartbeats()
    store.close()


def _federation(paths: CentralPaths, authority: Authority, listen: str | None, advertise_host: str):
    if listen is None:
        return None
    from central.federation import Federation, flower_available

    missing = flower_available()
    if missing:
        log.warning("federated learning is off: %s", missing)
        return None
    return Federation(paths, authority, listen, advertise_host)


async def _flush_heartbeats(coordinator: Coordinator, stop: asyncio.Event) -> None:
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), FLUSH_INTERVAL_S)
        except asyncio.TimeoutError:
            pass
        try:
            coordinator.flush_heartbeats()
        except Exception:  # a failing store must not stop the flusher; the beats are kept for the next try
            log.exception("could not write heartbeats to the store; retrying in %.0f s", FLUSH_INTERVAL_S)
        try:
            # Rollouts move at most once a second, on the heartbeats just written.
            coordinator.rollouts.tick()
        except Exception:
            log.exception("rollout controller tick failed; retrying in %.0f s", FLUSH_INTERVAL_S)


def _port(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


def _reachable_host(address: str) -> str:
    host = address.rsplit(":", 1)[0].strip("[]")
    # A wildcard bind is reachable by the machine's name, not by 0.0.0.0.
    return socket.getfqdn() if host in ("0.0.0.0", "::", "") else host


def _write_address(path: Path, address: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(address + "\n")
    tmp.replace(path)
