"""Operators' handlers without gRPC: a real data dir and SQLite store, callers as the TLS layer would build them.

The same refusals over real TLS/gRPC, on SQLite and across PostgreSQL replicas, are in
tests/integration/test_operator_credentials.py.
"""

import pytest

from central import datadir
from central.datadir import Authority, adopt_init_admin, initialize
from central.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound, PermissionDenied
from central.services import nodes, operators, tokens
from central.services.base import Caller, Central, CentralSettings, operator_problem
from central.store import OperatorRecord, SqliteFleetStore
from edgefleet import pki


class Clock:
    def __init__(self, now=1_900_000_000.0):
        self.now = now

    def __call__(self):
        return self.now


def _caller(certificate_pem: str) -> Caller:
    """What central.servicers.caller_of makes of a TLS session presenting this certificate."""
    cert = pki.load_certificate(certificate_pem)
    return Caller(pki.identity_of(cert), "test", pki.serial_hex(cert))


def _csr() -> str:
    return pki.make_csr(pki.generate_key()).decode()


@pytest.fixture
def setup(tmp_path):
    paths = initialize(tmp_path / "central", "127.0.0.1:7443")
    store = SqliteFleetStore(paths.store)
    central = Central(store, Authority.load(paths), CentralSettings(), "", Clock())
    root = _caller(datadir.load_credential(paths.admin_credential).certificate_pem)
    yield central, root, paths
    store.close()


# -- pure checks -------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["alice", "ci-bot.2", "a", "x" * 64, "0ps_team"])
def test_good_operator_names(name):
    assert operators.name_problem(name) is None


@pytest.mark.parametrize("name", ["", "Alice", "a/b", "-lead", "x" * 65, "é", "a b", "../admin"])
def test_bad_operator_names_say_what_a_name_may_hold(name):
    assert "lowercase letters, digits" in operators.name_problem(name)


def test_roles_and_lifetimes_are_bounded():
    assert operators.role_problem("viewer") is None and operators.role_problem("admin") is None
    assert operators.role_problem("node") == "operator role must be one of admin, viewer, got node"
    assert operators.role_problem("") == "operator role must be one of admin, viewer, got none"
    assert operators.ttl_seconds(0) == operators.DEFAULT_TTL_S == 30 * 86400
    assert operators.ttl_seconds(3600) == 3600
    for bad in (1.0, 367 * 86400.0):
        with pytest.raises(InvalidArgument, match="lifetime must be from 1m to 366d, got "):
            operators.ttl_seconds(bad)


def _record(role="admin", serial="aa", revoked_at=None):
    return OperatorRecord("alice", role, serial, 10.0, 1.0, "admin:root", revoked_at)


def test_operator_problem_decides_on_identity_row_serial_and_role():
    admin = Caller(pki.Identity("admin", "alice"), "p", "aa")
    viewer = Caller(pki.Identity("viewer", "alice"), "p", "aa")
    both = pki.OPERATOR_ROLES
    assert operator_problem(admin, _record(), "token.create", ("admin",)) is None
    assert operator_problem(viewer, _record("viewer"), "node.list", both) is None
    node = Caller(pki.Identity("node", "alice"), "p", "aa")
    assert "not an admin certificate" in operator_problem(node, _record(), "node.list", both)
    assert "not a registered operator" in operator_problem(admin, None, "node.list", both)
    assert operator_problem(admin, _record(revoked_at=5.0), "node.list", both) == "operator alice was revoked"
    assert "certificate says viewer, but operator alice is a admin" in operator_problem(
        viewer, _record(), "node.list", both
    )
    assert operator_problem(admin, _record(serial="bb"), "node.list", both).startswith(
        "certificate serial aa was replaced at renewal"
    )
    assert operator_problem(viewer, _record("viewer"), "token.create", ("admin",)) == (
        "viewer:alice has the viewer role, which may read but not change anything; token.create needs the admin role"
    )


# -- handlers on a real store ---------------------------------------------------------------


def test_init_registers_its_admin_as_the_first_operator(setup):
    central, root, _paths = setup
    [record] = central.store.list_operators()
    assert (record.name, record.role, record.serial) == ("admin", "admin", root.serial)
    assert record.created_by == "central:init"
    assert root.identity == pki.Identity("admin", "admin")


def test_a_created_viewer_reads_and_changes_nothing(setup):
    central, root, _paths = setup
    issued = operators.create_operator(central, root, "bob", "viewer", 3600, _csr())
    cert = pki.load_certificate(issued.certificate_pem)
    assert pki.identity_of(cert) == pki.Identity("viewer", "bob")
    assert (cert.not_valid_after_utc.timestamp() - central.clock()) == pytest.approx(3600)
    assert issued.operator == central.store.get_operator("bob") and issued.operator.created_by == "admin:admin"
    bob = _caller(issued.certificate_pem)
    nodes.list_nodes(central, bob, {})
    assert [o.name for o in operators.list_operators(central, bob)] == ["admin", "bob"]
    with pytest.raises(PermissionDenied, match="viewer:bob has the viewer role, which may read but not change"):
        tokens.create_token(central, bob, {}, 3600, 1)
    with pytest.raises(PermissionDenied, match=r"operator\.create needs the admin role"):
        operators.create_operator(central, bob, "mallory", "admin", 3600, _csr())
    entry = central.store.list_audit(0, 1000)[-1]
    assert (entry.actor, entry.action, entry.outcome) == ("viewer:bob", "operator.create", "refused")


def test_create_refuses_bad_input_with_the_reason(setup):
    central, root, _paths = setup
    with pytest.raises(InvalidArgument, match="lowercase letters"):
        operators.create_operator(central, root, "Bad/Name", "viewer", 0, _csr())
    with pytest.raises(InvalidArgument, match="role must be one of admin, viewer, got none"):
        operators.create_operator(central, root, "carol", "", 0, _csr())
    with pytest.raises(InvalidArgument, match="lifetime"):
        operators.create_operator(central, root, "carol", "viewer", 400 * 86400, _csr())
    with pytest.raises(InvalidArgument, match="not a PEM CSR"):
        operators.create_operator(central, root, "carol", "viewer", 0, "hello")
    with pytest.raises(AlreadyExists, match="operator admin already exists"):
        operators.create_operator(central, root, "admin", "viewer", 0, _csr())
    assert [o.name for o in central.store.list_operators()] == ["admin"]


def test_revoked_operator_is_refused_at_its_next_call_and_the_last_admin_stays(setup):
    central, root, _paths = setup
    with pytest.raises(FailedPrecondition, match="operator admin is the last admin"):
        operators.revoke_operator(central, root, "admin", "leaving")
    alice = _caller(operators.create_operator(central, root, "alice", "admin", 0, _csr()).certificate_pem)
    nodes.list_nodes(central, alice, {})
    operators.revoke_operator(central, root, "alice", "laptop stolen")
    with pytest.raises(PermissionDenied, match="operator alice was revoked"):
        nodes.list_nodes(central, alice, {})
    with pytest.raises(NotFound, match="no operator 'ghost'"):
        operators.revoke_operator(central, root, "ghost", "")
    with pytest.raises(InvalidArgument, match="lowercase letters"):
        operators.revoke_operator(central, root, "x" * 100_000, "")
    # Another admin may now revoke the first one, which is then refused too.
    carol = _caller(operators.create_operator(central, root, "carol", "admin", 0, _csr()).certificate_pem)
    operators.revoke_operator(central, carol, "admin", "rotated")
    with pytest.raises(PermissionDenied, match="operator admin was revoked"):
        nodes.list_nodes(central, root, {})


def test_renewal_retires_the_old_certificate_and_says_so_in_the_audit(setup):
    central, root, _paths = setup
    bob_pem = operators.create_operator(central, root, "bob", "viewer", 0, _csr()).certificate_pem
    bob = _caller(bob_pem)
    renewed = operators.renew_operator(central, bob, "", 7200, _csr())  # any operator renews itself
    new_bob = _caller(renewed.certificate_pem)
    assert renewed.replaced_serial == bob.serial and renewed.operator.serial == new_bob.serial != bob.serial
    assert new_bob.identity == pki.Identity("viewer", "bob")
    nodes.list_nodes(central, new_bob, {})
    with pytest.raises(PermissionDenied, match=f"certificate serial {bob.serial} was replaced at renewal"):
        nodes.list_nodes(central, bob, {})
    with pytest.raises(PermissionDenied, match="replaced at renewal"):
        operators.renew_operator(central, bob, "", 0, _csr())  # the old certificate cannot renew either
    [entry] = [e for e in central.store.list_audit(0, 1000) if (e.action, e.outcome) == ("operator.renew", "allowed")]
    assert entry.detail.startswith(f"issued certificate {new_bob.serial}, replacing {bob.serial} (refused from now on)")
    with pytest.raises(PermissionDenied, match=r"operator\.renew needs the admin role"):
        operators.renew_operator(central, new_bob, "admin", 0, _csr())  # a viewer renews only itself
    again = operators.renew_operator(central, root, "bob", 0, _csr())  # an admin reissues anyone's
    with pytest.raises(PermissionDenied, match="replaced at renewal"):
        nodes.list_nodes(central, new_bob, {})
    nodes.list_nodes(central, _caller(again.certificate_pem), {})


def test_a_fleet_from_before_operators_adopts_its_init_credential_once(setup, tmp_path):
    central, root, paths = setup
    assert adopt_init_admin(central.store, paths, central.authority, 5.0) == "", "the store has operators already"
    old = SqliteFleetStore(tmp_path / "old.db")  # a store with no operator, as before this change
    try:
        message = adopt_init_admin(old, paths, central.authority, 5.0)
        assert message == f"registered the data dir's admin credential as operator admin (serial {root.serial})"
        assert [(o.name, o.serial) for o in old.list_operators()] == [("admin", root.serial)]
        assert adopt_init_admin(old, paths, central.authority, 6.0) == ""
    finally:
        old.close()
    gone = SqliteFleetStore(tmp_path / "gone.db")
    try:
        paths.admin_credential.rename(tmp_path / "taken-away")
        assert "is put back and central restarted" in adopt_init_admin(gone, paths, central.authority, 5.0)
        assert gone.list_operators() == []
    finally:
        gone.close()
