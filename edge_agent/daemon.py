"""``edge-agent serve``: wires the parts together and runs them. Decides nothing itself."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import uvicorn

from edge_agent.access import AccessError, Authenticator, keys_path, refuse_open_listen
from edge_agent.api.app import create_app
from edge_agent.cache import ResponseCache
from edge_agent.config import HTTP_ADDRESS_FILE, AgentConfig, load_config, parse_listen, with_overrides
from edge_agent.engines.llama import LlamaBackend
from edge_agent.gateway import Gateway
from edge_agent.metrics import AgentMetrics
from edge_agent.models import ModelArtifact, resolve_model
from edge_agent.policy.classify import PromptClassifier
from edge_agent.reload import Reloader
from edge_agent.routing_audit import RoutingAudit, audit_path
from edge_agent.scheduler import Scheduler, SchedulerStats
from edge_agent.service import InferenceService, ServingModel, StepEvents
from edge_agent.upstream import UpstreamPool
from edgefleet import sdnotify
from edgefleet.privatedir import exposure, make_private_dir

log = logging.getLogger(__name__)

ADDRESS_FILE = HTTP_ADDRESS_FILE
# On SIGTERM, requests in flight (streams included) get this long to finish, never longer than their own
# deadline (server.request_timeout_s); then they are cut. Below the unit's TimeoutStopSec (60 s).
DRAIN_TIMEOUT_S = 30.0


def serve(config: AgentConfig, config_path: str | None = None, overrides: dict[str, Any] | None = None) -> None:
    """Run the daemon until SIGTERM/SIGINT, then drain and return. SIGHUP re-reads ``config_path`` with the
    same CLI ``overrides`` and applies what can change live (edge_agent.reload)."""
    # Until the loop runs, a SIGHUP (whose default is to end the process) is noted and ignored.
    signal.signal(signal.SIGHUP, lambda *_: log.warning("SIGHUP while starting: ignored"))
    sdnotify.notify(sdnotify.status(f"starting: loading {config.model.path or config.model.name}"))
    data_dir = config.data_path
    exposed = exposure(data_dir)  # an existing data dir others can enter: said, not refused (it was made so)
    if exposed:
        log.warning("the data dir holds the node's key, cache and routing audit, but %s", exposed)
    make_private_dir(data_dir)  # 0700 whatever the umask, when it is made here
    # Everything that can refuse the config runs before the model loads: a mistake costs no wait.
    classifier = PromptClassifier(config.policy)
    authenticator = Authenticator(keys_path(config), classifier.policy.class_names)
    host, port = parse_listen(config.server.listen)
    refusal = refuse_open_listen(host, not authenticator.open, config.auth.allow_open_non_loopback, port)
    if refusal:
        raise AccessError(refusal)
    m = config.model
    slots = _fleet_slots(config, data_dir)
    installed = slots.active() if slots else None
    # Before the event loop runs, a thread feeds systemd's watchdog: a large model may load for longer than it.
    with sdnotify.pinging_while("model-load"):
        if installed:
            # The fleet's last activated version wins over the config's model: central assigned it.
            artifact = _artifact_of(installed.manifest, installed.path)
            log.info("serving the fleet-assigned %s from slot %s", installed.manifest.ref, installed.slot)
        else:
            artifact = resolve_model(m.name, m.path, data_dir)
        backend = LlamaBackend(artifact, m.n_ctx, m.n_parallel, m.n_batch, m.n_threads, m.n_gpu_layers)
    embedder = None
    if config.embeddings.engine == "onnx":
        from edge_agent.engines.onnx import OnnxEmbedder

        embedder = OnnxEmbedder(config.embeddings.onnx_model, config.embeddings.onnx_tokenizer)
    events = StepEvents()
    scheduler = Scheduler(backend, config.scheduler.max_queue, on_step_end=events.flush)
    cache = None
    if config.cache.enabled:
        cache = ResponseCache(data_dir / "cache" / "responses.db", config.cache.max_bytes, config.cache.ttl_s)
    # Metrics read the model being served now: a fleet rollout can switch it while the agent runs.
    metrics = AgentMetrics(
        model_info=lambda: model_info(service.current.backend),
        scheduler_stats=lambda: service.current.scheduler.stats(),
        cache_stats=cache.stats if cache else (lambda: None),
        onnx_providers=(lambda: embedder.providers) if embedder else list,
        upstream_states=lambda: pool.states() if pool else {},
    )
    classifier.on_failure = metrics.count_classification_failure
    service = InferenceService(
        ServingModel(backend, scheduler, artifact.name, events),
        cache,
        metrics,
        config.server.request_timeout_s,
        embedder=embedder,
    )
    pool = UpstreamPool(config.upstreams) if config.upstreams else None
    audit = RoutingAudit(audit_path(data_dir))
    gateway = Gateway(service, classifier, metrics, pool, audit)
    app = create_app(service, gateway, authenticator, config.server.max_body_bytes, config.scheduler.retry_after_s)
    sock = _bind(config.server.listen)
    host, port = sock.getsockname()[:2]
    _write_address(data_dir, host, port)
    log.info(
        "serving %s on http://%s:%d (data dir %s); %s; upstreams: %s",
        artifact.name,
        host,
        port,
        data_dir,
        "no API keys (open)" if authenticator.open else "API keys required",
        ", ".join(u.name for u in config.upstreams) or "none",
    )
    server = _Server(
        uvicorn.Config(
            app,
            log_level=config.log_level,
            access_log=False,
            lifespan="off",
            # uvicorn annotates this int but only hands it to asyncio.wait_for, which takes seconds as a float.
            timeout_graceful_shutdown=min(DRAIN_TIMEOUT_S, config.server.request_timeout_s),  # type: ignore[arg-type]
            log_config=None,
        )
    )
    reloader = Reloader(
        config,
        lambda: with_overrides(load_config(config_path), **(overrides or {})),
        gateway,
        cache,
        functools.partial(PromptClassifier, on_failure=metrics.count_classification_failure),
    )
    systemd = _Systemd(
        server, service, pool, control_state=lambda: control.state if control else None, address=f"{host}:{port}"
    )
    scheduler.start()
    control = _start_control(config, data_dir, service, audit)
    supernode = _start_supernode(config, data_dir)
    usage_flusher = _start_usage(config, data_dir, metrics)
    _use_uvloop()
    # Everything loaded so far lives as long as the process: keep it out of
    # the collector's full passes, which otherwise stall requests for tens of ms.
    gc.freeze()
    try:
        asyncio.run(_run(server, sock, service, control, slots, config, pool, systemd, reloader))
    finally:
        audit.close()
        if usage_flusher:
            usage_flusher.stop()
        if supernode:
            supernode.stop()
        if control:
            control.stop()
        service.current.scheduler.stop()
        if cache:
            cache.close()
        service.current.backend.close()
        (data_dir / ADDRESS_FILE).unlink(missing_ok=True)


async def _run(
    server: uvicorn.Server,
    sock: socket.socket,
    service: InferenceService,
    control,
    slots,
    config: AgentConfig,
    pool: UpstreamPool | None,
    systemd: _Systemd,
    reloader: Reloader,
) -> None:
    warm_up = asyncio.create_task(service.warm_up())
    systemd.start(warm_up)
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGHUP, lambda: systemd.track(loop.create_task(systemd.reload(reloader))))
    if pool:
        await pool.start()
    activator = None
    if control and slots:
        from edge_agent.control.activation import Activator

        activator = Activator(
            slots,
            lambda: control.client,
            service,
            asyncio.get_running_loop(),
            lambda manifest, path: _load_serving(config, manifest, path),
            drain_timeout_s=config.server.request_timeout_s,
            fleet=config.fleet,
        )
        control.attach_activator(activator)
    try:
        await server.serve(sockets=[sock])
    finally:
        loop.remove_signal_handler(signal.SIGHUP)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)  # stopping: a reload now has nothing to apply to
        systemd.stop()
        warm_up.cancel()
        if activator:
            activator.stop()
        if pool:
            await pool.aclose()
        # Generations cut at the end of the drain stop while this loop can still take their last events.
        await asyncio.to_thread(service.current.scheduler.stop)


class _Server(uvicorn.Server):
    """uvicorn's server with the daemon's own SIGTERM/SIGINT handling. uvicorn's drain is kept (stop accepting,
    let requests in flight finish up to timeout_graceful_shutdown), but its re-raising of the signal afterwards
    is not: that killed the process before serve() closed the audit, the spool and the cache, and exited 143."""

    on_drain: Callable[[], None] = staticmethod(lambda: None)

    @contextlib.contextmanager
    def capture_signals(self):
        loop = asyncio.get_running_loop()
        signals = (signal.SIGTERM, signal.SIGINT)
        for sig in signals:
            loop.add_signal_handler(sig, self.handle_exit, sig, None)
        try:
            yield
        finally:
            for sig in signals:
                loop.remove_signal_handler(sig)

    async def shutdown(self, sockets=None) -> None:
        self.on_drain()
        await super().shutdown(sockets)

    @property
    def requests_in_flight(self) -> int:
        return len(self.server_state.tasks)


class _Systemd:
    """What the agent tells systemd (edgefleet.sdnotify; all no-ops without $NOTIFY_SOCKET): READY=1 once the
    socket is served and the warm-up generated its first token, a STATUS= line every few seconds, WATCHDOG=1
    from this event loop while the current model's scheduler thread runs, STOPPING=1 when the drain starts,
    RELOADING=1 ... READY=1 around a SIGHUP reload."""

    STATUS_INTERVAL_S = 2.0

    def __init__(
        self,
        server: _Server,
        service: InferenceService,
        pool: UpstreamPool | None,
        control_state: Callable[[], str | None],
        address: str,
    ):
        self.server, self.service, self.pool = server, service, pool
        self.control_state, self.address = control_state, address
        self.ready = False
        self.draining = False
        self._tasks: set[asyncio.Task] = set()
        self._last_status = ""
        server.on_drain = self.drain

    def start(self, warm_up: asyncio.Task) -> None:
        self.track(asyncio.get_running_loop().create_task(self._announce(warm_up)))
        interval_s = sdnotify.watchdog_interval_s()
        if interval_s is not None:
            self.track(asyncio.get_running_loop().create_task(sdnotify.watchdog(interval_s, self._scheduler_alive)))

    def track(self, task: asyncio.Task) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()

    def line(self) -> str:
        if self.draining:
            return f"draining: {self.server.requests_in_flight} requests in flight"
        model = self.service.current
        return status_line(
            model.model_id,
            self.address,
            model.scheduler.stats(),
            self.pool.states() if self.pool else {},
            self.control_state(),
        )

    def drain(self) -> None:
        self.draining = True
        sdnotify.notify("STOPPING=1", sdnotify.status(self.line()))
        log.info(
            "draining: %d requests in flight; waiting up to %.0f s",
            self.server.requests_in_flight,
            self.server.config.timeout_graceful_shutdown,
        )

    async def reload(self, reloader: Reloader) -> None:
        if self.draining:
            log.warning("SIGHUP while stopping: ignored")
            return
        if self.ready:
            sdnotify.notify(*sdnotify.reloading(), sdnotify.status("reloading the configuration"))
        try:
            await reloader.reload()
        except Exception:  # a bug in one reload must not end the agent; what was applied stays applied
            log.exception("SIGHUP: the reload failed")
        finally:
            if self.ready:
                self._last_status = self.line()
                sdnotify.notify("READY=1", sdnotify.status(self._last_status))

    async def _announce(self, warm_up: asyncio.Task) -> None:
        self._send(f"warming up {self.service.model_id}")
        await asyncio.wait({warm_up})  # not `await warm_up`: cancelling this task must not cancel the warm-up
        if warm_up.cancelled():
            return
        if warm_up.exception() is not None:
            log.error("warm-up failed, so the local model cannot serve: %s", warm_up.exception())
            self._send(f"warm-up of {self.service.model_id} failed: {warm_up.exception()}")
            return
        while not self.server.started:
            await asyncio.sleep(0.05)
        self.ready = True
        self._last_status = self.line()
        sdnotify.notify("READY=1", sdnotify.status(self._last_status))
        while True:
            await asyncio.sleep(self.STATUS_INTERVAL_S)
            self._send(self.line())

    def _send(self, text: str) -> None:
        if text != self._last_status:
            self._last_status = text
            sdnotify.notify(sdnotify.status(text))

    def _scheduler_alive(self) -> bool:
        # The thread that runs every generation: if it died, the loop still answers /healthz but nothing generates.
        return self.service.current.scheduler.alive


def status_line(
    model_id: str, address: str, stats: SchedulerStats, upstreams: dict[str, str], central: str | None
) -> str:
    """The agent's STATUS= line, e.g. "serving smollm2-135m-instruct on 127.0.0.1:8080: 2 in flight, 0 queued,
    upstreams eu-cloud (closed), central connected"."""
    line = f"serving {model_id} on {address}: {stats.inflight} in flight, {stats.queue_depth} queued"
    if upstreams:
        line += ", upstreams " + ", ".join(f"{name} ({state})" for name, state in upstreams.items())
    if central:
        line += f", central {central}"
    return line


def _fleet_slots(config: AgentConfig, data_dir: Path):
    from edge_agent.control.identity import FleetFiles

    files = FleetFiles(data_dir)
    if not config.fleet.enabled or not files.enrolled():
        return None
    from edge_agent.control.artifacts import ModelSlots
    from edge_agent.control.trust_state import TrustFiles

    # Every signing key the node trusts now, read at each verification: a rotation adds one while it runs.
    return ModelSlots(data_dir, TrustFiles(files.root).signing_keys)


def _artifact_of(manifest, path: Path) -> ModelArtifact:
    return ModelArtifact(manifest.name, path, manifest.sha256, manifest.size, manifest.version)


def _load_serving(config: AgentConfig, manifest, path: Path) -> ServingModel:
    """Load a fleet-delivered version beside the current one, with the config's engine settings."""
    m = config.model
    backend = LlamaBackend(_artifact_of(manifest, path), m.n_ctx, m.n_parallel, m.n_batch, m.n_threads, m.n_gpu_layers)
    events = StepEvents()
    scheduler = Scheduler(backend, config.scheduler.max_queue, on_step_end=events.flush)
    scheduler.start()
    return ServingModel(backend, scheduler, manifest.name, events)


def model_info(backend: LlamaBackend) -> dict[str, str]:
    a = backend.artifact
    return {
        "name": a.name,
        "version": a.version or a.sha256[:12],
        "sha256": a.sha256,
        "engine": backend.engine_name,
        "device": backend.device,
    }


def _start_control(config: AgentConfig, data_dir: Path, service: InferenceService, audit: RoutingAudit):
    """Report to central when this data dir is enrolled and the config allows it."""
    from edge_agent.control.identity import FleetFiles

    files = FleetFiles(data_dir)
    if not config.fleet.enabled or not files.enrolled():
        log.info(
            "not reporting to central (%s)",
            "fleet.enabled = false" if files.enrolled() else "not enrolled: run `edge-agent enroll`",
        )
        return None
    from edge_agent import __version__
    from edge_agent.control import policy
    from edge_agent.control.artifacts import slot_of
    from edge_agent.control.client import ModelInfo, encode_status
    from edge_agent.control.loop import ControlLoop
    from edge_agent.control.telemetry import SystemProbe

    probe = SystemProbe(data_dir)
    started = time.monotonic()
    control: ControlLoop | None = None

    def status() -> bytes:
        model = service.current
        info = model_info(model.backend)
        stats = model.scheduler.stats()
        window = service.metrics.window.take(
            stats.generated_tokens,
            time.monotonic(),
            prompt_tokens_total=stats.prompt_tokens,
            cached_prompt_tokens_total=stats.prefix_cache_hits,
        )
        return encode_status(
            __version__,
            ModelInfo(info["name"], info["version"], info["sha256"], slot_of(model.backend.artifact.path, data_dir)),
            probe.sample(),
            window,
            stats.queue_depth,
            control.config_generation if control else 0,
            time.monotonic() - started,
            time.time(),
            activation=control.activator.status if control and control.activator else None,
            routing=(audit.take_summary(), audit.head),
            running=stats.inflight,
        )

    control = ControlLoop(
        files,
        config.fleet,
        status,
        central_addresses=config.central.addresses,
        on_trust_refused=service.metrics.trust_updates_refused.inc,
    )
    control.start()
    addresses = policy.central_addresses(
        config.central.addresses, control.identity.fleet_addresses, control.identity.central
    )
    log.info("reporting to central at %s as %s", ", ".join(addresses), control.identity.node_id)
    return control


def _start_supernode(config: AgentConfig, data_dir: Path):
    """Run a supervised Flower SuperNode when [federated] enabled = true, under the interpreter
    federated.supernode_runtime chooses (the agent's own, or a Python 3.11+ venv beside an agent on 3.10).
    Whatever is missing is logged with the steps to fix it and recorded for `edge-agent status`; the agent
    serves on: federated learning is never a reason to stop serving."""
    from federated import supernode_runtime

    if not config.federated.enabled:
        supernode_runtime.write_participation(data_dir, False, None, "federated.enabled = false")
        return None
    from edge_agent.control.identity import FleetFiles

    participation = supernode_runtime.resolve(config.federated.python)
    files = FleetFiles(data_dir)
    reason = participation.summary() if not participation.able else files.superlink_problem()
    supernode_runtime.write_participation(data_dir, True, participation, reason)
    if reason:
        log.error("federated.enabled is true but this node does not take part in federated learning: %s", reason)
        return None
    from federated.supernode import start_supernode

    return start_supernode(
        config.federated.supernode,
        files.load().superlink,
        files.ca,
        files.flower_key,
        data_dir,
        config.federated.clientappio_port,
        participation.python,
    )


class _UsageFlusher:
    """Adds the requests counted since the last flush to <data>/federated/usage.json, every minute and at stop."""

    INTERVAL_S = 60.0

    def __init__(self, usage):
        self.usage = usage
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="usage-flush", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.INTERVAL_S):
            self._flush()

    def _flush(self) -> None:
        try:
            self.usage.flush()
        except OSError as exc:
            log.warning("cannot write usage totals to %s: %s", self.usage.path, exc)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._flush()


def _start_usage(config: AgentConfig, data_dir: Path, metrics: AgentMetrics):
    """Count usage for the usage-stats task only when this node takes part in federated learning."""
    if not config.federated.enabled:
        return None
    from federated.local_data import UsageCounters

    metrics.usage = UsageCounters(data_dir)
    return _UsageFlusher(metrics.usage)


def _use_uvloop() -> None:
    """uvloop (from uvicorn[standard]) roughly halves the event loop's cost per request."""
    try:
        import uvloop
    except ImportError:
        log.info("uvloop is not installed; using asyncio's default event loop")
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def _bind(listen: str) -> socket.socket:
    host, port = parse_listen(listen)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Accepted sockets inherit this on Linux. Without it, Nagle's algorithm
    # holds a response body behind its headers until the client's delayed
    # ACK (about 40 ms), and every streamed token likewise.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _write_address(data_dir: Path, host: str, port: int) -> None:
    tmp = data_dir / (ADDRESS_FILE + ".tmp")
    tmp.write_text(f"{host}:{port}\n")
    os.replace(tmp, data_dir / ADDRESS_FILE)
