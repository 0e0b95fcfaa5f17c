"""What a restore lost, learned back as the nodes call in, and GetRestoreReport.

central.restore_state decides; the functions here read what it needs (the caller's certificate, the node's record,
the registry), write what it decided (one store call: the adoption with its finding) and audit each adoption. Each
returns at once, reading nothing, when the store was never restored or the restore window has passed.
"""

from __future__ import annotations

import logging
from dataclasses import replace

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from central import audit, restore_state
from central.restore_state import PresentedCertificate, ReportedModel
from central.services.base import Caller, Central, record_audit, require_viewer
from central.store import DesiredState, RestoreFinding, RestorePoint
from edgefleet import pki

log = logging.getLogger(__name__)

# The audit action of every adoption (the detail says what was adopted).
ADOPTION_ACTION = "fleet.restore_adoption"
# GetRestoreReport lists at most this many findings (a node has at most one of each kind); past it, a last one
# says how to read the rest.
MAX_REPORT_FINDINGS = 10_000


def window_s(central: Central) -> float:
    """The restore window: one certificate lifetime (central.restore_state says why)."""
    return central.settings.certificate_lifetime_s


def _window_open(central: Central) -> bool:
    return restore_state.in_window(central.restore, central.clock(), window_s(central))


# -- certificates (cases 1 and 2) -------------------------------------------------------------------------------


def adopt_certificate(central: Central, caller: Caller, node_id: str) -> bool:
    """Whether the caller's certificate, which the store does not hold as `node_id`'s live one (the node is unknown,
    or its serial is another), was adopted as a node enrolled or renewed after the backup. Called only where the
    caller would otherwise be refused, so the usual path reads nothing more."""
    if not caller.certificate_pem or not _window_open(central):
        return False
    # Every CA central accepts now: the backup's may be the previous one of a CA rotation since the restore.
    cas = central.trust.cas if central.trust is not None else [central.authority.certificate]
    cert = presented_certificate(caller.certificate_pem, cas)
    if cert is None or cert.node_id != node_id:
        return False
    node = central.store.get_node(node_id)
    finding = restore_state.judge_certificate(central.restore, central.clock(), window_s(central), cert, node)
    if finding is None:
        return False
    if node is None:
        adopted = central.store.adopt_node(restore_state.adopted_node(cert), finding)
    else:
        adopted = central.store.adopt_certificate(
            node_id, node.certificate_serial, cert.serial, cert.expires_at, finding
        )
    if adopted:
        _audit_adoption(central, caller, finding)
    return adopted


def presented_certificate(pem: bytes, cas: list[x509.Certificate]) -> PresentedCertificate | None:
    """What restore_state reads of a node's certificate; None when it is not a node's or cannot be read. The issuer
    is the CA of `cas` whose key signed it ("" when none did): TLS checked the chain already, this names the CA."""
    try:
        cert = pki.load_certificate(pem)
    except pki.PkiError:
        return None
    identity = pki.identity_of(cert)
    if identity is None or identity.role != "node":
        return None
    issuer = ""
    for ca in cas:
        try:
            cert.verify_directly_issued_by(ca)
        except (ValueError, TypeError, InvalidSignature):
            continue
        issuer = pki.fingerprint(ca)
        break
    not_before, not_after = cert.not_valid_before_utc.timestamp(), cert.not_valid_after_utc.timestamp()
    return PresentedCertificate(
        identity.name, pki.serial_hex(cert), restore_state.issued_at(not_before, not_after), not_after, issuer
    )


# -- assignments (case 3) ---------------------------------------------------------------------------------------


def assignment_may_be_lost(central: Central, desired: DesiredState, reported_generation: int) -> bool:
    """The check on every accepted heartbeat (no store read): whether to call learn_assignment."""
    return restore_state.assignment_may_be_lost(
        central.restore, central.clock(), window_s(central), desired.config_generation, reported_generation
    )


def learn_assignment(
    central: Central,
    caller: Caller,
    node_id: str,
    desired: DesiredState,
    reported_generation: int,
    reported: ReportedModel | None,
) -> DesiredState:
    """The desired state to answer a heartbeat with, once assignment_may_be_lost: the node's assignment after the
    backup adopted (or its loss listed), or `desired` unchanged when there is nothing to learn or another write got
    there first (then the store's latest)."""
    registered = None
    if reported is not None and not restore_state.same_model(desired.model, reported):
        registered = central.store.get_model(reported.name, reported.version)
    point = central.restore
    if point is None:  # assignment_may_be_lost said a restore is recorded; nothing to learn without one
        return desired
    change = restore_state.judge_assignment(
        node_id,
        desired,
        reported_generation,
        reported,
        registered,
        central.clock(),
        restored_at=point.restored_at,
    )
    if change is None:
        return desired
    if central.store.adopt_assignment(
        node_id, desired.config_generation, change.desired_model, change.generation, change.finding
    ):
        _audit_adoption(central, caller, change.finding)
        return replace(desired, config_generation=change.generation, model=change.desired_model)
    return central.store.heartbeat_target(node_id) or desired


# -- reports (case 4) -------------------------------------------------------------------------------------------


def note_dropped(central: Central, node_id: str, dropped_count: int) -> None:
    """List the reports a node says it dropped, in the restore window (the first count per node)."""
    if dropped_count <= 0 or not _window_open(central):
        return
    finding = restore_state.judge_dropped(central.restore, central.clock(), window_s(central), node_id, dropped_count)
    if finding is not None and central.store.add_restore_finding(finding):
        log.warning("restore: node %s %s", node_id, finding.detail)


# -- GetRestoreReport -------------------------------------------------------------------------------------------


def restore_report(central: Central, caller: Caller) -> tuple[RestorePoint | None, list[RestoreFinding]]:
    """The latest restore and its findings, oldest first (None and [] when the store was never restored)."""
    require_viewer(central, caller, "restore.report")
    point = central.store.latest_restore()
    if point is None:
        return None, []
    findings = central.store.restore_findings(limit=MAX_REPORT_FINDINGS + 1)
    if len(findings) > MAX_REPORT_FINDINGS:
        more = RestoreFinding(
            "more_findings",
            "",
            f"more findings than the {MAX_REPORT_FINDINGS:,} listed: the store's restore_findings table holds them all",
            central.clock(),
            restore_state.LISTED,
        )
        findings = [*findings[:MAX_REPORT_FINDINGS], more]
    return point, findings


def _audit_adoption(central: Central, caller: Caller, finding: RestoreFinding) -> None:
    record_audit(central, caller, ADOPTION_ACTION, finding.node_id, audit.ALLOWED, f"{finding.kind}: {finding.detail}")
    log.warning("restore: node %s %s", finding.node_id, finding.detail)
