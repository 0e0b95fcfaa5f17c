"""`edgefleet central backup`, `backup verify` and `central restore` as real processes against a real central.

SQLite: a central serves while nodes enroll and beat through real mTLS from a thread, and the backup is taken in
the middle of that (the online backup API: the snapshot is one commit, so the audit head it names closes a chain
that verifies); verify checks it; central is killed, the backup restored into a new data dir and served on other
ports; a node enrolled before the backup carries on with its certificate, `audit verify` passes with the
`central.restored` entry after the backup's head, and the model's blob is back.
PostgreSQL: the same through pg_dump and pg_restore into a second, empty database.

Bad input tried, each refused by verify AND restore with its reason, exit 1 and nothing left in the data dir: a
changed byte, a cut at a chunk boundary and inside a chunk, a wrong passphrase, a file that is not a backup, a
newer format; the passphrase on the command line (exit 2, never echoed); a non-empty data dir, a non-empty
database, a PostgreSQL backup without --store. The archive never shows a PEM header or SQLite's magic.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from central.backup import archive as ar
from central.datadir import initialize
from central_process import CentralProcess, create_token, edgefleet_cli, kill, start_central
from edge_agent.control.client import FleetClient, enroll
from edge_agent.control.identity import FleetFiles
from edgefleet.v1 import common_pb2
from postgres_db import postgres_database, postgres_url  # noqa: F401 - the fixture

PASSPHRASE = "a long backup passphrase for tests"


def edgefleet(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """The `edgefleet` CLI as its own process, as an operator or the systemd timer runs it."""
    return subprocess.run(
        [sys.executable, "-m", "central.cli", *args],
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, **(env or {})},
    )


@pytest.fixture
def passphrase_file(tmp_path) -> Path:
    path = tmp_path / "passphrase"
    path.write_text(PASSPHRASE + "\n")
    path.chmod(0o600)
    return path


def push_model(central: CentralProcess, tmp_path: Path) -> str:
    artifact = tmp_path / "tiny.gguf"
    artifact.write_bytes(os.urandom((1 << 20) + 4321))
    return json.loads(
        edgefleet_cli(central, "models", "push", str(artifact), "--name", "tiny", "--version", "1.0.0", "--json")
    )["sha256"]


def enroll_node(central: CentralProcess, directory: Path):
    token = create_token(central, region="eu")
    return enroll(central.enroll_address, token.ca_fingerprint, token.token, FleetFiles(directory))


def beat(node, address: str) -> None:
    client = FleetClient(node, rpc_timeout_s=10, addresses=[address])
    try:
        client.heartbeat(common_pb2.NodeStatus().SerializeToString())
    finally:
        client.close()


class Busy(threading.Thread):
    """Enrolls a node and sends it a heartbeat, again and again, until stopped: the store changes under a backup."""

    def __init__(self, central: CentralProcess, root: Path):
        super().__init__(daemon=True)
        self.central, self.root = central, root
        self.stop = threading.Event()
        self.enrolled = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                node = enroll_node(self.central, self.root / f"busy{self.enrolled}")
                beat(node, self.central.fleet_address)
                self.enrolled += 1
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc


def audit_after(central: CentralProcess, sequence: int) -> list[dict]:
    return json.loads(edgefleet_cli(central, "audit", "list", "--after", str(sequence), "--json"))


def audit_intact(central: CentralProcess) -> bool:
    return json.loads(edgefleet_cli(central, "audit", "verify", "--json"))["intact"]


def assert_private(data_dir: Path) -> None:
    assert data_dir.stat().st_mode & 0o777 == 0o700
    for path in data_dir.rglob("*"):
        if path.is_file() and path.suffix in (".key", ".crt", ".pub", ".credential"):
            assert path.stat().st_mode & 0o777 == 0o600, path


def assert_nothing_in_clear(archive: Path) -> None:
    data = archive.read_bytes()
    for marker in (b"-----BEGIN", b"PRIVATE KEY", b"SQLite format 3", b"manifest.json", b"ca_fingerprint"):
        assert marker not in data, marker


def test_backup_while_central_serves_then_restore_elsewhere(tmp_path, passphrase_file):
    central = start_central(tmp_path / "central")
    restored: CentralProcess | None = None
    busy = Busy(central, tmp_path)
    try:
        blob = push_model(central, tmp_path)
        early = enroll_node(central, tmp_path / "early")
        beat(early, central.fleet_address)
        busy.start()
        while busy.enrolled < 2 and busy.error is None and busy.is_alive():
            busy.join(0.05)
        archive = tmp_path / "backups" / "central.edgefleet-backup"
        archive.parent.mkdir()
        taken = edgefleet(
            "central", "backup", "--data-dir", str(central.data_dir), "--out", str(archive),
            "--passphrase-file", str(passphrase_file), "--json",
        )  # fmt: skip
        during = busy.enrolled
        while busy.enrolled < during + 2 and busy.error is None and busy.is_alive():
            busy.join(0.05)  # the store moves on past the backup
        busy.stop.set()
        busy.join(60)
        assert busy.error is None, busy.error
        assert taken.returncode == 0, taken.stderr
        backup = json.loads(taken.stdout)
        assert backup["counts"]["models"] == 1 and backup["blobs"] == {"listed": 1, "included": 1}
        assert backup["counts"]["nodes"] >= 3 and backup["audit_head"]["sequence"] > 0
        assert archive.stat().st_mode & 0o777 == 0o600
        assert_nothing_in_clear(archive)

        checked = edgefleet("central", "backup", "verify", str(archive), "--json", env={ar_env(): PASSPHRASE})
        assert checked.returncode == 0, checked.stderr
        verified = json.loads(checked.stdout)
        assert verified["ok"] and verified["backup_id"] == backup["backup_id"]
        assert verified["store_check"] == "SQLite integrity_check ok"
        assert verified["audit_entries_checked"] == backup["audit_head"]["sequence"]
        assert verified["blobs"] == {"listed": 1, "included": 1, "checked": 1}
        assert verified["counts"] == backup["counts"]
        enrolled_in_all = busy.enrolled + 1  # and the early node

        kill(central)  # the machine is lost
        target = tmp_path / "elsewhere" / "central"
        put_back = edgefleet(
            "central", "restore", str(archive), "--data-dir", str(target), "--passphrase-file", str(passphrase_file)
        )
        assert put_back.returncode == 0, put_back.stderr
        assert f"restored backup {backup['backup_id']} into {target}" in put_back.stdout
        assert "what this restore loses (RPO)" in put_back.stdout
        assert "revoke again any node or operator revoked after it" in put_back.stdout
        assert f"edgefleet central serve --data-dir {target}" in put_back.stdout
        assert_private(target)
        assert (target / "blobs" / "sha256" / blob[:2] / blob).stat().st_size == (1 << 20) + 4321

        restored = CentralProcess(target, ["--no-superlink"]).start()
        assert restored.fleet_address != central.fleet_address
        beat(early, restored.fleet_address)  # the same certificate, no new enrollment
        head = backup["audit_head"]["sequence"]
        mark = audit_after(restored, head)[0]  # the first entry after the backup's head
        assert (int(mark["sequence"]), mark["action"]) == (head + 1, "central.restored")
        assert mark["actor"] == "central:restore" and mark["target"] == backup["backup_id"]
        assert audit_intact(restored)
        nodes = json.loads(edgefleet_cli(restored, "nodes", "list", "--json"))
        assert len(nodes) == backup["counts"]["nodes"] < enrolled_in_all  # nodes enrolled after it are not there
        models = json.loads(edgefleet_cli(restored, "models", "list", "--json"))
        assert [m["sha256"] for m in models] == [blob]
    finally:
        busy.stop.set()
        busy.join(60)
        central.stop()
        if restored is not None:
            restored.stop()


def ar_env() -> str:
    from central.backup_commands import PASSPHRASE_ENV

    return PASSPHRASE_ENV


@pytest.fixture(scope="module")
def small_central(tmp_path_factory) -> Path:
    """The data dir of a central with a node and a model, stopped."""
    root = tmp_path_factory.mktemp("small")
    central = start_central(root / "central")
    try:
        push_model(central, root)
        enroll_node(central, root / "node")
    finally:
        central.stop()
    return central.data_dir


@pytest.fixture(scope="module")
def small_backup(small_central):
    archive = small_central.parent / "small.edgefleet-backup"
    taken = edgefleet(
        "central", "backup", "--data-dir", str(small_central), "--out", str(archive), env={ar_env(): PASSPHRASE}
    )
    assert taken.returncode == 0, taken.stderr
    return archive


def test_without_blobs_the_restore_needs_the_blob_store_that_holds_them(small_central, tmp_path):
    env = {ar_env(): PASSPHRASE}
    archive = tmp_path / "listed-only.edgefleet-backup"
    taken = edgefleet(
        "central", "backup", "--data-dir", str(small_central), "--out", str(archive), "--without-blobs", "--json",
        env=env,
    )  # fmt: skip
    assert taken.returncode == 0, taken.stderr
    assert json.loads(taken.stdout)["blobs"] == {"listed": 1, "included": 0}
    assert archive.stat().st_size < 1 << 20  # the 1 MiB blob is not in it
    refused = edgefleet("central", "restore", str(archive), "--data-dir", str(tmp_path / "r1"), env=env)
    assert refused.returncode == 1 and "taken without 1 of its blobs (--without-blobs)" in refused.stderr
    assert not (tmp_path / "r1").exists()
    shared = small_central / "blobs"  # as a directory every replica mounts would be
    put_back = edgefleet(
        "central", "restore", str(archive), "--data-dir", str(tmp_path / "r2"), "--blobs", str(shared), env=env
    )
    assert put_back.returncode == 0, put_back.stderr
    assert "0 blobs restored" in put_back.stdout


def header_end(data: bytes) -> int:
    return len(ar.MAGIC) + 6 + int.from_bytes(data[len(ar.MAGIC) + 2 : len(ar.MAGIC) + 6], "big")


def damaged_copies(archive: Path, where: Path) -> dict[str, tuple[Path, str]]:
    """Bad archives made from a good one, each with the reason the refusal must give."""
    data = archive.read_bytes()
    start, record = header_end(data), ar.CHUNK_BYTES + ar.TAG_BYTES
    assert len(data) > start + record, "the backup must span two chunks (its blob alone is over 1 MiB)"
    flipped = bytearray(data)
    flipped[start + record + 1000] ^= 0x01
    newer = bytearray(data)
    newer[len(ar.MAGIC) + 1] += 1
    cases = {
        "changed byte": (bytes(flipped), "chunk 1 (at byte"),
        "cut at a chunk boundary": (data[: start + record], "before its final chunk: it was truncated"),
        "cut inside a chunk": (data[: start + record + 777], "the archive was truncated or altered there"),
        "not a backup": (b"SQLite format 3\x00" + bytes(4096), "it is not an edgefleet backup"),
        "newer format": (bytes(newer), "verify or restore it with a newer edgefleet"),
    }
    out = {}
    for name, (content, reason) in cases.items():
        path = where / name.replace(" ", "-")
        path.write_bytes(content)
        out[name] = (path, reason)
    return out


def test_tampered_truncated_and_foreign_files_are_refused_by_verify_and_restore(small_backup, tmp_path):
    env = {ar_env(): PASSPHRASE}
    for name, (path, reason) in damaged_copies(small_backup, tmp_path).items():
        checked = edgefleet("central", "backup", "verify", str(path), env=env)
        assert checked.returncode == 1 and reason in checked.stderr, (name, checked.stderr)
        assert "Traceback" not in checked.stderr, name
        target = tmp_path / f"restore-{path.name}"
        put_back = edgefleet("central", "restore", str(path), "--data-dir", str(target), env=env)
        assert put_back.returncode == 1 and reason in put_back.stderr, (name, put_back.stderr)
        assert "Traceback" not in put_back.stderr, name
        assert not target.exists(), f"{name}: a refused restore left {list(target.iterdir())}"
        assert not list(tmp_path.glob(f".{target.name}.restore-*")), f"{name}: staging left behind"


def test_wrong_passphrase_and_missing_passphrase(small_backup, tmp_path):
    wrong = edgefleet("central", "backup", "verify", str(small_backup), env={ar_env(): PASSPHRASE + "!"})
    assert wrong.returncode == 1 and "the passphrase does not open this backup" in wrong.stderr
    target = tmp_path / "restored"
    put_back = edgefleet(
        "central", "restore", str(small_backup), "--data-dir", str(target), env={ar_env(): PASSPHRASE + "!"}
    )
    assert put_back.returncode == 1 and "the passphrase does not open this backup" in put_back.stderr
    assert not target.exists()
    env = {k: v for k, v in os.environ.items() if k != ar_env()}
    none = subprocess.run(
        [sys.executable, "-m", "central.cli", "central", "backup", "verify", str(small_backup)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert none.returncode == 1 and "sealed with a passphrase: give it with --passphrase-file" in none.stderr


def test_the_passphrase_is_never_taken_from_argv(small_backup, tmp_path):
    for args in (
        ["central", "backup", "--data-dir", str(tmp_path), "--out", str(tmp_path / "x"), "--passphrase", "s3cret-pw"],
        ["central", "backup", "verify", str(small_backup), "--passphrase=s3cret-pw"],
        ["central", "restore", str(small_backup), "--data-dir", str(tmp_path / "r"), "--passphrase", "s3cret-pw"],
    ):
        refused = edgefleet(*args)
        assert refused.returncode == 2, refused.stderr
        assert "never taken from the command line" in refused.stderr
        assert "s3cret-pw" not in refused.stderr + refused.stdout
    assert not (tmp_path / "x").exists() and not (tmp_path / "r").exists()


def test_restore_refuses_a_data_dir_that_is_not_empty(small_backup, tmp_path):
    target = tmp_path / "busy"
    target.mkdir()
    (target / "something").write_text("mine")
    refused = edgefleet("central", "restore", str(small_backup), "--data-dir", str(target), env={ar_env(): PASSPHRASE})
    assert refused.returncode == 1 and "is not empty: restore onto a new or empty directory" in refused.stderr
    assert [p.name for p in target.iterdir()] == ["something"]


def test_backup_sealed_for_a_recipient_key(tmp_path):
    central = start_central(tmp_path / "central")
    try:
        made = edgefleet("central", "backup", "keygen", "--out", str(tmp_path / "backup.key"), "--json")
        assert made.returncode == 0, made.stderr
        keys = json.loads(made.stdout)
        assert (tmp_path / "backup.key").stat().st_mode & 0o777 == 0o600
        again = edgefleet("central", "backup", "keygen", "--out", str(tmp_path / "backup.key"))
        assert again.returncode == 1 and "exists already" in again.stderr
        archive = tmp_path / "sealed.edgefleet-backup"
        taken = edgefleet(
            "central", "backup", "--data-dir", str(central.data_dir), "--out", str(archive),
            "--recipient", keys["recipient"],
        )  # fmt: skip
        assert taken.returncode == 0, taken.stderr
    finally:
        central.stop()
    assert_nothing_in_clear(archive)
    checked = edgefleet("central", "backup", "verify", str(archive), "--identity", keys["identity"])
    assert checked.returncode == 0 and ": OK" in checked.stdout, checked.stderr
    with_passphrase = edgefleet("central", "backup", "verify", str(archive), env={ar_env(): PASSPHRASE})
    assert (
        with_passphrase.returncode == 1 and f"sealed for the recipient key {keys['key_id']}" in with_passphrase.stderr
    )
    assert edgefleet("central", "backup", "keygen", "--out", str(tmp_path / "other.key")).returncode == 0
    wrong = edgefleet("central", "restore", str(archive), "--data-dir", str(tmp_path / "r"), "--identity",
                      str(tmp_path / "other.key"))  # fmt: skip
    assert wrong.returncode == 1 and "not for the identity given" in wrong.stderr
    put_back = edgefleet(
        "central", "restore", str(archive), "--data-dir", str(tmp_path / "r"), "--identity", keys["identity"]
    )
    assert put_back.returncode == 0, put_back.stderr


def test_scheduled_backups_keep_the_newest_n(tmp_path, passphrase_file):
    data_dir = tmp_path / "central"
    initialize(data_dir, "127.0.0.1:0")
    out_dir = tmp_path / "backups"
    out_dir.mkdir()
    (out_dir / "notes.txt").write_text("not a backup: never deleted")
    old = ["central-20200101T000000Z.edgefleet-backup", "central-20210101T000000Z.edgefleet-backup"]
    for name in old:
        (out_dir / name).write_bytes(ar.MAGIC + b"old")  # --keep deletes only what starts as a backup
    taken = edgefleet(
        "central", "backup", "--data-dir", str(data_dir), "--out-dir", str(out_dir), "--keep", "2",
        "--passphrase-file", str(passphrase_file), "--json",
    )  # fmt: skip
    assert taken.returncode == 0, taken.stderr
    result = json.loads(taken.stdout)
    assert result["pruned"] == [old[0]]
    names = sorted(p.name for p in out_dir.iterdir())
    assert names == sorted(["notes.txt", old[1], Path(result["path"]).name])


def test_postgresql_backup_and_restore_into_an_empty_database(tmp_path, postgres_url, passphrase_file):  # noqa: F811
    initialize(tmp_path / "central", "127.0.0.1:0", store=postgres_url)
    central = CentralProcess(tmp_path / "central", ["--no-superlink"]).start()
    restored: CentralProcess | None = None
    try:
        blob = push_model(central, tmp_path)
        node = enroll_node(central, tmp_path / "node")
        beat(node, central.fleet_address)
        archive = tmp_path / "pg.edgefleet-backup"
        taken = edgefleet(
            "central", "backup", "--data-dir", str(central.data_dir), "--out", str(archive),
            "--passphrase-file", str(passphrase_file), "--json",
        )  # fmt: skip
        assert taken.returncode == 0, taken.stderr
        backup = json.loads(taken.stdout)
        assert backup["store"] == "postgresql" and backup["counts"]["nodes"] == 1
        assert_nothing_in_clear(archive)
        checked = edgefleet("central", "backup", "verify", str(archive), "--json", env={ar_env(): PASSPHRASE})
        assert checked.returncode == 0, checked.stderr
        verified = json.loads(checked.stdout)
        assert verified["store_check"].startswith("pg_restore reads the dump")
        assert verified["audit_entries_checked"] == backup["audit_head"]["sequence"] > 0
        central.stop()

        env = {ar_env(): PASSPHRASE}
        target = tmp_path / "restored"
        no_store = edgefleet("central", "restore", str(archive), "--data-dir", str(target), env=env)
        assert no_store.returncode == 1 and "holds a PostgreSQL store: give --store" in no_store.stderr
        occupied = edgefleet(
            "central", "restore", str(archive), "--data-dir", str(target), "--store", postgres_url, env=env
        )
        assert occupied.returncode == 1 and "is not empty" in occupied.stderr and not target.exists()
        with postgres_database() as empty_url:
            put_back = edgefleet(
                "central", "restore", str(archive), "--data-dir", str(target), "--store", empty_url, "--json", env=env
            )
            assert put_back.returncode == 0, put_back.stderr
            result = json.loads(put_back.stdout)
            assert result["restored_entry"] == {
                "sequence": backup["audit_head"]["sequence"] + 1,
                "action": "central.restored",
            }
            assert (target / "store").read_text().strip() == empty_url
            restored = CentralProcess(target, ["--no-superlink"]).start()
            beat(node, restored.fleet_address)
            mark = audit_after(restored, backup["audit_head"]["sequence"])[0]
            assert mark["action"] == "central.restored" and mark["target"] == backup["backup_id"]
            assert audit_intact(restored)
            models = json.loads(edgefleet_cli(restored, "models", "list", "--json"))
            assert [m["sha256"] for m in models] == [blob]
            restored.stop()
    finally:
        central.stop()
        if restored is not None:
            restored.stop()
