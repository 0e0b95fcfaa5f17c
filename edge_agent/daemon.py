"""``edge-agent serve``: wires the parts together and runs them. Decides nothing itself."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import socket
import sys
import threading
import time
from pathlib import Path

import uvicorn

from edge_agent.access import AccessError, Authenticator, keys_path, refuse_open_listen
from edge_agent.api.app import create_app
from edge_agent.cache import ResponseCache
from edge_agent.config import HTTP_ADDRESS_FILE, AgentConfig, parse_listen
from edge_agent.engines.llama import LlamaBackend
from edge_agent.gateway import Gateway
from edge_agent.metrics import AgentMetrics
from edge_agent.models import ModelArtifact, resolve_model
from edge_agent.policy.classify import PromptClassifier
from edge_agent.routing_audit import RoutingAudit, audit_path
from edge_agent.scheduler import Scheduler
from edge_agent.service import InferenceService, ServingModel
from edge_agent.upstream import UpstreamPool

log = logging.getLogger(__name__)

ADDRESS_FILE = HTTP_ADDRESS_FILE


def serve(config: AgentConfig) -> None:
    data_dir = config.data_path
    data_dir.mkdir(parents=True, exist_ok=True)
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
    scheduler = Scheduler(backend, config.scheduler.max_queue)
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
    service = InferenceService(ServingModel(backend, scheduler, artifact.name), cache, metrics,
                               config.server.request_timeout_s, embedder=embedder)
    pool = UpstreamPool(config.upstreams) if config.upstreams else None
    audit = RoutingAudit(audit_path(data_dir))
    gateway = Gateway(service, classifier, metrics, pool, audit, config.policy.upstream_unknown_models)
    app = create_app(service, gateway, authenticator, config.server.max_body_bytes, config.scheduler.retry_after_s)
    sock = _bind(config.server.listen)
    host, port = sock.getsockname()[:2]
    _write_address(data_dir, host, port)
    log.info("serving %s on http://%s:%d (data dir %s); %s; upstreams: %s", artifact.name, host, port, data_dir,
             "no API keys (open)" if authenticator.open else "API keys required",
             ", ".join(u.name for u in config.upstreams) or "none")
    server = uvicorn.Server(uvicorn.Config(
        app, log_level=config.log_level, access_log=False, lifespan="off",
        timeout_graceful_shutdown=30, log_config=None,
    ))
    scheduler.start()
    control = _start_control(config, data_dir, service, audit)
    supernode = _start_supernode(config, data_dir)
    usage_flusher = _start_usage(config, data_dir, metrics)
    _use_uvloop()
    # Everything loaded so far lives as long as the process: keep it out of
    # the collector's full passes, which otherwise stall requests for tens of ms.
    gc.freeze()
    try:
        asyncio.run(_run(server, sock, service, control, slots, config, pool))
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


async def _run(server: uvicorn.Server, sock: socket.socket, service: InferenceService, control, slots,
               config: AgentConfig, pool: UpstreamPool | None) -> None:
    warm_up = asyncio.create_task(service.warm_up())
    if pool:
        await pool.start()
    activator = None
    if control and slots:
        from edge_agent.control.activation import Activator

        activator = Activator(slots, lambda: control.client, service, asyncio.get_running_loop(),
                              lambda manifest, path: _load_serving(config, manifest, path),
                              drain_timeout_s=config.server.request_timeout_s, fleet=config.fleet)
        control.attach_activator(activator)
    try:
        await server.serve(sockets=[sock])
    finally:
        warm_up.cancel()
        if activator:
            activator.stop()
        if pool:
            await pool.aclose()


def _fleet_slots(config: AgentConfig, data_dir: Path):
    from edge_agent.control.identity import FleetFiles

    files = FleetFiles(data_dir)
    if not config.fleet.enabled or not files.enrolled():
        return None
    from edge_agent.control.artifacts import ModelSlots

    return ModelSlots(data_dir, files.load().signing_public_key_pem)


def _artifact_of(manifest, path: Path) -> ModelArtifact:
    return ModelArtifact(manifest.name, path, manifest.sha256, manifest.size, manifest.version)


def _load_serving(config: AgentConfig, manifest, path: Path) -> ServingModel:
    """Load a fleet-delivered version beside the current one, with the config's engine settings."""
    m = config.model
    backend = LlamaBackend(_artifact_of(manifest, path), m.n_ctx, m.n_parallel, m.n_batch, m.n_threads,
                           m.n_gpu_layers)
    scheduler = Scheduler(backend, config.scheduler.max_queue)
    scheduler.start()
    return ServingModel(backend, scheduler, manifest.name)


def model_info(backend: LlamaBackend) -> dict[str, str]:
    a = backend.artifact
    return {"name": a.name, "version": a.version or a.sha256[:12], "sha256": a.sha256,
            "engine": backend.engine_name, "device": backend.device}


def _start_control(config: AgentConfig, data_dir: Path, service: InferenceService, audit: RoutingAudit):
    """Report to central when this data dir is enrolled and the config allows it."""
    from edge_agent.control.identity import FleetFiles

    files = FleetFiles(data_dir)
    if not config.fleet.enabled or not files.enrolled():
        log.info("not reporting to central (%s)", "fleet.enabled = false" if files.enrolled() else
                 "not enrolled: run `edge-agent enroll`")
        return None
    from edge_agent import __version__
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
        window = service.metrics.window.take(stats.generated_tokens, time.monotonic())
        return encode_status(__version__, ModelInfo(info["name"], info["version"], info["sha256"]), probe.sample(),
                             window, stats.queue_depth, control.config_generation if control else 0,
                             time.monotonic() - started, time.time(),
                             activation=control.activator.status if control and control.activator else None,
                             routing=(audit.take_summary(), audit.head))

    control = ControlLoop(files, config.fleet, status)
    control.start()
    log.info("reporting to central at %s as %s", control.identity.central, control.identity.node_id)
    return control


def _start_supernode(config: AgentConfig, data_dir: Path):
    """Run a supervised Flower SuperNode when [federated] enabled = true. Whatever is missing is logged
    plainly and the agent serves on: federated learning is never a reason to stop serving."""
    if not config.federated.enabled:
        return None
    from edge_agent.control.identity import FleetFiles

    files = FleetFiles(data_dir)
    reason = None
    if sys.version_info < (3, 11):
        reason = "federated learning needs Python 3.11 or later (flwr 1.42)"
    elif not files.enrolled():
        reason = "this data dir is not enrolled: run `edge-agent enroll`"
    elif not files.load().superlink:
        reason = "central ran no SuperLink when this node enrolled (enroll again once it does)"
    elif not files.flower_key.exists():
        reason = f"{files.flower_key} is missing: enroll again to make a Flower key"
    if reason:
        log.error("federated.enabled is true but federated learning is off: %s", reason)
        return None
    from federated.supernode import start_supernode

    return start_supernode(config.federated.supernode, files.load().superlink, files.ca, files.flower_key,
                           data_dir, config.federated.clientappio_port)


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
