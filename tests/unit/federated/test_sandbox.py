"""federated.sandbox: a Landlocked process (and what it starts) reads only what it lists and writes only its own dir.

Each case runs in a fresh subprocess: Landlock cannot be undone in the process that applies it."""

import subprocess
import sys
import textwrap

import pytest

from federated import sandbox


def _landlock_or_skip():
    try:
        return sandbox.abi_version()
    except sandbox.SandboxUnavailable as exc:
        pytest.skip(f"this kernel cannot sandbox: {exc}")


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=60)


def test_a_sandboxed_process_and_its_children_cannot_read_outside(tmp_path):
    _landlock_or_skip()
    own, secret = tmp_path / "superlink", tmp_path / "ca.key"
    own.mkdir()
    secret.write_text("the fleet CA key")
    result = _run(
        f"""
        import subprocess, sys
        from pathlib import Path
        import federated
        from federated import sandbox
        project = Path(federated.__file__).resolve().parents[1]
        abi = sandbox.restrict(sandbox.default_rules([Path({str(own)!r})], [project]))
        print("readable", [str(p) for p in sandbox.readable([Path({str(secret)!r})])])
        Path({str(own)!r}, "state").write_text("mine")
        for target in ({str(secret)!r}, {str(tmp_path / "elsewhere")!r}):
            try:
                open(target, "a").close()
                print("wrote", target)
            except PermissionError:
                print("refused write", target)
        child = subprocess.run([sys.executable, "-c", "open({str(secret)!r}).read()"], capture_output=True, text=True)
        print("child", child.returncode, "PermissionError" in child.stderr)
        """
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "readable []"
    assert (own / "state").read_text() == "mine"
    assert lines[1:3] == [f"refused write {secret}", f"refused write {tmp_path / 'elsewhere'}"]
    assert lines[3] == "child 1 True"
    assert secret.read_text() == "the fleet CA key"


def test_missing_paths_in_the_rules_are_skipped(tmp_path):
    _landlock_or_skip()
    result = _run(
        f"""
        from pathlib import Path
        from federated import sandbox
        rules = sandbox.default_rules([Path({str(tmp_path)!r})], [Path({str(tmp_path / "absent")!r})])
        print(sandbox.restrict(rules) >= 1)
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "True"


def test_handled_access_grows_with_the_abi():
    assert sandbox.handled_access(1) == (1 << 13) - 1
    assert sandbox.handled_access(3) & sandbox.TRUNCATE
    assert not sandbox.handled_access(4) & sandbox.IOCTL_DEV
    assert sandbox.handled_access(7) & sandbox.IOCTL_DEV


def test_readable_lists_what_can_still_be_opened(tmp_path):
    (tmp_path / "here").write_text("x")
    assert sandbox.readable([tmp_path / "here", tmp_path / "absent"]) == [tmp_path / "here"]
