"""The scheduled backup's systemd units (packaging/systemd/edgefleet-central-backup.{service,timer}): the command
they run is one `edgefleet` accepts, the passphrase arrives as a credential file, and systemd-analyze finds nothing
to say about them (verify) and scores the service's exposure at most 2.5, like the daemons' units. Without
systemd-analyze those two tests are skipped, saying so.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
SYSTEMD = ROOT / "packaging" / "systemd"
SERVICE = SYSTEMD / "edgefleet-central-backup.service"
TIMER = SYSTEMD / "edgefleet-central-backup.timer"
STATE_ROOT = "/var/lib"


def entries(path: Path) -> list[tuple[str, str, str]]:
    found, section = [], ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        found.append((section, key.strip(), value.strip()))
    return found


def value(path: Path, key: str, section: str = "Service") -> str:
    found = [v for s, k, v in entries(path) if (s, k) == (section, key)]
    assert len(found) == 1, f"{path.name}: expected one {key}= in [{section}], found {found}"
    return found[0]


def test_the_service_runs_a_backup_command_edgefleet_accepts():
    from central.cli import build_parser

    argv = shlex.split(value(SERVICE, "ExecStart").replace("%S", STATE_ROOT))
    assert argv[0] == "/opt/edgefleet/venv/bin/edgefleet"
    args = build_parser().parse_args([a for a in argv[1:] if a != "$EDGEFLEET_BACKUP_OPTS"])
    assert (args.group, args.command, args.backup_command) == ("central", "backup", None)
    assert args.data_dir == f"{STATE_ROOT}/edgefleet-central"
    assert str(args.out_dir) == f"{STATE_ROOT}/edgefleet-central-backups" and args.keep == 14
    # The passphrase is a credential file systemd hands this service alone, never argv or the environment.
    assert str(args.passphrase_file) == "${CREDENTIALS_DIRECTORY}/backup-passphrase"
    assert value(SERVICE, "LoadCredential") == "backup-passphrase:/etc/edgefleet/backup-passphrase"
    assert value(SERVICE, "Type") == "oneshot"
    assert value(SERVICE, "User") == "edgefleet"
    assert value(SERVICE, "StateDirectory").split() == ["edgefleet-central", "edgefleet-central-backups"]
    assert value(SERVICE, "StateDirectoryMode") == "0700" and value(SERVICE, "UMask") == "0077"


def test_the_backup_yields_the_disk_without_being_starved_of_it():
    """IOSchedulingClass=idle would wait on central's own writes while the snapshot's read transaction keeps the
    WAL from being checkpointed: the WAL would grow for as long as the backup waited."""
    assert value(SERVICE, "IOSchedulingClass") == "best-effort" and value(SERVICE, "IOSchedulingPriority") == "7"
    assert value(SERVICE, "Nice") == "10"


def test_the_timer_runs_it_daily_and_catches_up_a_missed_day():
    assert value(TIMER, "OnCalendar", "Timer") == "daily"
    assert value(TIMER, "Persistent", "Timer") == "true"
    assert value(TIMER, "WantedBy", "Install") == "timers.target"


def test_the_debian_package_ships_both_units():
    build = (ROOT / "packaging" / "deb" / "build.sh").read_text()
    assert "edgefleet-central-backup.service" in build and "edgefleet-central-backup.timer" in build


def _analyze() -> str:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze not found on PATH: install systemd to verify the backup units")
    return tool


def _run(argv: list[str]) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin", "SYSTEMD_COLORS": "0", "SYSTEMD_PAGER": "", "LC_ALL": "C.UTF-8"}
    return subprocess.run(argv, capture_output=True, text=True, errors="replace", env=env, timeout=120)


def test_systemd_analyze_verify_finds_nothing(tmp_path):
    tool = _analyze()
    root = tmp_path / "root"
    for lib in ("/usr/lib/systemd/system", "/lib/systemd/system"):
        if Path(lib).is_dir():
            shutil.copytree(lib, root / "usr/lib/systemd/system", symlinks=True)
            break
    else:
        pytest.fail("systemd-analyze is installed but systemd's unit directory is not")
    (root / "bin").symlink_to("usr/bin")
    units = root / "etc/systemd/system"
    units.mkdir(parents=True)
    for unit in (SERVICE, TIMER, SYSTEMD / "edgefleet-central.service"):
        shutil.copy(unit, units / unit.name)
    binary = root / "opt/edgefleet/venv/bin/edgefleet"  # verify checks that ExecStart's binary exists
    binary.parent.mkdir(parents=True)
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    result = _run([tool, "verify", f"--root={root}", SERVICE.name, TIMER.name])
    assert result.returncode == 0 and not (result.stdout + result.stderr).strip(), result.stdout + result.stderr


def test_systemd_analyze_security_scores_the_service_at_most_2_5(tmp_path):
    tool = _analyze()
    shutil.copy(SERVICE, tmp_path / SERVICE.name)
    result = _run([tool, "security", "--offline=true", "--threshold=25", str(tmp_path / SERVICE.name)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Overall exposure level for edgefleet-central-backup.service" in result.stdout
