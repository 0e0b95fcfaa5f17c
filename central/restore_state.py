"""What a restore from a backup lost, learned back from the nodes, and what central does about it.

A restore (``edgefleet central restore``) puts the store back to its backup: whatever happened after the backup
point is gone from it. The nodes still carry much of it, and show it at their first calls to the restored central:

- a node enrolled after the backup presents a certificate the fleet CA issued it for a node id the store has never
  heard of: adopted, its node record made from the certificate (finding ``node_enrolled_after_backup``);
- a node renewed after the backup presents a serial other than the one in the store: the newer certificate is taken
  as its live one (``certificate_renewed_after_backup``);
- a node assigned a model after the backup reports a config generation above the store's: what it runs, or is
  switching to, becomes its desired model again when the registry holds that version (``assignment_after_backup``),
  so it is not sent back to the backup's model; when the registry does not (``model_missing``), central leaves it
  without an assignment, serving what it runs, for an operator to decide;
- reports an agent could no longer send again arrive as its dropped count (``reports_lost``).

Only a certificate the backup's fleet CA issued between the backup point and the restore is adopted. One issued
before the backup point that the store does not hold was replaced at a renewal, or belongs to a node enrolled and
lost before: refused, as always. One issued after the restore came from another central holding the same CA key
(the old machine, still running): refused too.

The restore window: findings and adoptions are made for one certificate lifetime after the restore (30 days by
default). By its end every certificate issued before the restore has expired, so every node still in touch is one
the restored central issued to. A lost assignment is seen once per node, at its first heartbeat (the agent then
echoes the restored central's generation), and lost reports at the first dropped count a node sends in the window.
Each finding is made once per node and kind.

The decisions (judge_certificate, judge_assignment, judge_dropped) are pure: no clock, store or network. The calls
that act on them are in central.services.recovery; :func:`record_restore` is the one function here that writes.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from central.errors import CentralError
from central.store.records import DesiredState, FleetStore, ModelRecord, NodeRecord, RestoreFinding, RestorePoint
from edgefleet.durations import format_duration

__all__ = [
    "ADOPTED",
    "KINDS",
    "LISTED",
    "AssignmentChange",
    "PresentedCertificate",
    "ReportedModel",
    "RestoreFinding",
    "RestorePoint",
    "RestoreStateError",
    "adopted_node",
    "assignment_may_be_lost",
    "in_window",
    "issued_at",
    "judge_assignment",
    "judge_certificate",
    "judge_dropped",
    "record_restore",
    "restore_point_problem",
]

NODE_ENROLLED = "node_enrolled_after_backup"
CERTIFICATE_RENEWED = "certificate_renewed_after_backup"
ASSIGNMENT = "assignment_after_backup"
MODEL_MISSING = "model_missing"
REPORTS_LOST = "reports_lost"
OPERATOR_ACTIONS = "operator_actions_after_backup"
KINDS = (OPERATOR_ACTIONS, NODE_ENROLLED, CERTIFICATE_RENEWED, ASSIGNMENT, MODEL_MISSING, REPORTS_LOST)

# Certificates keep whole seconds: one issued in the second the backup began may read as issued up to a second
# before it. Taking it as after is harmless, as everything committed before the snapshot is in the store.
CERTIFICATE_TIME_GRAIN_S = 1.0

# What central did about a finding: took it back into the store, or only listed it for an operator.
ADOPTED = "adopted"
LISTED = "listed"


class RestoreStateError(CentralError):
    """A restore point that cannot be recorded; the message says what is wrong with it."""


@dataclass(frozen=True)
class PresentedCertificate:
    """What central reads of the certificate a node presented (central.services.recovery reads it)."""

    node_id: str
    serial: str
    issued_at: float  # when the CA issued it (issued_at below), unix seconds
    expires_at: float
    issuer_fingerprint: str  # sha256:HEX of the CA central holds that signed it; "" when none did


@dataclass(frozen=True)
class ReportedModel:
    """The model a node reports it runs or is switching to (its activation's, else its active fleet model)."""

    name: str
    version: str
    sha256: str

    def __str__(self) -> str:
        return f"{self.name}@{self.version} (sha256 {self.sha256[:12]})"


@dataclass(frozen=True)
class AssignmentChange:
    """What to write when a node's assignment after the backup was lost: its desired model ({} for none), the
    generation (above the one the node reports, so it never sees its generation go back) and the finding."""

    desired_model: dict[str, str]
    generation: int
    finding: RestoreFinding


def _utc(unix_seconds: float) -> str:
    return dt.datetime.fromtimestamp(unix_seconds, tz=dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- recording a restore -------------------------------------------------------------------------------------


def restore_point_problem(point: RestorePoint) -> str | None:
    """What is wrong with a restore point, or None."""
    if len(point.backup_id) != 64 or any(c not in "0123456789abcdef" for c in point.backup_id):
        return f"backup_id must be the manifest's sha256, 64 lowercase hex digits; got {point.backup_id[:80]!r}"
    if not point.backup_at > 0:
        return f"backup_at must be a time after 1970, got {point.backup_at}"
    if point.restored_at < point.backup_at:
        return f"restored_at ({_utc(point.restored_at)}) is before backup_at ({_utc(point.backup_at)})"
    if point.audit_head_sequence < 0:
        return f"audit_head_sequence must not be negative, got {point.audit_head_sequence}"
    if not point.ca_fingerprint.startswith("sha256:"):
        return f"ca_fingerprint must be sha256:HEX, got {point.ca_fingerprint[:80]!r}"
    return None


def record_restore(store: FleetStore, point: RestorePoint) -> None:
    """Record that `store` was restored from a backup (the restore command calls it once the store is in place,
    before central serves it): from now on central adopts and lists what the restore lost, as the nodes call in.
    RestoreStateError for a malformed point; StoreError when the store cannot write it."""
    problem = restore_point_problem(point)
    if problem is not None:
        raise RestoreStateError(f"cannot record the restore: {problem}")
    age = format_duration(point.restored_at - point.backup_at)
    lost = RestoreFinding(
        OPERATOR_ACTIONS,
        "",
        f"the store is as it was at {_utc(point.backup_at)}, {age} before the restore: operator actions after it are"
        " lost (tokens, labels, assignments, rollouts started or changed, models pushed, operators added, revocations:"
        " revoke again any node or operator revoked after it); nodes enrolled, renewed or assigned after it are"
        " adopted as they call in, and listed here",
        point.restored_at,
        LISTED,
    )
    store.add_restore(point, [lost])


# -- rollouts after a restore -----------------------------------------------------------------------------------

# How long a live rollout waits, after a restore, for its nodes to report once: long enough for agents backing off
# from the lost central (60 s at most by default) to find this one, short enough that a node gone for good holds a
# rollout only briefly.
ROLLOUT_HOLD_S = 600.0


def rollout_hold(
    point: RestorePoint | None, now: float, last_seen: dict[str, float | None], hold_s: float = ROLLOUT_HOLD_S
) -> list[str]:
    """Why a live rollout waits after a restore (empty: it may go on). The restored store says where the rollout
    stood at the backup; its nodes may have moved on since (a step promoted after the backup). Deciding before
    they report would re-assign from stale state, and would take from the restore report the assignments that
    were lost (a node's report is how central learns them). So the controller waits until every node of the
    rollout (`last_seen`: node id -> last heartbeat, None for never) has reported since the restore, or until
    `hold_s` after it."""
    if point is None or now >= point.restored_at + hold_s:
        return []
    unseen = sorted(n for n, seen in last_seen.items() if seen is None or seen < point.restored_at)
    if not unseen:
        return []
    names = ", ".join(unseen[:10]) + (f" and {len(unseen) - 10} more" if len(unseen) > 10 else "")
    left = point.restored_at + hold_s - now
    return [f"restored from a backup: waiting for {names} to report (at most {format_duration(left)} more)"]


# -- the restore window ----------------------------------------------------------------------------------------


def in_window(point: RestorePoint | None, now: float, window_s: float) -> bool:
    """Whether findings and adoptions are made at `now`: a restore is recorded and at most `window_s` (central's
    certificate lifetime) has passed since it."""
    return point is not None and now < point.restored_at + window_s


def issued_at(not_before: float, not_after: float) -> float:
    """When central.datadir.Authority.issue made a certificate with this validity: it backdates not_before by a
    minute, or by a tenth of a lifetime shorter than ten minutes (so a span of 660 s or more is lifetime + 60 s,
    a shorter one 1.1 lifetimes). Certificates keep whole seconds, so this is within a second of the issue."""
    span = not_after - not_before
    return not_before + (60.0 if span >= 660.0 else span / 11)


# -- certificates: cases 1 and 2 -------------------------------------------------------------------------------


def judge_certificate(
    point: RestorePoint | None, now: float, window_s: float, cert: PresentedCertificate, node: NodeRecord | None
) -> RestoreFinding | None:
    """The finding to adopt a certificate with, or None to refuse the caller as always. `node` is the store's record
    of cert.node_id (None: unknown). Adopted: a certificate the backup's CA issued after the backup point and before
    the restore, within the restore window, for a node the store does not know (node_enrolled_after_backup), or for
    an unrevoked node whose live certificate it outlives (certificate_renewed_after_backup: a renewal after the
    backup; an older certificate than the live one is a replaced one)."""
    if not in_window(point, now, window_s):
        return None
    assert point is not None
    if cert.issuer_fingerprint != point.ca_fingerprint or not cert.serial:
        return None
    if not point.backup_at - CERTIFICATE_TIME_GRAIN_S < cert.issued_at <= point.restored_at:
        return None
    if node is None:
        return RestoreFinding(
            NODE_ENROLLED,
            cert.node_id,
            f"enrolled after the backup (certificate {cert.serial} issued {_utc(cert.issued_at)}): adopted with no"
            " labels, as its token's labels were lost; label it again with `edgefleet nodes label`, and enroll it"
            " again if it takes part in federated learning (its Flower key was lost)",
            now,
            ADOPTED,
        )
    if node.revoked_at is not None or cert.serial == node.certificate_serial:
        return None
    if cert.expires_at <= node.certificate_expires_at:
        return None
    return RestoreFinding(
        CERTIFICATE_RENEWED,
        cert.node_id,
        f"renewed its certificate after the backup: {cert.serial} (issued {_utc(cert.issued_at)}) taken as its live"
        f" certificate in place of {node.certificate_serial}",
        now,
        ADOPTED,
    )


def adopted_node(cert: PresentedCertificate) -> NodeRecord:
    """The record of a node enrolled after the backup, made from its certificate: its labels, hostname and token
    were lost with the store (its next heartbeat brings its status)."""
    return NodeRecord(
        node_id=cert.node_id,
        labels={},
        hostname="",
        enrolled_at=cert.issued_at,
        token_id="",
        certificate_serial=cert.serial,
        certificate_expires_at=cert.expires_at,
    )


# -- assignments: case 3 ---------------------------------------------------------------------------------------


def assignment_may_be_lost(
    point: RestorePoint | None, now: float, window_s: float, stored_generation: int, reported_generation: int
) -> bool:
    """The check on every heartbeat, before any store read: a node reporting a config generation above the store's
    was sent an assignment the store no longer holds. Generations only grow, except through a restore. A model other
    than the desired one is no sign on its own: a node still downloading, or one whose activation failed, runs
    another."""
    return reported_generation > stored_generation and in_window(point, now, window_s)


def same_model(desired: dict[str, str], reported: ReportedModel | None) -> bool:
    """Whether a desired state's model is the reported one (name, version and bytes); {} matches None."""
    if reported is None:
        return not desired
    return (desired.get("name"), desired.get("version"), desired.get("sha256")) == (
        reported.name,
        reported.version,
        reported.sha256,
    )


def judge_assignment(
    node_id: str,
    stored: DesiredState,
    reported_generation: int,
    reported: ReportedModel | None,
    registered: ModelRecord | None,
    now: float,
    *,
    restored_at: float,
) -> AssignmentChange | None:
    """What to write once assignment_may_be_lost: `reported` is what the node runs or is switching to (None: no
    model from the fleet), `registered` the registry's version of that name and version (None: none). None when the
    node is on the store's desired model: only the generation moved, nothing to learn. A version pushed after the
    restore (at `restored_at`) is never adopted: the restore cannot have lost an assignment of it, and a node's
    word (its heartbeat) would otherwise get it any version it can name, to download."""
    generation = reported_generation + 1
    was = f"config generation {reported_generation}; the restored store had {stored.config_generation}"
    if same_model(stored.model, reported):
        return None
    if reported is None:
        return AssignmentChange(
            {},
            generation,
            RestoreFinding(
                ASSIGNMENT,
                node_id,
                f"runs no model from the fleet at {was}: its model was unassigned after the backup; central keeps it"
                " without an assignment",
                now,
                ADOPTED,
            ),
        )
    if registered is not None and registered.sha256 == reported.sha256 and registered.created_at > restored_at:
        return AssignmentChange(
            {},
            generation,
            RestoreFinding(
                MODEL_MISSING,
                node_id,
                f"runs {reported} ({was}), which was pushed after the restore ({_utc(registered.created_at)}), so it"
                " cannot be the assignment the restore lost: central left the node without an assignment, so it"
                " serves what it runs; assign it again if it is the node's",
                now,
                LISTED,
            ),
        )
    if registered is not None and registered.sha256 == reported.sha256:
        return AssignmentChange(
            registered.desired,
            generation,
            RestoreFinding(
                ASSIGNMENT,
                node_id,
                f"was assigned {reported} after the backup ({was}): it is the node's desired model again",
                now,
                ADOPTED,
            ),
        )
    return AssignmentChange(
        {},
        generation,
        RestoreFinding(
            MODEL_MISSING,
            node_id,
            f"runs {reported}, assigned after the backup ({was}), which the restored registry does not hold: push it"
            " again and assign it, or roll out another version; central left the node without an assignment, so it"
            " serves what it runs",
            now,
            LISTED,
        ),
    )


# -- reports: case 4 ----------------------------------------------------------------------------------------


def judge_dropped(
    point: RestorePoint | None, now: float, window_s: float, node_id: str, dropped_count: int
) -> RestoreFinding | None:
    """The finding for reports a node says it dropped, within the restore window (the store keeps the first per
    node): an agent counts as dropped the reports central acknowledged before the restore that its spool no longer
    held when the restored central asked for them again."""
    if dropped_count <= 0 or not in_window(point, now, window_s):
        return None
    return RestoreFinding(
        REPORTS_LOST,
        node_id,
        f"could not send {dropped_count} reports again (its spool no longer held them): they are lost; the node's"
        " total of dropped reports is in `edgefleet nodes show`",
        now,
        LISTED,
    )
