"""central.restore_state's pure decisions: which certificates, assignments and dropped counts seen after a restore
are adopted or listed, and every refusal (a certificate from before the backup, after the restore, from another CA,
for a revoked node, outside the restore window)."""

import datetime as dt
from dataclasses import replace

import pytest

from central import restore_state as rs
from central.datadir import Authority, initialize
from central.store import DesiredState, ModelRecord, NodeRecord
from edgefleet import pki

CA = "sha256:" + "ca" * 32
BACKUP_AT, RESTORED_AT = 1_900_000_000.0, 1_900_086_400.0  # restored a day after the backup
POINT = rs.RestorePoint("ab" * 32, BACKUP_AT, RESTORED_AT, 42, "cd" * 32, CA)
WINDOW_S = 30 * 86400.0
NOW = RESTORED_AT + 600


def _cert(node_id="node-9", serial="9a", issued_at=BACKUP_AT + 3600, expires_at=None, issuer=CA):
    expires = expires_at if expires_at is not None else issued_at + WINDOW_S
    return rs.PresentedCertificate(node_id, serial, issued_at, expires, issuer)


def _node(node_id="node-9", serial="01", expires_at=BACKUP_AT - 86400 + WINDOW_S, revoked_at=None):
    return NodeRecord(node_id, {"region": "eu"}, "box", 1.0, "t", serial, expires_at, revoked_at=revoked_at)


# -- recording ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "change, problem",
    [
        ({"backup_id": "xyz"}, "64 lowercase hex"),
        ({"backup_id": "AB" * 32}, "64 lowercase hex"),
        ({"backup_at": 0.0}, "after 1970"),
        ({"restored_at": BACKUP_AT - 1}, "is before backup_at"),
        ({"audit_head_sequence": -1}, "must not be negative"),
        ({"ca_fingerprint": "ca" * 32}, "sha256:HEX"),
    ],
)
def test_a_malformed_restore_point_is_refused_with_what_is_wrong(change, problem):
    bad = replace(POINT, **change)
    assert problem in rs.restore_point_problem(bad)
    with pytest.raises(rs.RestoreStateError, match=problem):
        rs.record_restore(None, bad)  # refused before the store is touched
    assert rs.restore_point_problem(POINT) is None


# -- the window and issue times -----------------------------------------------------------------------------


def test_the_window_is_open_from_the_restore_for_window_s():
    assert rs.in_window(POINT, RESTORED_AT, WINDOW_S)
    assert rs.in_window(POINT, RESTORED_AT + WINDOW_S - 1, WINDOW_S)
    assert not rs.in_window(POINT, RESTORED_AT + WINDOW_S, WINDOW_S)
    assert not rs.in_window(None, RESTORED_AT, WINDOW_S), "never restored: nothing to learn"


@pytest.mark.parametrize("lifetime_s", [30 * 86400, 3600, 600, 300, 60])
def test_issued_at_recovers_when_authority_issue_made_the_certificate(tmp_path, lifetime_s):
    authority = Authority.load(initialize(tmp_path / "c", "127.0.0.1:7443"))
    now = dt.datetime(2026, 12, 5, 17, 40, 12, tzinfo=dt.timezone.utc)
    cert = authority.issue(
        pki.generate_key().public_key(), pki.Identity("node", "n1"), dt.timedelta(seconds=lifetime_s), now
    )
    issued = rs.issued_at(cert.not_valid_before_utc.timestamp(), cert.not_valid_after_utc.timestamp())
    assert issued == pytest.approx(now.timestamp(), abs=1.0)


# -- certificates ---------------------------------------------------------------------------------------------


def test_an_unknown_node_with_a_certificate_issued_after_the_backup_is_adopted():
    finding = rs.judge_certificate(POINT, NOW, WINDOW_S, _cert(), None)
    assert (finding.kind, finding.node_id, finding.action, finding.found_at) == (
        "node_enrolled_after_backup",
        "node-9",
        "adopted",
        NOW,
    )
    assert "9a" in finding.detail and "label it again" in finding.detail
    node = rs.adopted_node(_cert())
    assert (node.node_id, node.labels, node.certificate_serial, node.enrolled_at) == (
        "node-9",
        {},
        "9a",
        BACKUP_AT + 3600,
    )
    assert node.revoked_at is None and node.desired_model == {} and node.config_generation == 0


@pytest.mark.parametrize(
    "cert, why",
    [
        (_cert(issued_at=BACKUP_AT - 1), "issued before the backup: it was never in this fleet's store, or was lost"),
        (_cert(issued_at=BACKUP_AT - 3600), "issued an hour before the backup"),
        (_cert(issued_at=RESTORED_AT + 1), "issued after the restore: another central with the same CA key"),
        (_cert(issuer="sha256:" + "00" * 32), "another CA"),
        (_cert(issuer=""), "no CA central holds signed it"),
        (_cert(serial=""), "no serial"),
    ],
)
def test_an_unknown_node_is_refused_as_always(cert, why):
    assert rs.judge_certificate(POINT, NOW, WINDOW_S, cert, None) is None, why


def test_a_certificate_issued_in_the_second_the_backup_began_counts_as_after_it():
    """Certificates keep whole seconds: one issued 0.4 s after the backup point reads as 0.6 s before it."""
    assert rs.judge_certificate(POINT, NOW, WINDOW_S, _cert(issued_at=BACKUP_AT - 0.6), None) is not None
    assert rs.judge_certificate(POINT, NOW, WINDOW_S, _cert(issued_at=BACKUP_AT), None) is not None


def test_nothing_is_adopted_outside_the_window_or_without_a_restore():
    assert rs.judge_certificate(POINT, RESTORED_AT + WINDOW_S, WINDOW_S, _cert(), None) is None
    assert rs.judge_certificate(None, NOW, WINDOW_S, _cert(), None) is None
    assert rs.judge_certificate(POINT, RESTORED_AT + WINDOW_S, WINDOW_S, _cert(), _node()) is None


def test_a_certificate_renewed_after_the_backup_is_taken_as_the_live_one():
    finding = rs.judge_certificate(POINT, NOW, WINDOW_S, _cert(), _node())
    assert (finding.kind, finding.action) == ("certificate_renewed_after_backup", "adopted")
    assert "9a" in finding.detail and "in place of 01" in finding.detail


@pytest.mark.parametrize(
    "cert, node, why",
    [
        (_cert(issued_at=BACKUP_AT - 60), _node(), "renewed before the backup and replaced since: an old certificate"),
        (_cert(), _node(revoked_at=5.0), "a revoked node stays revoked"),
        (_cert(serial="01"), _node(), "its live certificate: nothing to adopt"),
        (_cert(expires_at=BACKUP_AT), _node(expires_at=BACKUP_AT + 10), "older than the live one"),
        (_cert(issuer="sha256:" + "00" * 32), _node(), "another CA"),
        (_cert(issued_at=RESTORED_AT + 60), _node(), "issued after the restore"),
    ],
)
def test_a_known_node_presenting_another_serial_is_refused_as_always(cert, node, why):
    assert rs.judge_certificate(POINT, NOW, WINDOW_S, cert, node) is None, why


def test_of_two_renewals_after_the_backup_only_a_newer_certificate_replaces_an_adopted_one():
    first = _cert(serial="a1", issued_at=BACKUP_AT + 100)
    second = _cert(serial="a2", issued_at=BACKUP_AT + 200)
    after_first = _node(serial="a1", expires_at=first.expires_at)
    assert rs.judge_certificate(POINT, NOW, WINDOW_S, second, after_first) is not None
    after_second = _node(serial="a2", expires_at=second.expires_at)
    assert rs.judge_certificate(POINT, NOW, WINDOW_S, first, after_second) is None, "the older one was replaced"


# -- assignments ------------------------------------------------------------------------------------------------


def _model(name="chat", version="2.0.0", sha="bb" * 32):
    return ModelRecord(name, version, "gguf", sha, 3, {}, 1.0, "admin:a", b"{}", "sig")


V1, V2 = _model(version="1.0.0", sha="aa" * 32), _model()
STORED = DesiredState(4, V1.desired, "01", {})


def test_a_generation_above_the_stores_is_the_gate_and_only_in_the_window():
    assert rs.assignment_may_be_lost(POINT, NOW, WINDOW_S, stored_generation=4, reported_generation=5)
    assert not rs.assignment_may_be_lost(POINT, NOW, WINDOW_S, 4, 4), "the node echoes the store's generation"
    assert not rs.assignment_may_be_lost(POINT, NOW, WINDOW_S, 6, 5), "assigned again since the restore"
    assert not rs.assignment_may_be_lost(POINT, RESTORED_AT + WINDOW_S, WINDOW_S, 4, 5)
    assert not rs.assignment_may_be_lost(None, NOW, WINDOW_S, 4, 5)


def test_a_registered_version_assigned_after_the_backup_is_adopted_above_the_reported_generation():
    reported = rs.ReportedModel("chat", "2.0.0", V2.sha256)
    change = rs.judge_assignment("node-1", STORED, 7, reported, V2, NOW, restored_at=RESTORED_AT)
    assert change.desired_model == V2.desired and change.generation == 8
    assert (change.finding.kind, change.finding.action) == ("assignment_after_backup", "adopted")
    assert "chat@2.0.0" in change.finding.detail and "generation 7" in change.finding.detail


def test_a_version_the_registry_lost_is_listed_and_the_node_left_without_an_assignment():
    reported = rs.ReportedModel("chat", "3.0.0", "cc" * 32)
    change = rs.judge_assignment("node-1", STORED, 7, reported, None, NOW, restored_at=RESTORED_AT)
    assert change.desired_model == {} and change.generation == 8, "not sent back to the backup's model"
    assert (change.finding.kind, change.finding.action) == ("model_missing", "listed")
    assert "chat@3.0.0" in change.finding.detail and "push it" in change.finding.detail


def test_a_version_pushed_after_the_restore_is_never_adopted():
    # Tried: a node claims (a heartbeat says what it likes) that a version pushed only after the restore was the
    # assignment the restore lost, naming its name, version and sha256, to be assigned it and download it
    # (central.services.fleet.may_fetch lets a node fetch only its desired model). The restore cannot have lost an
    # assignment of a version the registry did not have before it.
    pushed_after = replace(V2, created_at=RESTORED_AT + 60)
    reported = rs.ReportedModel("chat", "2.0.0", V2.sha256)
    change = rs.judge_assignment("node-1", STORED, 7, reported, pushed_after, NOW, restored_at=RESTORED_AT)
    assert change.desired_model == {} and change.generation == 8
    assert (change.finding.kind, change.finding.action) == ("model_missing", "listed")
    assert "pushed after the restore" in change.finding.detail


def test_a_version_whose_bytes_differ_from_the_registrys_is_missing_too():
    reported = rs.ReportedModel("chat", "2.0.0", "dd" * 32)
    change = rs.judge_assignment("node-1", STORED, 7, reported, V2, NOW, restored_at=RESTORED_AT)
    assert change.finding.kind == "model_missing" and change.desired_model == {}


def test_a_node_on_the_stores_model_has_nothing_to_learn():
    reported = rs.ReportedModel("chat", "1.0.0", V1.sha256)
    assert rs.judge_assignment("node-1", STORED, 7, reported, V1, NOW, restored_at=RESTORED_AT) is None


def test_a_node_running_no_fleet_model_is_kept_without_an_assignment():
    change = rs.judge_assignment("node-1", STORED, 7, None, None, NOW, restored_at=RESTORED_AT)
    assert change.desired_model == {} and change.finding.kind == "assignment_after_backup"
    assert rs.judge_assignment("node-1", replace(STORED, model={}), 7, None, None, NOW, restored_at=RESTORED_AT) is None


# -- reports ------------------------------------------------------------------------------------------------------


def test_dropped_reports_in_the_window_are_listed_as_lost():
    finding = rs.judge_dropped(POINT, NOW, WINDOW_S, "node-1", 12)
    assert (finding.kind, finding.node_id, finding.action) == ("reports_lost", "node-1", "listed")
    assert "12 reports" in finding.detail
    assert rs.judge_dropped(POINT, NOW, WINDOW_S, "node-1", 0) is None
    assert rs.judge_dropped(POINT, RESTORED_AT + WINDOW_S, WINDOW_S, "node-1", 12) is None
    assert rs.judge_dropped(None, NOW, WINDOW_S, "node-1", 12) is None


# -- rollouts wait for their nodes after a restore -----------------------------------------------------------------


def test_a_rollout_waits_after_a_restore_until_each_node_reports():
    now = RESTORED_AT + 30
    seen = {"n1": RESTORED_AT + 5, "n2": RESTORED_AT - 100, "n3": None}
    (why,) = rs.rollout_hold(POINT, now, seen)
    assert "n2, n3" in why and "n1" not in why and "restored from a backup" in why
    assert rs.rollout_hold(POINT, now, {"n1": RESTORED_AT + 5, "n2": RESTORED_AT + 1}) == []


def test_the_rollout_hold_ends_after_its_time_and_without_a_restore():
    unseen = {"n1": None}
    assert rs.rollout_hold(POINT, RESTORED_AT + rs.ROLLOUT_HOLD_S, unseen) == []
    assert rs.rollout_hold(POINT, RESTORED_AT + rs.ROLLOUT_HOLD_S - 1, unseen) != []
    assert rs.rollout_hold(None, RESTORED_AT, unseen) == []


def test_the_rollout_hold_names_ten_nodes_and_counts_the_rest():
    (why,) = rs.rollout_hold(POINT, RESTORED_AT + 1, {f"n{i:02d}": None for i in range(25)})
    assert "n09" in why and "n10" not in why and "15 more" in why
