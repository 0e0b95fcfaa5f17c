"""The SuperNode: the argv the agent supervises it with (federated.supernode), and the fast SuperNode's polling
and arguments (federated.fast_supernode)."""

import importlib.util
import itertools
import re
import sys
from pathlib import Path

import pytest

from federated import supernode

# flwr 1.42 installs on Python 3.11+ only; on 3.10 (JetPack 6) federated learning is off and these cannot run.
needs_flwr = pytest.mark.skipif(
    importlib.util.find_spec("flwr") is None, reason="flwr 1.42 needs Python 3.11+; federated learning is off here"
)


# --- supernode argv -------------------------------------------------------------------------------------


def _flags(argv):
    return {flag: value for flag, value in itertools.pairwise(argv) if flag.startswith("--")}


def test_supernode_command_flower(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    argv = supernode.supernode_command(
        "flower", "central.example:9092", Path("fleet/ca.pem"), Path("fleet/flower.key"), Path("data"), 9094
    )
    assert argv[0] == str(Path(sys.executable).parent / "flower-supernode")
    assert _flags(argv) == {
        "--superlink": "central.example:9092",
        "--root-certificates": "fleet/ca.pem",
        "--auth-supernode-private-key": "fleet/flower.key",
        "--node-config": f"data-dir='{(tmp_path / 'data').resolve()}'",
        "--port": "9094",
        "--host": "127.0.0.1",
    }


def test_supernode_command_fast(tmp_path):
    argv = supernode.supernode_command("fast", "c:9092", tmp_path / "ca.pem", tmp_path / "k", tmp_path / "d" / "..", 0)
    assert argv[:3] == [sys.executable, "-m", "federated.fast_supernode"]
    assert "--port" not in argv and "--host" not in argv
    assert _flags(argv)["--node-config"] == f"data-dir='{tmp_path.resolve()}'"
    assert _flags(argv)["--superlink"] == "c:9092"


def test_supernode_command_refuses_unknown_kind_and_quoted_paths(tmp_path):
    with pytest.raises(ValueError, match=re.escape("federated.supernode must be one of flower, fast, got 'grpc'")):
        supernode.supernode_command("grpc", "c:1", tmp_path, tmp_path, tmp_path, 1)
    for name in ("it's", 'say "hi"'):
        with pytest.raises(ValueError, match="cannot contain quotes"):
            supernode.supernode_command("flower", "c:1", tmp_path, tmp_path, tmp_path / name, 1)


# --- fast SuperNode -------------------------------------------------------------------------------------


@needs_flwr
def test_fast_supernode_polls_fast_only_while_a_run_is_under_way():
    from federated.fast_supernode import poll_delay

    assert poll_delay(0.0, 0.2, 3.0, 60.0) == 0.2
    assert poll_delay(59.9, 0.2, 3.0, 60.0) == 0.2
    assert poll_delay(60.0, 0.2, 3.0, 60.0) == 3.0
    assert poll_delay(float("inf"), 0.2, 3.0, 60.0) == 3.0  # never handled a message: at rest


@needs_flwr
@pytest.mark.parametrize("flag", ["--poll-interval", "--idle-poll-interval", "--active-window"])
def test_fast_supernode_refuses_a_non_positive_interval(flag, capsys):
    from federated.fast_supernode import parse_args

    with pytest.raises(SystemExit):
        parse_args(["--superlink", "h:1", "--root-certificates", "ca", "--auth-supernode-private-key", "k", flag, "0"])
    assert f"{flag} must be positive" in capsys.readouterr().err
