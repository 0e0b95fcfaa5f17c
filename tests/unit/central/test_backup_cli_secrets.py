"""`edgefleet central backup|backup verify|restore` as an operator and the timer run them: where secrets may leak
or be weak, what --keep may delete, and what a long run or a full disk shows.

Tried: a passphrase file and an identity file other users can read (warned), a passphrase of 5 characters
(refused for a new backup, still opens an old one), /dev/zero and a directory as the passphrase file, the
passphrase in the environment of pg_dump, a clock set back before a --keep run, a directory, a symbolic link and
another program's file under a scheduled backup's name, an --out-dir that does not exist, a disk that fills up
(a 1 MiB tmpfs, when this user may mount one), a data dir that is a volume of its own, SIGTERM in the middle of a
restore, stderr on a terminal.
"""

from __future__ import annotations

import contextlib
import os
import pty
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from central import cli
from central.backup import archive as ar
from central.backup.pgtools import conninfo_and_env, tool_env
from central.backup.snapshot import BackupSource, take_backup
from central.backup_commands import PASSPHRASE_ENV, backups_to_prune, scheduled_name
from central.datadir import initialize
from central_process import wait_for

GOOD = "a passphrase long enough for a backup"


@pytest.fixture
def central(tmp_path, monkeypatch) -> Path:
    monkeypatch.delenv(PASSPHRASE_ENV, raising=False)
    return initialize(tmp_path / "central", "127.0.0.1:0").root


def secret_file(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text + "\n")
    path.chmod(mode)
    return path


def run(capsys, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


def test_the_plaintext_snapshot_is_made_in_the_data_dir_not_beside_the_archive(central, tmp_path):
    """The backups' directory is what gets copied off the machine: while the archive is written (the progress
    callback runs then), no plaintext store lies there; the snapshot is in the data dir, and gone after."""
    out_dir = tmp_path / "backups"
    out_dir.mkdir()
    seen: dict[str, list] = {}

    class Look:
        def __init__(self, label: str, total: int):
            seen["beside the archive"] = [p.read_bytes()[:16] for p in out_dir.rglob("*") if p.is_file()]
            seen["in the data dir"] = list(central.glob(".edgefleet-backup-*/central.db"))

        def advance(self, n: int) -> None:
            pass

        def done(self) -> None:
            pass

    source = BackupSource(central, str(central / "central.db"))
    take_backup(source, out_dir / "b.edgefleet-backup", ar.Passphrase(GOOD.encode()), time.time(), "t", progress=Look)
    assert len(seen["in the data dir"]) == 1
    assert seen["beside the archive"] and b"SQLite format 3\x00" not in seen["beside the archive"]
    assert [p.name for p in out_dir.iterdir()] == ["b.edgefleet-backup"]
    assert not list(central.glob(".edgefleet-backup-*"))


def test_a_passphrase_file_others_can_read_is_warned_and_the_archive_is_0600(central, tmp_path, capsys):
    shared = secret_file(tmp_path / "pass", GOOD, 0o644)
    out = tmp_path / "b.edgefleet-backup"
    code, _, err = run(capsys, "central", "backup", "--data-dir", str(central), "--out", str(out),
                       "--passphrase-file", str(shared))  # fmt: skip
    assert code == 0, err
    assert f"warning: the passphrase file {shared} is readable by group and others (mode 0644)" in err
    assert f"chmod 600 {shared}" in err
    assert out.stat().st_mode & 0o777 == 0o600
    shared.chmod(0o600)
    code, _, err = run(capsys, "central", "backup", "verify", str(out), "--passphrase-file", str(shared))
    assert code == 0 and "warning" not in err, err


def test_an_identity_others_can_read_is_warned_but_a_recipient_is_public(central, tmp_path, capsys):
    assert cli.main(["central", "backup", "keygen", "--out", str(tmp_path / "id")]) == 0
    (tmp_path / "id.pub").chmod(0o644)
    out = tmp_path / "b.edgefleet-backup"
    code, _, err = run(capsys, "central", "backup", "--data-dir", str(central), "--out", str(out),
                       "--recipient", str(tmp_path / "id.pub"))  # fmt: skip
    assert code == 0 and "warning" not in err, err
    (tmp_path / "id").chmod(0o640)
    code, _, err = run(capsys, "central", "backup", "verify", str(out), "--identity", str(tmp_path / "id"))
    assert code == 0, err
    assert f"warning: the identity file {tmp_path / 'id'} is readable by its group (mode 0640)" in err


def test_a_short_passphrase_seals_nothing_but_opens_what_it_sealed(central, tmp_path, capsys, monkeypatch):
    out = tmp_path / "b.edgefleet-backup"
    monkeypatch.setenv(PASSPHRASE_ENV, "hunter2")
    code, _, err = run(capsys, "central", "backup", "--data-dir", str(central), "--out", str(out))
    assert code == 1 and "has 7 characters" in err and "at least 12" in err
    assert not out.exists()
    # An archive sealed before this rule (or by a script calling take_backup) still opens with it.
    take_backup(BackupSource(central, str(central / "central.db")), out, ar.Passphrase(b"hunter2"), time.time(), "t")
    code, stdout, err = run(capsys, "central", "backup", "verify", str(out))
    assert code == 0 and ": OK" in stdout, err


@pytest.mark.parametrize("source", ["/dev/zero", "directory"])
def test_a_passphrase_file_that_is_not_one(central, tmp_path, capsys, source):
    path = Path(source) if source.startswith("/") else tmp_path
    code, _, err = run(capsys, "central", "backup", "--data-dir", str(central), "--out", str(tmp_path / "b"),
                       "--passphrase-file", str(path))  # fmt: skip
    assert code == 1
    assert ("holds more than 64 KiB: not a passphrase file" if source == "/dev/zero" else "Is a directory") in err
    assert err.count("\n") == 1


def test_pg_tools_never_see_the_backup_passphrase(monkeypatch):
    monkeypatch.setenv(PASSPHRASE_ENV, "the secret")
    monkeypatch.setenv("PGPASSWORD", "from the environment")
    assert PASSPHRASE_ENV not in tool_env()
    conninfo, env = conninfo_and_env("postgresql://fleet:from-url@db.example/central")
    assert "from-url" not in conninfo and env["PGPASSWORD"] == "from-url" and PASSPHRASE_ENV not in env
    conninfo, env = conninfo_and_env("postgresql://fleet@db.example/central")
    assert env["PGPASSWORD"] == "from the environment"  # as psycopg used it for the snapshot


def test_keep_never_counts_the_backup_just_written_as_old():
    future = [scheduled_name(t) for t in (4_000_000_000, 4_000_086_400)]  # written before the clock was set back
    written = scheduled_name(1_700_000_000)
    assert backups_to_prune([*future, written], keep=1, written=written) == [future[1], future[0]]
    assert backups_to_prune([*future, written], keep=2, written=written) == [future[0]]
    assert backups_to_prune([*future, written], keep=3, written=written) == []


def test_keep_deletes_only_backups_it_can_tell_are_backups(central, tmp_path, capsys):
    out_dir = tmp_path / "backups"
    out_dir.mkdir()
    names = [scheduled_name(t) for t in (1_600_000_000, 1_600_086_400, 1_600_172_800, 1_600_259_200)]
    (out_dir / names[0]).write_bytes(ar.MAGIC + b"an older backup")
    (out_dir / names[1]).mkdir()
    (out_dir / names[2]).write_bytes(b"another program's file under a backup's name")
    victim = tmp_path / "victim.edgefleet-backup"
    victim.write_bytes(ar.MAGIC + b"not in this directory")
    (out_dir / names[3]).symlink_to(victim)
    secret_file(tmp_path / "pass", GOOD)
    code, _, err = run(capsys, "central", "backup", "--data-dir", str(central), "--out-dir", str(out_dir),
                       "--keep", "1", "--passphrase-file", str(tmp_path / "pass"))  # fmt: skip
    assert code == 0, err
    left = sorted(p.name for p in out_dir.iterdir())
    assert names[0] not in left and {names[1], names[2], names[3]} <= set(left) and len(left) == 4
    assert victim.exists()


def test_an_out_dir_that_does_not_exist(central, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv(PASSPHRASE_ENV, GOOD)
    code, _, err = run(capsys, "central", "backup", "--data-dir", str(central), "--out-dir", str(tmp_path / "nope"))
    assert code == 1 and f"{tmp_path / 'nope'} does not exist" in err


@contextlib.contextmanager
def tmpfs(where: Path, size: str):
    """A real, separate file system of `size`, where this user may mount one."""
    where.mkdir()
    if shutil.which("mount") is None or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.decode().strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=True)


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MiB tmpfs: a real full disk."""
    with tmpfs(tmp_path / "disk", "1m") as disk:
        yield disk


def test_a_full_disk_says_where_and_leaves_nothing(central, tmp_path, capsys, monkeypatch, small_disk):
    monkeypatch.setenv(PASSPHRASE_ENV, GOOD)
    (central / "blobs").mkdir(exist_ok=True)
    (central / "superlink" / "results").mkdir(parents=True)
    (central / "superlink" / "results" / "run.json").write_bytes(os.urandom(3 << 20))  # more than the disk
    code, _, err = run(capsys, "central", "backup", "--data-dir", str(central), "--out-dir", str(small_disk))
    assert code == 1 and "No space left on device" in err
    assert f"the backup is written in {small_disk}" in err
    assert list(small_disk.iterdir()) == []
    archive = tmp_path / "b.edgefleet-backup"
    assert cli.main(["central", "backup", "--data-dir", str(central), "--out", str(archive)]) == 0
    target = small_disk / "restored"
    code, _, err = run(capsys, "central", "restore", str(archive), "--data-dir", str(target))
    assert code == 1 and "No space left on device" in err and f"in or beside {target}" in err
    assert list(small_disk.iterdir()) == []


def test_restore_onto_an_empty_volume_mounted_as_the_data_dir(central, tmp_path, capsys, monkeypatch):
    """The new machine's data dir is its own file system: staging beside it would be another one, and the
    entries could not be renamed in (EXDEV)."""
    monkeypatch.setenv(PASSPHRASE_ENV, GOOD)
    archive = tmp_path / "b.edgefleet-backup"
    assert cli.main(["central", "backup", "--data-dir", str(central), "--out", str(archive)]) == 0
    with tmpfs(tmp_path / "volume", "64m") as volume:
        code, _, err = run(capsys, "central", "restore", str(archive), "--data-dir", str(volume))
        assert code == 0, err
        assert (volume / "ca.key").stat().st_mode & 0o777 == 0o600 and volume.stat().st_mode & 0o777 == 0o700
        assert not [p for p in volume.iterdir() if p.name.startswith(".")]
        assert not [p for p in tmp_path.iterdir() if ".restore-" in p.name]


def test_restore_onto_a_data_dir_holding_only_an_empty_lost_and_found(central, tmp_path, capsys, monkeypatch):
    """What a freshly made ext4 volume holds; lost+found with anything in it is refused as any other entry."""
    monkeypatch.setenv(PASSPHRASE_ENV, GOOD)
    archive = tmp_path / "b.edgefleet-backup"
    assert cli.main(["central", "backup", "--data-dir", str(central), "--out", str(archive)]) == 0
    volume = tmp_path / "volume"
    (volume / "lost+found").mkdir(parents=True)
    (volume / "lost+found" / "#1234").write_bytes(b"recovered")
    code, _, err = run(capsys, "central", "restore", str(archive), "--data-dir", str(volume))
    assert code == 1 and "is not empty" in err
    (volume / "lost+found" / "#1234").unlink()
    code, _, err = run(capsys, "central", "restore", str(archive), "--data-dir", str(volume))
    assert code == 0, err
    assert (volume / "ca.key").exists() and (volume / "lost+found").is_dir()


def _cli(*args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "central.cli", *args], **kwargs)


def test_a_progress_bar_on_a_terminal_only(central, tmp_path, monkeypatch):
    monkeypatch.setenv(PASSPHRASE_ENV, GOOD)
    archive = tmp_path / "b.edgefleet-backup"
    (central / "superlink" / "results").mkdir(parents=True)
    (central / "superlink" / "results" / "run.json").write_bytes(os.urandom(3 << 20))
    assert cli.main(["central", "backup", "--data-dir", str(central), "--out", str(archive)]) == 0
    controller, terminal = pty.openpty()
    process = _cli("central", "backup", "verify", str(archive), stdout=subprocess.PIPE, stderr=terminal)
    os.close(terminal)
    shown = b""
    while True:
        ready, _, _ = select.select([controller], [], [], 60)
        assert ready, "no output from verify within 60 s"
        try:
            part = os.read(controller, 4096)
        except OSError:  # EIO: the process closed its end
            break
        if not part:
            break
        shown += part
    os.close(controller)
    assert process.wait(60) == 0
    assert b"verifying [" in shown and b"100%" in shown, shown
    piped = subprocess.run([sys.executable, "-m", "central.cli", "central", "backup", "verify", str(archive)],
                           capture_output=True, timeout=120)  # fmt: skip
    assert piped.returncode == 0 and b"verifying" not in piped.stderr


def test_sigterm_in_the_middle_of_a_restore_leaves_nothing(central, tmp_path, monkeypatch):
    """The archive comes through a FIFO, so the restore waits mid-read with its staging directory made."""
    monkeypatch.setenv(PASSPHRASE_ENV, GOOD)
    archive = tmp_path / "b.edgefleet-backup"
    assert cli.main(["central", "backup", "--data-dir", str(central), "--out", str(archive)]) == 0
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    target = tmp_path / "new" / "central"
    process = _cli("central", "restore", str(fifo), "--data-dir", str(target), stderr=subprocess.PIPE)
    try:
        with open(fifo, "wb") as feed:
            feed.write(archive.read_bytes()[:200])  # the header and a little: the reader waits for a chunk
            feed.flush()
            wait_for(lambda: list(target.parent.glob(".central.restore-*")), 60, what="the restore's staging")
            process.send_signal(signal.SIGTERM)
            assert process.wait(60) == 128 + signal.SIGTERM
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert not target.parent.exists(), list(target.parent.iterdir())
