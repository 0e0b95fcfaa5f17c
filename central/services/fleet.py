"""FleetService: enrolled nodes' own calls, each checked against the node's certificate.

Identity comes from the certificate, never from a field in a request: the node id a
request names must be the certificate's, and the node must be enrolled and unrevoked.
"""

from __future__ import annotations

import datetime as dt
import logging

from central import audit, routing
from central import reports as reports_mod
from central.errors import InvalidArgument, NotFound, PermissionDenied, ServiceError, Unauthenticated
from central.services import recovery
from central.services.base import Caller, Central, blob_store, record_audit, refuse
from central.store import AuditEvent, DesiredState, NodeHealth, NodeRecord, ReportRecord
from edgefleet import pki, report_limits

log = logging.getLogger(__name__)

MAX_REPORTS_PER_CALL = 1000


def node_identity(central: Central, caller: Caller, claimed_node_id: str, action: str) -> str:
    """The caller's node id, when its certificate is a node's and speaks for `claimed_node_id`."""
    problem = _identity_problem(caller, claimed_node_id)
    if problem is not None:
        raise refuse(central, problem[0], caller, action, claimed_node_id, problem[1])
    assert caller.identity is not None  # no problem means a node identity
    return caller.identity.name


def _identity_problem(caller: Caller, claimed_node_id: str) -> tuple[type[ServiceError], str] | None:
    identity = caller.identity
    if identity is None:
        return Unauthenticated, "no fleet identity in the client certificate"
    if identity.role != "node":
        return PermissionDenied, f"{identity} is not a node certificate; FleetService is for enrolled nodes"
    if claimed_node_id != identity.name:
        return PermissionDenied, f"certificate of {identity.name} cannot speak as {claimed_node_id or 'no node'}"
    return None


def _refuse_unknown_or_revoked(central: Central, caller: Caller, node_id: str, action: str) -> ServiceError:
    if central.store.get_node(node_id) is None:
        return refuse(central, PermissionDenied, caller, action, node_id, f"node {node_id} is not enrolled")
    return refuse(central, PermissionDenied, caller, action, node_id, f"node {node_id} was revoked")


def _active_node(central: Central, caller: Caller, claimed_node_id: str, action: str) -> NodeRecord:
    node_id = node_identity(central, caller, claimed_node_id, action)
    node = central.store.get_node(node_id)
    if (node is None or serial_problem(caller, node.certificate_serial)) and recovery.adopt_certificate(
        central, caller, node_id
    ):  # enrolled or renewed after the backup a restored store was taken from
        node = central.store.get_node(node_id)
    if node is None or node.revoked_at is not None:
        raise _refuse_unknown_or_revoked(central, caller, node_id, action)
    problem = serial_problem(caller, node.certificate_serial)
    if problem is not None:
        raise refuse(central, PermissionDenied, caller, action, node_id, problem)
    return node


def serial_problem(caller: Caller, live_serial: str) -> str | None:
    """Why the caller's certificate is not the node's live one (the serial central last issued to it, at
    enrollment or renewal), or None when it is: a renewed node's older certificates are refused."""
    if caller.serial == live_serial:
        return None
    name = caller.identity.name if caller.identity else "the node"
    return (
        f"certificate serial {caller.serial or '(none)'} was replaced at renewal: only the certificate central"
        f" last issued to {name} is accepted"
    )


def heartbeat(
    central: Central,
    caller: Caller,
    claimed_node_id: str,
    status: bytes,
    certificate_expires_at: float,
    routing_report: routing.RoutingReport | None = None,
    health: NodeHealth | None = None,
) -> DesiredState:
    """One message of a node's heartbeat stream. The stream outlives the TLS handshake that checked the
    certificate, so its expiry, the node id and revocation are checked again on every message.
    `status` is kept for operators to read; `routing_report` (what the status says of routing) is added to the
    node's totals, and `health` (what the rollout controller reads of it) kept beside it."""
    action = "fleet.heartbeat"
    node_id = node_identity(central, caller, claimed_node_id, action)
    now = central.clock()
    if now >= certificate_expires_at:
        raise refuse(
            central,
            Unauthenticated,
            caller,
            action,
            node_id,
            "the client certificate expired during the stream; renew it or enroll again",
        )
    desired = central.store.heartbeat_target(node_id)
    if (desired is None or serial_problem(caller, desired.certificate_serial)) and recovery.adopt_certificate(
        central, caller, node_id
    ):  # enrolled or renewed after the backup a restored store was taken from
        desired = central.store.heartbeat_target(node_id)
    if desired is None:
        raise _refuse_unknown_or_revoked(central, caller, node_id, action)
    problem = serial_problem(caller, desired.certificate_serial)
    if problem is not None:
        raise refuse(central, PermissionDenied, caller, action, node_id, problem)
    record_beat(central, node_id, now, status, routing_report, health)
    return desired


def heartbeat_passes_without_store(
    caller: Caller, claimed_node_id: str, now: float, certificate_expires_at: float
) -> bool:
    """Whether a beat passes every check of `heartbeat` that needs no store read: the fast path of a replica on a
    remote store (central.servicers), which reads the desired state in batches; a beat that fails goes through
    `heartbeat`, which refuses it and writes the reason to the audit log."""
    return _identity_problem(caller, claimed_node_id) is None and now < certificate_expires_at


def record_beat(
    central: Central,
    node_id: str,
    now: float,
    status: bytes,
    routing_report: routing.RoutingReport | None,
    health: NodeHealth | None,
) -> None:
    """Keep an accepted beat for the next flush (in memory only)."""
    central.beats.record(node_id, now, status, _usable(node_id, routing_report), health)


def renew_certificate(central: Central, caller: Caller, claimed_node_id: str, csr_pem: str) -> str:
    action = "fleet.renew_certificate"
    node = _active_node(central, caller, claimed_node_id, action)
    try:
        public_key = pki.public_key_from_csr(csr_pem)
    except pki.PkiError as exc:
        raise refuse(central, InvalidArgument, caller, action, node.node_id, str(exc)) from None
    cert = central.authority.issue(
        public_key,
        pki.Identity("node", node.node_id),
        dt.timedelta(seconds=central.settings.certificate_lifetime_s),
        pki.utc(central.clock()),
    )
    serial = pki.serial_hex(cert)
    central.store.set_certificate(node.node_id, serial, cert.not_valid_after_utc.timestamp())
    record_audit(
        central,
        caller,
        action,
        node.node_id,
        audit.ALLOWED,
        f"issued certificate {serial}, replacing {node.certificate_serial} (refused from now on)",
    )
    return pki.certificate_pem(cert).decode()


def report(
    central: Central,
    caller: Caller,
    claimed_node_id: str,
    reports: list[ReportRecord],
    dropped_count: int,
    routing_reports: dict[int, routing.RoutingReport] | None = None,
    spool_epoch: str = "",
) -> int:
    """Spooled reports; `routing_reports` (by report sequence) are what their statuses say of routing.
    `spool_epoch` names the agent's spool: a new one (a spool rebuilt, numbering from 1 again) has its reports
    numbered after those central holds, so they are kept rather than taken for duplicates (central.reports)."""
    action = "fleet.report_event"
    node = _active_node(central, caller, claimed_node_id, action)
    if len(reports) > MAX_REPORTS_PER_CALL:
        raise InvalidArgument(f"at most {MAX_REPORTS_PER_CALL} reports per call, got {len(reports)}")
    if any(not 0 < r.sequence <= reports_mod.MAX_AGENT_SEQUENCE for r in reports):
        raise InvalidArgument(f"report sequences start at 1 and stay below {reports_mod.MAX_AGENT_SEQUENCE + 1}")
    if dropped_count > reports_mod.MAX_AGENT_SEQUENCE:  # uint64 on the wire; the store's column is signed 64-bit
        raise InvalidArgument(f"dropped_count {dropped_count} is past {reports_mod.MAX_AGENT_SEQUENCE}")
    if len(spool_epoch) > report_limits.MAX_EPOCH_CHARS:
        raise InvalidArgument(f"spool_epoch is {len(spool_epoch)} characters; at most {report_limits.MAX_EPOCH_CHARS}")
    usable = {seq: r for seq, r in (routing_reports or {}).items() if _usable(node.node_id, r) is not None}
    restart: list[AuditEvent] = []
    if spool_epoch and reports:
        held = central.store.spool_epoch(node.node_id)
        if held != spool_epoch:
            detail = reports_mod.restart_detail(node.node_id, held, spool_epoch)
            restart = [
                AuditEvent(central.clock(), caller.actor, action, node.node_id, audit.ALLOWED, detail, caller.peer)
            ]
    acknowledged = central.store.add_reports(
        node.node_id, reports, dropped_count, routing=usable or None, epoch=spool_epoch, restart_events=restart
    )
    if restart:
        log.info("%s", restart[0].detail)
    recovery.note_dropped(central, node.node_id, dropped_count)  # reports a restore lost
    if not reports and spool_epoch and central.store.spool_epoch(node.node_id) not in ("", spool_epoch):
        # An empty batch asks how far central holds this spool (an agent checking for a restore from a backup,
        # edge_agent.control.spool.ReportSpool.rewind): none of it, when the epoch held is another spool's.
        return 0
    return acknowledged


def refuse_oversized(caller: Caller, claimed_node_id: str, what: str, problem: str) -> InvalidArgument:
    """The error for a heartbeat or a report past a bound of edgefleet.report_limits, logged (not audited: the
    node's next beat or flush tries again, and the audit log must not grow with what a node sends)."""
    log.warning("refused a %s of %s from %s: %s", what, claimed_node_id[:80], caller.peer, problem)
    return InvalidArgument(f"{what} refused: {problem}")


def fetch_artifact(central: Central, caller: Caller, sha256: str, offset: int) -> int:
    """The size of the artifact the node may download from offset: only the model it is assigned (which a
    rollout's step writes when it reaches the node, and a rollback restores); raises otherwise."""
    action = "fleet.fetch_artifact"
    if not is_sha256(sha256):
        raise InvalidArgument(f"sha256 must be 64 lowercase hex digits, got {sha256[:80]!r}")
    node = _active_node(central, caller, caller.identity.name if caller.identity else "", action)
    if not may_fetch(node, sha256):
        raise refuse(
            central,
            PermissionDenied,
            caller,
            action,
            node.node_id,
            f"node {node.node_id} is not assigned sha256:{sha256}",
        )
    if not central.store.models_with_sha256(sha256):
        raise NotFound(f"no registered model has sha256 {sha256!r}")
    size = blob_store(central).size(sha256)
    if size is None:
        raise refuse(central, NotFound, caller, action, node.node_id, f"the blob {sha256} is missing from the store")
    if offset > size:
        raise InvalidArgument(f"offset {offset} is past the artifact's end ({size} bytes)")
    return size


def is_sha256(text: str) -> bool:
    return len(text) == 64 and all(c in "0123456789abcdef" for c in text)


def may_fetch(node: NodeRecord, sha256: str) -> bool:
    """Whether the node may download the blob with this digest: the one its desired state names. A rollout
    writes a node's desired state when its step reaches the node and a rollback or abort writes the previous
    version back, so this covers every model being rolled out to the node, and nothing else: a node cannot
    read another node's models (or any registered one) by naming its digest."""
    return bool(sha256) and node.desired_model.get("sha256") == sha256


def _usable(node_id: str, report: routing.RoutingReport | None) -> routing.RoutingReport | None:
    """The report, or None when it is malformed: its counts are left out, the rest of the beat is kept."""
    if report is None:
        return None
    problem = routing.problem(report)
    if problem:
        log.warning("ignored the routing summary of %s: %s", node_id, problem)
        return None
    return report
