"""The agent's only door to central: enrollment and FleetService calls, and the protobuf they carry.

Everything else in the agent deals in dataclasses and bytes; this module
turns them into edgefleet.v1 messages and gRPC errors into
:class:`CentralUnavailable` (try again later) or :class:`CentralRefused`
(central said no: revoked, unknown, bad request).
"""

from __future__ import annotations

import logging
import queue
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from edge_agent.control import policy
from edge_agent.control.identity import FleetFiles, FleetIdentity
from edge_agent.control.interval_stats import InferenceWindow, UpstreamUsage, fold_usage
from edge_agent.control.spool import SpooledReport
from edge_agent.control.telemetry import SystemSample
from edge_agent.control.trust_state import OfferedTrust
from edge_agent.errors import AgentError
from edgefleet import channels, pki, report_limits
from edgefleet.atomicfile import write_private
from edgefleet.nodekeys import generate_node_key
from edgefleet.v1 import common_pb2, enrollment_pb2, enrollment_pb2_grpc, fleet_pb2, fleet_pb2_grpc

log = logging.getLogger(__name__)

_TRANSIENT = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.ABORTED,
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.CANCELLED,
}


class ControlError(AgentError):
    """Talking to central failed."""


class CentralUnavailable(ControlError):
    """Central could not be reached or did not answer in time; retry with backoff."""


class CentralRefused(ControlError):
    """Central answered no (revoked, not enrolled, invalid request); retrying will not help by itself."""


class EnrollError(ControlError):
    """Enrollment failed; the message says why and what to do."""


def _wrap(exc: grpc.RpcError, what: str) -> ControlError:
    code, details = exc.code(), exc.details()
    if code in _TRANSIENT:
        return CentralUnavailable(f"{what}: central unavailable ({code.name}: {details})")
    return CentralRefused(f"{what}: central refused ({code.name}: {details})")


# -- enrollment --------------------------------------------------------------------


def enroll(central: str, ca_fingerprint: str, token: str, files: FleetFiles, timeout_s: float = 15.0) -> FleetIdentity:
    """Make a key, send a CSR with the token, pin the CA, and store the node's identity in files."""
    if files.enrolled():
        raise EnrollError(
            f"this data dir is already enrolled as {files.load().node_id} ({files.meta}); "
            "use another --data-dir, or remove its fleet/ directory to enroll again"
        )
    try:
        ca_pem = channels.discover_ca(central, ca_fingerprint, timeout_s)
    except pki.PkiError as exc:
        raise EnrollError(str(exc)) from exc
    except OSError as exc:
        raise EnrollError(f"cannot reach central's enrollment port at {central}: {exc}") from exc
    key = pki.generate_key()
    flower_private, flower_public = generate_node_key()
    request = enrollment_pb2.EnrollRequest(
        token=token.strip(),
        csr_pem=pki.make_csr(key).decode(),
        hostname=socket.gethostname(),
        flower_public_key=flower_public.decode(),
    )
    with channels.tls_channel(central, ca_pem) as channel:
        reply = _enroll_waiting_out_pushback(
            enrollment_pb2_grpc.EnrollmentServiceStub(channel), request, central, timeout_s
        )
    answered = pki.fingerprint(pki.load_certificate(reply.ca_certificate_pem))
    if answered != pki.fingerprint(pki.load_certificate(ca_pem)):
        raise EnrollError(
            f"central answered with CA {answered}, not the one pinned; refusing it. If the fleet's CA was rotated"
            " (`edgefleet ca rotate`) since the token was made, make a new one: `edgefleet token create` prints"
            " the current fingerprint"
        )
    host = central.rpartition(":")[0]
    # Central's replicas, or nothing from a central that runs one: then the host enrolled through.
    fleet_addresses = policy.central_addresses((), reply.fleet_addresses, f"{host}:{reply.fleet_port}")
    identity = FleetIdentity(
        node_id=reply.node_id,
        labels=dict(reply.labels),
        central=fleet_addresses[0],
        enroll_address=central,
        enrolled_at=time.time(),
        ca_pem=ca_pem,
        certificate_pem=reply.certificate_pem.encode(),
        key_pem=pki.private_key_pem(key),
        signing_public_key_pem=reply.signing_public_key_pem.encode(),
        superlink=f"{host}:{reply.superlink_port}" if reply.superlink_port else "",
        fleet_addresses=fleet_addresses if reply.fleet_addresses else (),
    )
    write_private(files.flower_key, flower_private)
    files.save(identity)
    return identity


def _enroll_waiting_out_pushback(stub, request, central: str, timeout_s: float):
    """Enroll; over central's enrollment rate limit, wait as long as it says (up to a budget) and try again."""
    waited_s = 0.0
    while True:
        try:
            return stub.Enroll(request, timeout=timeout_s)
        except grpc.RpcError as exc:
            delay_s = None
            if exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                delay_s = policy.enroll_pushback_s(exc.trailing_metadata() or (), waited_s)
            if delay_s is None:
                raise EnrollError(f"enrollment refused by central at {central}: {exc.details()}") from None
            log.warning("central at %s is busy enrolling (%s); trying again in %.1f s", central, exc.details(), delay_s)
            time.sleep(delay_s)
            waited_s += delay_s


# -- messages ------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelInfo:
    name: str
    version: str
    sha256: str
    # The A/B slot it was activated into; "" for a model not from the fleet.
    slot: str = ""


def _timestamp(seconds: float) -> Timestamp:
    ts = Timestamp()
    ts.FromNanoseconds(int(seconds * 1e9))
    return ts


_ACTIVATION_STATES: dict[str, common_pb2.ActivationState] = {
    "DOWNLOADING": common_pb2.ACTIVATION_STATE_DOWNLOADING,
    "VERIFYING": common_pb2.ACTIVATION_STATE_VERIFYING,
    "WARMING": common_pb2.ACTIVATION_STATE_WARMING,
    "ACTIVE": common_pb2.ACTIVATION_STATE_ACTIVE,
    "FAILED": common_pb2.ACTIVATION_STATE_FAILED,
    "ROLLED_BACK": common_pb2.ACTIVATION_STATE_ROLLED_BACK,
}


def encode_status(
    agent_version: str,
    model: ModelInfo,
    system: SystemSample,
    window: InferenceWindow,
    queue_depth: int,
    config_generation: int,
    uptime_s: float,
    observed_at: float,
    activation=None,
    *,
    routing=None,
    running: int = 0,
) -> bytes:
    """A serialized edgefleet.v1.NodeStatus: what a heartbeat sends, and what the spool keeps when it cannot.
    `activation` is an edge_agent.control.activation.ActivationStatus, or None. `routing` is
    ``(counts, (audit_sequence, audit_head_hash))``: RouteCount-like objects (data_class, route, count) from
    RoutingAudit.take_summary() and RoutingAudit.head; None leaves NodeStatus.routing unset. `running`: requests
    generating when the report was made."""
    status = _status_message(
        agent_version, model, system, window, queue_depth, config_generation, uptime_s, observed_at
    )
    status.inference.running = running
    if routing is not None:
        counts, (audit_sequence, audit_head_hash) = routing
        status.routing.CopyFrom(
            common_pb2.RoutingSummary(
                counts=[common_pb2.RouteCount(data_class=c.data_class, route=c.route, count=c.count) for c in counts],
                audit_sequence=audit_sequence,
                audit_head_hash=audit_head_hash,
            )
        )
    if activation is not None and activation.model is not None:
        a = activation
        status.activation.CopyFrom(
            common_pb2.Activation(
                model=common_pb2.ModelRef(name=a.model.name, version=a.model.version, sha256=a.model.sha256),
                state=_ACTIVATION_STATES.get(a.state, common_pb2.ACTIVATION_STATE_UNSPECIFIED),
                bytes_done=a.bytes_done,
                bytes_total=a.bytes_total,
                reason=a.reason,
                since=_timestamp(a.since),
            )
        )
    # Central refuses a status past its bounds (a 5,000-character activation reason, say): send it cut to them.
    fits = report_limits.clip(status)
    usage = list(window.upstream_usage)
    while not fits and len(usage) > 1:
        # Many (upstream, tenant, data class) entries with long names: fold more of them into "(other)".
        usage = fold_usage(usage, limit=len(usage) // 2)
        del status.inference.upstream_usage[:]
        status.inference.upstream_usage.extend(_upstream_usage(u) for u in usage)
        fits = report_limits.clip(status)
    if not fits:
        log.warning("the node's status is still %d bytes when clipped; central will refuse it", status.ByteSize())
    return status.SerializeToString()


def _status_message(agent_version, model, system, window, queue_depth, config_generation, uptime_s, observed_at):
    return common_pb2.NodeStatus(
        agent_version=agent_version,
        active_model=common_pb2.ModelRef(name=model.name, version=model.version, sha256=model.sha256),
        model_slot=model.slot,
        system=common_pb2.SystemMetrics(
            cpu_percent=system.cpu_percent,
            cpu_count=system.cpu_count,
            load_average_1m=system.load_average_1m,
            memory_used_bytes=system.memory_used_bytes,
            memory_total_bytes=system.memory_total_bytes,
            disk_used_bytes=system.disk_used_bytes,
            disk_total_bytes=system.disk_total_bytes,
            temperatures=[common_pb2.Temperature(sensor=t.sensor, celsius=t.celsius) for t in system.temperatures],
            gpus=[
                common_pb2.GpuMetrics(
                    name=g.name,
                    utilization_percent=g.utilization_percent,
                    memory_used_bytes=g.memory_used_bytes,
                    memory_total_bytes=g.memory_total_bytes,
                    temperature_celsius=g.temperature_celsius,
                    source=g.source,
                )
                for g in system.gpus
            ],
        ),
        inference=common_pb2.InferenceStats(
            interval_seconds=window.interval_seconds,
            requests=window.requests,
            errors=window.errors,
            generated_tokens=window.generated_tokens,
            tokens_per_second=window.tokens_per_second,
            latency_p50_ms=window.latency_p50_ms,
            latency_p99_ms=window.latency_p99_ms,
            queue_depth=queue_depth,
            cache_hits=window.cache_hits,
            cache_lookups=window.cache_lookups,
            prompt_tokens=window.prompt_tokens,
            cached_prompt_tokens=window.cached_prompt_tokens,
            latency_buckets=window.latency_buckets,
            ttft_buckets=window.ttft_buckets,
            ttft_p50_ms=window.ttft_p50_ms,
            ttft_p99_ms=window.ttft_p99_ms,
            upstream_usage=[_upstream_usage(u) for u in window.upstream_usage],
        ),
        config_generation=config_generation,
        observed_at=_timestamp(observed_at),
        uptime_seconds=uptime_s,
    )


def _upstream_usage(u: UpstreamUsage) -> common_pb2.UpstreamUsage:
    return common_pb2.UpstreamUsage(
        upstream=u.upstream,
        tenant=u.tenant,
        data_class=u.data_class,
        requests=u.requests,
        prompt_tokens=u.prompt_tokens,
        completion_tokens=u.completion_tokens,
        cost=u.cost,
        currency=u.currency,
        locally_counted=u.locally_counted,
    )


def encode_event(kind: str, message: str, **attributes: str) -> bytes:
    return fleet_pb2.Event(kind=kind, message=message, attributes=attributes).SerializeToString()


# -- FleetService ----------------------------------------------------------------------


@dataclass(frozen=True)
class HeartbeatReply:
    interval_s: float
    config_generation: int
    model: ModelInfo | None
    # The signed manifest of `model`, exactly as central sent it: verify before trusting (edgefleet.manifest).
    manifest_body: bytes = b""
    manifest_signature: str = ""
    # Central's FleetService addresses now, as it sent them (validate before keeping); () for no change.
    fleet_addresses: tuple[str, ...] = ()
    # Whether this was the first answer on a new heartbeat stream (a connection made or made again).
    first_on_stream: bool = False
    # What central says to trust (a stream's first reply, and after a rotation); None when it sent nothing.
    trust: OfferedTrust | None = None


def _offered_trust(bundle: fleet_pb2.TrustBundle) -> OfferedTrust:
    return OfferedTrust(
        version=bundle.version,
        ca_certificates_pem=tuple(bundle.ca_certificates_pem),
        cross_certificates_pem=tuple(bundle.cross_certificates_pem),
        statements=tuple((s.body, s.signature) for s in bundle.signing_key_statements),
        renew_now=bundle.renew_now,
    )


class FleetClient:
    """FleetService calls as the enrolled node, over mTLS with the node's certificate, to one of central's
    addresses at a time.

    A call that finds central unavailable moves the client to the next address, round-robin, so the caller's
    next attempt (after the backoff it keeps) goes to another replica. Every address is verified the same way:
    against the fleet CA and the one central name every replica's certificate carries (edgefleet.channels).
    """

    def __init__(self, identity: FleetIdentity, rpc_timeout_s: float, addresses: Sequence[str] = (), start: int = 0):
        self.identity = identity
        self._timeout = rpc_timeout_s
        self.addresses = policy.central_addresses(addresses, identity.fleet_addresses, identity.central)
        self._index = start % len(self.addresses)
        self._lock = threading.Lock()  # downloads run on other threads and may fail over too
        self._channels: dict[str, grpc.Channel] = {}
        self._stream: _HeartbeatStream | None = None
        self._stream_index = 0
        self._stream_lost = False

    @property
    def address(self) -> str:
        """The address the next call goes to."""
        return self.addresses[self._index]

    @property
    def index(self) -> int:
        return self._index

    def heartbeat(self, status: bytes) -> HeartbeatReply:
        """One beat on the node's heartbeat stream, opened on first use and again after any failure.

        A stream that had answered and then ended (a replica that stopped or died, a connection central aged
        out with GOAWAY, a load balancer that dropped it) is reopened at once on the next address and the beat
        sent again there, so a replica going away costs no beat; only when that fails too does the beat fail.
        """
        request = fleet_pb2.HeartbeatRequest(
            node_id=self.identity.node_id, status=common_pb2.NodeStatus.FromString(status)
        )
        try:
            reply, first = self._exchange(request)
        except CentralUnavailable as exc:
            if not self._stream_lost:
                raise
            log.info("heartbeat stream ended (%s); sending the beat again on %s", exc, self.address)
            reply, first = self._exchange(request)
        model = reply.desired.model
        return HeartbeatReply(
            interval_s=reply.heartbeat_interval.ToNanoseconds() / 1e9 or 15.0,
            config_generation=reply.desired.config_generation,
            model=ModelInfo(model.name, model.version, model.sha256) if model.name else None,
            manifest_body=reply.desired.manifest.body,
            manifest_signature=reply.desired.manifest.signature,
            fleet_addresses=tuple(reply.fleet_addresses),
            first_on_stream=first,
            trust=_offered_trust(reply.trust) if reply.HasField("trust") else None,
        )

    @property
    def streaming(self) -> bool:
        """Whether a heartbeat stream is open; when not, the next beat connects (again)."""
        return self._stream is not None

    def set_addresses(self, addresses: Sequence[str], rand: float) -> None:
        """Dial `addresses` from now on. An open stream stays where it is; the next call that connects goes to the
        current address when the new list has it, else to one picked with `rand`, as at start."""
        with self._lock:
            current = self.addresses[self._index]
            self.addresses = policy.central_addresses(addresses, (), current)
            if current in self.addresses:
                self._index = self.addresses.index(current)
            else:
                self._index = policy.first_address(len(self.addresses), rand)

    def _exchange(self, request):
        """One request and its reply on the stream, and whether it was the stream's first; on failure the stream
        is closed, the client fails over, and _stream_lost says whether the stream had answered before it ended
        (not a timeout)."""
        if self._stream is None:
            self._stream_index, stub = self._stub()
            self._stream = _HeartbeatStream(stub)
        stream, index = self._stream, self._stream_index
        self._stream_lost = False
        first = not stream.answered
        try:
            return stream.exchange(request, self._timeout), first
        except ControlError as exc:
            self._close_stream()
            self._fail_over(index, exc)
            self._stream_lost = stream.answered and stream.ended
            raise

    def fetch_artifact(self, sha256: str, offset: int, timeout_s: float | None = None):
        """Chunks (offset, data, total_size) of a registered artifact from offset on, as central streams them."""
        request = fleet_pb2.FetchArtifactRequest(sha256=sha256, offset=offset)
        index, stub = self._stub()
        try:
            for chunk in stub.FetchArtifact(request, timeout=timeout_s):
                yield chunk.offset, chunk.data, chunk.total_size
        except grpc.RpcError as exc:
            raise self._failed(index, _wrap(exc, "artifact download")) from None

    def report(self, reports: list[SpooledReport], dropped_count: int, spool_epoch: str = "") -> int:
        """Deliver spooled reports; returns the highest sequence central holds of spool `spool_epoch`."""
        messages = []
        for r in reports:
            msg = fleet_pb2.Report(sequence=r.sequence, observed_at=_timestamp(r.observed_at))
            if r.kind == "status":
                msg.status.ParseFromString(r.payload)
            else:
                msg.event.ParseFromString(r.payload)
            messages.append(msg)
        request = fleet_pb2.ReportEventRequest(
            node_id=self.identity.node_id, reports=messages, dropped_count=dropped_count, spool_epoch=spool_epoch
        )
        index, stub = self._stub()
        try:
            return stub.ReportEvent(request, timeout=self._timeout).acknowledged_sequence
        except grpc.RpcError as exc:
            raise self._failed(index, _wrap(exc, "report")) from None

    def renew_certificate(self, key) -> bytes:
        request = fleet_pb2.RenewCertificateRequest(node_id=self.identity.node_id, csr_pem=pki.make_csr(key).decode())
        index, stub = self._stub()
        try:
            return stub.RenewCertificate(request, timeout=self._timeout).certificate_pem.encode()
        except grpc.RpcError as exc:
            raise self._failed(index, _wrap(exc, "certificate renewal")) from None

    def _stub(self) -> tuple[int, fleet_pb2_grpc.FleetServiceStub]:
        """The current address's index and a stub on its channel (one channel per address, kept until close:
        a download still running on the previous one is not cut off by a failover)."""
        with self._lock:
            address = self.addresses[self._index]
            channel = self._channels.get(address)
            if channel is None:
                identity = self.identity
                channel = channels.mtls_channel(address, identity.ca_pem, identity.certificate_pem, identity.key_pem)
                self._channels[address] = channel
            return self._index, fleet_pb2_grpc.FleetServiceStub(channel)

    def _failed(self, index: int, exc: ControlError) -> ControlError:
        self._fail_over(index, exc)
        return exc

    def _fail_over(self, index: int, exc: ControlError) -> None:
        """Move on from address `index` when central was unavailable there; a refusal would be the same at
        every replica (they share one store), so it stays. Another thread that already moved on wins."""
        if not isinstance(exc, CentralUnavailable) or len(self.addresses) == 1:
            return
        with self._lock:
            if self._index != index:
                return
            self._index = policy.next_address(len(self.addresses), index)
        log.info("central at %s unavailable; next call goes to %s", self.addresses[index], self.address)

    def _close_stream(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None

    def close(self) -> None:
        self._close_stream()
        with self._lock:
            for channel in self._channels.values():
                channel.close()
            self._channels.clear()


_END = object()


class _HeartbeatStream:
    """The Heartbeat bidi stream driven one request/response at a time, with a deadline per exchange.

    gRPC's sync API takes requests from an iterator (fed here from a queue, in gRPC's thread) and yields
    responses from a blocking iterator, which a reader thread moves into a queue so that waiting for one
    response can time out.
    """

    def __init__(self, stub: fleet_pb2_grpc.FleetServiceStub):
        self._requests: queue.Queue = queue.Queue()
        self._replies: queue.Queue = queue.Queue()
        # Whether central answered on this stream at all, and whether the stream is over (set before its
        # error is queued, so whoever reads the error sees it).
        self.answered = False
        self.ended = False
        self._call = stub.Heartbeat(iter(self._requests.get, _END))
        threading.Thread(target=self._read, name="edgefleet-heartbeat-reader", daemon=True).start()

    def _read(self) -> None:
        error: ControlError
        try:
            for reply in self._call:
                self._replies.put(reply)
            error = CentralUnavailable("heartbeat: central ended the stream")
        except grpc.RpcError as exc:
            error = _wrap(exc, "heartbeat")
        self.ended = True
        self._replies.put(error)

    def exchange(self, request, timeout_s: float):
        self._requests.put(request)
        try:
            item = self._replies.get(timeout=timeout_s)
        except queue.Empty:
            raise CentralUnavailable(f"heartbeat: no answer from central within {timeout_s:.0f} s") from None
        if isinstance(item, ControlError):
            raise item
        self.answered = True
        return item

    def close(self) -> None:
        self._requests.put(_END)
        self._call.cancel()
