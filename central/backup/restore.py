"""Restoring a backup onto a new machine: an empty data dir (and, for PostgreSQL, an empty database).

Everything is read, authenticated and checked into a staging directory beside the data dir (inside it when it
exists, empty) first (keys 0600,
directories 0700, blobs put back through the blob store API with their sha256 checked); only a backup that
passes every check reaches the data dir, and a failure leaves nothing behind but an empty database. A PostgreSQL
dump goes in with ``pg_restore --single-transaction``: all of it or nothing.

Then the audit log continues from the backup's head with a ``central.restored`` entry, and the restore is recorded
(:func:`central.restore_state.record_restore`) so the restored central adopts and lists what the nodes show it
lost as they call in (``edgefleet central restore-report``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from central.audit import ALLOWED, AuditEntry
from central.backup import BackupError, ProgressFactory, pgtools
from central.backup import archive as ar
from central.backup.manifest import Manifest
from central.backup.verify import BlobSink, ReadBackup, SnapshotCheck, check_snapshot, read_with_progress
from central.store import display_store, is_postgres
from edgefleet import pki
from edgefleet.privatedir import make_private_dir

RESTORE_ACTOR = "central:restore"
RESTORE_ACTION = "central.restored"


@dataclass(frozen=True)
class RestoreTarget:
    data_dir: Path
    store_url: str = ""  # an empty PostgreSQL database, for a backup of a PostgreSQL store
    blobs_spec: str = ""  # as `central serve --blobs`; "" for <data-dir>/blobs


@dataclass(frozen=True)
class RestoreResult:
    data_dir: Path
    store: str  # as it may be shown
    backup_id: str
    manifest: Manifest
    snapshot: SnapshotCheck
    restored_at: float
    audit_entry: AuditEntry
    blobs_restored: int
    seconds: float


class _StoreBlobs(BlobSink):
    """Blobs into a blob store; one it holds already (a shared bucket) is only checked."""

    def __init__(self, store):
        self.store = store

    def begin(self, blob):
        return None if self.store.size(blob.sha256) == blob.size else self.store.writer()


def require_empty_dir(path: Path) -> None:
    if path.exists() and not path.is_dir():
        raise BackupError(f"{path} is not a directory")
    # A freshly made ext4 volume mounted as the data dir holds an empty lost+found: that is still empty.
    if path.is_dir() and any(p for p in path.iterdir() if not (p.name == "lost+found" and _empty_dir(p))):
        raise BackupError(
            f"{path} is not empty: restore onto a new or empty directory (a restore never mixes a backup with"
            " another central's files)"
        )


def _empty_dir(path: Path) -> bool:
    try:
        return path.is_dir() and not path.is_symlink() and not any(path.iterdir())
    except OSError:
        return False


def require_empty_database(url: str) -> None:
    """Refuse a database that holds any table outside PostgreSQL's own schemas."""
    import psycopg

    try:
        with psycopg.connect(url, connect_timeout=10, autocommit=True) as conn:
            row = conn.execute(
                "SELECT count(*) FROM pg_catalog.pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema')"
            ).fetchone()
    except psycopg.Error as exc:
        raise BackupError(f"cannot reach the database {display_store(url)}: {' '.join(str(exc).split())}") from None
    if row and row[0]:
        raise BackupError(
            f"the database {display_store(url)} is not empty ({row[0]} tables): restore into a new, empty database"
            " (CREATE DATABASE ...), never over a store that may be another fleet's or the one being replaced"
        )


def restore_file(
    path: Path, opener: ar.Opener | None, target: RestoreTarget, now: float, progress: ProgressFactory | None = None
) -> RestoreResult:
    """Restore the backup at `path` onto `target`; see the module's docstring."""
    from central.blobs import open_blob_store

    started = time.monotonic()
    root = target.data_dir
    require_empty_dir(root)
    if target.store_url:
        if not is_postgres(target.store_url):
            raise BackupError(
                "--store names a PostgreSQL database (postgresql://...); a SQLite store goes in the data dir"
            )
        require_empty_database(target.store_url)
    with open(path, "rb") as src:  # a missing or unreadable archive is refused before anything is made
        made = _missing_parents(root)
        make_private_dir(root.parent)
        # Inside an empty data dir that exists (it may be a volume of its own: renames cannot cross into it),
        # else beside it, to be renamed into its place.
        where = root if root.is_dir() else root.parent
        staging = Path(tempfile.mkdtemp(prefix=f".{root.name}.restore-", dir=where))  # 0700
        restored_database = False
        try:
            blob_store = open_blob_store(target.blobs_spec, staging / "blobs")
            read = read_with_progress(src, opener, staging, _StoreBlobs(blob_store), progress, "restoring")
            _require_store_target(read.manifest, target)
            _require_listed_blobs(read.manifest, blob_store, target.blobs_spec)
            snapshot = check_snapshot(read)
            _write_keys(staging, read)
            if read.manifest.store_kind == "postgresql":
                require_empty_database(target.store_url)
                pgtools.restore(target.store_url, read.store_file)
                restored_database = True
                read.store_file.unlink()
                pki.write_private(staging / "store", target.store_url.encode() + b"\n")
            # Recorded while staged: a store central cannot open is refused before it reaches the data dir.
            entry = _record(staging, read, now)
            _install(staging, root)
        except BaseException as exc:
            shutil.rmtree(staging, ignore_errors=True)
            for directory in made:
                with contextlib.suppress(OSError):
                    directory.rmdir()  # only what this restore made, and only while empty
            if restored_database and isinstance(exc, Exception):
                raise BackupError(
                    f"{exc}; the database {display_store(target.store_url)} now holds the backup's tables:"
                    " drop it and create it empty again before the next try"
                ) from None
            raise
    return RestoreResult(
        root,
        display_store(target.store_url or str(root / read.manifest.store_member)),
        read.backup_id,
        read.manifest,
        snapshot,
        now,
        entry,
        read.blobs_read,
        time.monotonic() - started,
    )


def _missing_parents(path: Path) -> list[Path]:
    """The directories above `path` that do not exist yet, deepest first."""
    missing = []
    here = path.parent
    while not here.exists() and here.parent != here:
        missing.append(here)
        here = here.parent
    return missing


def _require_store_target(manifest: Manifest, target: RestoreTarget) -> None:
    if manifest.store_kind == "postgresql" and not target.store_url:
        raise BackupError(
            "this backup holds a PostgreSQL store: give --store postgresql://USER@HOST/DB naming a new, empty database"
        )
    if manifest.store_kind == "sqlite" and target.store_url:
        raise BackupError("this backup holds a SQLite store (central.db): restore it without --store")


def _require_listed_blobs(manifest: Manifest, blob_store, blobs_spec: str) -> None:
    """A backup taken --without-blobs lists blobs it does not hold: the blob store restored to must have them."""
    missing = [b.sha256 for b in manifest.blobs if not b.included and blob_store.size(b.sha256) != b.size]
    if missing:
        where = f"the blob store {blobs_spec}" if blobs_spec else "the data dir's blobs/ (no --blobs given)"
        raise BackupError(
            f"the backup was taken without {len(missing)} of its blobs (--without-blobs) and {where} does not hold"
            f" them (first {missing[0]}): give --blobs naming the blob store that does, as central serve's --blobs"
        )


def _write_keys(staging: Path, read: ReadBackup) -> None:
    for relative, data in read.key_files.items():
        pki.write_private(staging.joinpath(*relative.parts), data)  # 0600, parents 0700


def _install(staging: Path, root: Path) -> None:
    """Move the staged data dir into place: a rename when the data dir does not exist, else its entries (the
    staging directory is then inside it)."""
    os.chmod(staging, 0o700)
    if not root.exists():
        os.rename(staging, root)
        return
    for entry in staging.iterdir():
        os.rename(entry, root / entry.name)
    staging.rmdir()
    os.chmod(root, 0o700)


def _record(root: Path, read: ReadBackup, now: float) -> AuditEntry:
    """The `central.restored` audit entry after the backup's head, and the restore point for restore_state."""
    from central.datadir import CentralPaths, require_initialized, store_spec
    from central.restore_state import RestorePoint, record_restore
    from central.store import StoreError, open_store
    from edgefleet.durations import format_duration

    paths = CentralPaths(root)
    require_initialized(paths)
    manifest = read.manifest
    try:
        store = open_store(store_spec(paths))
    except StoreError as exc:
        raise BackupError(f"central cannot open the store in the backup: {exc.__cause__ or exc}") from None
    try:
        head = store.list_audit(after_sequence=max(0, manifest.audit_head_sequence - 1), limit=2)
        if [e.sequence for e in head] not in ([manifest.audit_head_sequence], []):
            raise BackupError(
                "the restored store's audit log does not end at the backup's head"
                f" (entry {manifest.audit_head_sequence})"
            )
        from central.cli_output import iso_seconds

        detail = (
            f"restored from the backup taken at {iso_seconds(manifest.created_at)}"
            f" ({format_duration(max(now - manifest.created_at, 1.0))} before), audit head"
            f" {manifest.audit_head_sequence} {manifest.audit_head_hash}; what happened after the backup is not"
            " in the store"
        )
        entry = store.append_audit(now, RESTORE_ACTOR, RESTORE_ACTION, read.backup_id, ALLOWED, detail, "")
        record_restore(
            store,
            RestorePoint(
                backup_id=read.backup_id,
                backup_at=manifest.created_at,
                restored_at=now,
                audit_head_sequence=manifest.audit_head_sequence,
                audit_head_hash=manifest.audit_head_hash,
                ca_fingerprint=manifest.ca_fingerprint,
            ),
        )
    finally:
        store.close()
    return entry
