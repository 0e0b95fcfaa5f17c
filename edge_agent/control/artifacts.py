"""The agent's store of fleet-delivered models: two slots (A/B) and one pointer between them.

    <data_dir>/models/fleet/
        active.json          {"slot": "a"}: the single switch point, only ever replaced with os.replace
        slot-a/              model.<format> + manifest.json ({"body": ..., "signature": ...})
        slot-b/              the same, or download.part + download.json ({"sha256": ...}) while downloading

A download goes to the slot that is not active, so the running model is never touched. Its bytes land in
``download.part`` and become ``model.<format>`` only after their size and sha256 match the signed manifest,
and a slot counts only when its stored manifest verifies against a signing key the node trusts (the one pinned
at enrollment, and those it learnt through rotations: trust_state). A
kill -9 at any moment therefore leaves the old or the new ``active.json``, and a slot that is either whole
or ignored; a ``download.part`` left behind is resumed by the next :meth:`ModelSlots.download`.

Errors: :class:`ArtifactError` (an :class:`~edge_agent.errors.AgentError`) with a short ``reason`` for the
FAILED(reason) state. Exceptions from the chunk source (CentralUnavailable, ...) pass through unchanged.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import hashlib
import json
import logging
import os
import queue
import shutil
import sys
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from edge_agent.errors import AgentError
from edgefleet import manifest as manifest_mod
from edgefleet.manifest import Manifest

log = logging.getLogger(__name__)

SLOTS = ("a", "b")
HEADROOM_BYTES = 64 << 20  # left free beyond the download itself, for logs, caches and SQLite files
_MiB = 1 << 20

Chunks = Callable[[int], Iterable[tuple[int, bytes, int]]]


class ArtifactError(AgentError):
    """A model artifact that is refused or cannot be stored; ``reason`` says which, in a few words."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class InstalledModel:
    slot: str
    manifest: Manifest
    path: Path


def slot_of(model_path: Path, data_dir: Path) -> str:
    """The A/B slot ("a" or "b") a model file lies in, from its path alone; "" for a file outside the fleet's
    slots (a built-in model, or one given with --model)."""
    parent = Path(model_path).parent
    fleet_root = Path(data_dir) / "models" / "fleet"
    for slot in SLOTS:
        if parent == fleet_root / f"slot-{slot}":
            return slot
    return ""


def _other(slot: str | None) -> str:
    return "b" if slot == "a" else "a"


def _write_durably(path: Path, data: bytes) -> None:
    """Replace path with data: temp file, fsync, os.replace, fsync of the directory."""
    tmp = path.with_name(f".{path.name}.tmp")  # one writer per data dir, so a fixed name never piles up
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class ModelSlots:
    """Two model slots under ``<data_dir>/models/fleet``; not thread-safe (the control loop owns it)."""

    def __init__(self, data_dir: Path, signing_keys: bytes | Callable[[], Sequence[bytes]]):
        """signing_keys: one PEM public key, or a function returning the keys trusted now (asked at each
        verification, since a rotation changes them while the agent runs)."""
        self.root = Path(data_dir) / "models" / "fleet"
        self._keys: Callable[[], Sequence[bytes]] = (
            (lambda: [signing_keys]) if isinstance(signing_keys, bytes) else signing_keys
        )
        self._pointer = self.root / "active.json"
        self._signed: dict[bytes, tuple[bytes, str]] = {}  # canonical manifest -> (body, signature) as sent

    def slot_dir(self, slot: str) -> Path:
        return self.root / f"slot-{slot}"

    def verify_manifest(self, body: bytes, signature: str) -> Manifest:
        """The manifest in body if a trusted signing key signed exactly these bytes; ArtifactError otherwise."""
        try:
            manifest = manifest_mod.verify_any(body, signature, self._keys())
        except manifest_mod.ManifestError as exc:
            raise ArtifactError(f"manifest refused: {exc}") from None
        self._signed[manifest.canonical()] = (body, signature)
        return manifest

    def adopt_signature(self, body: bytes, signature: str) -> list[str]:
        """Store central's signature of body in every slot holding exactly body under another signature, once it
        verifies: after a signing-key rotation central re-signs its manifests with the new key, and a slot whose
        only signature is from a retired key would stop counting. Returns the slots changed. Call it only while no
        activation writes a slot."""
        changed = []
        for slot in SLOTS:
            stored = self.slot_dir(slot) / "manifest.json"
            try:
                record = json.loads(stored.read_text())
                if record["body"].encode() != body or record["signature"] == signature:
                    continue
                self.verify_manifest(body, signature)
                _write_durably(stored, json.dumps({"body": record["body"], "signature": signature}).encode())
            except FileNotFoundError:
                continue
            except (OSError, ValueError, KeyError, TypeError, AttributeError, ArtifactError) as exc:
                log.warning("cannot store central's new signature of slot %s's manifest: %s", slot, exc)
                continue
            log.info("slot %s's manifest now carries central's newest signature", slot)
            changed.append(slot)
        return changed

    # -- reading -------------------------------------------------------------------------

    def _active_slot(self) -> str | None:
        try:
            slot = json.loads(self._pointer.read_text())["slot"]
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("ignoring %s: it cannot be read (%s); no fleet model is active", self._pointer, exc)
            return None
        if slot not in SLOTS:
            log.warning("ignoring %s: it names slot %r; no fleet model is active", self._pointer, slot)
            return None
        return slot

    def _installed(self, slot: str) -> InstalledModel | None:
        stored = self.slot_dir(slot) / "manifest.json"
        try:
            record = json.loads(stored.read_text())
            manifest = self.verify_manifest(record["body"].encode(), record["signature"])
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError, AttributeError, ArtifactError) as exc:
            log.warning("treating model slot %s as empty: %s cannot be used (%s)", slot, stored, exc)
            return None
        path = self.slot_dir(slot) / f"model.{manifest.format}"
        # The size only, not the sha256: hashing a multi-GiB model at every start would take minutes. The full
        # hash was checked before the file was renamed into place, and nothing else writes to it.
        try:
            size = path.stat().st_size
        except OSError:
            size = None
        if size != manifest.size:
            log.warning(
                "treating model slot %s as empty: %s has %s bytes, its manifest says %d",
                slot,
                path,
                size,
                manifest.size,
            )
            return None
        return InstalledModel(slot, manifest, path)

    def active(self) -> InstalledModel | None:
        slot = self._active_slot()
        return self._installed(slot) if slot else None

    def inactive(self) -> InstalledModel | None:
        return self._installed(_other(self._active_slot()))

    # -- switching -----------------------------------------------------------------------

    def activate(self, slot: str, manifest: Manifest | None = None) -> InstalledModel:
        """Point active.json at slot, which must hold a verified model. With `manifest` (from verify_manifest) of
        the bytes the slot holds under another version or name, the slot is relabelled first: it then says, after a
        restart too, what central assigned, and carries that manifest's signature (central re-signs the manifests
        it assigns when its signing key rotates; a slot keeping an older one would stop verifying)."""
        if slot not in SLOTS:
            raise ArtifactError(f"no slot {slot!r}; slots are {', '.join(SLOTS)}")
        installed = self._installed(slot)
        if installed is None:
            raise ArtifactError(f"slot {slot} holds no verified model")
        if manifest is not None and manifest != installed.manifest:
            installed = self._relabel(installed, manifest)
        _write_durably(self._pointer, json.dumps({"slot": slot}).encode())
        log.info("fleet model %s (slot %s) is now active", installed.manifest.ref, slot)
        return installed

    def _relabel(self, installed: InstalledModel, manifest: Manifest) -> InstalledModel:
        same = (manifest.sha256, manifest.size, manifest.format)
        if same != (installed.manifest.sha256, installed.manifest.size, installed.manifest.format):
            raise ArtifactError(f"slot {installed.slot} holds other bytes than {manifest.ref}")
        signed = self._signed.get(manifest.canonical())
        if signed is None:
            raise ArtifactError(f"manifest of {manifest.ref} was not verified by this store; refusing it")
        body, signature = signed
        stored = self.slot_dir(installed.slot) / "manifest.json"
        _write_durably(stored, json.dumps({"body": body.decode(), "signature": signature}).encode())
        log.info("slot %s now holds %s (the bytes of %s)", installed.slot, manifest.ref, installed.manifest.ref)
        return InstalledModel(installed.slot, manifest, installed.path)

    def rollback(self) -> InstalledModel:
        """Point back at the other slot, which still holds the previous version."""
        target = _other(self._active_slot())
        if self._installed(target) is None:
            raise ArtifactError(f"nothing to roll back to: slot {target} holds no verified model")
        return self.activate(target)

    # -- downloading ---------------------------------------------------------------------

    def download(
        self, manifest: Manifest, chunks_from: Chunks, progress: Callable[[int, int], None] | None = None
    ) -> Path:
        """The verified model file of manifest in the inactive slot, downloaded (or resumed) if needed.

        manifest must come from :meth:`verify_manifest` (its signed bytes are stored beside the model).
        chunks_from(offset) yields (offset, data, total_size) from offset on, as FleetClient.fetch_artifact.
        If the active slot already holds this sha256, its path is returned and nothing is downloaded.
        """
        signed = self._signed.get(manifest.canonical())
        if signed is None:
            raise ArtifactError(f"manifest of {manifest.ref} was not verified by this store; refusing it")
        for holder in (self.active(), self.inactive()):
            if holder is not None and holder.manifest.sha256 == manifest.sha256:
                return holder.path
        slot = _other(self._active_slot())
        slot_dir = self.slot_dir(slot)
        part, part_meta = slot_dir / "download.part", slot_dir / "download.json"
        slot_dir.mkdir(parents=True, exist_ok=True)
        resumable = self._resumable(part, part_meta, manifest)
        offset = part.stat().st_size if resumable else 0
        keep = {part.name, part_meta.name} if resumable else set()
        # Everything else in the spare slot (an older model, another download) is removed to make room.
        reclaim = sum(f.lstat().st_size for f in slot_dir.iterdir() if f.name not in keep)
        free = shutil.disk_usage(slot_dir).free + reclaim
        need = manifest.size - offset + HEADROOM_BYTES
        if free < need:
            raise ArtifactError(f"disk full: need {need / _MiB:.0f} MiB, {free / _MiB:.0f} MiB free")
        self._clear(slot_dir, keep)
        digest = hashlib.sha256()
        if resumable:  # hash what is already there first
            log.info("resuming the download of %s at byte %d of %d", manifest.ref, offset, manifest.size)
            with open(part, "rb") as f:
                for block in iter(lambda: f.read(min(_MiB, offset - f.tell())), b""):
                    digest.update(block)
        else:
            _write_durably(part_meta, json.dumps({"sha256": manifest.sha256}).encode())
        if progress is not None:
            progress(offset, manifest.size)
        try:
            written = self._receive(part, offset, digest, manifest, chunks_from, progress)
            if written < manifest.size:
                raise ArtifactError(f"truncated: got {written} of {manifest.size} bytes")
            if digest.hexdigest() != manifest.sha256:
                raise ArtifactError(f"sha256 mismatch: expected {manifest.sha256}, got {digest.hexdigest()}")
        except ArtifactError:
            self._clear(slot_dir, keep=set())
            raise
        # Anything else (central unavailable, the agent stopping) keeps download.part for the next try.
        final = slot_dir / f"model.{manifest.format}"
        os.replace(part, final)
        body, signature = signed
        _write_durably(slot_dir / "manifest.json", json.dumps({"body": body.decode(), "signature": signature}).encode())
        part_meta.unlink(missing_ok=True)
        log.info("downloaded and verified %s (%d bytes) into slot %s", manifest.ref, manifest.size, slot)
        return final

    @staticmethod
    def _resumable(part: Path, part_meta: Path, manifest: Manifest) -> bool:
        try:
            same = json.loads(part_meta.read_text())["sha256"] == manifest.sha256
            return same and part.stat().st_size <= manifest.size
        except (OSError, ValueError, KeyError, TypeError):
            return False

    @staticmethod
    def _clear(slot_dir: Path, keep: set[str]) -> None:
        """Remove the slot's files but those named in keep; manifest.json first, so the slot reads empty."""
        (slot_dir / "manifest.json").unlink(missing_ok=True)
        for f in slot_dir.iterdir():
            if f.name not in keep:
                f.unlink(missing_ok=True)

    @staticmethod
    def _receive(
        part: Path,
        written: int,
        digest,
        manifest: Manifest,
        chunks_from: Chunks,
        progress: Callable[[int, int], None] | None,
    ) -> int:
        """Append the stream to part from byte written on, feeding digest; the byte count at the end.

        Each chunk is written here while the one before is hashed on a thread of its own, and the disk is
        told to start writing back as the file grows, so the fsync at the end waits for little (see
        _HashThread and _Writeback). digest has seen every byte once this returns, or raises.
        """
        fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        hasher = _HashThread(digest)
        writeback = _Writeback(fd, written)
        try:
            for offset, data, _total in chunks_from(written):
                if offset != written:
                    raise ArtifactError(f"chunk at offset {offset}, expected {written}")
                if written + len(data) > manifest.size:
                    raise ArtifactError(f"oversize: more than the manifest's {manifest.size} bytes")
                try:
                    _write_all(fd, data)
                except OSError as exc:
                    raise _write_error(exc) from exc
                hasher.update(data)
                written += len(data)
                writeback.wrote(written)
                if progress is not None:
                    progress(written, manifest.size)
            try:
                os.fsync(fd)
            except OSError as exc:
                raise _write_error(exc) from exc
        finally:
            hasher.finish()
            os.close(fd)
        return written


class _HashThread:
    """digest.update on its own thread: hashlib lets go of the GIL for buffers over 2 KiB, so a chunk is hashed
    while the next is received and written, instead of after it. Hashing one thread alone keeps the order."""

    _DEPTH = 8  # chunks waiting to be hashed at most: 8 MiB of memory with central's 1 MiB chunks

    def __init__(self, digest):
        self._digest = digest
        self._queue: queue.Queue[bytes | None] = queue.Queue(self._DEPTH)
        self._thread = threading.Thread(target=self._run, name="artifact-sha256", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (data := self._queue.get()) is not None:
            self._digest.update(data)

    def update(self, data: bytes) -> None:
        if not self._thread.is_alive():  # it cannot fail on bytes, but a dead thread must not hang the download
            raise ArtifactError("the sha256 thread stopped")
        self._queue.put(data)

    def finish(self) -> None:
        """Wait until every chunk given is hashed; the digest is the caller's again after this."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class _Writeback:
    """Starts the disk writing a download's bytes while it goes on (Linux's sync_file_range), rather than all at
    the final fsync, which alone makes them durable. Elsewhere, or where the call fails, it does nothing."""

    _EVERY = 16 * _MiB
    _SYNC_FILE_RANGE_WRITE = 2  # start writing the range's dirty pages back; do not wait for them

    def __init__(self, fd: int, start: int):
        self._fd, self._start = fd, start
        self._call = _sync_file_range()

    def wrote(self, end: int) -> None:
        if self._call is None or end - self._start < self._EVERY:
            return
        if self._call(self._fd, self._start, end - self._start, self._SYNC_FILE_RANGE_WRITE) != 0:
            self._call = None  # unsupported here (a FUSE or network file system); fsync does it all at the end
        self._start = end


@functools.cache
def _sync_file_range():
    """libc's sync_file_range, or None where there is none (not Linux)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        call = libc.sync_file_range
    except (OSError, AttributeError):
        return None
    call.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    call.restype = ctypes.c_int
    return call


def _write_error(exc: OSError) -> ArtifactError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return ArtifactError(f"disk full: {exc.strerror}")
    return ArtifactError(f"cannot write the download: {exc}")
