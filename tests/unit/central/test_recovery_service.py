"""central.services.recovery through the fleet handlers, without gRPC: a real data dir and store (SQLite, and
PostgreSQL when reachable), certificates the data dir's CA issues at chosen times, a clock the test moves. The store
plays a restored one: record_restore is called on it, then a Central is built over it, as `central serve` would."""

import datetime as dt

import pytest

from central import datadir
from central.datadir import Authority, initialize
from central.errors import PermissionDenied
from central.restore_state import RestorePoint, record_restore
from central.services import fleet, nodes, recovery, registry
from central.services.base import Caller, Central, CentralSettings
from central.store import ModelRecord, ReportRecord, TokenRecord, open_store
from edgefleet import pki
from postgres_db import postgres_database

LIFETIME_S = 30 * 86400.0
BACKUP_AT = 1_900_000_000.0
RESTORED_AT = BACKUP_AT + 3600


class Clock:
    def __init__(self, now: float):
        self.now = now

    def __call__(self) -> float:
        return self.now


class Fleet:
    """A central over a store restored from a backup taken at BACKUP_AT (restored at RESTORED_AT)."""

    def __init__(self, paths, store, restored: bool = True):
        self.paths, self.store, self.clock = paths, store, Clock(RESTORED_AT + 60)
        self.authority = Authority.load(paths)
        if restored:
            point = RestorePoint("ab" * 32, BACKUP_AT, RESTORED_AT, 1, "cd" * 32, self.authority.fingerprint)
            record_restore(store, point)
        settings = CentralSettings(certificate_lifetime_s=LIFETIME_S)
        self.central = Central(store, self.authority, settings, "", self.clock)
        self.admin = _caller(datadir.load_credential(paths.admin_credential).certificate_pem)

    def certificate(self, node_id: str, issued_at: float, authority: Authority | None = None) -> Caller:
        """A node's caller, with a certificate the CA issued at `issued_at` (as renewal or enrollment does)."""
        cert = (authority or self.authority).issue(
            pki.generate_key().public_key(),
            pki.Identity("node", node_id),
            dt.timedelta(seconds=LIFETIME_S),
            pki.utc(issued_at),
        )
        return _caller(pki.certificate_pem(cert))

    def enroll_before_backup(self, node_id: str) -> Caller:
        """A node the backup holds, with the certificate it was enrolled with a day before the backup."""
        caller = self.certificate(node_id, BACKUP_AT - 86400)
        cert = pki.load_certificate(caller.certificate_pem)
        self.store.add_token(TokenRecord(f"t-{node_id}", "h", {}, 0.0, 1e12, 1, 1, False, "admin:a"))
        from central.store import NodeRecord

        record = NodeRecord(
            node_id, {"region": "eu"}, "box", 1.0, f"t-{node_id}", caller.serial, cert.not_valid_after_utc.timestamp()
        )
        assert self.store.enroll(f"t-{node_id}", record, 2.0)
        return caller

    def beat(self, caller: Caller, node_id: str):
        return fleet.heartbeat(self.central, caller, node_id, b"", self.clock.now + 3600)

    def findings(self):
        return [(f.kind, f.node_id, f.action) for f in self.store.restore_findings()][1:]  # after the fleet's own

    def audit(self):
        return [(e.actor, e.action, e.target, e.outcome) for e in self.store.list_audit(0, 1000)]


def _caller(certificate_pem) -> Caller:
    cert = pki.load_certificate(certificate_pem)
    pem = certificate_pem if isinstance(certificate_pem, bytes) else certificate_pem.encode()
    return Caller(pki.identity_of(cert), "test", pki.serial_hex(cert), pem)


@pytest.fixture(params=["sqlite", "postgresql"])
def store_spec(request, tmp_path):
    if request.param == "sqlite":
        yield ""
        return
    with postgres_database() as url:
        yield url


@pytest.fixture
def make_fleet(tmp_path, store_spec):
    made = []

    def make(restored: bool = True) -> Fleet:
        paths = initialize(tmp_path / f"central{len(made)}", "127.0.0.1:7443", store=store_spec)
        store = open_store(datadir.store_spec(paths))
        made.append(Fleet(paths, store, restored))
        return made[-1]

    yield make
    for f in made:
        f.central.close()
        f.store.close()


# -- case 1: a node enrolled after the backup ---------------------------------------------------------------


def test_a_node_enrolled_after_the_backup_is_adopted_at_its_first_heartbeat(make_fleet):
    f = make_fleet()
    caller = f.certificate("node-new", BACKUP_AT + 600)
    desired = f.beat(caller, "node-new")
    assert desired.certificate_serial == caller.serial and desired.labels == {}
    node = f.store.get_node("node-new")
    assert node.certificate_serial == caller.serial and node.revoked_at is None
    assert f.findings() == [("node_enrolled_after_backup", "node-new", "adopted")]
    assert ("node:node-new", "fleet.restore_adoption", "node-new", "allowed") in f.audit()
    f.beat(caller, "node-new")  # once adopted, an ordinary node
    assert len(f.findings()) == 1


def test_an_unknown_node_with_a_certificate_from_before_the_backup_is_refused(make_fleet):
    f = make_fleet()
    caller = f.certificate("node-old", BACKUP_AT - 600)
    with pytest.raises(PermissionDenied, match="node node-old is not enrolled"):
        f.beat(caller, "node-old")
    assert f.store.get_node("node-old") is None and f.findings() == []


def test_a_certificate_issued_after_the_restore_is_refused(make_fleet):
    """Only another central holding the same CA key (the old machine, still running) could have issued it."""
    f = make_fleet()
    with pytest.raises(PermissionDenied, match="not enrolled"):
        f.beat(f.certificate("node-x", RESTORED_AT + 30), "node-x")


def test_a_certificate_from_another_ca_is_refused(make_fleet, tmp_path):
    f = make_fleet()
    other = Authority.load(initialize(tmp_path / "other", "127.0.0.1:7443"))
    with pytest.raises(PermissionDenied, match="not enrolled"):
        f.beat(f.certificate("node-x", BACKUP_AT + 600, authority=other), "node-x")


def test_after_the_restore_window_nothing_is_adopted(make_fleet):
    f = make_fleet()
    f.clock.now = RESTORED_AT + LIFETIME_S
    with pytest.raises(PermissionDenied, match="not enrolled"):
        f.beat(f.certificate("node-new", BACKUP_AT + 600), "node-new")


def test_a_store_never_restored_adopts_nothing(make_fleet):
    f = make_fleet(restored=False)
    assert f.central.restore is None
    with pytest.raises(PermissionDenied, match="not enrolled"):
        f.beat(f.certificate("node-new", BACKUP_AT + 600), "node-new")
    assert f.store.restore_findings() == []


def test_a_node_enrolled_after_the_backup_may_renew_and_report_through_adoption(make_fleet):
    f = make_fleet()
    caller = f.certificate("node-new", BACKUP_AT + 600)
    csr = pki.make_csr(pki.generate_key()).decode()
    renewed = fleet.renew_certificate(f.central, caller, "node-new", csr)
    assert f.store.get_node("node-new").certificate_serial == pki.serial_hex(pki.load_certificate(renewed))
    assert f.findings() == [("node_enrolled_after_backup", "node-new", "adopted")]
    with pytest.raises(PermissionDenied, match="replaced at renewal"):
        f.beat(caller, "node-new")  # the adopted certificate, replaced since: refused as always


# -- case 2: a certificate renewed after the backup ------------------------------------------------------------


def test_a_certificate_renewed_after_the_backup_is_taken_and_the_old_one_refused_after(make_fleet):
    f = make_fleet()
    old = f.enroll_before_backup("node-1")
    renewed = f.certificate("node-1", BACKUP_AT + 1200)
    assert f.beat(renewed, "node-1").certificate_serial == renewed.serial
    assert f.findings() == [("certificate_renewed_after_backup", "node-1", "adopted")]
    with pytest.raises(PermissionDenied, match="replaced at renewal"):
        f.beat(old, "node-1")


def test_a_replaced_certificate_from_before_the_backup_is_refused(make_fleet):
    f = make_fleet()
    f.enroll_before_backup("node-1")
    with pytest.raises(PermissionDenied, match="replaced at renewal"):
        f.beat(f.certificate("node-1", BACKUP_AT - 3 * 86400), "node-1")
    assert f.findings() == []


def test_a_revoked_node_stays_revoked(make_fleet):
    f = make_fleet()
    f.enroll_before_backup("node-1")
    nodes.revoke_node(f.central, f.admin, "node-1", "stolen")
    with pytest.raises(PermissionDenied, match="revoked"):
        f.beat(f.certificate("node-1", BACKUP_AT + 1200), "node-1")
    assert f.findings() == []


# -- case 3: an assignment after the backup --------------------------------------------------------------------


def _push(f: Fleet, version: str, sha: str) -> ModelRecord:
    model = ModelRecord("chat", version, "gguf", sha, 3, {}, 1.0, "admin:a", b"{}", "sig")
    f.store.add_model(model)
    return model


def test_a_registered_version_assigned_after_the_backup_becomes_the_desired_model_again(make_fleet):
    f = make_fleet()
    caller = f.enroll_before_backup("node-1")
    v1, v2 = _push(f, "1.0.0", "aa" * 32), _push(f, "2.0.0", "bb" * 32)
    registry.assign_model(f.central, f.admin, "node-1", "chat", "1.0.0")  # generation 1, in the backup
    stored = f.beat(caller, "node-1")
    assert stored.config_generation == 1 and stored.model == v1.desired
    reported = recovery.ReportedModel("chat", "2.0.0", v2.sha256)
    assert recovery.assignment_may_be_lost(f.central, stored, 3)
    desired = recovery.learn_assignment(f.central, caller, "node-1", stored, 3, reported)
    assert desired.model == v2.desired and desired.config_generation == 4
    assert f.store.heartbeat_target("node-1") == desired
    assert f.findings() == [("assignment_after_backup", "node-1", "adopted")]
    assert ("node:node-1", "fleet.restore_adoption", "node-1", "allowed") in f.audit()
    assert not recovery.assignment_may_be_lost(f.central, desired, 4), "the node echoes it from now on"


def test_a_version_the_registry_lost_is_listed_and_the_node_kept_on_what_it_runs(make_fleet):
    f = make_fleet()
    caller = f.enroll_before_backup("node-1")
    _push(f, "1.0.0", "aa" * 32)
    registry.assign_model(f.central, f.admin, "node-1", "chat", "1.0.0")
    stored = f.beat(caller, "node-1")
    reported = recovery.ReportedModel("chat", "3.0.0", "cc" * 32)  # pushed after the backup: not in the registry
    desired = recovery.learn_assignment(f.central, caller, "node-1", stored, 2, reported)
    assert desired.model == {} and desired.config_generation == 3
    assert f.findings() == [("model_missing", "node-1", "listed")]
    again = recovery.learn_assignment(f.central, caller, "node-1", desired, 9, reported)
    assert again == desired, "once per node and kind: a node cannot steer its assignment beat after beat"


# -- case 4: reports lost ---------------------------------------------------------------------------------------


def test_reports_a_node_could_not_send_again_are_listed_once(make_fleet):
    f = make_fleet()
    caller = f.enroll_before_backup("node-1")
    report = [ReportRecord(1, RESTORED_AT, "event", b"")]
    fleet.report(f.central, caller, "node-1", report, 0)
    assert f.findings() == []
    fleet.report(f.central, caller, "node-1", report, 17)
    fleet.report(f.central, caller, "node-1", report, 3)
    [lost] = f.store.restore_findings()[1:]
    assert (lost.kind, lost.node_id, lost.action) == ("reports_lost", "node-1", "listed")
    assert "17 reports" in lost.detail


# -- GetRestoreReport --------------------------------------------------------------------------------------------


def test_the_restore_report_is_for_operators(make_fleet):
    f = make_fleet()
    f.beat(f.certificate("node-new", BACKUP_AT + 600), "node-new")
    point, findings = recovery.restore_report(f.central, f.admin)
    assert point.backup_at == BACKUP_AT and point.ca_fingerprint == f.authority.fingerprint
    assert [x.kind for x in findings] == ["operator_actions_after_backup", "node_enrolled_after_backup"]
    with pytest.raises(PermissionDenied, match="not an admin certificate"):
        recovery.restore_report(f.central, f.certificate("node-new", BACKUP_AT + 600))


def test_the_restore_report_of_a_store_never_restored_is_empty(make_fleet):
    f = make_fleet(restored=False)
    assert recovery.restore_report(f.central, f.admin) == (None, [])


def test_the_issuer_is_named_among_every_ca_central_accepts(tmp_path):
    """During a CA rotation central accepts two CAs: the backup's may be either; another fleet's is neither."""
    ours = Authority.load(initialize(tmp_path / "ours", "127.0.0.1:7443"))
    previous = Authority.load(initialize(tmp_path / "previous", "127.0.0.1:7443"))
    key = pki.generate_key().public_key()
    life = dt.timedelta(seconds=LIFETIME_S)
    pem = pki.certificate_pem(previous.issue(key, pki.Identity("node", "n1"), life, pki.utc(BACKUP_AT)))
    cert = recovery.presented_certificate(pem, [ours.certificate, previous.certificate])
    assert (cert.node_id, cert.issuer_fingerprint) == ("n1", previous.fingerprint)
    assert cert.issued_at == pytest.approx(BACKUP_AT, abs=1.0)
    assert recovery.presented_certificate(pem, [ours.certificate]).issuer_fingerprint == "", "not signed by ours"
    admin = pki.certificate_pem(ours.issue(key, pki.Identity("admin", "ops"), life, pki.utc(BACKUP_AT)))
    assert recovery.presented_certificate(admin, [ours.certificate]) is None, "only a node's certificate is adopted"
    assert recovery.presented_certificate(b"not a certificate", [ours.certificate]) is None
