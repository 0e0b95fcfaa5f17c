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
SQLITE_STORE_NAME = "central.db"
POSTGRES_STORE_NAME = "store.pgdump"
STORE_NAMES = {"sqlite": SQLITE_STORE_NAME, "postgresql": POSTGRES_STORE_NAME}
KEYS_DIR = "keys"
BLOBS_DIR = "blobs"

# Top-level names in the data dir that are not backed up: the store (its own snapshot is), its lock, the blobs
# (listed and copied by sha256), the admin's `store` URL (restore is told the new one), and what central makes
# again at every start (Flower's state and certificates, the SuperLink's sandbox). superlink/results is kept:
# finished federated runs' reports.
_SKIPPED_NAMES = {
    "central.db",
    "central.db-wal",
    "central.db-shm",
    "central.db-journal",
    "central.db.leader",
    "store",
    "blobs",
    "flower",
    "flwr",
}
_KEPT_UNDER_SUPERLINK = "results"
_SHA256 = re.compile(r"[0-9a-f]{64}")


def is_backed_up(relative: PurePosixPath) -> bool:
    """Whether a regular file at this path under the data dir goes into keys/."""
    parts = relative.parts
    if not parts or relative.is_absolute() or ".." in parts:
        return False
    name = parts[-1]
    if parts[0] in _SKIPPED_NAMES:
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
    """The data dir path of a keys/ member; refuses a path that could leave the data dir."""
    relative = PurePosixPath(member[len(KEYS_DIR) + 1 :])
    if not member.startswith(KEYS_DIR + "/") or not is_backed_up(relative) or "" in relative.parts:
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
    """The manifest from its bytes; every field checked (it is authenticated, but may come from a newer edgefleet)."""
    try:
        body = json.loads(data)
        if not isinstance(body, dict):
            raise TypeError("not an object")
        version = body["format_version"]
        if not isinstance(version, int) or version > MANIFEST_VERSION:
            raise BackupError(
                f"the backup's manifest is in format {version!r}; this edgefleet reads {MANIFEST_VERSION}:"
                " verify or restore it with a newer edgefleet"
            )
        if body["store"] not in STORE_NAMES:
            raise TypeError(f"store kind {body['store']!r}")
        counts = body["counts"]
        manifest = Manifest(
            created_at=float(body["created_at"]),
            central_version=str(body["central_version"]),
            store_kind=body["store"],
            ca_fingerprint=str(body["ca_fingerprint"]),
            signing_key_id=str(body["signing_key_id"]),
            audit_head_sequence=int(body["audit_head"]["sequence"]),
            audit_head_hash=str(body["audit_head"]["hash"]),
            counts=Counts(
                int(counts["nodes"]), int(counts["reports"]), int(counts["audit_entries"]), int(counts["models"])
            ),
            files=tuple(FileEntry(str(f["path"]), int(f["size"]), str(f["sha256"])) for f in body["files"]),
            blobs=tuple(BlobEntry(str(b["sha256"]), int(b["size"]), bool(b["included"])) for b in body["blobs"]),
            format_version=version,
        )
    except BackupError:
        raise
    except (ValueError, TypeError, KeyError) as exc:
        raise BackupError(f"the backup's manifest is malformed ({type(exc).__name__}: {exc})") from None
    _check_members(manifest)
    return manifest


def _check_members(manifest: Manifest) -> None:
    names = [f.path for f in manifest.files]
    if len(set(names)) != len(names):
        raise BackupError("the backup's manifest lists a file twice")
    if manifest.store_member not in names:
        raise BackupError(f"the backup's manifest lists no store ({manifest.store_member})")
    for entry in manifest.files:
        if entry.path != manifest.store_member:
            key_path(entry.path)
        if entry.size < 0 or not _SHA256.fullmatch(entry.sha256):
            raise BackupError(f"the backup's manifest gives {entry.path} a malformed size or sha256")
    for blob in manifest.blobs:
        if blob.size < 0 or not _SHA256.fullmatch(blob.sha256):
            raise BackupError(f"the backup's manifest lists a malformed blob {blob.sha256!r}")
