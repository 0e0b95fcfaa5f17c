"""Between central's records and the edgefleet.v1 messages: the one place that knows both."""

from __future__ import annotations

from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from central import audit, liveness
from central.coordinator import NodeView
from central.store import DesiredState, ModelRecord, ReportRecord, TokenRecord
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


def seconds_of(ts: Timestamp) -> float:
    return ts.ToNanoseconds() / 1e9


def duration(seconds: float) -> Duration:
    d = Duration()
    d.FromNanoseconds(int(seconds * 1e9))
    return d


def token_message(t: TokenRecord) -> admin_pb2.Token:
    return admin_pb2.Token(token_id=t.token_id, labels=t.labels, created_at=timestamp(t.created_at),
                           expires_at=timestamp(t.expires_at), uses_total=t.uses_total, uses_left=t.uses_left,
                           revoked=t.revoked, created_by=t.created_by)


def node_message(view: NodeView) -> admin_pb2.Node:
    n = view.record
    msg = admin_pb2.Node(node_id=n.node_id, labels=n.labels, state=_NODE_STATES[view.state],
                         enrolled_at=timestamp(n.enrolled_at), certificate_serial=n.certificate_serial,
                         certificate_expires_at=timestamp(n.certificate_expires_at), hostname=n.hostname,
                         dropped_reports=n.dropped_reports)
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
    return admin_pb2.Model(name=m.name, version=m.version, format=m.format, sha256=m.sha256, size=m.size,
                           params=m.params, created_at=timestamp(m.created_at), pushed_by=m.pushed_by,
                           assigned_nodes=assigned_nodes)


def report_records(reports) -> list[ReportRecord]:
    records = []
    for r in reports:
        body = r.WhichOneof("body")
        if body is None:
            continue
        records.append(ReportRecord(r.sequence, seconds_of(r.observed_at), body,
                                    getattr(r, body).SerializeToString()))
    return records


def report_message(r: ReportRecord) -> fleet_pb2.Report:
    msg = fleet_pb2.Report(sequence=r.sequence, observed_at=timestamp(r.observed_at))
    if r.kind == "status":
        msg.status.ParseFromString(r.payload)
    else:
        msg.event.ParseFromString(r.payload)
    return msg


def audit_message(e: audit.AuditEntry) -> admin_pb2.AuditEntry:
    return admin_pb2.AuditEntry(sequence=e.sequence, at=timestamp(e.at), actor=e.actor, action=e.action,
                                target=e.target, outcome=_OUTCOMES[e.outcome], detail=e.detail, peer=e.peer,
                                previous_hash=e.previous_hash, hash=e.hash)
