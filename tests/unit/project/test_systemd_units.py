"""The systemd units in packaging/systemd: what they must say, and what systemd-analyze makes of them.

The first tests read the unit files as text (no systemd needed). The others run the real
``systemd-analyze``: ``verify`` in a throwaway root (the units' binaries exist only on an
installed box, so the root holds stand-ins at the same paths) and ``security --offline``,
which scores each unit's exposure from 0 (locked down) to 10; the issue asks for 2.5 or lower.
Without systemd-analyze those tests are skipped, saying so: that is the only skip here.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
SYSTEMD = ROOT / "packaging" / "systemd"
UNITS = ("edge-agent.service", "edgefleet-central.service")
DROPIN_DIR = SYSTEMD / "edge-agent.service.d"
DROPINS = sorted(DROPIN_DIR.glob("*.conf"))
MAX_EXPOSURE = 2.5
STATE_ROOT = "/var/lib"  # what %S expands to for system units


def parse(path: Path) -> list[tuple[str, str, str]]:
    """(section, key, value) for every assignment, in order; comments and blank lines dropped."""
    entries, section = [], ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        key, sep, value = line.partition("=")
        assert sep, f"{path.name}: not an assignment: {raw!r}"
        entries.append((section, key.strip(), value.strip()))
    return entries


def values(path: Path, key: str, section: str = "Service") -> list[str]:
    return [v for s, k, v in parse(path) if s == section and k == key]


def value(path: Path, key: str, section: str = "Service") -> str:
    found = values(path, key, section)
    assert len(found) == 1, f"{path.name}: expected one {key}= in [{section}], found {found}"
    return found[0]


def exec_argv(line: str) -> list[str]:
    """An Exec*= line as argv, with %S expanded and systemd's prefixes (-@:+!) dropped."""
    argv = shlex.split(line.replace("%S", STATE_ROOT))
    argv[0] = argv[0].lstrip("-@:+!")
    return argv


# -- the unit files as text ------------------------------------------------------------------


@pytest.mark.parametrize("unit", UNITS)
def test_unit_is_a_notify_service_with_a_watchdog_run_as_edgefleet(unit):
    path = SYSTEMD / unit
    assert value(path, "Type") == "notify"
    assert value(path, "NotifyAccess") == "main"
    assert value(path, "WatchdogSec") == "30s"
    assert value(path, "ExecReload") == "/bin/kill -HUP $MAINPID"
    assert value(path, "Restart") == "on-failure"
    assert value(path, "KillMode") == "mixed"
    assert value(path, "User") == "edgefleet" and value(path, "Group") == "edgefleet"
    assert not values(path, "DynamicUser")
    assert value(path, "WantedBy", "Install") == "multi-user.target"


# What the issue lists, with the value each must have ("" for an empty setting).
REQUIRED = {
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "NoNewPrivileges": "yes",
    "CapabilityBoundingSet": "",
    "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
    "PrivateDevices": "yes",
    "DevicePolicy": "closed",
    "UMask": "0077",
    "MemoryDenyWriteExecute": "yes",
}


@pytest.mark.parametrize("unit", UNITS)
def test_unit_carries_the_hardening_the_issue_lists(unit):
    path = SYSTEMD / unit
    for key, expected in REQUIRED.items():
        assert value(path, key) == expected, key
    assert value(path, "StateDirectory")
    assert value(path, "StateDirectoryMode") == "0700"
    filters = values(path, "SystemCallFilter")
    assert filters[0] == "@system-service" and "~@privileged" in filters[1].split(), filters


def test_device_allow_appears_only_in_the_gpu_drop_ins():
    assert DROPINS, f"no GPU drop-in in {DROPIN_DIR}"
    for unit in UNITS:
        assert not values(SYSTEMD / unit, "DeviceAllow"), unit
    for dropin in DROPINS:
        assert values(dropin, "DeviceAllow"), dropin.name
        assert value(dropin, "PrivateDevices") == "no", dropin.name
        assert value(dropin, "DevicePolicy") == "closed", dropin.name
    # Nothing else under packaging/ grants devices.
    granting = {
        p.relative_to(SYSTEMD)
        for p in SYSTEMD.rglob("*")
        if p.is_file() and re.search(r"^\s*DeviceAllow\s*=", p.read_text(errors="replace"), re.M)
    }
    assert granting == {p.relative_to(SYSTEMD) for p in DROPINS}


def test_agent_exec_start_is_the_packaged_entry_point_with_the_packaged_config():
    from edge_agent.cli import main

    path = SYSTEMD / "edge-agent.service"
    argv = exec_argv(value(path, "ExecStart"))
    assert argv == ["/opt/edgefleet/venv/bin/edge-agent", "serve", "--config", "/etc/edgefleet/agent.toml"]
    with pytest.raises(SystemExit) as exit_info:  # argparse accepts the flags: --help after them
        main([*argv[1:], "--help"])
    assert exit_info.value.code == 0
    # The data dir comes from $STATE_DIRECTORY (edge_agent.config.default_data_dir).
    assert value(path, "StateDirectory") == "edge-agent"


def test_central_serves_the_state_directory_and_initializes_it_once():
    from central.cli import build_parser

    path = SYSTEMD / "edgefleet-central.service"
    data_dir = f"{STATE_ROOT}/{value(path, 'StateDirectory')}"
    argv = exec_argv(value(path, "ExecStart"))
    assert argv[0] == "/opt/edgefleet/venv/bin/edgefleet"
    args = build_parser().parse_args([a for a in argv[1:] if a != "$EDGEFLEET_CENTRAL_OPTS"])
    assert (args.group, args.command, args.data_dir) == ("central", "serve", data_dir)
    # `central init` refuses an initialized data dir, so the pre-start runs it only without a CA key.
    pre = exec_argv(value(path, "ExecStartPre"))
    assert pre[:2] == ["/bin/sh", "-c"]
    test, _, init = pre[2].partition(" || exec ")
    assert test == f"test -e {data_dir}/ca.key"
    init_args = build_parser().parse_args(shlex.split(init)[1:])
    assert (init_args.group, init_args.command, init_args.data_dir) == ("central", "init", data_dir)


# -- systemd-analyze ----------------------------------------------------------------------------


def systemd_analyze() -> str:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip(
            "systemd-analyze not found on PATH: install systemd (the package `systemd`) "
            "to verify the units and score their exposure"
        )
    return tool


def run(argv: list[str]) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin", "SYSTEMD_COLORS": "0", "SYSTEMD_PAGER": "", "LC_ALL": "C.UTF-8"}
    return subprocess.run(argv, capture_output=True, text=True, errors="replace", env=env, timeout=120)


def unit_dir(tmp_path: Path, dropins: list[Path]) -> Path:
    """The two units, and only the given agent drop-ins, in a directory of their own
    (security --offline reads the drop-ins beside a unit file given by path)."""
    directory = tmp_path / "units"
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir()
    for unit in UNITS:
        shutil.copy(SYSTEMD / unit, directory / unit)
    if dropins:
        (directory / "edge-agent.service.d").mkdir()
        for dropin in dropins:
            shutil.copy(dropin, directory / "edge-agent.service.d" / dropin.name)
    return directory


def offline_root(tmp_path: Path, dropins: list[Path]) -> Path:
    """A throwaway root for `verify --root`: systemd's own units (targets the units order
    against), the units and drop-ins in /etc/systemd/system, and an executable stand-in at
    every path an Exec*= line names, since verify checks that each one exists."""
    root = tmp_path / "root"
    shutil.rmtree(root, ignore_errors=True)
    for lib in ("/usr/lib/systemd/system", "/lib/systemd/system"):
        if Path(lib).is_dir():
            shutil.copytree(lib, root / "usr/lib/systemd/system", symlinks=True)
            break
    else:
        pytest.fail("systemd-analyze is installed but systemd's unit directory is not")
    (root / "usr/bin").mkdir(parents=True, exist_ok=True)
    (root / "bin").symlink_to("usr/bin")
    shutil.copytree(unit_dir(tmp_path, dropins), root / "etc/systemd/system")
    for unit in UNITS:
        path = SYSTEMD / unit
        for key in ("ExecStart", "ExecStartPre", "ExecReload"):
            for line in values(path, key):
                binary = root / exec_argv(line)[0].lstrip("/")
                binary.parent.mkdir(parents=True, exist_ok=True)
                if not binary.exists():
                    binary.write_text("#!/bin/sh\n")
                    binary.chmod(0o755)
    return root


# Each unit alone, and the agent with each GPU drop-in in place.
CASES = [pytest.param([], id="units")] + [pytest.param([d], id=f"agent+{d.name}") for d in DROPINS]


@pytest.mark.parametrize("dropins", CASES)
def test_systemd_analyze_verify_passes_without_a_message(tmp_path, dropins):
    tool = systemd_analyze()
    root = offline_root(tmp_path, dropins)
    result = run([tool, "verify", f"--root={root}", *UNITS])
    # verify exits 0 on an unknown key or a value it cannot parse (it only logs them), so any
    # output at all is a failure.
    assert result.returncode == 0 and not (result.stdout + result.stderr).strip(), result.stdout + result.stderr


def exposure(tool: str, unit_path: Path) -> float:
    result = run([tool, "security", "--offline=true", f"--threshold={int(MAX_EXPOSURE * 10)}", str(unit_path)])
    found = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", result.stdout)
    assert found, result.stdout + result.stderr
    # --threshold is in tenths (25 = 2.5): a score above it makes systemd-analyze exit non-zero.
    assert result.returncode == 0, result.stdout + result.stderr
    return float(found.group(1))


@pytest.mark.parametrize("unit", UNITS)
def test_systemd_analyze_security_scores_each_unit_at_most_2_5(tmp_path, unit):
    tool = systemd_analyze()
    assert exposure(tool, unit_dir(tmp_path, []) / unit) <= MAX_EXPOSURE


@pytest.mark.parametrize("dropin", DROPINS, ids=[d.name for d in DROPINS])
def test_systemd_analyze_security_scores_the_agent_with_a_gpu_drop_in_at_most_2_5(tmp_path, dropin):
    tool = systemd_analyze()
    assert exposure(tool, unit_dir(tmp_path, [dropin]) / "edge-agent.service") <= MAX_EXPOSURE
