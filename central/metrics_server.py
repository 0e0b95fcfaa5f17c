"""Central's /metrics listener (`central serve --metrics-listen`), apart from the gRPC ports.

On a loopback address it serves plain HTTP, as the agents' /metrics does: only this host can reach it. On any
other address it serves HTTPS with central's server certificate and demands a client certificate from the
fleet CA naming an operator that may read (admin or viewer: `edgefleet admin create prometheus --role viewer`
makes a scraper's), checked against the store as AdminService checks its callers (revoked, renewed away).
A non-loopback listener that cannot have that is refused at start (:class:`MetricsListenError`).

The HTTP server runs on threads of its own (one per connection, at most MAX_CONNECTIONS at once); TLS
handshakes happen on the connection's thread, so a slow client cannot hold up the others.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import ssl
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TypeVar

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest

from central import fleet_metrics
from central.datadir import CentralPaths
from central.errors import CentralError
from central.fleet_metrics import FleetMetrics
from central.rotation import TrustState
from central.services import enrollment
from central.services.base import Caller, Central, operator_problem
from edgefleet import pki

log = logging.getLogger(__name__)

DEFAULT_LISTEN = "127.0.0.1:9470"
OFF = "off"
MAX_CONNECTIONS = 32
CONNECTION_TIMEOUT_S = 10.0
# How long a client certificate's verdict (from the store) is reused: a revocation counts within this.
AUTHORIZATION_TTL_S = 5.0

T = TypeVar("T")


class MetricsListenError(CentralError):
    """--metrics-listen names an address that cannot be served as asked (syntax, binding, or mTLS material)."""


@dataclass(frozen=True)
class Listen:
    """Where /metrics listens, and whether mTLS is demanded even on loopback ("https://HOST:PORT")."""

    host: str
    port: int
    force_tls: bool = False


def parse_listen(text: str) -> Listen | None:
    """HOST:PORT ("[::1]:9470" for IPv6), or https://HOST:PORT for mTLS on a loopback address too; None for
    "off". Raises MetricsListenError."""
    text = text.strip()
    if text.lower() == OFF:
        return None
    scheme, has_scheme, rest = text.partition("://")
    if has_scheme and scheme.lower() != "https":
        raise MetricsListenError(f"--metrics-listen {text!r}: the only scheme is https:// (mTLS on any address)")
    host, sep, port = (rest if has_scheme else text).rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise MetricsListenError(
            f"--metrics-listen {text!r} is not HOST:PORT or https://HOST:PORT (port 0..65535), or {OFF!r}"
        )
    return Listen(host, int(port), force_tls=bool(has_scheme))


def is_loopback(host: str) -> bool:
    """Whether `host` is a loopback address (or "localhost"); a name that resolves elsewhere is not."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class TlsFiles:
    """Central's server certificate and key, and the fleet CA whose client certificates are accepted."""

    certificate: Path
    key: Path
    ca: Path


def trust_context(state: TrustState) -> ssl.SSLContext:
    """server_context from central's trust now (central.rotation): central's certificate and, while a CA rotation
    overlaps, the cross certificate after it; client certificates verified against the CAs central accepts now
    (a CA retired by `ca finish` no longer). Scrapers on OpenSSL or Go refuse the cross certificate under the
    old CA (its path length is 0), unlike gRPC's BoringSSL: they need the new CA in their CA file during the
    overlap (a renewed credential's `ca` holds both)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    # ssl loads a certificate chain from a file only: the chain is public, the key stays the data dir's.
    with tempfile.TemporaryDirectory(prefix="edgefleet-metrics-") as tmp:
        chain = Path(tmp) / "chain.pem"
        cross = pki.certificate_pem(state.cross) if state.cross is not None else b""
        chain.write_bytes(state.server_cert_pem + cross)
        try:
            context.load_cert_chain(str(chain), str(state.paths.server_key))
            context.load_verify_locations(cadata=state.client_roots_pem.decode())
        except (OSError, ssl.SSLError) as exc:
            raise MetricsListenError(f"/metrics cannot take central's rotated certificates and CAs: {exc}") from exc
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def server_context(files: TlsFiles) -> ssl.SSLContext:
    """TLS 1.2+ with central's certificate, client certificates required and verified against the fleet CA."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(str(files.certificate), str(files.key))
        context.load_verify_locations(cafile=str(files.ca))
    except (OSError, ssl.SSLError) as exc:
        raise MetricsListenError(
            f"a /metrics listener off loopback needs mTLS, but central's certificate, key or CA cannot be loaded"
            f" ({files.certificate}, {files.key}, {files.ca}): {exc}"
        ) from exc
    context.verify_mode = ssl.CERT_REQUIRED
    return context


# (identity or None, serial hex) -> why the client may not read the metrics, or None when it may.
Authorize = Callable[[pki.Identity | None, str], "str | None"]


class MetricsServer:
    """In two steps, so that a port that cannot be had fails central's start with the others: `bind()` (returns
    "HOST:PORT" as bound), then `serve(registry, authorize)`; `stop()` ends it. `tls` (at construction) and
    `authorize` are required for a non-loopback host, and not used on loopback."""

    def __init__(
        self,
        listen: tuple[str, int],
        tls: TlsFiles | None = None,
        clock: Callable[[], float] = time.monotonic,
        require_tls: bool | None = None,
    ):
        """`require_tls`: None decides by the host (mTLS off loopback); True demands mTLS on any host."""
        self.host, self.port = listen
        self.registry: CollectorRegistry | None = None
        self.context: ssl.SSLContext | None = None
        if require_tls or (require_tls is None and not is_loopback(self.host)):
            if tls is None:
                raise MetricsListenError(
                    f"--metrics-listen {self.host}:{self.port} is not a loopback address, so /metrics needs mTLS"
                    " with central's certificate and the fleet CA; none was given"
                )
            self.context = server_context(tls)
        self._authorize: Authorize | None = None
        self._trust: Callable[[], TrustState | None] | None = None
        self._served_trust: tuple[str, ...] = ()  # the TrustState.tls_identity self.context was built from
        self._context_lock = threading.Lock()
        self._clock = clock
        self._verdicts: dict[str, tuple[float, str | None]] = {}
        self._verdicts_lock = threading.Lock()
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None
        self.address = ""  # HOST:PORT once bound

    @property
    def scheme(self) -> str:
        return "https" if self.context else "http"

    def bind(self) -> str:
        """Bind the port (connections wait in the backlog until `serve`); "HOST:PORT" as bound."""
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        try:
            self._httpd = _Server((self.host, self.port), _handler(self), family)
        except OSError as exc:
            raise MetricsListenError(f"cannot listen on {self.host}:{self.port} for /metrics: {exc}") from exc
        port = self._httpd.server_address[1]
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.address = f"{host}:{port}"
        return self.address

    def serve(
        self,
        registry: CollectorRegistry,
        authorize: Authorize | None = None,
        trust: Callable[[], TrustState | None] | None = None,
    ) -> None:
        """Serve `registry` on the bound port; `authorize` (required off loopback) judges TLS clients. `trust`
        (central's, as it rotates) replaces the TLS files read at start from the next handshake after it changes."""
        if self.context is not None and authorize is None:
            raise MetricsListenError("a /metrics listener off loopback needs a check of its clients' certificates")
        assert self._httpd is not None, "bind() first"
        self.registry, self._authorize, self._trust = registry, authorize, trust
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="metrics", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(5)

    def tls_context(self) -> ssl.SSLContext | None:
        """The context for the next handshake: rebuilt when central's trust changed (a `ca rotate` or `ca finish`
        takes effect without a restart, as on the gRPC ports). None on plain HTTP."""
        state = self._trust() if self._trust is not None and self.context is not None else None
        if state is None:
            return self.context
        with self._context_lock:
            if state.tls_identity != self._served_trust:
                try:
                    self.context = trust_context(state)
                except MetricsListenError as exc:
                    # Serving the trust from before would accept a retired CA: no handshake until it loads.
                    log.error("%s", exc)
                    raise
                self._served_trust = state.tls_identity
            return self.context

    def refusal(self, der: bytes | None) -> str | None:
        """Why a TLS client with this certificate (DER) may not read /metrics; None when it may."""
        if self._authorize is None:
            return None
        if not der:
            return "no client certificate"
        try:
            cert = pki.load_certificate(ssl.DER_cert_to_PEM_cert(der))
        except Exception as exc:  # noqa: BLE001 - the handshake verified it, but a parse failure must refuse
            return f"unreadable client certificate: {exc}"
        serial = pki.serial_hex(cert)
        now = self._clock()
        with self._verdicts_lock:
            held = self._verdicts.get(serial)
            if held is not None and now - held[0] < AUTHORIZATION_TTL_S:
                return held[1]
        verdict = self._authorize(pki.identity_of(cert), serial)
        with self._verdicts_lock:
            if len(self._verdicts) > 1000:
                self._verdicts.clear()
            self._verdicts[serial] = (now, verdict)
        return verdict

    def render(self) -> bytes:
        assert self.registry is not None, "serve() first"
        return generate_latest(self.registry)


class _Server(ThreadingHTTPServer):
    """One thread per connection, at most MAX_CONNECTIONS at once: past that a connection is closed unread."""

    daemon_threads = True

    def __init__(self, address, handler, family):
        self.address_family = family
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        super().__init__(address, handler)

    def process_request(self, request, client_address) -> None:
        if not self._slots.acquire(blocking=False):
            log.warning("/metrics: %d connections at once; closed one from %s", MAX_CONNECTIONS, client_address[0])
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request, client_address) -> None:
        # A failed TLS handshake or a client hanging up is that client's problem; say so quietly.
        log.debug("/metrics: connection from %s ended with an error", client_address, exc_info=True)


def _handler(server: MetricsServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        timeout = CONNECTION_TIMEOUT_S
        server_version = "edgefleet-central"
        sys_version = ""

        def setup(self) -> None:
            self.request.settimeout(CONNECTION_TIMEOUT_S)
            context = server.tls_context()
            if context is not None:
                self.request = context.wrap_socket(self.request, server_side=True)
            super().setup()

        def do_GET(self) -> None:
            if self.path.split("?", 1)[0] != "/metrics":
                self._reply(404, b"not found: central serves /metrics only\n", "text/plain; charset=utf-8")
                return
            if server.context is not None:
                problem = server.refusal(self.connection.getpeercert(binary_form=True))
                if problem is not None:
                    log.warning("/metrics refused to %s: %s", self.client_address[0], problem)
                    self._reply(403, f"forbidden: {problem}\n".encode(), "text/plain; charset=utf-8")
                    return
            try:
                body = server.render()
            except Exception:
                log.exception("/metrics could not be rendered")
                self._reply(500, b"central could not render its metrics; see its log\n", "text/plain; charset=utf-8")
                return
            self._reply(200, body, CONTENT_TYPE_PLAIN_0_0_4)

        def _reply(self, code: int, body: bytes, content_type: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args) -> None:
            log.debug("/metrics %s: " + format, self.client_address[0], *args)

    return Handler


# -- central's wiring -------------------------------------------------------------------------------------------------


def listener(paths: CentralPaths, listen_text: str) -> MetricsServer | None:
    """The listener `central serve --metrics-listen` asks for, with central's TLS files (used off loopback);
    None for "off". Raises MetricsListenError for a malformed address or unusable TLS files."""
    listen = parse_listen(listen_text)
    if listen is None:
        return None
    tls = TlsFiles(paths.server_cert, paths.server_key, paths.ca_cert)
    return MetricsServer((listen.host, listen.port), tls, require_tls=True if listen.force_tls else None)


def on_store(central: Central, fn: Callable[..., T], *args) -> T:
    """Run a store call from one of this server's threads: right here with SQLite (the store serializes its
    calls with a lock of its own), on central's worker pool with a remote store (as handlers are)."""
    if central.workers is None:
        return fn(*args)
    return central.workers.submit(fn, *args).result()


def fleet_collector(central: Central) -> FleetMetrics:
    """Central's FleetMetrics: its rollup label keys, heartbeat interval, enrollment's refusal reasons, and
    a store snapshot read through `on_store`."""

    def snapshot() -> fleet_metrics.StoreSnapshot:
        results_dir = central.federation.results_dir if central.federation is not None else None
        return on_store(
            central,
            fleet_metrics.read_store_snapshot,
            central.store,
            central.settings.heartbeat_interval_s,
            time.time(),
            results_dir,
        )

    return FleetMetrics(
        central.settings.rollup_labels, central.settings.heartbeat_interval_s, snapshot, enrollment.REASONS
    )


def operator_check(central: Central) -> Authorize:
    """A TLS client may read /metrics when its certificate is central's latest for an unrevoked operator (admin
    or viewer), as for any AdminService read. Refusals are logged, not audited (a scraper retries every few
    seconds)."""

    def authorize(identity: pki.Identity | None, serial: str) -> str | None:
        if identity is None:
            return "the client certificate names no fleet identity"
        if identity.role not in pki.OPERATOR_ROLES:
            return f"{identity} is not an operator's certificate; /metrics needs one (admin or viewer)"
        record = on_store(central, central.store.get_operator, identity.name)
        return operator_problem(Caller(identity, "metrics", serial), record, "metrics.read", pki.OPERATOR_ROLES)

    return authorize
