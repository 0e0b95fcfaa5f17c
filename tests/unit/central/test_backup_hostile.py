"""Archives that authenticate but were not made by `central backup`: anyone holding the recipient's PUBLIC key (or
the passphrase) can seal one. verify and restore must refuse each with its own reason, and a refused restore leaves
nothing behind (no data dir, no staging directory, no parent directory it made).

Tried: tar members that climb out (../, absolute), that are not regular files (symlink, hard link, device, fifo,
directory), a sparse member that would expand to far more than the archive holds, a member twice, a manifest that
lies about a size, a PAX header too large to hold in memory, a store that is not SQLite or not central's, a CA key
that is not the CA certificate's, and manifest fields of the wrong type (strings for numbers, infinity, NaN, a
string for a boolean, a string for the file list).
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import sqlite3
import subprocess
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from central.backup import BackupError
from central.backup import archive as ar
from central.backup.restore import RestoreTarget, restore_file
from central.backup.snapshot import BackupSource, take_backup
from central.backup.verify import verify_file
from central.datadir import initialize


@dataclass
class Contents:
    """A backup's plaintext: the manifest (as JSON) and the members after it, to change and seal again."""

    manifest: dict
    members: list[tuple[tarfile.TarInfo, bytes]] = field(default_factory=list)

    def member(self, name: str) -> tuple[tarfile.TarInfo, bytes]:
        return next(m for m in self.members if m[0].name == name)

    def replace(self, name: str, data: bytes) -> None:
        """Put other bytes in a member, and the manifest's size and sha256 for them: an archive made to fit."""
        self.members = [(regular(name, len(data)), data) if i.name == name else (i, d) for i, d in self.members]
        for entry in self.manifest["files"]:
            if entry["path"] == name:
                entry.update(size=len(data), sha256=hashlib.sha256(data).hexdigest())

    def add(self, info: tarfile.TarInfo, data: bytes = b"", listed: bool = True) -> None:
        self.members.append((info, data))
        if listed:
            digest = hashlib.sha256(data).hexdigest()
            self.manifest["files"].append({"path": info.name, "size": len(data), "sha256": digest})


@dataclass(frozen=True)
class Keys:
    recipient: ar.Recipient
    identity: ar.Identity


@pytest.fixture(scope="module")
def keys() -> Keys:
    private, public = ar.generate_identity()
    return Keys(ar.load_recipient(public), ar.load_identity(private))


@pytest.fixture(scope="module")
def genuine(tmp_path_factory, keys) -> Contents:
    """The contents of a real backup of a freshly initialized central."""
    root = tmp_path_factory.mktemp("genuine")
    paths = initialize(root / "central", "127.0.0.1:0")
    archive = root / "genuine.edgefleet-backup"
    take_backup(BackupSource(paths.root, str(paths.store)), archive, keys.recipient, time.time(), "test")
    with open(archive, "rb") as src:
        reader = ar.ArchiveReader(src, keys.identity)
        with tarfile.open(fileobj=reader, mode="r|") as tar:  # type: ignore[call-overload]
            members = [(m, tar.extractfile(m).read()) for m in tar]  # type: ignore[union-attr]
    assert members[0][0].name == "manifest.json"
    return Contents(json.loads(members[0][1]), members[1:])


@pytest.fixture
def contents(genuine) -> Contents:
    return copy.deepcopy(genuine)


def seal(contents: Contents, recipient: ar.Recipient, path: Path, manifest_bytes: bytes | None = None) -> Path:
    body = manifest_bytes if manifest_bytes is not None else json.dumps(contents.manifest).encode()
    plain = io.BytesIO()
    with tarfile.open(fileobj=plain, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("manifest.json")
        info.size = len(body)
        tar.addfile(info, io.BytesIO(body))
        for info, data in contents.members:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return seal_plaintext(plain.getvalue(), recipient, path)


def seal_plaintext(plaintext: bytes, recipient: ar.Recipient, path: Path) -> Path:
    with open(path, "wb") as out:
        writer = ar.ArchiveWriter(out, recipient)
        writer.write(plaintext)
        writer.close()
    return path


def refused_by_both(archive: Path, keys: Keys, tmp_path: Path, reason: str) -> None:
    """verify and restore both refuse `archive` naming `reason`; the restore leaves nothing behind."""
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    with pytest.raises(BackupError, match=reason):
        verify_file(archive, keys.identity, scratch)
    target = tmp_path / "restored" / "central"
    with pytest.raises(BackupError, match=reason):
        restore_file(archive, keys.identity, RestoreTarget(target), time.time())
    assert not target.parent.exists(), "the restore left the staging, or the parent directory it made"


def regular(name: str, size: int = 0) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mode = size, 0o600
    return info


def test_the_genuine_contents_sealed_again_restore(contents, keys, tmp_path):
    """The forging itself is sound: unchanged contents, sealed by the test, verify and restore."""
    archive = seal(contents, keys.recipient, tmp_path / "same")
    verify_file(archive, keys.identity, tmp_path)
    result = restore_file(archive, keys.identity, RestoreTarget(tmp_path / "r" / "central"), time.time())
    assert (result.data_dir / "ca.key").stat().st_mode & 0o777 == 0o600
    assert (result.data_dir / "central.db").stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("keys/../escape", "outside the data dir"),
        ("/etc/cron.d/edgefleet", "outside the data dir"),
        ("keys//etc/passwd", "outside the data dir"),
        ("keys/./ca.key", "outside the data dir"),
        ("keys/store.pgdump", "outside the data dir"),
    ],
)
def test_member_paths_that_leave_the_data_dir(contents, keys, tmp_path, name, reason):
    contents.add(regular(name, 4), b"evil")
    refused_by_both(seal(contents, keys.recipient, tmp_path / "a"), keys, tmp_path, reason)


def _special(kind: bytes, name: str = "keys/extra.key") -> tarfile.TarInfo:
    info = regular(name)
    info.type = kind
    info.linkname = "/etc/shadow" if kind in (tarfile.SYMTYPE, tarfile.LNKTYPE) else ""
    return info


@pytest.mark.parametrize(
    "kind", [tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.CHRTYPE, tarfile.FIFOTYPE, tarfile.DIRTYPE, tarfile.CONTTYPE]
)
def test_members_that_are_not_regular_files(contents, keys, tmp_path, kind):
    contents.add(_special(kind), b"")
    refused_by_both(seal(contents, keys.recipient, tmp_path / "a"), keys, tmp_path, "not a regular file")


def test_a_symlink_in_place_of_a_listed_key(contents, keys, tmp_path):
    info, _ = contents.member("keys/ca.key")
    contents.members = [(i, d) for i, d in contents.members if i.name != "keys/ca.key"]
    contents.members.append((_special(tarfile.SYMTYPE, "keys/ca.key"), b""))
    assert info.name == "keys/ca.key"
    refused_by_both(seal(contents, keys.recipient, tmp_path / "a"), keys, tmp_path, "not a regular file")


def test_a_member_twice(contents, keys, tmp_path):
    info, data = contents.member("keys/ca.crt")
    contents.members.append((info, data))
    refused_by_both(seal(contents, keys.recipient, tmp_path / "a"), keys, tmp_path, "keys/ca.crt. twice")


def test_a_manifest_that_lies_about_a_size(contents, keys, tmp_path):
    next(e for e in contents.manifest["files"] if e["path"] == "central.db")["size"] += 1
    refused_by_both(seal(contents, keys.recipient, tmp_path / "a"), keys, tmp_path, "the manifest says")


def test_a_sparse_store_that_would_expand_past_the_archive(contents, keys, tmp_path):
    """A PAX sparse member: no data in the archive, 64 MiB of zeros when read. Refused before anything is written."""
    huge = 64 << 20
    contents.members = [(i, d) for i, d in contents.members if i.name != "central.db"]
    info = regular("central.db")
    info.pax_headers = {"GNU.sparse.map": "0,0", "GNU.sparse.size": str(huge)}
    contents.members.insert(0, (info, b""))
    entry = next(e for e in contents.manifest["files"] if e["path"] == "central.db")
    entry.update(size=huge, sha256=hashlib.sha256(bytes(huge)).hexdigest())
    refused_by_both(seal(contents, keys.recipient, tmp_path / "a"), keys, tmp_path, "sparse")


def test_a_pax_header_too_large_to_hold(contents, keys, tmp_path):
    info = regular("keys/extra.key", 4)
    info.pax_headers = {"comment": "x" * (2 << 20)}
    contents.add(info, b"evil")
    refused_by_both(seal(contents, keys.recipient, tmp_path / "a"), keys, tmp_path, "tar header of")


def test_a_key_file_too_large_to_hold(contents, keys, tmp_path):
    from central.backup.snapshot import MAX_KEY_FILE_BYTES

    contents.add(regular("keys/huge.key", MAX_KEY_FILE_BYTES + 1), bytes(MAX_KEY_FILE_BYTES + 1))
    refused_by_both(seal(contents, keys.recipient, tmp_path / "a"), keys, tmp_path, "larger than")


def test_a_store_that_is_not_sqlite(contents, keys, tmp_path):
    contents.replace("central.db", b"#!/bin/sh\nrm -rf /\n" * 1000)
    refused_by_both(seal(contents, keys.recipient, tmp_path / "a"), keys, tmp_path, "not a readable SQLite file")


def test_a_sqlite_store_that_is_not_centrals(contents, keys, tmp_path):
    """Only the audit tables, empty, so the audit checks pass: central's own store must be refused all the same,
    before anything reaches the data dir."""
    made = tmp_path / "other.db"
    conn = sqlite3.connect(made)
    conn.executescript(
        "CREATE TABLE audit (sequence INTEGER PRIMARY KEY, at REAL, actor TEXT, action TEXT, target TEXT,"
        " outcome TEXT, detail TEXT, peer TEXT, previous_hash TEXT, hash TEXT);"
        "CREATE TABLE audit_anchors (sequence INTEGER, hash TEXT, at REAL, signature TEXT);"
    )
    conn.close()
    from central.audit import GENESIS_HASH

    contents.manifest["audit_head"] = {"sequence": 0, "hash": GENESIS_HASH}
    contents.replace("central.db", made.read_bytes())
    refused_by_both(seal(contents, keys.recipient, tmp_path / "a"), keys, tmp_path, "not a central store")


def test_a_ca_key_that_is_not_the_certificates(contents, keys, tmp_path):
    """A forger holds the fleet's CA certificate (it is public) but not its key: the pair must match."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    other = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    contents.replace("keys/ca.key", other)
    refused_by_both(seal(contents, keys.recipient, tmp_path / "a"), keys, tmp_path, "ca.key is not the key of")


def _manifest_with(genuine: Contents, path: list, value) -> bytes:
    body = copy.deepcopy(genuine.manifest)
    where = body
    for step in path[:-1]:
        where = where[step]
    where[path[-1]] = value
    return json.dumps(body).encode()


@pytest.mark.parametrize(
    ("path", "value", "reason"),
    [
        (["files", 0, "size"], "12", "size"),
        (["files", 0, "size"], True, "size"),
        (["files", 0, "size"], 1.5, "size"),
        (["files", 0, "size"], -1, "size"),
        (["created_at"], "yesterday", "created_at"),
        (["created_at"], float("inf"), "created_at"),
        (["created_at"], float("nan"), "created_at"),
        (["counts", "nodes"], "7", "nodes"),
        (["audit_head", "sequence"], 1e400, "sequence"),
        (["audit_head"], [1, "x"], "audit_head"),
        (["files"], "central.db", "files"),
        (["central_version"], {"x": 1}, "central_version"),
        (["store"], ["sqlite"], "store"),
    ],
)
def test_manifest_fields_of_the_wrong_type(genuine, keys, tmp_path, path, value, reason):
    if path[:2] == ["files", 0]:  # the store's entry
        path = ["files", next(i for i, e in enumerate(genuine.manifest["files"]) if e["path"] == "central.db"), path[2]]
    archive = seal(genuine, keys.recipient, tmp_path / "a", _manifest_with(genuine, path, value))
    refused_by_both(archive, keys, tmp_path, f"manifest.*{reason}")


def test_a_blob_listed_as_included_by_a_string(genuine, keys, tmp_path):
    body = copy.deepcopy(genuine.manifest)
    body["blobs"] = [{"sha256": "0" * 64, "size": 1, "included": "false"}]
    archive = seal(genuine, keys.recipient, tmp_path / "a", json.dumps(body).encode())
    refused_by_both(archive, keys, tmp_path, "manifest.*included")


def test_a_postgresql_dump_whose_audit_rows_decompress_without_bound(tmp_path):
    """pg_dump compresses: 96 MiB of audit detail is a dump of a few hundred KiB. Reading its rows is refused
    once they pass 16 times the dump's size (+64 MiB), before they fill memory."""
    import psycopg

    from central.backup import pgtools
    from postgres_db import postgres_database

    with postgres_database() as url:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE TABLE audit (sequence bigint, detail text)")
            conn.execute("INSERT INTO audit SELECT n, repeat('x', 2 << 20) FROM generate_series(1, 48) AS n")
        dump = tmp_path / "store.pgdump"
        conninfo, env = pgtools.conninfo_and_env(url)
        subprocess.run(["pg_dump", "--format=custom", f"--file={dump}", f"--dbname={conninfo}"], env=env, check=True)
    assert dump.stat().st_size < 4 << 20
    with pytest.raises(BackupError, match="decompress to more than"):
        pgtools.table_rows(dump, ("audit",))
