"""What a backup holds and how its tar stream is laid out, as pure functions.

Inside the encrypted archive is a tar stream (PAX):

    manifest.json        first: what follows, with each file's size and sha256, and facts about the store
    central.db           the SQLite store (online backup API), or
    store.pgdump         the PostgreSQL store (pg_dump --format=custom, from one exported snapshot)
    keys/<path>          every regular file of the data dir but the store, its blobs, logs and runtime files:
                         the CA, signing and server keys and certificates, the admin credential, rotation
                         material (retired/, signing-history.json, trust.json, ...), federated run results
    blobs/<sha256>       each model blob the store names, unless the backup was taken --without-blobs

The backup's id is the sha256 of manifest.json's bytes: a reader computes it, the manifest never states it.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import PurePosixPath

from central.backup import BackupError

MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = 1
MAX_MANIFEST_BYTES = 64 << 20
# keys/ files are held in memory while a backup is taken and read back: keys, certificates, small JSON.
MAX_KEY_FILE_BYTES = 16 << 20
SQLITE_STORE_NAME = "central.db"
POSTGRES_STORE_NAME = "store.pgdump"
STORE_NAMES = {"sqlite": SQLITE_STORE_NAME, "postgresql": POSTGRES_STORE_NAME}
KEYS_DIR = "keys"
BLOBS_DIR = "blobs"

# Top-level names in the data dir that are not backed up: the store (its own snapshot is), its lock, the blobs
# (listed and copied by sha256), the admin's `store` URL (restore is told the new one), the name a PostgreSQL
# store's dump is staged under at restore, and what central makes again at every start (Flower's state and
# certificates, the SuperLink's sandbox). superlink/results is kept: finished federated runs' reports.
_SKIPPED_NAMES = {
    "central.db",
    "central.db-wal",
    "central.db-shm",
    "central.db-journal",
    "central.db.leader",
    "store",
    "store.pgdump",
    "blobs",
    "flower",
    "flwr",
}
_KEPT_UNDER_SUPERLINK = "results"
# A backup's temporary directories (the store's snapshot, in the data dir); one a killed backup left is not kept.
SNAPSHOT_PREFIX = ".edgefleet-backup-"
_SHA256 = re.compile(r"[0-9a-f]{64}")


def is_backed_up(relative: PurePosixPath) -> bool:
    """Whether a regular file at this path under the data dir goes into keys/."""
    parts = relative.parts
    if not parts or relative.is_absolute() or ".." in parts:
        return False
    name = parts[-1]
    if parts[0] in _SKIPPED_NAMES or parts[0].startswith(SNAPSHOT_PREFIX):
        return False
    if parts[0] == "superlink" and (len(parts) < 3 or parts[1] != _KEPT_UNDER_SUPERLINK):
        return False
    # Addresses a running central writes, logs, and atomicfile's temporaries (.NAME.XXXX.tmp).
    return not (name.endswith(("-address", ".log")) or (name.startswith(".") and name.endswith(".tmp")))


def key_member(relative: PurePosixPath) -> str:
    return f"{KEYS_DIR}/{relative.as_posix()}"


def blob_member(sha256: str) -> str:
    return f"{BLOBS_DIR}/{sha256}"


def key_path(member: str) -> PurePosixPath:
    """The data dir path of a keys/ member; refuses a path that could leave the data dir, and one written other
    than as a backup writes it ("keys/./ca.key" would be a second name for keys/ca.key)."""
    relative = PurePosixPath(member[len(KEYS_DIR) + 1 :])
    canonical = member == key_member(relative)
    if not member.startswith(KEYS_DIR + "/") or not canonical or not is_backed_up(relative):
        raise BackupError(f"the backup names a key file {member!r} outside the data dir")
    return relative


@dataclass(frozen=True)
class FileEntry:
    path: str  # the tar member's name
    size: int
    sha256: str


@dataclass(frozen=True)
class BlobEntry:
    sha256: str
    size: int
    included: bool


@dataclass(frozen=True)
class Counts:
    nodes: int
    reports: int
    audit_entries: int
    models: int


@dataclass(frozen=True)
class Manifest:
    created_at: float
    central_version: str
    store_kind: str  # sqlite | postgresql
    ca_fingerprint: str
    signing_key_id: str
    audit_head_sequence: int
    audit_head_hash: str
    counts: Counts
    files: tuple[FileEntry, ...]
    blobs: tuple[BlobEntry, ...] = field(default=())
    format_version: int = MANIFEST_VERSION

    @property
    def store_member(self) -> str:
        return STORE_NAMES[self.store_kind]

    def encode(self) -> bytes:
        body = {
            "format_version": self.format_version,
            "created_at": self.created_at,
            "central_version": self.central_version,
            "store": self.store_kind,
            "ca_fingerprint": self.ca_fingerprint,
            "signing_key_id": self.signing_key_id,
            "audit_head": {"sequence": self.audit_head_sequence, "hash": self.audit_head_hash},
            "counts": asdict(self.counts),
            "files": [asdict(f) for f in self.files],
            "blobs": [asdict(b) for b in self.blobs],
        }
        return json.dumps(body, indent=1, sort_keys=True).encode() + b"\n"

    def expected_members(self) -> dict[str, tuple[int, str]]:
        """Every member after the manifest: name -> (size, sha256)."""
        members = {f.path: (f.size, f.sha256) for f in self.files}
        members.update({blob_member(b.sha256): (b.size, b.sha256) for b in self.blobs if b.included})
        return members


def backup_id(manifest_bytes: bytes) -> str:
    return hashlib.sha256(manifest_bytes).hexdigest()


def parse_manifest(data: bytes) -> Manifest:
    """The manifest from its bytes; every field's type checked. It is authenticated, but a recipient-key archive
    can be sealed by anyone holding the public key, and a newer edgefleet may have written it."""
    try:
        body = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise BackupError(f"the backup's manifest is malformed: not JSON ({exc})") from None
    body = _object(body, "manifest")
    version = body.get("format_version")
    if type(version) is not int or version < 1:
        raise BackupError(
            f"the backup's manifest is malformed: format_version is {_shown(version)}, not a whole number"
        )
    if version > MANIFEST_VERSION:
        raise BackupError(
            f"the backup's manifest is in format {version}; this edgefleet reads {MANIFEST_VERSION}:"
            " verify or restore it with a newer edgefleet"
        )
    store = body.get("store")
    if not isinstance(store, str) or store not in STORE_NAMES:
        raise BackupError(
            f"the backup's manifest is malformed: store is {_shown(store)}, not {' or '.join(STORE_NAMES)}"
        )
    counts = _object(body.get("counts"), "counts")
    head = _object(body.get("audit_head"), "audit_head")
    manifest = Manifest(
        created_at=_time(body.get("created_at"), "created_at"),
        central_version=_text(body.get("central_version"), "central_version"),
        store_kind=store,
        ca_fingerprint=_text(body.get("ca_fingerprint"), "ca_fingerprint"),
        signing_key_id=_text(body.get("signing_key_id"), "signing_key_id"),
        audit_head_sequence=_count(head.get("sequence"), "audit_head sequence"),
        audit_head_hash=_text(head.get("hash"), "audit_head hash"),
        counts=Counts(
            *(_count(counts.get(name), f"counts {name}") for name in ("nodes", "reports", "audit_entries", "models"))
        ),
        files=tuple(_file_entry(f) for f in _array(body.get("files"), "files")),
        blobs=tuple(_blob_entry(b) for b in _array(body.get("blobs"), "blobs")),
        format_version=version,
    )
    _check_members(manifest)
    return manifest


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _object(value: object, what: str) -> dict:
    if not isinstance(value, dict):
        raise BackupError(f"the backup's manifest is malformed: {what} is {_shown(value)}, not an object")
    return value


def _array(value: object, what: str) -> list:
    if not isinstance(value, list):
        raise BackupError(f"the backup's manifest is malformed: {what} is {_shown(value)}, not a list")
    return value


def _text(value: object, what: str) -> str:
    if not isinstance(value, str) or len(value) > 1024:
        raise BackupError(f"the backup's manifest is malformed: {what} is {_shown(value)}, not a short string")
    return value


def _count(value: object, what: str) -> int:
    # type(...) is int: JSON's true is a bool (an int subclass), 1.5 and "7" are not counts either.
    if type(value) is not int or value < 0:
        raise BackupError(f"the backup's manifest is malformed: {what} is {_shown(value)}, not a whole number")
    return value


def _time(value: object, what: str) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value < 1e11:  # NaN, inf fail
        raise BackupError(f"the backup's manifest is malformed: {what} is {_shown(value)}, not a time in seconds")
    return float(value)


def _file_entry(value: object) -> FileEntry:
    entry = _object(value, "a file entry")
    path = _text(entry.get("path"), "a file's path")
    return FileEntry(path, _count(entry.get("size"), f"{path}'s size"), _text(entry.get("sha256"), f"{path}'s sha256"))


def _blob_entry(value: object) -> BlobEntry:
    entry = _object(value, "a blob entry")
    sha256 = _text(entry.get("sha256"), "a blob's sha256")
    included = entry.get("included")
    if not isinstance(included, bool):
        raise BackupError(
            f"the backup's manifest is malformed: blob {sha256}'s included is {_shown(included)}, not a boolean"
        )
    return BlobEntry(sha256, _count(entry.get("size"), f"blob {sha256}'s size"), included)


def _check_members(manifest: Manifest) -> None:
    names = [f.path for f in manifest.files]
    if len(set(names)) != len(names):
        raise BackupError("the backup's manifest lists a file twice")
    if manifest.store_member not in names:
        raise BackupError(f"the backup's manifest lists no store ({manifest.store_member})")
    for entry in manifest.files:
        if entry.path != manifest.store_member:
            key_path(entry.path)
            if entry.size > MAX_KEY_FILE_BYTES:
                raise BackupError(
                    f"the backup's manifest lists {entry.path} of {entry.size} bytes, larger than the"
                    f" {MAX_KEY_FILE_BYTES >> 20} MiB a key or certificate file may hold"
                )
        if not _SHA256.fullmatch(entry.sha256):
            raise BackupError(f"the backup's manifest gives {entry.path} a malformed size or sha256")
    for blob in manifest.blobs:
        if not _SHA256.fullmatch(blob.sha256):
            raise BackupError(f"the backup's manifest lists a malformed blob {blob.sha256!r}")
