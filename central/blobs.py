"""Content-addressed blob storage for model artifacts.

:class:`BlobStore` is the seam (an S3-compatible store can follow);
:class:`LocalBlobStore` keeps ``blobs/sha256/<ab>/<hex>`` under central's data
dir. A blob is written to a temp file while its hash is computed and renamed
into place only when complete, so a reader never sees half a blob.
"""

from __future__ import annotations

import abc
import hashlib
import os
import secrets
from pathlib import Path
from typing import BinaryIO

from central.errors import CentralError


class BlobError(CentralError):
    """A blob cannot be stored or read; the message says why."""


class BlobWriter(abc.ABC):
    @abc.abstractmethod
    def write(self, data: bytes) -> None: ...

    @abc.abstractmethod
    def commit(self) -> tuple[str, int]:
        """Make the blob readable under its sha256; returns (sha256, size)."""

    @abc.abstractmethod
    def abort(self) -> None:
        """Throw away what was written."""


class BlobStore(abc.ABC):
    @abc.abstractmethod
    def writer(self) -> BlobWriter: ...

    @abc.abstractmethod
    def size(self, sha256: str) -> int | None:
        """Bytes in the blob, None when absent."""

    @abc.abstractmethod
    def open(self, sha256: str) -> BinaryIO:
        """A binary file positioned at 0; BlobError when absent."""

    @abc.abstractmethod
    def delete(self, sha256: str) -> None: ...


def _check_digest(sha256: str) -> str:
    if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
        raise BlobError(f"{sha256!r} is not a lowercase hex sha256")
    return sha256


class LocalBlobStore(BlobStore):
    def __init__(self, root: Path):
        self.root = Path(root)
        (self.root / "tmp").mkdir(parents=True, exist_ok=True)

    def path(self, sha256: str) -> Path:
        digest = _check_digest(sha256)
        return self.root / "sha256" / digest[:2] / digest

    def writer(self) -> BlobWriter:
        return _LocalWriter(self)

    def size(self, sha256: str) -> int | None:
        try:
            return self.path(sha256).stat().st_size
        except FileNotFoundError:
            return None

    def open(self, sha256: str) -> BinaryIO:
        try:
            return open(self.path(sha256), "rb")
        except FileNotFoundError:
            raise BlobError(f"no blob {sha256}") from None

    def delete(self, sha256: str) -> None:
        self.path(sha256).unlink(missing_ok=True)


class _LocalWriter(BlobWriter):
    def __init__(self, store: LocalBlobStore):
        self._store = store
        self._tmp = store.root / "tmp" / f"upload-{secrets.token_hex(8)}"
        # Held open across write() calls: commit() or abort() closes it.
        self._file = open(self._tmp, "wb")  # noqa: SIM115
        self._hash = hashlib.sha256()
        self._size = 0

    def write(self, data: bytes) -> None:
        try:
            self._file.write(data)
        except OSError as exc:
            self.abort()
            raise BlobError(f"cannot store the blob: {exc.strerror or exc}") from exc
        self._hash.update(data)
        self._size += len(data)

    def commit(self) -> tuple[str, int]:
        try:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            digest = self._hash.hexdigest()
            final = self._store.path(digest)
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(self._tmp, final)
        except OSError as exc:
            self.abort()
            raise BlobError(f"cannot store the blob: {exc.strerror or exc}") from exc
        return digest, self._size

    def abort(self) -> None:
        if not self._file.closed:
            self._file.close()
        self._tmp.unlink(missing_ok=True)
