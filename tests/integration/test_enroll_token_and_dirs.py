"""`edge-agent enroll` against a real central: the token from a file, the environment or argv (which warns), a
token file others may read (which warns), and data dirs made 0700 under umask 022; central refusing a data dir
whose CA key others may read."""

import os
import stat

import pytest

from central.cli import main as edgefleet
from central_process import create_token, start_central
from edge_agent.cli import main as edge_agent


@pytest.fixture(scope="module")
def central(tmp_path_factory):
    process = start_central(tmp_path_factory.mktemp("central") / "data")
    yield process
    process.stop()


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _enroll(central, data_dir, *token_args):
    token = create_token(central)
    args = ["enroll", "--central", central.enroll_address, "--ca-fingerprint", token.ca_fingerprint]
    return token, [*args, "--data-dir", str(data_dir), *token_args]


def test_a_token_file_enrolls_quietly_and_the_data_dirs_are_0700(central, tmp_path, capsys, umask_022):
    token_file = tmp_path / "token"
    data_dir = tmp_path / "new" / "agent"
    token, argv = _enroll(central, data_dir, "--token-file", str(token_file))
    token_file.write_text(token.token + "\n")
    token_file.chmod(0o600)
    assert edge_agent(argv) == 0
    out = capsys.readouterr()
    assert "enrolled as node-" in out.out and "warning" not in out.err
    for path in (tmp_path / "new", data_dir, data_dir / "fleet"):
        assert _mode(path) == 0o700, path
    assert _mode(data_dir / "fleet" / "node.key") == 0o600


def test_the_environment_enrolls_quietly(central, tmp_path, capsys, monkeypatch):
    token, argv = _enroll(central, tmp_path / "agent")
    monkeypatch.setenv("EDGEFLEET_TOKEN", token.token)
    assert edge_agent(argv) == 0
    assert "warning" not in capsys.readouterr().err


def test_the_argv_form_still_enrolls_and_warns(central, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("EDGEFLEET_TOKEN", raising=False)
    token, argv = _enroll(central, tmp_path / "agent")
    assert edge_agent([*argv, "--token", token.token]) == 0
    err = capsys.readouterr().err
    assert "warning: --token puts the bootstrap token on the command line" in err
    assert "--token-file FILE" in err and "$EDGEFLEET_TOKEN" in err


def test_a_token_file_others_may_read_warns(central, tmp_path, capsys):
    token_file = tmp_path / "token"
    token, argv = _enroll(central, tmp_path / "agent", "--token-file", str(token_file))
    token_file.write_text(token.token)
    token_file.chmod(0o644)
    assert edge_agent(argv) == 0
    assert f"readable by group and others (mode 0644); keep tokens owner-only: chmod 600 {token_file}" in (
        capsys.readouterr().err
    )


def test_no_token_is_a_usage_error(central, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("EDGEFLEET_TOKEN", raising=False)
    _, argv = _enroll(central, tmp_path / "agent")
    assert edge_agent(argv) == 2
    assert "no bootstrap token: set $EDGEFLEET_TOKEN, or give --token-file FILE" in capsys.readouterr().err
    assert not (tmp_path / "agent").exists()


def test_central_init_makes_its_data_dir_0700_and_serve_refuses_a_key_others_may_read(tmp_path, capsys, umask_022):
    root = tmp_path / "fresh" / "central"
    assert edgefleet(["central", "init", "--data-dir", str(root)]) == 0
    assert _mode(tmp_path / "fresh") == 0o700 and _mode(root) == 0o700
    capsys.readouterr()
    (root / "ca.key").chmod(0o644)
    assert edgefleet(["central", "serve", "--data-dir", str(root)]) == 2
    assert f"{root / 'ca.key'} holds a secret but others may read it (mode 0644)" in capsys.readouterr().err
