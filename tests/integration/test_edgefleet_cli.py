"""The `edgefleet` and `edge-agent enroll/status` commands against a real central over mTLS, including
what they say and exit with on bad input: a missing or broken credential, an unreachable central, bad
labels and durations, unknown nodes and tokens, an invalid number of uses, enrolling twice."""

import json

import pytest

from central.cli import main as edgefleet
from central_process import start_central
from edge_agent.cli import main as edge_agent


@pytest.fixture(scope="module")
def central(tmp_path_factory):
    process = start_central(tmp_path_factory.mktemp("cli") / "central")
    yield process
    process.stop()


def run(capsys, central, *args):
    code = edgefleet(["--credential", str(central.paths.admin_credential), "--central", central.fleet_address, *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_init_writes_keys_owner_only_and_refuses_to_run_twice(tmp_path, capsys):
    assert edgefleet(["central", "init", "--data-dir", str(tmp_path / "c")]) == 0
    out = capsys.readouterr().out
    assert f"export EDGEFLEET_CREDENTIAL={tmp_path / 'c' / 'admin.credential'}" in out
    for name in ("ca.key", "signing.key", "server.key", "admin.credential"):
        assert oct((tmp_path / "c" / name).stat().st_mode & 0o777) == "0o600", name
    assert edgefleet(["central", "init", "--data-dir", str(tmp_path / "c")]) == 2
    assert "already initialized" in capsys.readouterr().err


def test_serve_refuses_an_uninitialized_data_dir(tmp_path, capsys):
    assert edgefleet(["central", "serve", "--data-dir", str(tmp_path / "empty")]) == 2
    assert "edgefleet central init" in capsys.readouterr().err


def join_command(out: str, monkeypatch) -> list[str]:
    """The `edge-agent enroll` argv `token create` printed, with its EDGEFLEET_TOKEN=... set in the environment."""
    assignment, *command = out.strip().split()
    name, _, token = assignment.partition("=")
    assert name == "EDGEFLEET_TOKEN" and token and command[:2] == ["edge-agent", "enroll"], out
    assert "--token" not in command and token not in command, "the token is never printed as an argument"
    monkeypatch.setenv("EDGEFLEET_TOKEN", token)
    return command


def test_token_create_prints_the_enroll_command_and_enrolling_with_it_works(central, capsys, tmp_path, monkeypatch):
    code, out, err = run(capsys, central, "token", "create", "--labels", "region=eu,site=fra")
    assert code == 0 and "--token-file" in err
    command = join_command(out, monkeypatch)
    assert edge_agent([*command[1:], "--data-dir", str(tmp_path / "agent")]) == 0
    assert "enrolled as node-" in capsys.readouterr().out
    # A second enrollment of the same data dir is refused, and says why.
    assert edge_agent([*command[1:], "--data-dir", str(tmp_path / "agent")]) == 1
    assert "already enrolled" in capsys.readouterr().err
    assert edge_agent(["status", "--json", "--data-dir", str(tmp_path / "agent")]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["enrolled"] and status["labels"] == {"region": "eu", "site": "fra"}
    assert status["serving"] == {"running": False}


def test_token_create_json_list_and_revoke(central, capsys):
    code, out, _ = run(capsys, central, "token", "create", "--json", "--ttl", "10m", "--uses", "3")
    created = json.loads(out)
    assert code == 0 and set(created) >= {"token", "ca_fingerprint", "enroll_address"} and created["uses"] == 3
    code, out, _ = run(capsys, central, "token", "list", "--json")
    listed = {t["token_id"]: t for t in json.loads(out)}
    assert listed[created["token_id"]]["uses_left"] == 3
    assert created["token"] not in out, "secrets are never listed"
    assert run(capsys, central, "token", "revoke", created["token_id"])[0] == 0
    code, out, _ = run(capsys, central, "token", "list")
    assert "revoked" in next(line for line in out.splitlines() if created["token_id"] in line)


def test_nodes_label_show_revoke_and_audit(central, capsys, tmp_path, monkeypatch):
    code, out, _ = run(capsys, central, "token", "create")
    edge_agent([*join_command(out, monkeypatch)[1:], "--data-dir", str(tmp_path / "a")])
    node_id = json.loads((tmp_path / "a" / "fleet" / "fleet.json").read_text())["node_id"]
    capsys.readouterr()
    assert run(capsys, central, "nodes", "label", node_id, "tier=gold", "region=us")[0] == 0
    assert run(capsys, central, "nodes", "label", node_id, "tier-")[0] == 0
    code, out, _ = run(capsys, central, "nodes", "show", node_id, "--json")
    assert json.loads(out)["summary"]["labels"] == {"region": "us"}
    code, out, _ = run(capsys, central, "nodes", "list", "--selector", "region=us", "--json")
    assert [r["node"] for r in json.loads(out)] == [node_id] and json.loads(out)[0]["status"] == "enrolled"
    assert run(capsys, central, "nodes", "revoke", node_id, "--reason", "test")[0] == 0
    code, out, _ = run(capsys, central, "audit", "list", "--json", "--limit", "1000")
    actions = [(e["action"], e.get("target")) for e in json.loads(out)]
    assert ("node.label", node_id) in actions and ("node.revoke", node_id) in actions
    code, out, _ = run(capsys, central, "audit", "verify")
    assert code == 0 and "intact" in out


@pytest.mark.parametrize(
    "args, code, message",
    [
        (["nodes", "label", "node-nope", "Region=eu"], 2, "lowercase"),
        (["token", "create", "--uses", "1000000"], 2, "uses must be between"),
        (["token", "create", "--ttl", "400d"], 2, "ttl must be between"),
        (["nodes", "show", "node-nope"], 5, "no node 'node-nope'"),
        (["nodes", "revoke", "node-nope"], 5, "no node"),
        (["token", "revoke", "zzzzzz"], 5, "no bootstrap token"),
        (["nodes", "label", "node-nope", "novalue"], 2, "key=value"),
        # This central runs with --no-superlink.
        (["fl", "start", "--task", "sensitivity", "--min-nodes", "3"], 6, "federated learning is off on this central"),
        (["fl", "status", "123"], 5, "no federated run 123"),
    ],
)
def test_bad_input_gets_a_specific_error_and_exit_code(central, capsys, args, code, message):
    got, _, err = run(capsys, central, *args)
    assert got == code and message in err


@pytest.mark.parametrize(
    "flag, value, message",
    [
        ("--ttl", "soon", "not a duration"),
        ("--labels", "region", "key=value"),
        ("--labels", "Region=eu", "lowercase"),
        ("--uses", "0", "at least 1"),
        ("--uses", "two", "whole number"),
    ],
)
def test_bad_flags_are_usage_errors(central, capsys, flag, value, message):
    with pytest.raises(SystemExit) as exit_info:
        run(capsys, central, "token", "create", flag, value)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_missing_credential_and_unreachable_central(central, capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEFLEET_CREDENTIAL", str(tmp_path / "none"))
    assert edgefleet(["nodes", "list"]) == 2
    assert "no credential at" in capsys.readouterr().err
    (tmp_path / "broken").write_text("{not json")
    assert edgefleet(["--credential", str(tmp_path / "broken"), "nodes", "list"]) == 2
    assert "not readable JSON" in capsys.readouterr().err
    code, _, err = run(capsys, central, "--central", "127.0.0.1:1", "nodes", "list")
    assert code == 3 and "127.0.0.1:1" in err
