"""gRPC servicers: read the caller from the TLS session, convert protobuf once, call a handler, map errors.

Nothing here decides anything; the handler modules in :mod:`central.services` do.
Every handler's refusal is a :class:`central.errors.ServiceError`, mapped to a
gRPC status in one place (:data:`_STATUS`).
"""

from __future__ import annotations

import asyncio
import functools

import grpc

from central import convert, ratelimit, rollups
from central.blobs import BlobError
from central.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ServiceError,
    Unauthenticated,
)
from central.services import (
    audit,
    enrollment,
    federation,
    fleet,
    history,
    nodes,
    objectives,
    operators,
    recovery,
    registry,
    rollouts,
    tokens,
    trust,
)
from central.services.base import Caller, Central, call
from edgefleet import pki
from edgefleet.v1 import admin_pb2, admin_pb2_grpc, enrollment_pb2, enrollment_pb2_grpc, fleet_pb2, fleet_pb2_grpc

FETCH_CHUNK_BYTES = 1 << 20

_STATUS = {
    Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    NotFound: grpc.StatusCode.NOT_FOUND,
    AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
}


def caller_of(context) -> Caller:
    """The identity in the client certificate BoringSSL verified against the fleet CA (none on the enrollment port),
    with that certificate's serial."""
    auth = context.auth_context()
    spiffe = auth.get("peer_spiffe_id")
    identity = pki.parse_identity_uri(spiffe[0].decode()) if spiffe else None
    pem = auth.get("x509_pem_cert")
    return Caller(identity, context.peer(), _certificate_facts(pem[0])[0] if pem else "", pem[0] if pem else b"")


def certificate_expiry(context) -> float:
    """When the caller's certificate expires (unix seconds); 0 when it presented none."""
    pem = context.auth_context().get("x509_pem_cert")
    return _certificate_facts(pem[0])[1] if pem else 0.0


@functools.lru_cache(maxsize=4096)
def _certificate_facts(pem: bytes) -> tuple[str, float]:
    """(serial in hex, expiry in unix seconds) of a PEM certificate: parsed once per certificate, not per call."""
    cert = pki.load_certificate(pem)
    return pki.serial_hex(cert), cert.not_valid_after_utc.timestamp()


def retired_issuer(central: Central, context) -> str | None:
    """Why the caller's certificate is refused although its TLS handshake passed: its CA was retired (`ca finish`)
    after the connection was made (a connection outlives the TLS configuration that accepted it). None if not."""
    pem = context.auth_context().get("x509_pem_cert")
    if central.trust is None or not pem or _certificate_issuer(pem[0]) in central.trust.accepted_issuers:
        return None
    return "the client certificate is from a CA central has retired (`edgefleet ca finish`): enroll again"


@functools.lru_cache(maxsize=4096)
def _certificate_issuer(pem: bytes) -> bytes:
    """The DER of a PEM certificate's issuer name: parsed once per certificate, not per call."""
    return pki.load_certificate(pem).issuer.public_bytes()


def _unary(method):
    """Handlers touching the store: on the loop or central's worker pool, as `services.base.call` decides."""

    @functools.wraps(method)
    async def handler(self, request, context):
        retired = retired_issuer(self.central, context)
        if retired:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, retired)
        caller = caller_of(context)
        try:
            return await call(self.central, method, self, request, caller)
        except ServiceError as exc:
            await context.abort(_STATUS[type(exc)], str(exc))

    return handler


def _unary_off_loop(method):
    """For handlers that wait on the SuperLink's HTTP API: run them on a worker thread so heartbeats
    never queue behind them."""

    @functools.wraps(method)
    async def handler(self, request, context):
        retired = retired_issuer(self.central, context)
        if retired:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, retired)
        caller = caller_of(context)
        try:
            return await asyncio.to_thread(method, self, request, caller)
        except ServiceError as exc:
            await context.abort(_STATUS[type(exc)], str(exc))

    return handler


class EnrollmentServicer(enrollment_pb2_grpc.EnrollmentServiceServicer):
    """Served on the enrollment server's own thread and loop (central.enrollment_server). The gate admits a
    call before anything else happens, and every refusal is counted there instead of written one by one."""

    def __init__(self, central: Central, gate: enrollment.EnrollmentGate | None = None):
        self.central = central
        self.gate = gate or enrollment.EnrollmentGate(central.settings)

    async def Enroll(self, request, context):
        peer = ratelimit.peer_host(context.peer())
        refusal = self.gate.admit(peer)
        if refusal is None:
            try:
                return await call(self.central, self._enroll, request, Caller(None, context.peer()))
            except enrollment.Refusal as exc:
                refusal = exc
            finally:
                self.gate.leave()
        event = self.gate.refused(self.central, peer, refusal)
        if event is not None:
            await call(self.central, enrollment.write_audit, self.central, [event])
        if isinstance(refusal.error, enrollment.ResourceExhausted):
            pushback_ms = max(1, round(refusal.error.retry_after_s * 1000))
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                str(refusal.error),
                trailing_metadata=(("grpc-retry-pushback-ms", str(pushback_ms)),),
            )
        await context.abort(_STATUS[type(refusal.error)], str(refusal.error))

    def _enroll(self, request, caller):
        e = enrollment.enroll(
            self.central, caller, request.token, request.csr_pem, request.hostname, request.flower_public_key
        )
        return enrollment_pb2.EnrollResponse(
            node_id=e.node_id,
            labels=e.labels,
            certificate_pem=e.certificate_pem,
            ca_certificate_pem=self.central.authority.certificate_pem,
            fleet_port=self.central.settings.fleet_port,
            signing_public_key_pem=self.central.signing_public_key_pem,
            heartbeat_interval=convert.duration(self.central.settings.heartbeat_interval_s),
            superlink_port=self.central.settings.superlink_port if request.flower_public_key else 0,
            fleet_addresses=self.central.settings.fleet_addresses,
        )


class FleetServicer(fleet_pb2_grpc.FleetServiceServicer):
    def __init__(self, central: Central):
        self.central = central
        self._interval = convert.duration(central.settings.heartbeat_interval_s)

    async def Heartbeat(self, request_iterator, context):
        caller = caller_of(context)
        expires_at = certificate_expiry(context)
        addresses = self.central.settings.fleet_addresses  # sent once per stream: its first response
        trust_sent = 0  # the trust bundle version this stream sent: its first response, then each change
        try:
            async for request in request_iterator:
                retired = retired_issuer(self.central, context)
                if retired:
                    await context.abort(grpc.StatusCode.UNAUTHENTICATED, retired)
                problem = convert.status_problem(request.status)
                if problem:  # past a bound: refused before anything is kept (edgefleet.report_limits)
                    raise fleet.refuse_oversized(caller, request.node_id, "heartbeat", problem)
                # Decoded once: the bytes are kept for operators, the rest is what central decides on.
                status = request.status.SerializeToString()
                routing_report = convert.routing_report(request.status)
                health = convert.node_health(request.status)
                desired = None
                if self.central.targets is not None:
                    desired = await self._beat_on_remote_store(
                        caller, request.node_id, expires_at, status, routing_report, health
                    )
                if desired is None:  # an in-process store, or a beat to refuse (with its reason in the audit log)
                    desired = await call(
                        self.central,
                        fleet.heartbeat,
                        self.central,
                        caller,
                        request.node_id,
                        status,
                        expires_at,
                        routing_report,
                        health,
                    )
                generation = request.status.config_generation
                if recovery.assignment_may_be_lost(self.central, desired, generation):  # after a restore only
                    reported = convert.reported_model(request.status)
                    desired = await call(
                        self.central,
                        recovery.learn_assignment,
                        self.central,
                        caller,
                        request.node_id,
                        desired,
                        generation,
                        reported,
                    )
                if self.central.metrics is not None:  # an accepted beat, counted for /metrics
                    self.central.metrics.heartbeat(request.node_id, request.status, desired.labels, routing_report)
                # Accepted: its inference figures go to the rollups of its node, label groups and the fleet.
                self.central.beats.record_history(
                    request.node_id, desired.labels, rollups.figures(request.status), self.central.clock()
                )
                state = self.central.trust
                bundle = convert.trust_bundle_message(state) if state and state.version != trust_sent else None
                yield fleet_pb2.HeartbeatResponse(
                    desired=convert.desired_message(desired),
                    heartbeat_interval=self._interval,
                    fleet_addresses=addresses,
                    trust=bundle,
                )
                addresses = ()
                trust_sent = bundle.version if bundle is not None else trust_sent
        except ServiceError as exc:
            await context.abort(_STATUS[type(exc)], str(exc))

    async def _beat_on_remote_store(self, caller, node_id, expires_at, status, routing_report, health):
        """A beat's fast path on a remote store: the checks that need no read, then the batched read
        (central.heartbeats.TargetReads), kept in memory on the loop. None when the beat is to be refused."""
        now = self.central.clock()
        if not fleet.heartbeat_passes_without_store(caller, node_id, now, expires_at):
            return None
        assert self.central.targets is not None
        desired = await self.central.targets.get(node_id)
        if desired is None or fleet.serial_problem(caller, desired.certificate_serial) is not None:
            return None  # unknown, revoked, or a certificate replaced at renewal: `heartbeat` refuses it
        fleet.record_beat(self.central, node_id, now, status, routing_report, health)
        return desired

    @_unary
    def RenewCertificate(self, request, caller):
        pem = fleet.renew_certificate(self.central, caller, request.node_id, request.csr_pem)
        return fleet_pb2.RenewCertificateResponse(
            certificate_pem=pem, ca_certificate_pem=trust.ca_bundle_pem(self.central)
        )

    @_unary
    def ReportEvent(self, request, caller):
        problem = convert.reports_problem(request.reports)
        if problem:  # past a bound: refused before anything is kept (edgefleet.report_limits)
            raise fleet.refuse_oversized(caller, request.node_id, "report", problem)
        top = fleet.report(
            self.central,
            caller,
            request.node_id,
            convert.report_records(request.reports),
            request.dropped_count,
            convert.report_routing(request.reports),
            request.spool_epoch,
        )
        return fleet_pb2.ReportEventResponse(acknowledged_sequence=top)

    async def FetchArtifact(self, request, context):
        retired = retired_issuer(self.central, context)
        if retired:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, retired)
        try:
            size = await call(
                self.central, fleet.fetch_artifact, self.central, caller_of(context), request.sha256, request.offset
            )
        except ServiceError as exc:
            await context.abort(_STATUS[type(exc)], str(exc))
        try:
            with await asyncio.to_thread(self.central.blobs.open, request.sha256) as blob:
                offset = request.offset
                await asyncio.to_thread(blob.seek, offset)
                while offset < size:
                    # Reads happen off the event loop so heartbeats never wait behind a download.
                    data = await asyncio.to_thread(blob.read, FETCH_CHUNK_BYTES)
                    if not data:
                        break
                    yield fleet_pb2.FetchArtifactResponse(offset=offset, data=data, total_size=size)
                    offset += len(data)
        except BlobError as exc:
            # The blob store failed under the download (S3 unreachable, say): the agent resumes from its offset.
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))


class AdminServicer(admin_pb2_grpc.AdminServiceServicer):
    def __init__(self, central: Central):
        self.central = central

    @_unary
    def CreateToken(self, request, caller):
        ttl = request.ttl.ToNanoseconds() / 1e9 if request.HasField("ttl") else 0.0
        token, record = tokens.create_token(self.central, caller, dict(request.labels), ttl, request.uses)
        return admin_pb2.CreateTokenResponse(
            token=token,
            info=convert.token_message(record),
            ca_fingerprint=self.central.authority.fingerprint,
            enroll_address=self.central.settings.enroll_address,
        )

    @_unary
    def ListTokens(self, request, caller):
        records = tokens.list_tokens(self.central, caller)
        return admin_pb2.ListTokensResponse(tokens=[convert.token_message(t) for t in records])

    @_unary
    def RevokeToken(self, request, caller):
        record = tokens.revoke_token(self.central, caller, request.token_id)
        return admin_pb2.RevokeTokenResponse(token=convert.token_message(record))

    @_unary
    def ListNodes(self, request, caller):
        views, next_token = nodes.list_nodes(
            self.central, caller, dict(request.selector), request.page_size, request.page_token
        )
        return admin_pb2.ListNodesResponse(nodes=[convert.node_message(v) for v in views], next_page_token=next_token)

    @_unary
    def GetNode(self, request, caller):
        view, reports = nodes.get_node(self.central, caller, request.node_id, request.report_limit)
        return admin_pb2.GetNodeResponse(
            node=convert.node_message(view), reports=[convert.report_message(r) for r in reports]
        )

    @_unary
    def LabelNode(self, request, caller):
        view = nodes.label_node(
            self.central, caller, request.node_id, dict(request.set_labels), list(request.remove_labels)
        )
        return admin_pb2.LabelNodeResponse(node=convert.node_message(view))

    @_unary
    def RevokeNode(self, request, caller):
        return admin_pb2.RevokeNodeResponse(
            node=convert.node_message(nodes.revoke_node(self.central, caller, request.node_id, request.reason))
        )

    @_unary
    def ListAuditEntries(self, request, caller):
        entries = audit.list_entries(self.central, caller, request.after_sequence, request.limit)
        return admin_pb2.ListAuditEntriesResponse(entries=[convert.audit_message(e) for e in entries])

    @_unary
    def VerifyAudit(self, request, caller):
        check, anchor = audit.verify(self.central, caller)
        return admin_pb2.VerifyAuditResponse(
            intact=check.intact,
            entries_checked=check.entries_checked,
            first_bad_sequence=check.first_bad_sequence,
            problem=check.problem,
            anchor=convert.anchor_message(anchor) if anchor else None,
        )

    # -- audit retention (issue 16) --
    @_unary
    def ArchiveAudit(self, request, caller):
        anchor, pruned = audit.archive(self.central, caller, request.before_sequence, request.last_hash)
        return admin_pb2.ArchiveAuditResponse(anchor=convert.anchor_message(anchor), entries_pruned=pruned)

    # -- end audit retention --

    # -- restores (central.services.recovery) --
    @_unary
    def GetRestoreReport(self, request, caller):
        return convert.restore_report_response(*recovery.restore_report(self.central, caller))

    @_unary
    def ListRoutingTotals(self, request, caller):
        nodes, next_token = audit.routing_totals_page(
            self.central, caller, request.node_id, request.page_size, request.page_token
        )
        return admin_pb2.ListRoutingTotalsResponse(
            nodes=[convert.node_routing_message(n) for n in nodes], next_page_token=next_token
        )

    async def PushModel(self, request_iterator, context):
        retired = retired_issuer(self.central, context)
        if retired:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, retired)
        caller = caller_of(context)
        header = None
        writer = None
        received = 0
        try:
            async for request in request_iterator:
                body = request.WhichOneof("body")
                if header is None:
                    if body != "upload":
                        raise InvalidArgument("the first message of PushModel must be the upload header")
                    header = request.upload
                    await call(
                        self.central,
                        registry.check_push,
                        self.central,
                        caller,
                        header.name,
                        header.version,
                        header.format,
                        dict(header.params),
                        header.size,
                        header.sha256,
                    )
                    # Not in a thread: a client gone while a thread opened the file left it behind, as the
                    # cancelled await never assigned `writer` for finally to abort. Opening a temp file is quick.
                    writer = self.central.blobs.writer()
                elif body == "chunk":
                    await asyncio.to_thread(writer.write, request.chunk)
                    received += len(request.chunk)
                else:
                    raise InvalidArgument("only chunks may follow the upload header")
            if header is None:
                raise InvalidArgument("PushModel received nothing")
            if received != header.size:  # cut off: refused before anything is committed (finally aborts it)
                raise await call(
                    self.central,
                    registry.refuse_push,
                    self.central,
                    caller,
                    header.name,
                    header.version,
                    f"the push ended with {received} of {header.size} bytes",
                )
            sha256, size = await asyncio.to_thread(writer.commit)
            writer = None
            # gRPC ends a client stream the same way whether the client finished or its iterator broke, so
            # the header's size and sha256 are what tell a complete push from a cut-off one.
            if size != header.size or sha256 != header.sha256:
                await asyncio.to_thread(registry.drop_unregistered_blob, self.central, sha256)
                raise await call(
                    self.central,
                    registry.refuse_push,
                    self.central,
                    caller,
                    header.name,
                    header.version,
                    f"the push ended with {size} of {header.size} bytes"
                    if size != header.size
                    else f"the bytes received hash to {sha256}, not {header.sha256}",
                )
            record, present = await call(
                self.central,
                registry.finish_push,
                self.central,
                caller,
                header.name,
                header.version,
                header.format,
                dict(header.params),
                sha256,
                size,
            )
            assigned = await call(self.central, registry.assigned_nodes, self.central, sha256)
            return admin_pb2.PushModelResponse(model=convert.model_message(record, assigned), already_present=present)
        except BlobError as exc:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
        except ServiceError as exc:
            await context.abort(_STATUS[type(exc)], str(exc))
        finally:
            if writer is not None:  # the client went away or the push was refused: keep nothing half-written
                await asyncio.to_thread(writer.abort)

    @_unary
    def ListModels(self, request, caller):
        models = registry.list_models(self.central, caller, request.name)
        return admin_pb2.ListModelsResponse(models=[convert.model_message(m, []) for m in models])

    @_unary
    def GetModel(self, request, caller):
        model, assigned = registry.get_model(self.central, caller, request.name, request.version)
        return admin_pb2.GetModelResponse(
            model=convert.model_message(model, assigned),
            manifest=convert.manifest_message(model.manifest, model.signature),
        )

    @_unary
    def DeleteModel(self, request, caller):
        removed = registry.delete_model(self.central, caller, request.name, request.version)
        return admin_pb2.DeleteModelResponse(blob_removed=removed)

    @_unary
    def AssignModel(self, request, caller):
        view = registry.assign_model(self.central, caller, request.node_id, request.name, request.version)
        return admin_pb2.AssignModelResponse(node=convert.node_message(view))

    @_unary
    def StartRollout(self, request, caller):
        bake = request.bake.ToNanoseconds() / 1e9 if request.HasField("bake") else None
        rate = request.max_error_rate if request.HasField("max_error_rate") else None
        view = rollouts.start(
            self.central,
            caller,
            request.name,
            request.version,
            dict(request.selector),
            request.canary,
            list(request.steps),
            bake,
            rate,
            request.max_p99_ms,
        )
        return admin_pb2.StartRolloutResponse(rollout=convert.rollout_message(view))

    @_unary
    def GetRollout(self, request, caller):
        view = rollouts.get(self.central, caller, request.rollout_id)
        return admin_pb2.GetRolloutResponse(rollout=convert.rollout_message(view))

    @_unary
    def ListRollouts(self, request, caller):
        views = rollouts.list_rollouts(self.central, caller)
        return admin_pb2.ListRolloutsResponse(rollouts=[convert.rollout_message(v) for v in views])

    @_unary
    def PauseRollout(self, request, caller):
        return admin_pb2.PauseRolloutResponse(
            rollout=convert.rollout_message(rollouts.pause(self.central, caller, request.rollout_id))
        )

    @_unary
    def ResumeRollout(self, request, caller):
        return admin_pb2.ResumeRolloutResponse(
            rollout=convert.rollout_message(rollouts.resume(self.central, caller, request.rollout_id))
        )

    @_unary
    def AbortRollout(self, request, caller):
        return admin_pb2.AbortRolloutResponse(
            rollout=convert.rollout_message(rollouts.abort(self.central, caller, request.rollout_id, request.reason))
        )

    @_unary_off_loop
    def StartFederatedRun(self, request, caller):
        view = federation.start_run(self.central, caller, convert.run_request(request))
        return admin_pb2.StartFederatedRunResponse(run=convert.federated_run_message(view))

    @_unary_off_loop
    def GetFederatedRun(self, request, caller):
        return admin_pb2.GetFederatedRunResponse(
            run=convert.federated_run_message(federation.get_run(self.central, caller, request.run_id))
        )

    @_unary_off_loop
    def ListFederatedRuns(self, request, caller):
        return admin_pb2.ListFederatedRunsResponse(
            runs=[convert.federated_run_message(v) for v in federation.list_runs(self.central, caller)]
        )

    # -- operators (central.services.operators) ------------------------------------------

    @_unary
    def CreateOperator(self, request, caller):
        ttl = request.ttl.ToNanoseconds() / 1e9 if request.HasField("ttl") else 0.0
        role = convert.OPERATOR_ROLE_NAMES.get(request.role, "")
        issued = operators.create_operator(self.central, caller, request.name, role, ttl, request.csr_pem)
        return admin_pb2.CreateOperatorResponse(
            operator=convert.operator_message(issued.operator),
            certificate_pem=issued.certificate_pem,
            ca_certificate_pem=trust.ca_bundle_pem(self.central),
        )

    @_unary
    def ListOperators(self, request, caller):
        records = operators.list_operators(self.central, caller)
        return admin_pb2.ListOperatorsResponse(operators=[convert.operator_message(o) for o in records])

    @_unary
    def RevokeOperator(self, request, caller):
        record = operators.revoke_operator(self.central, caller, request.name, request.reason)
        return admin_pb2.RevokeOperatorResponse(operator=convert.operator_message(record))

    @_unary
    def RenewOperator(self, request, caller):
        ttl = request.ttl.ToNanoseconds() / 1e9 if request.HasField("ttl") else 0.0
        issued = operators.renew_operator(self.central, caller, request.name, ttl, request.csr_pem)
        return admin_pb2.RenewOperatorResponse(
            operator=convert.operator_message(issued.operator),
            certificate_pem=issued.certificate_pem,
            ca_certificate_pem=trust.ca_bundle_pem(self.central),
            replaced_serial=issued.replaced_serial,
        )

    # -- objectives (central.services.objectives) ----------------------------------------

    @_unary
    def SetObjective(self, request, caller):
        record = objectives.set_objective(self.central, caller, convert.objective_of_message(request.objective))
        return admin_pb2.SetObjectiveResponse(objective=convert.objective_message(record))

    @_unary
    def ListObjectives(self, request, caller):
        return convert.objectives_response(objectives.list_objectives(self.central, caller))

    @_unary
    def DeleteObjective(self, request, caller):
        objectives.delete_objective(self.central, caller, request.name)
        return admin_pb2.DeleteObjectiveResponse()

    # -- history (central.services.history) ----------------------------------------------

    @_unary
    def GetMetricsHistory(self, request, caller):
        series = history.metrics_history(
            self.central,
            caller,
            list(request.scopes),
            convert.history_period_s(request.resolution),
            convert.seconds_of(request.start, "start") if request.HasField("start") else None,
            convert.seconds_of(request.end, "end") if request.HasField("end") else None,
        )
        return convert.metrics_history_response(series)

    @_unary
    def ListBurstUsage(self, request, caller):
        since = convert.seconds_of(request.since, "since") if request.HasField("since") else None
        return convert.burst_usage_response(history.list_burst_usage(self.central, caller, request.group_by, since))

    # -- trust (central.services.trust) --------------------------------------------------

    @_unary
    def RotateSigningKey(self, request, caller):
        overlap = request.overlap.ToNanoseconds() / 1e9 if request.HasField("overlap") else 0.0
        rotated = trust.rotate_signing_key(self.central, caller, overlap)
        return admin_pb2.RotateSigningKeyResponse(
            current=convert.signing_key_message(rotated.current),
            previous=convert.signing_key_message(rotated.previous),
            manifests_resigned=rotated.manifests_resigned,
        )

    @_unary
    def FinishSigningKeyRotation(self, request, caller):
        retired = trust.finish_signing_rotation(self.central, caller)
        return admin_pb2.FinishSigningKeyRotationResponse(retired=convert.signing_key_message(retired))

    @_unary
    def RotateCa(self, request, caller):
        current, previous = trust.rotate_ca(self.central, caller, request.now)
        return admin_pb2.RotateCaResponse(current=convert.ca_message(current), previous=convert.ca_message(previous))

    @_unary
    def FinishCaRotation(self, request, caller):
        retired, stranded = trust.finish_ca_rotation(self.central, caller, request.force)
        return admin_pb2.FinishCaRotationResponse(retired=convert.ca_message(retired), stranded=stranded)

    @_unary
    def GetTrust(self, request, caller):
        view = trust.get_trust(self.central, caller)
        return admin_pb2.GetTrustResponse(
            cas=[convert.ca_message(ca) for ca in view.cas],
            signing_keys=[convert.signing_key_message(k) for k in view.signing_keys],
            on_previous_ca=view.on_previous_ca,
            version=view.version,
        )
