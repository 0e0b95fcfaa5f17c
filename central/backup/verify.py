"""Reading a backup back: every chunk authenticated, every member checked against the manifest, and the store
snapshot checked (SQLite's integrity_check, or pg_restore reading the dump) with its audit chain up to the head
the manifest names. `central backup verify` and `central restore` both read through :func:`read_backup`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sqlite3
import tarfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from central.audit import AuditAnchor, AuditEntry, verify_chain
from central.backup import BackupError, CountingFile, ProgressFactory, pgtools
from central.backup import archive as ar
from central.backup.manifest import (
    BLOBS_DIR,
    KEYS_DIR,
    MANIFEST_NAME,
    MAX_MANIFEST_BYTES,
    BlobEntry,
    Manifest,
    backup_id,
    key_path,
    parse_manifest,
)

_COPY_BYTES = 1 << 20
# A PAX or GNU long-name header is read whole into memory by tarfile; a backup's are a few hundred bytes.
MAX_TAR_HEADER_BYTES = 1 << 20
_LONG_HEADERS = (tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE, tarfile.GNUTYPE_LONGNAME,
                 tarfile.GNUTYPE_LONGLINK)  # fmt: skip


class _BoundedTarInfo(tarfile.TarInfo):
    """Refuses, as tarfile reads them, the headers a backup never holds that make tarfile read or build without
    bound: an extended header larger than MAX_TAR_HEADER_BYTES, and sparse members (a few bytes in the archive that
    read back as terabytes of zeros). The _proc_gnusparse_* overrides are tarfile's hooks for PAX sparse maps;
    _walk checks `sparse` again in case a Python renames them."""

    @classmethod
    def frombuf(cls, buf, encoding, errors):
        info = super().frombuf(buf, encoding, errors)
        if info.type in _LONG_HEADERS and info.size > MAX_TAR_HEADER_BYTES:
            raise BackupError(
                f"the backup holds a tar header of {info.size} bytes, more than the {MAX_TAR_HEADER_BYTES} bytes"
                " a backup's headers take: it was not written by edgefleet"
            )
        if info.type == tarfile.GNUTYPE_SPARSE:
            _refuse_sparse(info.name)
        return info

    # tarfile's names; the parameters after `next` differ between Pythons.
    def _proc_gnusparse_00(self, next, *args):
        _refuse_sparse(next.name)

    def _proc_gnusparse_01(self, next, *args):
        _refuse_sparse(next.name)

    def _proc_gnusparse_10(self, next, *args):
        _refuse_sparse(next.name)


def _refuse_sparse(name: str) -> None:
    raise BackupError(
        f"{name!r} in the backup is a sparse file, which a backup never holds: it was not written by edgefleet"
    )


class BlobSink:
    """Where restore puts blobs as they are read: begin() returns a writer (write/commit/abort) or None to skip."""

    def begin(self, blob: BlobEntry):  # pragma: no cover - the interface
        raise NotImplementedError


@dataclass
class ReadBackup:
    """What reading an archive found; the store snapshot is left at `store_file` for the checks."""

    manifest: Manifest
    backup_id: str
    store_file: Path
    key_files: dict[PurePosixPath, bytes] = field(default_factory=dict)
    blobs_read: int = 0
    chunks: int = 0
    plaintext_bytes: int = 0
    archive_bytes: int = 0


@dataclass(frozen=True)
class SnapshotCheck:
    integrity: str  # what was checked of the store file, in words
    audit_entries_checked: int
    anchor_sequence: int  # 0 when the log was never pruned


def read_backup(src: BinaryIO, opener: ar.Opener | None, staging: Path, blobs: BlobSink | None = None) -> ReadBackup:
    """Decrypt and walk the archive: the store snapshot goes to `staging`, keys into memory, blobs to `blobs`
    (hashed and dropped when None). Raises ArchiveError or BackupError at the first thing that is wrong."""
    reader = ar.ArchiveReader(src, opener)
    try:
        with tarfile.open(fileobj=reader, mode="r|", tarinfo=_BoundedTarInfo) as tar:  # type: ignore[call-overload]
            read = _walk(tar, staging, blobs)
    except (tarfile.TarError, UnicodeError, ValueError, EOFError) as exc:
        # tarfile parsing authenticated but hostile headers raises more than TarError (ValueError on a bad number).
        raise BackupError(f"the backup's contents are not a tar stream this edgefleet writes: {exc}") from None
    reader.read_to_end()  # the final chunk authenticated: nothing was cut off after the tar's end
    read.chunks, read.plaintext_bytes = reader.chunks, reader.plaintext_bytes
    return read


def read_with_progress(
    src: BinaryIO,
    opener: ar.Opener | None,
    staging: Path,
    blobs: BlobSink | None,
    progress: ProgressFactory | None,
    label: str,
) -> ReadBackup:
    """read_backup, showing `progress` the archive's bytes as they are read."""
    if progress is None:
        return read_backup(src, opener, staging, blobs)
    counted = CountingFile(src, progress(label, os.fstat(src.fileno()).st_size))
    read = read_backup(counted, opener, staging, blobs)  # type: ignore[arg-type]
    counted.done()
    return read


def _walk(tar: tarfile.TarFile, staging: Path, blobs: BlobSink | None) -> ReadBackup:
    first = tar.next()
    if first is None or first.name != MANIFEST_NAME or not first.isreg() or first.size > MAX_MANIFEST_BYTES:
        raise BackupError(f"the backup does not begin with its {MANIFEST_NAME}")
    manifest_bytes = _member_bytes(tar, first)
    manifest = parse_manifest(manifest_bytes)
    read = ReadBackup(manifest, backup_id(manifest_bytes), staging / manifest.store_member)
    expected = manifest.expected_members()
    blob_entries = {f"{BLOBS_DIR}/{b.sha256}": b for b in manifest.blobs if b.included}
    seen: set[str] = set()
    while (member := tar.next()) is not None:  # not `for member in tar`: that starts again at the manifest
        name = member.name
        if member.type not in (tarfile.REGTYPE, tarfile.AREGTYPE) or member.sparse is not None:
            raise BackupError(
                f"{name!r} in the backup is not a regular file ({_kind(member)}): a backup holds no other"
            )
        if name in seen:
            raise BackupError(f"the backup holds {name!r} twice")
        if name not in expected:
            raise BackupError(f"the backup holds {name!r}, which its manifest does not list")
        seen.add(name)
        size, sha256 = expected[name]
        if member.size != size:
            raise BackupError(f"{name} holds {member.size} bytes; the manifest says {size}")
        if name == manifest.store_member:
            with open(os.open(read.store_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as out:
                _check(name, sha256, _copy(tar, member, out.write))
        elif name.startswith(KEYS_DIR + "/"):
            data = _member_bytes(tar, member)
            _check(name, sha256, hashlib.sha256(data).hexdigest())
            read.key_files[key_path(name)] = data
        else:
            _read_blob(tar, member, blob_entries[name], blobs)
            read.blobs_read += 1
    missing = sorted(set(expected) - seen)
    if missing:
        raise BackupError(f"the backup ends without {', '.join(missing[:3])} (its manifest lists {len(missing)} more)")
    return read


def _kind(member: tarfile.TarInfo) -> str:
    if member.sparse is not None:
        return "a sparse file"
    kinds = {
        tarfile.SYMTYPE: "a symbolic link",
        tarfile.LNKTYPE: "a hard link",
        tarfile.DIRTYPE: "a directory",
        tarfile.CHRTYPE: "a character device",
        tarfile.BLKTYPE: "a block device",
        tarfile.FIFOTYPE: "a FIFO",
    }
    return kinds.get(member.type, f"tar type {member.type!r}")


def _read_blob(tar: tarfile.TarFile, member: tarfile.TarInfo, blob: BlobEntry, blobs: BlobSink | None) -> None:
    writer = blobs.begin(blob) if blobs is not None else None
    try:
        digest = _copy(tar, member, writer.write if writer is not None else None)
        _check(member.name, blob.sha256, digest)
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    if writer is not None:
        stored, _ = writer.commit()
        if stored != blob.sha256:
            raise BackupError(f"the blob store stored {member.name} as {stored}")


def _check(name: str, expected: str, actual: str) -> None:
    if actual != expected:
        raise BackupError(f"{name} does not match the sha256 its manifest gives")


def _member_bytes(tar: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    parts: list[bytes] = []
    _copy(tar, member, parts.append)
    return b"".join(parts)


def _copy(tar: tarfile.TarFile, member: tarfile.TarInfo, write: Callable[[bytes], object] | None) -> str:
    f = tar.extractfile(member)
    if f is None:
        raise BackupError(f"{member.name} in the backup is not a file")
    digest = hashlib.sha256()
    while True:
        try:
            block = f.read(_COPY_BYTES)
        except OSError as exc:  # tarfile's "unexpected end of data": the tar says more than the archive holds
            raise BackupError(
                f"{member.name} is cut short inside the backup ({exc}): it was not written by edgefleet"
            ) from None
        if not block:
            return digest.hexdigest()
        digest.update(block)
        if write is not None:
            write(block)


# -- checking the snapshot ----------------------------------------------------------------------------------------


def check_snapshot(read: ReadBackup) -> SnapshotCheck:
    """The store snapshot is sound and its audit chain intact up to the manifest's head (refuses otherwise)."""
    manifest = read.manifest
    if manifest.store_kind == "sqlite":
        integrity = _sqlite_integrity(read.store_file)
        migrations = _sqlite_migrations(read.store_file)
        entries, anchor = _sqlite_audit(read.store_file)
    else:
        toc = pgtools.list_contents(read.store_file)
        integrity = f"pg_restore reads the dump ({sum(1 for line in toc if line and not line.startswith(';'))} items)"
        tables = pgtools.table_rows(read.store_file, (*pgtools.AUDIT_TABLES, "schema_migrations"))
        migrations = _postgres_migrations(tables)
        entries, anchor = _postgres_audit(tables)
    _check_migrations(manifest, migrations)
    head = (entries[-1].sequence, entries[-1].hash) if entries else ((anchor.sequence, anchor.hash) if anchor else None)
    from central.audit import GENESIS_HASH

    head = head or (0, GENESIS_HASH)
    if head != (manifest.audit_head_sequence, manifest.audit_head_hash):
        raise BackupError(
            f"the store's audit log ends at entry {head[0]}, but the manifest names entry"
            f" {manifest.audit_head_sequence} as its head"
        )
    try:
        check = _verify_audit(entries, anchor, _signing_keys(read.key_files))
    except (TypeError, ValueError, AttributeError) as exc:  # columns of the wrong type in a store not central's
        raise BackupError(f"the audit log in the backup's store cannot be checked: {exc}") from None
    if not check.intact:
        raise BackupError(
            f"the audit chain in the backup is broken at entry {check.first_bad_sequence}: {check.problem}"
        )
    _check_ca(read)
    return SnapshotCheck(integrity, check.entries_checked, anchor.sequence if anchor else 0)


def _verify_audit(entries: list[AuditEntry], anchor: AuditAnchor | None, keys: list[bytes]):
    """verify_chain with each signing key the backup holds (an anchor may predate a key rotation)."""
    check = verify_chain(entries, anchor, keys[0] if keys else b"")
    for key in keys[1:]:
        if check.intact:
            break
        check = verify_chain(entries, anchor, key)
    return check


def _signing_keys(key_files: dict[PurePosixPath, bytes]) -> list[bytes]:
    """signing.pub first, then every other Ed25519 public key PEM the data dir kept (rotation history)."""
    keys = [key_files[PurePosixPath("signing.pub")]] if PurePosixPath("signing.pub") in key_files else []
    for path, data in sorted(key_files.items()):
        if path.name == "signing-history.json":
            keys.extend(_pems_in(data))
        elif path.suffix == ".pub" and path != PurePosixPath("signing.pub"):
            keys.append(data)
    return keys


def _pems_in(data: bytes) -> list[bytes]:
    """Every string holding a public key PEM anywhere in a JSON document."""
    found: list[bytes] = []

    def walk(value: object) -> None:
        if isinstance(value, str) and "BEGIN PUBLIC KEY" in value:
            found.append(value.encode())
        elif isinstance(value, dict):
            for v in value.values():
                walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)

    with contextlib.suppress(ValueError, RecursionError):
        walk(json.loads(data))
    return found


def _check_ca(read: ReadBackup) -> None:
    """ca.crt is the CA the manifest names and ca.key its key. A recipient-key archive can be sealed by anyone
    with the public key, but only the fleet CA's holder can pair its key with its certificate: the fingerprint
    verify and restore print is then the fleet's own."""
    from cryptography.hazmat.primitives import serialization

    from central.datadir import CentralPaths
    from edgefleet import pki

    paths = CentralPaths(Path("."))
    needed = (paths.ca_key, paths.ca_cert, paths.signing_key, paths.server_key, paths.server_cert)
    missing = [p.name for p in needed if PurePosixPath(p.name) not in read.key_files]
    if missing:
        raise BackupError(f"the backup holds no {', '.join(missing)}: it cannot restore a central")
    ca, key = read.key_files[PurePosixPath("ca.crt")], read.key_files[PurePosixPath("ca.key")]
    try:
        cert, private = pki.load_certificate(ca), pki.load_private_key(key)
    except pki.PkiError as exc:
        raise BackupError(f"the backup's fleet CA cannot be read: {exc}") from None
    if pki.fingerprint(cert) != read.manifest.ca_fingerprint:
        raise BackupError("the backup's ca.crt is not the CA its manifest names")
    spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    if private.public_key().public_bytes(*spki) != cert.public_key().public_bytes(*spki):
        raise BackupError(f"the backup's ca.key is not the key of its ca.crt ({read.manifest.ca_fingerprint})")


def _check_migrations(manifest: Manifest, applied: list[int]) -> None:
    """The snapshot is central's store (it records schema migrations) and no newer than this edgefleet's: an
    older central would open a newer store without knowing what its migrations changed."""
    if manifest.store_kind == "sqlite":
        from central.store.sqlite import _MIGRATIONS
    else:
        from central.store.postgres import _MIGRATIONS
    if not applied:
        raise BackupError("the store in the backup is not a central store: it records no schema migrations")
    newest = max(v for v, _ in _MIGRATIONS)
    if max(applied) > newest:
        raise BackupError(
            f"the store in the backup has schema migration {max(applied)}, newer than this edgefleet's {newest}:"
            f" restore it with edgefleet {manifest.central_version} (which took it) or newer"
        )


def _sqlite_migrations(path: Path) -> list[int]:
    try:
        conn = sqlite3.connect(read_only_uri(path), uri=True)
        try:
            return [int(r[0]) for r in conn.execute("SELECT version FROM schema_migrations")]
        finally:
            conn.close()
    except sqlite3.Error:
        return []
    except (TypeError, ValueError) as exc:
        raise BackupError(f"the store in the backup records malformed schema migrations: {exc}") from None


def _postgres_migrations(tables: dict[str, list[pgtools.Row]]) -> list[int]:
    try:
        return [int(_field(r, "version")) for r in tables.get("schema_migrations", [])]
    except (ValueError, KeyError) as exc:
        raise BackupError(f"the PostgreSQL dump records malformed schema migrations: {exc}") from None


def read_only_uri(path: Path) -> str:
    """A SQLite URI opening `path` read-only; as_uri() quotes what a URI would misread (?, #, %)."""
    return f"{path.resolve().as_uri()}?mode=ro"


def _sqlite_integrity(path: Path) -> str:
    try:
        conn = sqlite3.connect(read_only_uri(path), uri=True)
        try:
            rows = [r[0] for r in conn.execute("PRAGMA integrity_check").fetchall()]
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise BackupError(f"the store in the backup is not a readable SQLite file: {exc}") from None
    if rows != ["ok"]:
        raise BackupError(f"the store in the backup fails SQLite's integrity_check: {'; '.join(rows[:3])}")
    return "SQLite integrity_check ok"


_AUDIT_COLUMNS = "sequence, at, actor, action, target, outcome, detail, peer, previous_hash, hash"


def _sqlite_audit(path: Path) -> tuple[list[AuditEntry], AuditAnchor | None]:
    conn = sqlite3.connect(read_only_uri(path), uri=True)
    try:
        entries = [AuditEntry(*row) for row in conn.execute(f"SELECT {_AUDIT_COLUMNS} FROM audit ORDER BY sequence")]
        row = conn.execute("SELECT sequence, hash, at, signature FROM audit_anchors ORDER BY sequence DESC LIMIT 1")
        anchor = row.fetchone()
    except sqlite3.Error as exc:
        raise BackupError(f"cannot read the audit log in the backup's store: {exc}") from None
    finally:
        conn.close()
    return entries, AuditAnchor(*anchor) if anchor else None


def _postgres_audit(tables: dict[str, list[pgtools.Row]]) -> tuple[list[AuditEntry], AuditAnchor | None]:
    try:
        entries = [
            AuditEntry(
                sequence=int(_field(r, "sequence")),
                at=float(_field(r, "at")),  # PostgreSQL 12+ prints the shortest text that reads back the same double
                actor=_field(r, "actor"),
                action=_field(r, "action"),
                target=_field(r, "target"),
                outcome=_field(r, "outcome"),
                detail=_field(r, "detail"),
                peer=_field(r, "peer"),
                previous_hash=_field(r, "previous_hash"),
                hash=_field(r, "hash"),
            )
            for r in tables.get("audit", [])
        ]
        entries.sort(key=lambda e: e.sequence)
        anchors = [
            AuditAnchor(int(_field(r, "sequence")), _field(r, "hash"), float(_field(r, "at")), _field(r, "signature"))
            for r in tables.get("audit_anchors", [])
        ]
    except (ValueError, KeyError) as exc:
        raise BackupError(f"cannot read the audit log in the backup's PostgreSQL dump: {exc}") from None
    return entries, max(anchors, key=lambda a: a.sequence) if anchors else None


def _field(row: pgtools.Row, column: str) -> str:
    value = row[column]
    if value is None:
        raise ValueError(f"{column} is NULL")
    return value


@dataclass(frozen=True)
class VerifyReport:
    backup_id: str
    manifest: Manifest
    archive_bytes: int
    chunks: int
    blobs_read: int
    snapshot: SnapshotCheck
    seconds: float


def verify_file(
    path: Path, opener: ar.Opener | None, scratch: Path, progress: ProgressFactory | None = None
) -> VerifyReport:
    """Check the backup at `path` without restoring it; `scratch` is an empty private directory for the store."""
    started = time.monotonic()
    with open(path, "rb") as src:
        read = read_with_progress(src, opener, scratch, None, progress, "verifying")
    snapshot = check_snapshot(read)
    return VerifyReport(
        read.backup_id,
        read.manifest,
        path.stat().st_size,
        read.chunks,
        read.blobs_read,
        snapshot,
        time.monotonic() - started,
    )
