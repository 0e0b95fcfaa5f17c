"""`edgefleet central serve`: the enrollment server (server TLS) and the fleet/admin server (mTLS).

Two gRPC servers, because the ports differ in what they demand of the client:
7444 takes anyone with a bootstrap token, 7443 only a certificate signed by the
fleet CA (checked in the TLS handshake, before any handler runs). The fleet
server runs on this process's main event loop; enrollment, open to anyone, on
its own thread and loop with its own limits (central.enrollment_server).

One process is one replica. With a PostgreSQL store any number of replicas
serve the same fleet: each announces itself in the store every
ANNOUNCE_INTERVAL_S (what enrollment hands agents as the fleet's addresses,
and what `edgefleet central status` lists), and one of them, the leader
(central.leadership), runs the rollout controller and the SuperLink. With
SQLite the one process is always the leader.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import signal
import socket
import time
from dataclasses import replace
from pathlib import Path

import grpc

from central import datadir, health, leadership, liveness, metrics_server, rollups, rotation
from central.blobs import open_blob_store
from central.datadir import Authority, CentralPaths
from central.enrollment_server import EnrollmentServer
from central.errors import CentralError
from central.heartbeats import FLUSH_INTERVAL_S
from central.leadership import ANNOUNCE_INTERVAL_S, Leadership, live_replicas
from central.server_tls import DynamicTls
from central.servicers import AdminServicer, FleetServicer
from central.services import federation as federation_service
from central.services import rollouts
from central.services import trust as trust_service
from central.services.base import Central, CentralSettings, call
from central.store import FleetStore, ReplicaRecord, display_store, open_store
from edgefleet import sdnotify
from edgefleet.v1 import admin_pb2_grpc, fleet_pb2_grpc

log = logging.getLogger(__name__)

# Agents ping every 30 s on idle connections so NATs and central notice dead peers; allow it.
SERVER_OPTIONS = [
    ("grpc.keepalive_time_ms", 60_000),
    ("grpc.keepalive_timeout_ms", 20_000),
    ("grpc.http2.min_ping_interval_without_data_ms", 20_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.max_receive_message_length", 8 * 1024 * 1024),  # pushes come in chunks of 1 MiB
    *health.CONNECTION_AGE_OPTIONS,  # heartbeat streams spread over replicas again after one comes back
]


# A one-word file in the data dir; when present its level wins over --log-level, at start and on SIGHUP.
LOG_LEVEL_FILE = "log-level"
_LOG_LEVELS = ("debug", "info", "warning", "error")
STATUS_INTERVAL_S = 5.0
# How often the leader deletes history past its retention (_prune_history).
PRUNE_INTERVAL_S = 300.0
SUPERLINK_READY_TIMEOUT_S = 60.0
# The /metrics listener's bound address ("off" when disabled), for tests and scripts.
METRICS_ADDRESS_FILE = "metrics-address"


class ListenError(CentralError):
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


async def serve(
    paths: CentralPaths,
    settings: CentralSettings,
    fleet_listen: str,
    enroll_listen: str,
    advertise_host: str = "",
    superlink_listen: str | None = None,
    store_spec: str = "",
    blobs_spec: str = "",
    fleet_addresses: tuple[str, ...] = (),
    metrics_listen: str = metrics_server.DEFAULT_LISTEN,
) -> int:
    """Serve until SIGTERM/SIGINT (0) or until this replica loses the leadership (EXIT_DEPOSED).
    `fleet_addresses`: what enrollment hands agents (a load balancer's address, say); empty, with a shared
    store every live replica's fleet address as the replicas announce themselves, and with SQLite none."""
    # Until the loop's handler is set, a SIGHUP (whose default is to end the process) is ignored.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    sdnotify.notify(sdnotify.status("starting"))
    flag_level = logging.getLogger().getEffectiveLevel()
    _apply_log_level(paths, flag_level, at_start=True)
    trust_state = rotation.load_trust(paths)  # finishes a rotation step a stop interrupted
    authority = trust_state.authority
    spec = datadir.store_spec(paths, store_spec)
    store = open_store(spec)
    try:
        for note in trust_service.reconcile_store(store, trust_state):  # the store's part of such a step
            log.warning("%s", note)
        datadir.require_fleet_ca(store, authority.fingerprint, paths.root)
        adopted = datadir.adopt_init_admin(store, paths, authority, time.time())  # a fleet from before operators
        if adopted:
            log.warning("%s", adopted)
    except BaseException:
        store.close()
        raise
    blobs = open_blob_store(blobs_spec, paths.blobs)
    # The chain carries the CA so an enrolling agent can find it and check it against its pinned fingerprint;
    # it follows rotations without a restart (central.server_tls).
    tls = DynamicTls(lambda: trust_state)

    fleet_server = grpc.aio.server(options=SERVER_OPTIONS)
    # Enrollment is open to anyone: its own thread and event loop, so that a flood there never delays this
    # loop's heartbeats (central.enrollment_server). Bound now, for its address; served once central is built.
    enroll_credentials = tls.enroll_credentials()
    enroll_server = EnrollmentServer(
        functools.partial(_bind, listen=enroll_listen, credentials=enroll_credentials), SERVER_OPTIONS
    )
    enroll_address = await asyncio.to_thread(enroll_server.bind)
    fleet_address = _bind(fleet_server, fleet_listen, tls.fleet_credentials())
    metrics = _bind_metrics(paths, metrics_listen)
    host = advertise_host or _reachable_host(fleet_address)
    replica = ReplicaRecord(
        replica_id=f"{host}:{_port(fleet_address)}",
        fleet_address=f"{host}:{_port(fleet_address)}",
        enroll_address=f"{advertise_host or _reachable_host(enroll_address)}:{_port(enroll_address)}",
        started_at=time.time(),
        last_seen_at=time.time(),
    )
    settings = replace(
        settings,
        fleet_port=_port(fleet_address),
        enroll_address=replica.enroll_address,
        fleet_addresses=fleet_addresses,
    )

    fed = _federation(paths, authority, superlink_listen, advertise_host)
    if fed is not None:
        settings = replace(settings, superlink_port=fed.port)
    central = Central(
        store,
        authority,
        settings,
        trust_state.signing_public_key_pem,
        blobs=blobs,
        signing_key=trust_state.signing_key,
        trust=trust_state,
    )
    tls.source = lambda: central.trust or trust_state
    leader = Leadership(store, replica.replica_id)
    # One process on SQLite hands agents no list: they dial the host they enrolled through, as always.
    follow_replicas = store.remote and not fleet_addresses
    await _announce_once(central, replica, follow_replicas)
    if await _check_leadership(central, leader) == leadership.ELECTED and fed is not None:
        _start_federation(central, fed, paths)
    if metrics is not None:  # before the servers start, so that every beat and enrollment is counted
        central.metrics = metrics_server.fleet_collector(central)
        metrics.serve(central.metrics.registry(), metrics_server.operator_check(central), trust=lambda: central.trust)
    fleet_pb2_grpc.add_FleetServiceServicer_to_server(FleetServicer(central), fleet_server)
    admin_pb2_grpc.add_AdminServiceServicer_to_server(AdminServicer(central), fleet_server)
    checks = [health.add_health(fleet_server)]
    await asyncio.to_thread(enroll_server.start, central)
    await fleet_server.start()
    # Tests and the local-fleet launcher read the bound addresses (ports may be chosen at run time).
    _write_address(paths.enroll_address_file, enroll_address)
    _write_address(paths.fleet_address_file, fleet_address)
    _write_address(paths.root / METRICS_ADDRESS_FILE, metrics.address if metrics is not None else "off")
    log.info(
        "central serving (replica %s, %s): fleet/admin (mTLS) on %s, enrollment (TLS) on %s; CA %s; store %s",
        replica.replica_id,
        "leader" if leader.is_leader else "follower",
        fleet_address,
        enroll_address,
        authority.fingerprint,
        display_store(spec),
    )
    if metrics is not None:
        log.info("fleet metrics on %s://%s/metrics", metrics.scheme, metrics.address)

    stop = asyncio.Event()
    deposed = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, _reload, paths, flag_level)
    flusher = asyncio.create_task(_flush_heartbeats(central, leader, stop))
    background = [
        asyncio.create_task(_lead(central, leader, fed, paths, stop, deposed)),
        asyncio.create_task(_announce(central, replica, follow_replicas, stop)),
        asyncio.create_task(_tell_systemd(store, settings, fleet_address, enroll_address, fed, leader, stop)),
        asyncio.create_task(_prune_history(central, leader, stop)),
        asyncio.create_task(_watch_trust(central, stop)),
    ]
    interval_s = sdnotify.watchdog_interval_s()
    if interval_s is not None:
        # Fed from this loop, and only while the heartbeat flusher (which also drives rollouts) runs.
        background.append(asyncio.create_task(sdnotify.watchdog(interval_s, lambda: not flusher.done())))
    await stop.wait()
    log.info("central replica %s stopping", replica.replica_id)
    sdnotify.notify("STOPPING=1", sdnotify.status("stopping: finishing calls in flight (5 s grace)"))
    loop.remove_signal_handler(signal.SIGHUP)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    for task in background:
        task.cancel()
    # Load balancers see NOT_SERVING while calls in flight finish.
    await asyncio.gather(*(health.stop_serving(c) for c in checks))
    await asyncio.gather(asyncio.to_thread(enroll_server.stop, 5), fleet_server.stop(grace=5))
    await flusher
    if metrics is not None:
        await asyncio.to_thread(metrics.stop)
    if fed is not None:
        await asyncio.to_thread(fed.stop)
    await call(central, _leave, central, leader, replica)
    central.close()
    store.close()
    return leadership.EXIT_DEPOSED if deposed.is_set() else 0


def _bind_metrics(paths: CentralPaths, listen: str) -> metrics_server.MetricsServer | None:
    """The /metrics listener, bound (served once central is built); None when --metrics-listen is off."""
    try:
        metrics = metrics_server.listener(paths, listen)
        if metrics is not None:
            metrics.bind()
    except metrics_server.MetricsListenError as exc:
        raise ListenError(str(exc)) from exc
    return metrics


def _start_federation(central: Central, fed, paths: CentralPaths) -> None:
    central.federation = fed
    fed.authority = central.authority  # the current CA, should a rotation have happened since this replica started
    fed.reconcile_hook = functools.partial(federation_service.reconcile, central)
    fed.start()
    _write_address(paths.root / "superlink-address", f"{fed.host}:{fed.port}")


async def _check_leadership(central: Central, leader: Leadership) -> str | None:
    try:
        change = await call(central, leader.check)
    except Exception as exc:  # noqa: BLE001 - a follower that cannot reach the store tries again next time
        log.warning("replica %s: cannot reach the leader lock (%s); trying again", leader.replica_id, exc)
        return None
    if change == leadership.ELECTED:
        # Among replicas a change of leader is news at any log level; a lone SQLite central always leads.
        log.log(
            logging.WARNING if central.store.remote else logging.INFO,
            "replica %s is the leader (term %d): it runs the rollout controller and the SuperLink",
            leader.replica_id,
            leader.term,
        )
    return change


async def _lead(
    central: Central, leader: Leadership, fed, paths: CentralPaths, stop: asyncio.Event, deposed: asyncio.Event
) -> None:
    """Followers try for the leader lock, the leader confirms it, every CHECK_INTERVAL_S."""
    while not stop.is_set():
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), leadership.CHECK_INTERVAL_S)
        if stop.is_set():
            return
        change = await _check_leadership(central, leader)
        if change == leadership.ELECTED and fed is not None:
            await asyncio.to_thread(_start_federation, central, fed, paths)
        elif change == leadership.DEPOSED:
            log.error(
                "replica %s lost the leader lock (term %d): stopping, so that nothing it led outlives its term;"
                " restarted, it joins as a follower",
                leader.replica_id,
                leader.term,
            )
            deposed.set()
            stop.set()


async def _announce_once(central: Central, replica: ReplicaRecord, follow_replicas: bool) -> None:
    """Write this replica into the store and, unless the operator fixed them, learn the live replicas'
    fleet addresses (for enrollment)."""
    record = replace(replica, last_seen_at=time.time())
    replicas = await call(central, _announce_and_list, central.store, record)
    if not follow_replicas:
        return
    live = live_replicas(replicas, record.last_seen_at)
    addresses = [record.fleet_address, *sorted(r.fleet_address for r in live if r.replica_id != record.replica_id)]
    central.settings = replace(central.settings, fleet_addresses=tuple(addresses))


def _announce_and_list(store: FleetStore, record: ReplicaRecord) -> list[ReplicaRecord]:
    store.announce_replica(record)
    return store.list_replicas()


async def _announce(central: Central, replica: ReplicaRecord, follow_replicas: bool, stop: asyncio.Event) -> None:
    while not stop.is_set():
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), ANNOUNCE_INTERVAL_S)
        if stop.is_set():
            return
        try:
            await _announce_once(central, replica, follow_replicas)
        except Exception as exc:  # noqa: BLE001 - the store may be down for a moment; the flusher says more
            log.warning("replica %s: could not announce itself in the store: %s", replica.replica_id, exc)


def _leave(central: Central, leader: Leadership, replica: ReplicaRecord) -> None:
    """At a clean stop: the last beats and every minute of history held written, the lock handed on, this replica
    out of the list."""
    try:
        central.beats.flush(history=True)
    except Exception:
        log.exception("could not write the last heartbeats to the store")
    with contextlib.suppress(Exception):
        leader.release()
    with contextlib.suppress(Exception):
        central.store.forget_replica(replica.replica_id)


async def _tell_systemd(
    store: FleetStore,
    settings: CentralSettings,
    fleet_address: str,
    enroll_address: str,
    fed,
    leader: Leadership,
    stop: asyncio.Event,
) -> None:
    """READY=1 once the gRPC ports are served and the SuperLink (when run) accepts connections; then a STATUS=
    line every STATUS_INTERVAL_S while it changes. No-ops without $NOTIFY_SOCKET."""
    leads_superlink = fed is not None and leader.is_leader
    if not sdnotify.notify(sdnotify.status("waiting for the SuperLink" if leads_superlink else "starting")):
        return  # not under systemd: nothing to count for
    superlink = ""
    if leads_superlink:
        superlink = f"{fed.host}:{fed.port}"
        host, port = fed.control_address.rsplit(":", 1)
        if not await _wait_listening(host.strip("[]"), int(port), SUPERLINK_READY_TIMEOUT_S, stop):
            log.warning(
                "the SuperLink does not accept connections on %s after %.0f s; ready without it (see %s)",
                superlink,
                SUPERLINK_READY_TIMEOUT_S,
                fed.superlink.log_path,
            )
            superlink += " (not answering)"
    last = ""
    ready = False
    while not stop.is_set():
        try:
            online, enrolled = await asyncio.to_thread(_count_nodes, store, settings.heartbeat_interval_s)
            role = "leader" if leader.is_leader else "follower"
            line = status_line(
                fleet_address, enroll_address, superlink if leader.is_leader else "", online, enrolled, role
            )
        except Exception as exc:  # noqa: BLE001 - a failing store must not silence the status; the flusher reports it
            line = f"serving fleet API on {fleet_address}; node count unavailable: {exc}"
        if not ready:
            ready = sdnotify.notify("READY=1", sdnotify.status(line))
        elif line != last:
            sdnotify.notify(sdnotify.status(line))
        last = line
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), STATUS_INTERVAL_S)


def status_line(
    fleet_address: str, enroll_address: str, superlink: str, online: int, enrolled: int, role: str = ""
) -> str:
    """Central's STATUS= line; `role` is "leader" or "follower" among replicas.

    For example "serving fleet API on 0.0.0.0:7443, enrollment on 0.0.0.0:7444; 3 nodes online (of 5); leader".
    """
    line = f"serving fleet API on {fleet_address}, enrollment on {enroll_address}"
    if superlink:
        line += f", SuperLink on {superlink}"
    line += f"; {online} node{'' if online == 1 else 's'} online (of {enrolled})"
    return f"{line}; {role}" if role else line


def _count_nodes(store: FleetStore, heartbeat_interval_s: float) -> tuple[int, int]:
    """(online, enrolled and not revoked), from the store's last flushed heartbeats."""
    now = time.time()
    states = [liveness.node_state(n, heartbeat_interval_s, now) for n in store.list_nodes()]
    return states.count(liveness.ONLINE), len(states) - states.count(liveness.REVOKED)


async def _wait_listening(host: str, port: int, timeout_s: float, stop: asyncio.Event) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not stop.is_set():
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 1.0)
        except (OSError, asyncio.TimeoutError):
            await asyncio.sleep(0.2)
            continue
        writer.close()
        return True
    return False


def _reload(paths: CentralPaths, flag_level: int) -> None:
    """SIGHUP: the log level from <data-dir>/log-level (or back to --log-level without the file). Nothing else
    central runs with can change live: it all comes from flags."""
    sdnotify.notify(*sdnotify.reloading(), sdnotify.status("reloading"))
    _apply_log_level(paths, flag_level, at_start=False)
    log.warning(
        "SIGHUP: --listen, --enroll-listen, --advertise, --superlink-listen, --heartbeat-interval and "
        "--cert-lifetime need a restart to change"
    )
    sdnotify.notify("READY=1")


def _apply_log_level(paths: CentralPaths, flag_level: int, at_start: bool) -> None:
    path = paths.root / LOG_LEVEL_FILE
    try:
        word = path.read_text().strip().lower()
    except FileNotFoundError:
        word = ""
    except OSError as exc:
        log.error(
            "cannot read %s (%s); the log level stays %s",
            path,
            exc,
            logging.getLevelName(logging.getLogger().level).lower(),
        )
        return
    if word and word not in _LOG_LEVELS:
        log.error(
            "%s: expected one of %s, got %r; the log level stays %s",
            path,
            ", ".join(_LOG_LEVELS),
            word,
            logging.getLevelName(logging.getLogger().level).lower(),
        )
        return
    level = logging.getLevelName(word.upper()) if word else flag_level
    if at_start and not word:
        return
    logging.getLogger().setLevel(level)
    # WARNING, so that the line shows at any level.
    log.warning(
        "%slog level %s (from %s)",
        "" if at_start else "SIGHUP: ",
        logging.getLevelName(level).lower(),
        path if word else "--log-level",
    )


def _federation(paths: CentralPaths, authority: Authority, listen: str | None, advertise_host: str):
    if listen is None:
        return None
    from central.federation import Federation, flower_available

    missing = flower_available()
    if missing:
        log.warning("federated learning is off: %s", missing)
        return None
    return Federation(paths, authority, listen, advertise_host)


async def _flush_heartbeats(central: Central, leader: Leadership, stop: asyncio.Event) -> None:
    while not stop.is_set():
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), FLUSH_INTERVAL_S)
        try:
            await call(central, central.beats.flush)
        except Exception:  # a failing store must not stop the flusher; the beats are kept for the next try
            log.exception("could not write heartbeats to the store; retrying in %.0f s", FLUSH_INTERVAL_S)
        if not leader.is_leader:
            continue
        try:
            # Rollouts move at most once a second, on the heartbeats just written.
            await call(central, rollouts.tick, central)
        except Exception:
            log.exception("rollout controller tick failed; retrying in %.0f s", FLUSH_INTERVAL_S)


async def _prune_history(central: Central, leader: Leadership, stop: asyncio.Event) -> None:
    """Every PRUNE_INTERVAL_S the leader derives the hour rollups of the hours that ended from their minute rows, and
    deletes the rollups and burst usage past their retention (a day of minutes, 30 days of hours and of burst
    usage): one replica is enough, and with SQLite the one process leads."""
    while not stop.is_set():
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), PRUNE_INTERVAL_S)
        if stop.is_set():
            return
        if not leader.is_leader:
            continue
        try:
            # The hours' rows from their minutes first (hours ended a little while ago: their last minutes are in),
            # then the retention: a minute is never pruned before its hour was derived.
            derived = await call(
                central, central.store.derive_rollup_hours, central.clock() - rollups.HOUR_DERIVE_DELAY_S
            )
            gone = await call(central, central.store.prune_rollups, central.clock())
        except Exception:  # the store may be down for a moment: the next round tries again
            log.exception("could not prune the history; retrying in %.0f s", PRUNE_INTERVAL_S)
            continue
        if derived:
            log.debug("derived %d hour rollup rows from their minutes", derived)
        if gone:
            log.info("pruned %d history rows past their retention", gone)


# How often a replica looks for trust files copied into its data dir, and checks them against the store's.
TRUST_CHECK_INTERVAL_S = 10.0


async def _watch_trust(central: Central, stop: asyncio.Event) -> None:
    """Every TRUST_CHECK_INTERVAL_S: the data dir's trust files reloaded when they changed on disk (another
    replica's rotation copied in), and an error logged while the store says this data dir lags behind it."""
    assert central.trust is not None
    seen = rotation.files_signature(central.trust.paths)
    reported = ""
    while not stop.is_set():
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), TRUST_CHECK_INTERVAL_S)
        if stop.is_set():
            return
        try:
            paths = central.trust.paths
            now_seen = rotation.files_signature(paths)
            if now_seen != seen:
                before = _trust_summary(central.trust)
                state = await asyncio.to_thread(trust_service.reload_from_files, central)
                seen = now_seen
                # This replica's own rotation wrote the files too: only what came from elsewhere is news.
                if _trust_summary(state) != before:
                    log.warning(
                        "reloaded the data dir's trust files (CA %s, signing key %s, trust version %d)",
                        *_trust_summary(state),
                    )
            problem = await call(central, trust_service.lag_against_store, central.store, central.trust)
        except Exception as exc:  # noqa: BLE001 - files half-copied or the store away: said, tried again
            problem = f"cannot check the data dir's trust against the store: {exc}"
        if problem and problem != reported:
            log.error("this replica's data dir lags the fleet's trust: %s", problem)
        reported = problem or ""


def _trust_summary(state: rotation.TrustState) -> tuple[str, str, int]:
    return state.authority.fingerprint, state.history.current.key_id, state.version


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
