"""Between central's records and the edgefleet.v1 messages: the one place that knows both."""

from __future__ import annotations

import json

from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from central import audit, liveness, restore_state, slo
from central.errors import InvalidArgument
from central.rotation import SigningKeyInfo, TrustState
from central.routing import RoutingReport
from central.services import history
from central.services.nodes import NodeView
from central.services.objectives import ObjectiveView
from central.services.trust import CaView
from central.store import (
    DesiredState,
    ModelRecord,
    NodeHealth,
    NodeRoutingRecord,
    ObjectiveRecord,
    OperatorRecord,
    ReportRecord,
    RestoreFinding,
    RestorePoint,
    TokenRecord,
)
from edgefleet import pki, report_limits
from edgefleet.v1 import admin_pb2, common_pb2, fleet_pb2

_NODE_STATES = {
    liveness.ENROLLED: admin_pb2.NODE_STATE_ENROLLED,
    liveness.ONLINE: admin_pb2.NODE_STATE_ONLINE,
    liveness.OFFLINE: admin_pb2.NODE_STATE_OFFLINE,
    liveness.REVOKED: admin_pb2.NODE_STATE_REVOKED,
}
_OUTCOMES = {audit.ALLOWED: admin_pb2.AUDIT_OUTCOME_ALLOWED, audit.REFUSED: admin_pb2.AUDIT_OUTCOME_REFUSED}


def timestamp(seconds: float) -> Timestamp:
    ts = Timestamp()
    ts.FromNanoseconds(int(seconds * 1e9))
    return ts


def seconds_of(ts: Timestamp, field: str = "a timestamp") -> float:
    """Unix seconds; InvalidArgument when a caller sent a timestamp outside years 1 to 9999 (protobuf refuses it)."""
    try:
        return ts.ToNanoseconds() / 1e9
    except ValueError as exc:
        raise InvalidArgument(f"{field} is out of range: {exc}") from None


def duration(seconds: float) -> Duration:
    d = Duration()
    d.FromNanoseconds(int(seconds * 1e9))
    return d


def token_message(t: TokenRecord) -> admin_pb2.Token:
    return admin_pb2.Token(
        token_id=t.token_id,
        labels=t.labels,
        created_at=timestamp(t.created_at),
        expires_at=timestamp(t.expires_at),
        uses_total=t.uses_total,
        uses_left=t.uses_left,
        revoked=t.revoked,
        created_by=t.created_by,
    )


# Operators' roles as the wire names them; a role missing here (UNSPECIFIED, an unknown number) is refused.
OPERATOR_ROLES = {"admin": admin_pb2.OPERATOR_ROLE_ADMIN, "viewer": admin_pb2.OPERATOR_ROLE_VIEWER}
OPERATOR_ROLE_NAMES = {number: name for name, number in OPERATOR_ROLES.items()}


def operator_message(o: OperatorRecord) -> admin_pb2.Operator:
    msg = admin_pb2.Operator(
        name=o.name,
        role=OPERATOR_ROLES.get(o.role, admin_pb2.OPERATOR_ROLE_UNSPECIFIED),
        certificate_serial=o.serial,
        expires_at=timestamp(o.expires_at),
        created_at=timestamp(o.created_at),
        created_by=o.created_by,
    )
    if o.revoked_at is not None:
        msg.revoked_at.CopyFrom(timestamp(o.revoked_at))
    return msg


def node_message(view: NodeView) -> admin_pb2.Node:
    n = view.record
    msg = admin_pb2.Node(
        node_id=n.node_id,
        labels=n.labels,
        state=_NODE_STATES[view.state],
        enrolled_at=timestamp(n.enrolled_at),
        certificate_serial=n.certificate_serial,
        certificate_expires_at=timestamp(n.certificate_expires_at),
        hostname=n.hostname,
        dropped_reports=n.dropped_reports,
    )
    if n.last_seen_at is not None:
        msg.last_seen_at.CopyFrom(timestamp(n.last_seen_at))
    if n.status:
        msg.status.ParseFromString(n.status)
    return msg


def desired_message(desired: DesiredState) -> fleet_pb2.DesiredState:
    msg = fleet_pb2.DesiredState(config_generation=desired.config_generation)
    m = desired.model
    if m:
        msg.model.CopyFrom(common_pb2.ModelRef(name=m["name"], version=m["version"], sha256=m["sha256"]))
        msg.manifest.CopyFrom(manifest_message(m["manifest"].encode(), m["signature"]))
    return msg


def manifest_message(body: bytes, signature: str) -> common_pb2.SignedManifest:
    return common_pb2.SignedManifest(body=body, signature=signature)


def model_message(m: ModelRecord, assigned_nodes: list[str]) -> admin_pb2.Model:
    return admin_pb2.Model(
        name=m.name,
        version=m.version,
        format=m.format,
        sha256=m.sha256,
        size=m.size,
        params=m.params,
        created_at=timestamp(m.created_at),
        pushed_by=m.pushed_by,
        assigned_nodes=assigned_nodes,
    )


def report_records(reports) -> list[ReportRecord]:
    records = []
    for r in reports:
        body = r.WhichOneof("body")
        if body is None:
            continue
        observed_at = seconds_of(r.observed_at, f"report {r.sequence}: observed_at")
        records.append(ReportRecord(r.sequence, observed_at, body, getattr(r, body).SerializeToString()))
    return records


def status_problem(status: common_pb2.NodeStatus) -> str:
    """Why central refuses a heartbeat's status ("" when it takes it): a field past its bound, or its size."""
    return report_limits.problem(status, "status")


def reports_problem(reports) -> str:
    """Why central refuses a batch of spooled reports ("" when it takes them): the first report with a field past
    its bound, or past the size of a report, named by its sequence."""
    for r in reports:
        body = r.WhichOneof("body")
        if body is not None:
            problem = report_limits.problem(getattr(r, body), body)
            if problem:
                return f"report {r.sequence}: {problem}"
    return ""


def routing_report(status: common_pb2.NodeStatus) -> RoutingReport | None:
    """What a status says of routing; None when the agent sent no routing summary."""
    if not status.HasField("routing"):
        return None
    r = status.routing
    counts: dict[tuple[str, str], int] = {}
    for c in r.counts:
        counts[(c.data_class, c.route)] = counts.get((c.data_class, c.route), 0) + c.count
    return RoutingReport(counts, r.audit_sequence, r.audit_head_hash)


def report_routing(reports) -> dict[int, RoutingReport]:
    """The routing summaries of spooled status reports, by report sequence."""
    found = {}
    for r in reports:
        if r.WhichOneof("body") == "status":
            summary = routing_report(r.status)
            if summary is not None:
                found[r.sequence] = summary
    return found


def node_routing_message(n: NodeRoutingRecord) -> admin_pb2.NodeRouting:
    return admin_pb2.NodeRouting(
        node_id=n.node_id,
        hostname=n.hostname,
        counts=[
            common_pb2.RouteCount(data_class=data_class, route=route, count=count)
            for data_class, route, count in n.counts
        ],
        audit_sequence=n.audit_sequence,
        audit_head_hash=n.audit_head_hash,
        updated_at=timestamp(n.updated_at),
    )


def report_message(r: ReportRecord) -> fleet_pb2.Report:
    msg = fleet_pb2.Report(sequence=r.sequence, observed_at=timestamp(r.observed_at))
    if r.kind == "status":
        msg.status.ParseFromString(r.payload)
    else:
        msg.event.ParseFromString(r.payload)
    return msg


def audit_message(e: audit.AuditEntry) -> admin_pb2.AuditEntry:
    return admin_pb2.AuditEntry(
        sequence=e.sequence,
        at=timestamp(e.at),
        actor=e.actor,
        action=e.action,
        target=e.target,
        outcome=_OUTCOMES[e.outcome],
        detail=e.detail,
        peer=e.peer,
        previous_hash=e.previous_hash,
        hash=e.hash,
        at_seconds=e.at,
    )


def anchor_message(a: audit.AuditAnchor) -> admin_pb2.AuditAnchor:
    return admin_pb2.AuditAnchor(sequence=a.sequence, hash=a.hash, at_seconds=a.at, signature=a.signature)


_ACTIVATION_NAMES = {
    common_pb2.ACTIVATION_STATE_DOWNLOADING: "DOWNLOADING",
    common_pb2.ACTIVATION_STATE_VERIFYING: "VERIFYING",
    common_pb2.ACTIVATION_STATE_WARMING: "WARMING",
    common_pb2.ACTIVATION_STATE_ACTIVE: "ACTIVE",
    common_pb2.ACTIVATION_STATE_FAILED: "FAILED",
    common_pb2.ACTIVATION_STATE_ROLLED_BACK: "ROLLED_BACK",
}


def node_health(status: common_pb2.NodeStatus) -> NodeHealth:
    """What the rollout controller reads of a status: decoded here, once per heartbeat."""
    act, inf = status.activation, status.inference
    state = _ACTIVATION_NAMES.get(act.state, "")
    return NodeHealth(
        active_sha256=status.active_model.sha256,
        activation_sha256=act.model.sha256,
        activation_state=state,
        activation_reason=act.reason,
        activation_since=seconds_of(act.since, "status.activation.since"),
        requests=inf.requests,
        errors=inf.errors,
        latency_p99_ms=inf.latency_p99_ms,
    )


def reported_model(status: common_pb2.NodeStatus) -> restore_state.ReportedModel | None:
    """The model a node says it is switching to (its activation's) or else serves from a fleet slot; None when it
    serves none from the fleet (central.restore_state reads it after a restore)."""
    if status.activation.model.name:
        m = status.activation.model
    elif status.model_slot:
        m = status.active_model
    else:
        return None
    return restore_state.ReportedModel(m.name, m.version, m.sha256)


def restore_report_response(
    point: RestorePoint | None, findings: list[RestoreFinding]
) -> admin_pb2.GetRestoreReportResponse:
    if point is None:
        return admin_pb2.GetRestoreReportResponse(restored=False)
    return admin_pb2.GetRestoreReportResponse(
        restored=True,
        backup_at=timestamp(point.backup_at),
        restored_at=timestamp(point.restored_at),
        backup_id=point.backup_id,
        audit_head_sequence=point.audit_head_sequence,
        findings=[
            admin_pb2.RestoreFinding(
                kind=f.kind, node_id=f.node_id, detail=f.detail, found_at=timestamp(f.found_at), action=f.action
            )
            for f in findings
        ],
    )


def rollout_message(view) -> admin_pb2.Rollout:
    spec, state = view.spec, view.state
    step_nodes = set(_step_nodes(spec, state))
    return admin_pb2.Rollout(
        rollout_id=spec.rollout_id,
        model=common_pb2.ModelRef(name=spec.model.name, version=spec.model.version, sha256=spec.model.sha256),
        selector=spec.selector,
        steps=list(spec.steps),
        bake=duration(spec.bake_s),
        max_error_rate=spec.max_error_rate,
        max_p99_ms=spec.max_p99_ms,
        phase=state.phase,
        step_index=state.step_index,
        step_started_at=timestamp(state.step_started_at),
        reason=state.reason,
        created_at=timestamp(view.created_at),
        waiting_on=view.waiting_on,
        nodes=[
            admin_pb2.RolloutNode(
                node_id=node_id,
                desired_version=desired.version if desired else "",
                active_version=_version_of(spec, obs),
                activation_state=obs.activation_state if obs else "",
                in_step=node_id in step_nodes,
            )
            for node_id, desired, obs in view.nodes
        ],
    )


def _step_nodes(spec, state):
    from central.rollout import nodes_for_step

    return nodes_for_step(spec, spec.previous, min(state.step_index, len(spec.steps) - 1))


def _version_of(spec, obs) -> str:
    if obs is None or not obs.active_sha256:
        return ""
    if obs.active_sha256 == spec.model.sha256:
        return spec.model.version
    previous = {ref.sha256: ref.version for ref in spec.previous.values() if ref}
    return previous.get(obs.active_sha256, obs.active_sha256[:12])


_RUN_STATUS = {
    "pending": admin_pb2.FEDERATED_RUN_STATUS_PENDING,
    "waiting-for-nodes": admin_pb2.FEDERATED_RUN_STATUS_WAITING_FOR_NODES,
    "running": admin_pb2.FEDERATED_RUN_STATUS_RUNNING,
    "completed": admin_pb2.FEDERATED_RUN_STATUS_COMPLETED,
    "failed": admin_pb2.FEDERATED_RUN_STATUS_FAILED,
}
RUN_STATUS_NAMES = {number: name for name, number in _RUN_STATUS.items()}


def run_request(request: admin_pb2.StartFederatedRunRequest):
    from central.federation import RunRequest

    return RunRequest(
        task=request.task,
        rounds=request.rounds,
        min_nodes=request.min_nodes,
        secagg=not request.no_secagg,
        secagg_shares=request.secagg_shares,
        secagg_threshold=request.secagg_threshold,
        clip=request.clip,
        noise=request.noise,
        stage_timeout_s=request.stage_timeout_s,
        wait_nodes_s=request.wait_nodes_s,
        record_received=request.record_received,
    )


def federated_run_message(view) -> admin_pb2.FederatedRun:
    record, report = view.record, view.report
    outcome = report.get("outcome") if view.status == "completed" else None
    message = admin_pb2.FederatedRun(
        run_id=record.run_id,
        task=record.task,
        status=_RUN_STATUS[view.status],
        rounds=int(record.config.get("rounds", 0)),
        round_seconds=[float(r["seconds"]) for r in report.get("rounds", [])],
        nodes=int(report.get("nodes") or 0),
        error=view.error,
        secagg=bool(record.config.get("secagg", True)),
        model=record.model,
        outcome_json=json.dumps(outcome, sort_keys=True) if outcome else "",
        started_at=timestamp(record.started_at),
        started_by=record.started_by,
        node_errors=[f"{node}: {error}" for node, error in sorted(view.node_errors.items())],
    )
    if report.get("finished_at"):
        message.finished_at.CopyFrom(timestamp(float(report["finished_at"])))
    return message


# -- objectives (central.services.objectives) ---------------------------------------------------------------------


def objective_of_message(m: admin_pb2.Objective) -> slo.Objective:
    """The objective a caller sent, unvalidated (central.slo.validated judges it); an unset window is 0."""
    return slo.Objective(
        name=m.name,
        selector=dict(m.selector),
        availability_percent=m.availability_percent,
        latency_threshold_ms=m.latency_threshold_ms,
        latency_percent=m.latency_percent,
        window_s=m.window.ToNanoseconds() / 1e9 if m.HasField("window") else 0.0,
    )


def objective_message(o: ObjectiveRecord) -> admin_pb2.Objective:
    return admin_pb2.Objective(
        name=o.name,
        selector=o.selector,
        availability_percent=o.availability_percent,
        latency_threshold_ms=o.latency_threshold_ms,
        latency_percent=o.latency_percent,
        window=duration(o.window_s),
        updated_at=timestamp(o.updated_at),
        updated_by=o.updated_by,
    )


def objective_status_message(s: slo.Status) -> admin_pb2.ObjectiveStatus:
    return admin_pb2.ObjectiveStatus(
        requests=s.requests,
        errors=s.errors,
        slow_requests=s.slow_requests,
        availability_percent=s.availability_percent,
        latency_good_percent=s.latency_good_percent,
        compliant=s.compliant,
        error_budget_remaining=s.error_budget_remaining,
        burn_rates=[
            admin_pb2.BurnRate(window_seconds=b.window_s, availability=b.availability, latency=b.latency)
            for b in s.burn_rates
        ],
        alert=s.alert,
    )


def objectives_response(views: list[ObjectiveView]) -> admin_pb2.ListObjectivesResponse:
    return admin_pb2.ListObjectivesResponse(
        objectives=[objective_message(v.record) for v in views],
        statuses=[objective_status_message(v.status) for v in views],
    )


# -- history (central.services.history) ----------------------------------------------------------------------------

RESOLUTION_PERIOD_S: dict[int, int] = {
    admin_pb2.ROLLUP_RESOLUTION_UNSPECIFIED: 60,
    admin_pb2.ROLLUP_RESOLUTION_MINUTE: 60,
    admin_pb2.ROLLUP_RESOLUTION_HOUR: 3600,
}


def history_period_s(resolution: int) -> int:
    """The period of a RollupResolution; InvalidArgument for a value this central does not know."""
    if resolution not in RESOLUTION_PERIOD_S:
        raise InvalidArgument(f"resolution {resolution} is not a RollupResolution this central knows")
    return RESOLUTION_PERIOD_S[resolution]


def metrics_history_response(series: list[tuple[str, list[history.Point]]]) -> admin_pb2.GetMetricsHistoryResponse:
    """Each point built once, in place in its series (thousands per answer: a RollupPoint built apart and then
    passed in would be copied)."""
    response = admin_pb2.GetMetricsHistoryResponse()
    for scope, points in series:
        add = response.series.add(scope=scope).points.add
        for p in points:
            r = p.row
            add(
                period_seconds=r.period_s,
                requests=r.requests,
                errors=r.errors,
                generated_tokens=r.generated_tokens,
                prompt_tokens=r.prompt_tokens,
                cached_prompt_tokens=r.cached_prompt_tokens,
                tokens_per_second=p.tokens_per_second,
                latency_p50_ms=p.latency_p50_ms,
                latency_p99_ms=p.latency_p99_ms,
                ttft_p50_ms=p.ttft_p50_ms,
                ttft_p99_ms=p.ttft_p99_ms,
                cache_hits=r.cache_hits,
                cache_lookups=r.cache_lookups,
                queue_depth_max=min(r.queue_depth_max, 2**32 - 1),
                queue_depth_mean=p.queue_depth_mean,
                heartbeats=r.heartbeats,
                upstream_requests=r.upstream_requests,
                upstream_prompt_tokens=r.upstream_prompt_tokens,
                upstream_completion_tokens=r.upstream_completion_tokens,
                upstream_cost=r.upstream_cost,
            ).start.seconds = r.start  # a rollup starts on a whole minute or hour
    return response


def burst_usage_response(groups: list[history.BurstGroup]) -> admin_pb2.ListBurstUsageResponse:
    return admin_pb2.ListBurstUsageResponse(
        rows=[
            admin_pb2.BurstUsage(
                upstream=g.upstream,
                group=g.group,
                requests=g.requests,
                prompt_tokens=g.prompt_tokens,
                completion_tokens=g.completion_tokens,
                cost=g.cost,
                currency=g.currency,
                last_at=timestamp(g.last_at),
            )
            for g in groups
        ]
    )


# -- trust (central.services.trust) ---------------------------------------------------------------


def trust_bundle_message(state: TrustState) -> fleet_pb2.TrustBundle:
    """What a node is told to trust: CAs newest first with their cross certificates, and the signing-key chain."""
    return fleet_pb2.TrustBundle(
        version=state.version,
        ca_certificates_pem=[pki.certificate_pem(ca).decode() for ca in state.cas],
        cross_certificates_pem=state.cross_pems,
        signing_key_statements=[
            fleet_pb2.SigningKeyStatement(body=body, signature=signature)
            for body, signature in state.history.statements
        ],
        renew_now=state.renew_now,
    )


def signing_key_message(key: SigningKeyInfo) -> admin_pb2.SigningKey:
    msg = admin_pb2.SigningKey(
        key_id=key.key_id, public_key_pem=key.public_key_pem, created_at=timestamp(key.created_at), state=key.state
    )
    if key.valid_until is not None:
        msg.valid_until.CopyFrom(timestamp(key.valid_until))
    return msg


def ca_message(ca: CaView) -> admin_pb2.CertificateAuthority:
    return admin_pb2.CertificateAuthority(
        fingerprint=ca.fingerprint,
        certificate_pem=pki.certificate_pem(ca.certificate).decode(),
        not_after=timestamp(ca.certificate.not_valid_after_utc.timestamp()),
        state=ca.state,
    )
