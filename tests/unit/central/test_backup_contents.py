"""What goes into a backup and how it is read back, without a central: which data dir files are kept, the manifest's
checks, PostgreSQL COPY text, which scheduled backups --keep deletes, and where the passphrase comes from.

Bad input tried: member paths that climb out of the data dir, a manifest from a newer edgefleet, one listing a file
twice or with a malformed hash, COPY rows of the wrong width and a dump cut inside a table, a passphrase file whose
first line is empty.
"""

from __future__ import annotations

import time
from pathlib import Path, PurePosixPath

import pytest

from central.backup import BackupError
from central.backup import manifest as mf
from central.backup.pgtools import copy_rows
from central.backup.snapshot import BackupSource, data_dir_files, take_backup
from central.backup_commands import backups_to_prune, read_passphrase, scheduled_name
from central.datadir import initialize

KEPT = [
    "ca.key",
    "ca.crt",
    "ca-previous.crt",
    "ca-cross.crt",
    "signing.key",
    "signing.pub",
    "signing-history.json",
    "trust.json",
    "server.key",
    "admin.credential",
    "log-level",
    "retired/ca-2026.key",
    "superlink/results/run-3.json",
]
SKIPPED = [
    "central.db",
    "central.db-wal",
    "central.db-shm",
    "central.db.leader",
    "store",
    "blobs/sha256/ab/abcd",
    "fleet-address",
    "enroll-address",
    "metrics-address",
    "superlink-address",
    "flower/control.key",
    "flwr/state.db",
    "superlink/superlink.key",
    "superlink/flwr/x.db",
    ".ca.key.1a2b3c4d.tmp",
    "flower/superlink.log",
    ".edgefleet-backup-x1y2z3/central.db",
    "../outside",
]


@pytest.mark.parametrize("path", KEPT)
def test_keys_and_rotation_material_are_backed_up(path):
    assert mf.is_backed_up(PurePosixPath(path))


@pytest.mark.parametrize("path", SKIPPED)
def test_the_store_blobs_runtime_files_and_logs_are_not(path):
    assert not mf.is_backed_up(PurePosixPath(path))


def test_data_dir_files_walks_the_real_data_dir(tmp_path):
    paths = initialize(tmp_path / "central", "127.0.0.1:0")
    (paths.root / "retired").mkdir()
    (paths.root / "retired" / "signing-1.pub").write_bytes(b"old key")
    (paths.root / "fleet-address").write_text("127.0.0.1:1")
    (paths.root / "elsewhere").symlink_to("/etc/passwd")
    names = [rel.as_posix() for rel, _ in data_dir_files(paths.root)]
    assert names == [
        "admin.credential",
        "ca.crt",
        "ca.key",
        "retired/signing-1.pub",
        "server.crt",
        "server.key",
        "signing.key",
        "signing.pub",
    ]


@pytest.mark.parametrize("member", ["keys/../escape", "keys//ca.key", "keys/blobs/x", "ca.key", "keys/"])
def test_a_key_member_outside_the_data_dir_is_refused(member):
    with pytest.raises(BackupError, match="outside the data dir"):
        mf.key_path(member)


def _manifest(**changes) -> mf.Manifest:
    fields = dict(
        created_at=1.0,
        central_version="0.1.0",
        store_kind="sqlite",
        ca_fingerprint="sha256:" + "a" * 64,
        signing_key_id="ed25519:" + "b" * 64,
        audit_head_sequence=3,
        audit_head_hash="c" * 64,
        counts=mf.Counts(1, 2, 3, 4),
        files=(mf.FileEntry("central.db", 10, "d" * 64), mf.FileEntry("keys/ca.key", 5, "e" * 64)),
        blobs=(mf.BlobEntry("f" * 64, 7, True), mf.BlobEntry("0" * 64, 9, False)),
    )
    fields.update(changes)
    return mf.Manifest(**fields)  # type: ignore[arg-type]


def test_the_manifest_reads_back_and_lists_what_follows_it():
    manifest = _manifest()
    data = manifest.encode()
    assert mf.parse_manifest(data) == manifest
    assert mf.backup_id(data) == __import__("hashlib").sha256(data).hexdigest()
    assert manifest.expected_members() == {
        "central.db": (10, "d" * 64),
        "keys/ca.key": (5, "e" * 64),
        "blobs/" + "f" * 64: (7, "f" * 64),
    }


@pytest.mark.parametrize(
    ("manifest", "reason"),
    [
        (_manifest(format_version=2), "format 2; this edgefleet reads 1"),
        (_manifest(files=(mf.FileEntry("central.db", 1, "d" * 64),) * 2), "lists a file twice"),
        (_manifest(files=(mf.FileEntry("keys/ca.key", 1, "d" * 64),)), "lists no store"),
        (_manifest(files=(mf.FileEntry("central.db", 1, "D" * 64),)), "malformed size or sha256"),
        (_manifest(files=(mf.FileEntry("central.db", 1, "d" * 64), mf.FileEntry("/etc/x", 1, "d" * 64))), "outside"),
        (_manifest(blobs=(mf.BlobEntry("nope", 1, True),)), "malformed blob"),
    ],
)
def test_a_manifest_that_does_not_hold_is_refused(manifest, reason):
    with pytest.raises(BackupError, match=reason):
        mf.parse_manifest(manifest.encode())


def test_a_manifest_that_is_not_json_is_refused():
    with pytest.raises(BackupError, match="malformed"):
        mf.parse_manifest(b'{"format_version": 1}')


def test_copy_rows_reads_pg_restore_data_with_escapes():
    script = "\n".join(
        [
            "SET statement_timeout = 0;",
            "COPY public.audit (sequence, at, detail, peer) FROM stdin;",
            "1\t1796490466.6751857\ta\\ttab and a\\nnewline and a \\\\ backslash\t\\N",
            "2\t1.5\tocta\\101l and he\\x41x\t",
            "\\.",
            'COPY public."audit_anchors" (sequence, hash) FROM stdin;',
            "\\.",
            "",
        ]
    )
    tables = copy_rows(script)
    assert tables["audit"] == [
        {
            "sequence": "1",
            "at": "1796490466.6751857",
            "detail": "a\ttab and a\nnewline and a \\ backslash",
            "peer": None,
        },
        {"sequence": "2", "at": "1.5", "detail": "octaAl and heAx", "peer": ""},
    ]
    assert tables["audit_anchors"] == []
    assert float(tables["audit"][0]["at"]) == 1796490466.6751857


def test_copy_rows_refuses_rows_of_the_wrong_width_and_a_cut_table():
    with pytest.raises(BackupError, match="a row of 3 fields for 2 columns"):
        copy_rows("COPY public.audit (a, b) FROM stdin;\n1\t2\t3\n\\.\n")
    with pytest.raises(BackupError, match="ends inside a table"):
        copy_rows("COPY public.audit (a, b) FROM stdin;\n1\t2\n")


def test_keep_deletes_only_older_scheduled_backups():
    names = [scheduled_name(t) for t in (1_700_000_000, 1_700_086_400, 1_700_172_800)]
    others = ["notes.txt", "central-latest.edgefleet-backup", "central-20231114T221320Z.edgefleet-backup.tmp"]
    assert backups_to_prune([*names, *others], keep=2) == [names[0]]
    assert backups_to_prune([*names, *others], keep=5) == []
    assert scheduled_name(1_700_000_000) == "central-20231114T221320Z.edgefleet-backup"


def test_the_passphrase_is_the_files_first_line_else_the_environment(tmp_path):
    path = tmp_path / "pass"
    path.write_bytes(b"secret words\r\nsecond line ignored\n")
    assert read_passphrase(path, {}).secret == b"secret words"
    assert read_passphrase(None, {"EDGEFLEET_BACKUP_PASSPHRASE": "from env"}).secret == b"from env"
    assert read_passphrase(None, {}) is None
    path.write_bytes(b"\nsecret on the second line\n")
    with pytest.raises(BackupError, match="passphrase is empty"):
        read_passphrase(path, {})


def test_a_backup_refuses_to_overwrite_or_to_live_in_the_data_dir(tmp_path):
    from central.backup.archive import Passphrase

    paths = initialize(tmp_path / "central", "127.0.0.1:0")
    source = BackupSource(paths.root, str(paths.store))
    existing = tmp_path / "exists"
    existing.write_bytes(b"an older backup")
    with pytest.raises(BackupError, match="exists already"):
        take_backup(source, existing, Passphrase(b"pw"), time.time(), "0")
    with pytest.raises(BackupError, match="inside the data dir"):
        take_backup(source, paths.root / "backup", Passphrase(b"pw"), time.time(), "0")
    assert existing.read_bytes() == b"an older backup"
    assert not list(Path(tmp_path).glob(".edgefleet-backup-*"))
