"""Operators' credentials and one live certificate per identity, over real TLS/gRPC to real central processes.

Tried on SQLite: an operator revoked while its channel is open (refused at its next call on that channel); a
viewer reading everything and refused every change; a node's old certificate after renewal (its heartbeat
stream, a report, another renewal); an operator's old certificate after `edgefleet admin renew`; the `admin`
commands' bad input; the last admin; a fleet from before operators (its init credential adopted at start).
Across two replicas on PostgreSQL: a revocation and a node's renewal made through one replica refuse the old
credentials at the other, heartbeats on its batched read included.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import stat

import grpc
import pytest

from central import credential as credential_file
from central.cli import main as edgefleet
from central.client import AdminCallError, AdminClient
from central_process import create_token, start_central, start_replicas
from edge_agent.control.client import CentralRefused, FleetClient, enroll
from edge_agent.control.identity import FleetFiles, FleetIdentity
from edgefleet import channels, pki
from edgefleet.v1 import admin_pb2, admin_pb2_grpc, common_pb2
from postgres_db import postgres_url  # noqa: F401 - the fixture

STATUS = common_pb2.NodeStatus(agent_version="test").SerializeToString()


@pytest.fixture(scope="module")
def central(tmp_path_factory):
    process = start_central(tmp_path_factory.mktemp("operators") / "data")
    yield process
    process.stop()


def cli(capsys, central, *args, credential=None):
    """`edgefleet` in-process as the holder of `credential` (central's init admin by default): exit code, out, err."""
    path = credential or central.paths.admin_credential
    code = edgefleet(["--credential", str(path), "--central", central.fleet_address, *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def create(capsys, central, tmp_path, name, role, *extra):
    """A new operator's credential file, made through `edgefleet admin create` as the init admin."""
    out = tmp_path / f"{name}.credential"
    code, stdout, err = cli(capsys, central, "admin", "create", name, "--role", role, "--out", str(out), *extra)
    assert code == 0, err
    assert f"created {role} {name}" in stdout
    return out


def client_of(path, central) -> AdminClient:
    return AdminClient(credential_file.load(path), central.fleet_address)


def serial_of(path) -> str:
    return pki.serial_hex(pki.load_certificate(credential_file.load(path).certificate_pem))


def audit_entries(central) -> list:
    with central.admin() as admin:
        return list(admin.call("ListAuditEntries", admin_pb2.ListAuditEntriesRequest(limit=10_000)).entries)


# -- SQLite, one central ----------------------------------------------------------------------


def test_a_revoked_operator_is_refused_at_its_next_call_on_the_same_channel(central, capsys, tmp_path):
    path = create(capsys, central, tmp_path, "alice", "admin")
    with client_of(path, central) as alice:
        alice.call("ListNodes", admin_pb2.ListNodesRequest())
        alice.call("CreateToken", admin_pb2.CreateTokenRequest())  # an admin may change things
        code, out, _ = cli(capsys, central, "admin", "revoke", "alice", "--reason", "laptop stolen")
        assert code == 0 and "revoked operator alice" in out
        with pytest.raises(AdminCallError, match="refused by central: operator alice was revoked") as err:
            alice.call("ListNodes", admin_pb2.ListNodesRequest())  # the same channel, the same valid certificate
        assert err.value.exit_code == 4
    entry = audit_entries(central)[-1]
    assert (entry.actor, entry.action, entry.outcome) == ("admin:alice", "node.list", admin_pb2.AUDIT_OUTCOME_REFUSED)
    code, _, err = cli(capsys, central, "nodes", "list", credential=path)
    assert code == 4 and "operator alice was revoked" in err


def test_a_viewer_reads_everything_and_is_refused_every_change(central, capsys, tmp_path):
    path = create(capsys, central, tmp_path, "val", "viewer")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    cred = credential_file.load(path)
    assert pki.identity_of(pki.load_certificate(cred.certificate_pem)) == pki.Identity("viewer", "val")
    reads = [
        ("ListNodes", admin_pb2.ListNodesRequest()),
        ("ListTokens", admin_pb2.ListTokensRequest()),
        ("ListAuditEntries", admin_pb2.ListAuditEntriesRequest()),
        ("VerifyAudit", admin_pb2.VerifyAuditRequest()),
        ("ListRoutingTotals", admin_pb2.ListRoutingTotalsRequest()),
        ("ListModels", admin_pb2.ListModelsRequest()),
        ("ListRollouts", admin_pb2.ListRolloutsRequest()),
        ("ListOperators", admin_pb2.ListOperatorsRequest()),
    ]
    changes = [
        ("CreateToken", admin_pb2.CreateTokenRequest()),
        ("RevokeToken", admin_pb2.RevokeTokenRequest(token_id="abc")),
        ("LabelNode", admin_pb2.LabelNodeRequest(node_id="node-1", set_labels={"a": "b"})),
        ("RevokeNode", admin_pb2.RevokeNodeRequest(node_id="node-1")),
        ("AssignModel", admin_pb2.AssignModelRequest(node_id="node-1", name="m", version="1")),
        ("DeleteModel", admin_pb2.DeleteModelRequest(name="m", version="1")),
        ("StartRollout", admin_pb2.StartRolloutRequest(name="m", version="1", canary=10, steps=[100])),
        ("PauseRollout", admin_pb2.PauseRolloutRequest(rollout_id="r")),
        ("AbortRollout", admin_pb2.AbortRolloutRequest(rollout_id="r")),
        ("CreateOperator", admin_pb2.CreateOperatorRequest(name="mallory", role=admin_pb2.OPERATOR_ROLE_ADMIN)),
        ("RevokeOperator", admin_pb2.RevokeOperatorRequest(name="admin")),
        ("RenewOperator", admin_pb2.RenewOperatorRequest(name="admin")),
    ]
    channel = channels.mtls_channel(central.fleet_address, cred.ca_pem, cred.certificate_pem, cred.key_pem)
    with channel:
        stub = admin_pb2_grpc.AdminServiceStub(channel)
        for method, request in reads:
            getattr(stub, method)(request, timeout=10)
        for method, request in changes:
            with pytest.raises(grpc.RpcError) as err:
                getattr(stub, method)(request, timeout=10)
            assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED, method
            assert "viewer:val has the viewer role, which may read but not change anything" in err.value.details()
        header = admin_pb2.PushModelRequest(upload=admin_pb2.ModelUpload(name="m", version="1", format="gguf", size=1))
        with pytest.raises(grpc.RpcError) as err:
            stub.PushModel(iter([header]), timeout=10)
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED and "viewer role" in err.value.details()
    # The CLI as the viewer: tables and JSON read; a change exits 4 with central's reason.
    code, out, _ = cli(capsys, central, "admin", "list", "--json", credential=path)
    assert code == 0 and {"name": "val", "role": "viewer", "state": "active"}.items() <= json.loads(out)[-1].items()
    assert cli(capsys, central, "nodes", "list", credential=path)[0] == 0
    code, _, err = cli(capsys, central, "token", "create", credential=path)
    assert code == 4 and "viewer role" in err
    refused = [e for e in audit_entries(central) if e.actor == "viewer:val"]
    assert {e.action for e in refused} >= {"token.create", "node.revoke", "operator.create", "model.push"}
    assert all(e.outcome == admin_pb2.AUDIT_OUTCOME_REFUSED for e in refused)


def _renewed(identity: FleetIdentity, client: FleetClient) -> FleetIdentity:
    key = pki.generate_key()
    certificate_pem = client.renew_certificate(key)
    return dataclasses.replace(identity, certificate_pem=certificate_pem, key_pem=pki.private_key_pem(key))


def test_an_old_node_certificate_is_refused_after_renewal(central, tmp_path):
    token = create_token(central)
    old = enroll(central.enroll_address, token.ca_fingerprint, token.token, FleetFiles(tmp_path / "node"))
    old_client = FleetClient(old, rpc_timeout_s=10)
    try:
        old_client.heartbeat(STATUS)  # the stream is open, under the first certificate
        new = _renewed(old, FleetClient(old, rpc_timeout_s=10))
        old_serial, new_serial = pki.serial_hex(old.certificate), pki.serial_hex(new.certificate)
        with pytest.raises(CentralRefused, match=f"PERMISSION_DENIED.*certificate serial {old_serial} was replaced"):
            old_client.heartbeat(STATUS)  # the next beat on the same stream
        with pytest.raises(CentralRefused, match="replaced at renewal"):
            old_client.report([], 3)
        with pytest.raises(CentralRefused, match="replaced at renewal"):
            old_client.renew_certificate(pki.generate_key())  # nor can it renew itself again
        new_client = FleetClient(new, rpc_timeout_s=10)
        try:
            new_client.heartbeat(STATUS)
            new_client.report([], 0)
        finally:
            new_client.close()
    finally:
        old_client.close()
    entries = audit_entries(central)
    [renewal] = [
        e
        for e in entries
        if (e.action, e.target, e.outcome) == ("fleet.renew_certificate", old.node_id, admin_pb2.AUDIT_OUTCOME_ALLOWED)
    ]
    assert renewal.detail == f"issued certificate {new_serial}, replacing {old_serial} (refused from now on)"
    refused = [e for e in entries if e.target == old.node_id and e.outcome == admin_pb2.AUDIT_OUTCOME_REFUSED]
    assert {e.action for e in refused} == {"fleet.heartbeat", "fleet.report_event", "fleet.renew_certificate"}


def test_an_old_operator_certificate_is_refused_after_admin_renew(central, capsys, tmp_path):
    path = create(capsys, central, tmp_path, "bob", "admin", "--ttl", "2h")
    before = credential_file.load(path)
    old_serial = serial_of(path)
    code, out, err = cli(capsys, central, "admin", "renew", credential=path)
    assert code == 0, err
    new_serial = serial_of(path)
    assert new_serial != old_serial and f"({old_serial})" in out
    after = credential_file.load(path)
    assert after.key_pem != before.key_pem and after.central == before.central, "a new key, in place"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with (
        AdminClient(before, central.fleet_address) as stale,
        pytest.raises(AdminCallError, match=f"certificate serial {old_serial} was replaced at renewal"),
    ):
        stale.call("ListNodes", admin_pb2.ListNodesRequest())
    assert cli(capsys, central, "nodes", "list", credential=path)[0] == 0
    [renewal] = [e for e in audit_entries(central) if e.action == "operator.renew" and e.target == "bob"]
    assert renewal.actor == "admin:bob" and renewal.outcome == admin_pb2.AUDIT_OUTCOME_ALLOWED
    assert renewal.detail.startswith(f"issued certificate {new_serial}, replacing {old_serial} (refused from now on)")
    # An admin reissues another operator's credential to a new file; that operator's current one is retired.
    reissued = tmp_path / "bob-reissued.credential"
    code, _, err = cli(capsys, central, "admin", "renew", "bob", "--out", str(reissued))
    assert code == 0, err
    code, _, err = cli(capsys, central, "nodes", "list", credential=path)
    assert code == 4 and "replaced at renewal" in err
    assert cli(capsys, central, "nodes", "list", credential=reissued)[0] == 0


def test_admin_commands_refuse_bad_input_with_a_clear_message(central, capsys, tmp_path):
    def refused(*args, exit_code, message, credential=None):
        code, _, err = cli(capsys, central, *args, credential=credential)
        assert code == exit_code and message in err, (code, err)

    taken = tmp_path / "taken.credential"
    taken.write_text("someone's file")
    with pytest.raises(SystemExit) as exit_:
        cli(capsys, central, "admin", "create", "carol", "--role", "root")
    assert exit_.value.code == 2 and "invalid choice: 'root'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli(capsys, central, "admin", "create", "carol", "--ttl", "soon")
    assert "'soon' is not a duration" in capsys.readouterr().err
    out = str(tmp_path / "carol.credential")
    too_long = ("admin", "create", "carol", "--ttl", "400d", "--out", out)
    refused(*too_long, exit_code=2, message="must be from 1m to 366d, got 400d")
    refused("admin", "create", "Carol/../x", exit_code=2, message="lowercase letters, digits")
    refused("admin", "create", "admin", "--out", out, exit_code=6, message="operator admin already exists")
    refused("admin", "create", "carol", "--out", str(taken), exit_code=2, message="refusing to overwrite")
    assert taken.read_text() == "someone's file"
    refused("admin", "revoke", "nobody", exit_code=5, message="no operator 'nobody'")
    refused("admin", "renew", "bob", exit_code=2, message="pass --out FILE")
    _, out_text, _ = cli(capsys, central, "admin", "list", "--json")
    names = {row["name"] for row in json.loads(out_text)}
    assert "carol" not in names, "nothing is created when the input is refused"
    viewer = create(capsys, central, tmp_path, "vic", "viewer")
    refused("admin", "renew", "admin", "--out", str(tmp_path / "x"), credential=viewer, exit_code=4, message="viewer")


def test_the_last_admin_cannot_revoke_itself_and_an_old_fleet_keeps_its_admin(tmp_path, capsys):
    from central.datadir import initialize

    data = tmp_path / "old-fleet"
    initialize(data, "127.0.0.1:0")
    # A fleet from before operators were kept: its store holds no operator (its table is new at the upgrade).
    with sqlite3.connect(data / "central.db") as db:
        db.execute("DELETE FROM operators")
    old = start_central(data)
    try:
        assert "registered the data dir's admin credential as operator admin" in old.log()
        code, out, _ = cli(capsys, old, "admin", "list", "--json")
        [row] = json.loads(out)
        assert (row["name"], row["role"], row["created_by"]) == ("admin", "admin", "central:init")
        code, _, err = cli(capsys, old, "admin", "revoke", "admin")
        assert code == 6 and "operator admin is the last admin" in err
        assert cli(capsys, old, "nodes", "list")[0] == 0, "still an admin"
        # Once there is another admin, the first may go; then its own next call is refused.
        second = create(capsys, old, tmp_path, "second", "admin")
        assert cli(capsys, old, "admin", "revoke", "admin")[0] == 0
        code, _, err = cli(capsys, old, "nodes", "list")
        assert code == 4 and "operator admin was revoked" in err
        code, _, err = cli(capsys, old, "admin", "revoke", "second", credential=second)
        assert code == 6 and "operator second is the last admin" in err
    finally:
        old.stop()


# -- PostgreSQL, two replicas ------------------------------------------------------------------------


@pytest.fixture
def replicas(tmp_path, postgres_url):  # noqa: F811
    started = start_replicas(tmp_path, postgres_url, 2)
    yield started
    for replica in started:
        replica.stop()


def test_across_replicas_revocation_and_renewal_refuse_the_old_credential(replicas, tmp_path, capsys):
    a, b = replicas
    # An operator revoked through replica a is refused on its open channel to replica b.
    path = create(capsys, a, tmp_path, "remote", "viewer")
    with client_of(path, b) as on_b:
        on_b.call("ListNodes", admin_pb2.ListNodesRequest())
        assert cli(capsys, a, "admin", "revoke", "remote")[0] == 0
        with pytest.raises(AdminCallError, match="operator remote was revoked"):
            on_b.call("ListNodes", admin_pb2.ListNodesRequest())
    # A node renewed through replica a: its old certificate is refused on replica b, on the open heartbeat stream
    # (read in batches there) and on another fleet call; the new one beats on b.
    token = create_token(a)
    old = enroll(a.enroll_address, token.ca_fingerprint, token.token, FleetFiles(tmp_path / "node"))
    old_on_b = FleetClient(old, rpc_timeout_s=10, addresses=[b.fleet_address])
    try:
        old_on_b.heartbeat(STATUS)
        new = _renewed(old, FleetClient(old, rpc_timeout_s=10, addresses=[a.fleet_address]))
        with pytest.raises(CentralRefused, match=r"PERMISSION_DENIED.*replaced at renewal"):
            old_on_b.heartbeat(STATUS)
        with pytest.raises(CentralRefused, match="replaced at renewal"):
            old_on_b.report([], 1)
        new_on_b = FleetClient(new, rpc_timeout_s=10, addresses=[b.fleet_address])
        try:
            new_on_b.heartbeat(STATUS)
        finally:
            new_on_b.close()
    finally:
        old_on_b.close()
    refused = [e for e in audit_entries(a) if e.target == old.node_id and e.outcome == admin_pb2.AUDIT_OUTCOME_REFUSED]
    assert {e.action for e in refused} == {"fleet.heartbeat", "fleet.report_event"}
