"""Taking a backup while central serves: a consistent snapshot of the store, the keys and the blobs, encrypted.

- SQLite: the online backup API (``sqlite3.Connection.backup``) copies central.db in one step under one read
  transaction, so the copy is the store as of one commit while central goes on writing (WAL: readers do not
  block writers).
- PostgreSQL: a REPEATABLE READ transaction exports its snapshot; the manifest's counts and audit head are read
  in it and ``pg_dump --snapshot`` dumps exactly that state.
- keys/: every regular file of the data dir that :func:`central.backup.manifest.is_backed_up` keeps, read once
  into memory (small files) so the bytes hashed are the bytes archived.
- blobs: those the snapshot's models name, from the same blob store central serves (local or S3), each checked
  against its sha256 as it is copied; ``--without-blobs`` lists them only, for blob stores backed up apart.

The store's plaintext snapshot is made in a private directory in the data dir; the archive is written to a
temporary file beside the output (0600) and renamed into place once whole.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import sqlite3
import tarfile
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from central.backup import BackupError, CountingFile, ProgressFactory, pgtools
from central.backup import archive as ar
from central.backup.manifest import (
    MANIFEST_NAME,
    MAX_KEY_FILE_BYTES,
    SNAPSHOT_PREFIX,
    STORE_NAMES,
    BlobEntry,
    Counts,
    FileEntry,
    Manifest,
    backup_id,
    blob_member,
    is_backed_up,
    key_member,
)
from central.backup.verify import read_only_uri
from central.store import display_store, is_postgres

_COPY_BYTES = 1 << 20


@dataclass(frozen=True)
class BackupSource:
    data_dir: Path
    store_spec: str  # a SQLite file's path or a postgresql:// URL (central.datadir.store_spec)
    blobs_spec: str = ""  # as `central serve --blobs`: "" for <data-dir>/blobs
    with_blobs: bool = True


@dataclass(frozen=True)
class BackupResult:
    path: Path
    backup_id: str
    manifest: Manifest
    archive_bytes: int
    seconds: float


@dataclass(frozen=True)
class StoreFacts:
    counts: Counts
    audit_head_sequence: int
    audit_head_hash: str
    blobs: tuple[tuple[str, int], ...]  # (sha256, size) of every blob a model names


def store_facts(conn) -> StoreFacts:
    """Counts, audit head and blob list from a DB-API connection to either store (the same tables and SQL)."""

    def one(sql: str):
        return conn.execute(sql).fetchone()

    counts = Counts(
        *(int(one(f"SELECT count(*) FROM {table}")[0]) for table in ("nodes", "reports", "audit", "models"))
    )
    head = one("SELECT sequence, hash FROM audit ORDER BY sequence DESC LIMIT 1")
    if head is None:  # an empty log, or every entry pruned behind an anchor
        head = one("SELECT sequence, hash FROM audit_anchors ORDER BY sequence DESC LIMIT 1")
    from central.audit import GENESIS_HASH

    sequence, hash_ = (int(head[0]), str(head[1])) if head else (0, GENESIS_HASH)
    blobs = conn.execute("SELECT sha256, max(size) FROM models GROUP BY sha256 ORDER BY sha256").fetchall()
    return StoreFacts(counts, sequence, hash_, tuple((str(s), int(n)) for s, n in blobs))


def snapshot_sqlite(store: Path, dest: Path) -> StoreFacts:
    if not store.is_file():
        raise BackupError(f"the store {store} does not exist: is this central's data dir?")
    try:
        source = sqlite3.connect(read_only_uri(store), uri=True)
        try:
            target = sqlite3.connect(dest)
            try:
                source.backup(target)  # pages=-1: the whole file in one step, one read transaction
            finally:
                target.close()
        finally:
            source.close()
        snapshot = sqlite3.connect(read_only_uri(dest), uri=True)
        try:
            return store_facts(snapshot)
        finally:
            snapshot.close()
    except sqlite3.Error as exc:
        raise BackupError(f"cannot snapshot the store {store}: {exc}") from None


def snapshot_postgres(url: str, dest: Path) -> StoreFacts:
    import psycopg

    try:
        with psycopg.connect(url, connect_timeout=10) as conn:
            conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            conn.read_only = True
            snapshot_id = conn.execute("SELECT pg_export_snapshot()").fetchone()[0]  # type: ignore[index]
            facts = store_facts(conn)
            pgtools.dump(url, snapshot_id, dest)  # while this transaction, and so its snapshot, stays open
            conn.rollback()
            return facts
    except psycopg.Error as exc:
        raise BackupError(f"cannot snapshot the store {display_store(url)}: {' '.join(str(exc).split())}") from None


def data_dir_files(root: Path, skip: tuple[Path, ...] = ()) -> list[tuple[PurePosixPath, bytes]]:
    """(path under the data dir, bytes) of every file that goes into keys/, sorted; symlinks are not followed."""
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if here / d not in skip and not (here / d).is_symlink())
        for name in sorted(filenames):
            path = here / name
            relative = PurePosixPath(path.relative_to(root).as_posix())
            if path in skip or path.is_symlink() or not path.is_file() or not is_backed_up(relative):
                continue
            if path.stat().st_size > MAX_KEY_FILE_BYTES:
                raise BackupError(f"{path} is larger than {MAX_KEY_FILE_BYTES >> 20} MiB: not a key or certificate")
            files.append((relative, path.read_bytes()))
    return sorted(files, key=lambda item: item[0].as_posix())


def signing_key_id(root: Path) -> str:
    from edgefleet.trust import key_id

    return key_id((root / "signing.pub").read_bytes())


def ca_fingerprint(root: Path) -> str:
    from edgefleet import pki

    return pki.fingerprint(pki.load_certificate((root / "ca.crt").read_bytes()))


def take_backup(
    source: BackupSource,
    out: Path,
    sealer: ar.Sealer,
    now: float,
    version: str,
    chunk_bytes: int = ar.CHUNK_BYTES,
    progress: ProgressFactory | None = None,
) -> BackupResult:
    """Write an encrypted backup of `source` to `out` (which must not exist); `progress` is shown the bytes
    archived against what the manifest lists."""
    from central.blobs import open_blob_store
    from central.datadir import CentralPaths, require_initialized

    started = time.monotonic()
    paths = CentralPaths(source.data_dir)
    require_initialized(paths)
    out = out.resolve()
    if out.exists():
        raise BackupError(f"{out} exists already: give a new file name (a backup never overwrites one)")
    if out.is_relative_to(paths.root.resolve()):
        raise BackupError(f"{out} is inside the data dir {paths.root}: a backup must live apart from what it saves")
    if not out.parent.is_dir():
        state = "is not a directory" if out.parent.exists() else "does not exist"
        raise BackupError(f"{out.parent} {state}: the backup's directory must be there already")
    kind = "postgresql" if is_postgres(source.store_spec) else "sqlite"
    with (
        _snapshot_dir(paths.root, out.parent) as snapshot_dir,
        tempfile.TemporaryDirectory(prefix=SNAPSHOT_PREFIX, dir=out.parent) as tmp,
    ):
        store_file = snapshot_dir / STORE_NAMES[kind]
        if kind == "postgresql":
            facts = snapshot_postgres(source.store_spec, store_file)
        else:
            facts = snapshot_sqlite(Path(source.store_spec), store_file)
        keys = data_dir_files(paths.root, skip=(snapshot_dir,))
        blob_store = open_blob_store(source.blobs_spec, paths.blobs) if source.with_blobs else None
        blobs = tuple(_blob_entry(blob_store, sha, size) for sha, size in facts.blobs)
        files = (
            FileEntry(STORE_NAMES[kind], store_file.stat().st_size, _file_sha256(store_file)),
            *(FileEntry(key_member(rel), len(data), hashlib.sha256(data).hexdigest()) for rel, data in keys),
        )
        manifest = Manifest(
            created_at=now,
            central_version=version,
            store_kind=kind,
            ca_fingerprint=ca_fingerprint(paths.root),
            signing_key_id=signing_key_id(paths.root),
            audit_head_sequence=facts.audit_head_sequence,
            audit_head_hash=facts.audit_head_hash,
            counts=facts.counts,
            files=files,
            blobs=blobs,
        )
        manifest_bytes = manifest.encode()
        partial = Path(tmp) / "archive"
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as raw:
            writer = ar.ArchiveWriter(raw, sealer, chunk_bytes)
            listed = sum(f.size for f in files) + sum(b.size for b in blobs if b.included)
            counted = CountingFile(writer, progress("backing up", listed)) if progress else None
            with tarfile.open(fileobj=counted or writer, mode="w|", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]
                _add(tar, MANIFEST_NAME, len(manifest_bytes), now, _bytes_reader(manifest_bytes))
                with open(store_file, "rb") as f:
                    _add(tar, STORE_NAMES[kind], files[0].size, now, f)
                for rel, data in keys:
                    _add(tar, key_member(rel), len(data), now, _bytes_reader(data))
                for blob in blobs:
                    if blob.included and blob_store is not None:
                        _add_blob(tar, blob_store, blob, now)
            writer.close()
            if counted:
                counted.done()
            raw.flush()
            os.fsync(raw.fileno())
        archive_bytes = partial.stat().st_size
        os.replace(partial, out)
    _fsync_dir(out.parent)
    return BackupResult(out, backup_id(manifest_bytes), manifest, archive_bytes, time.monotonic() - started)


@contextlib.contextmanager
def _snapshot_dir(data_dir: Path, out_dir: Path) -> Iterator[Path]:
    """A private directory for the store's plaintext snapshot: in the data dir, as private as the store itself,
    not beside the archive, whose directory is the one copied off the machine (a backup killed there would
    have left a plaintext store in it). Beside the archive only when the data dir cannot be written."""
    try:
        made = Path(tempfile.mkdtemp(prefix=SNAPSHOT_PREFIX, dir=data_dir))
    except OSError:  # read-only data dir, another user's
        made = Path(tempfile.mkdtemp(prefix=SNAPSHOT_PREFIX, dir=out_dir))
    try:
        yield made
    finally:
        shutil.rmtree(made, ignore_errors=True)


def _blob_entry(blob_store, sha256: str, size: int) -> BlobEntry:
    if blob_store is None:
        return BlobEntry(sha256, size, False)
    held = blob_store.size(sha256)
    if held is None:
        raise BackupError(
            f"blob {sha256} (a model in the registry) is missing from the blob store: the registry is damaged"
            " already; back up with --without-blobs to save the rest, and push that model again"
        )
    if held != size:
        raise BackupError(f"blob {sha256} holds {held} bytes but the registry says {size}: the blob is damaged")
    return BlobEntry(sha256, size, True)


def _add(tar: tarfile.TarFile, name: str, size: int, now: float, fileobj: BinaryIO) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, int(now), 0o600
    tar.addfile(info, fileobj)


def _add_blob(tar: tarfile.TarFile, blob_store, blob: BlobEntry, now: float) -> None:
    from central.blobs import BlobError

    try:
        with contextlib.closing(blob_store.open(blob.sha256)) as f:
            hashing = _HashingReader(f)
            _add(tar, blob_member(blob.sha256), blob.size, now, hashing)  # type: ignore[arg-type]
    except (BlobError, OSError) as exc:
        raise BackupError(f"cannot read blob {blob.sha256} from the blob store: {exc}") from None
    if hashing.hexdigest() != blob.sha256:
        raise BackupError(f"blob {blob.sha256} in the blob store does not match its sha256: it is damaged")


class _HashingReader:
    def __init__(self, f: BinaryIO):
        self._f, self._hash = f, hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self._f.read(size)
        self._hash.update(data)
        return data

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


def _bytes_reader(data: bytes) -> BinaryIO:
    import io

    return io.BytesIO(data)


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in _blocks(f):
            digest.update(block)
    return digest.hexdigest()


def _blocks(f: BinaryIO) -> Iterator[bytes]:
    while block := f.read(_COPY_BYTES):
        yield block


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
