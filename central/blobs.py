"""Content-addressed blob storage for model artifacts.

:class:`BlobStore` is the seam; every blob is named by the sha256 of its bytes, and a reader never sees half a
blob or the wrong bytes under a name:

- :class:`LocalBlobStore` keeps ``blobs/sha256/<ab>/<hex>`` under a directory: central's data dir, or a
  directory that every central replica mounts. A blob is written to a temp file while its hash is computed and
  renamed into place only when complete.
- :class:`S3BlobStore` keeps ``<prefix>/<hex>`` in a bucket of any S3-compatible object store, so every replica
  on the shared PostgreSQL reaches the same blobs: AWS S3 in production, or a self-hosted SeaweedFS or Garage
  (both speak the S3 API; point AWS_ENDPOINT_URL at them). A push streams into a multipart upload under a
  temporary key while it is hashed; once the digest is known the object is copied server-side to its final
  key (an S3 object appears whole or not at all) and the temporary one deleted. A push small enough for one
  part goes straight to its final key in one PUT. Give the bucket a lifecycle rule that aborts incomplete
  multipart uploads and expires ``<prefix>/tmp/`` after a day: a central killed mid-push leaves them behind.
  Credentials, region and endpoint come from boto3's usual lookup (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
  AWS_DEFAULT_REGION, AWS_ENDPOINT_URL or AWS_ENDPOINT_URL_S3, ~/.aws/config, instance roles).

:func:`open_blob_store` picks one from a spec: ``""`` (central's data dir), ``s3://bucket/prefix``, or a
directory path. Every failure is a :class:`BlobError` naming the bucket and endpoint, never a credential.
"""

from __future__ import annotations

import abc
import contextlib
import hashlib
import io
import logging
import os
import re
import secrets
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, BinaryIO, cast

from central.errors import CentralError

log = logging.getLogger(__name__)

_MiB = 1 << 20


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


# -- S3 ---------------------------------------------------------------------------------------------------------

PART_BYTES = 8 * _MiB
# S3 allows 10,000 parts of at most 5 GiB. Parts grow by 8 MiB every 1,000, so an upload of unknown length
# can reach 430 GiB while a small one keeps 8 MiB parts (S3 accepts parts of different sizes).
_PARTS_PER_SIZE = 1000
_PARTS_IN_FLIGHT = 2  # uploaded while the next part is received: 16-32 MiB of memory per push
_BUCKET_NAME = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")


def part_bytes(part_number: int) -> int:
    """Bytes in part part_number (from 1) of a multipart upload; the last part may be shorter."""
    return PART_BYTES * (1 + (part_number - 1) // _PARTS_PER_SIZE)


def _reason(exc: Exception) -> str:
    """What went wrong, in words that never carry a credential."""
    from botocore.exceptions import ClientError, ConnectTimeoutError, EndpointConnectionError, NoCredentialsError

    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        if code in ("NoSuchBucket",):
            return "no such bucket"
        if code in ("AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
            return f"access denied ({code}): check the credentials and the bucket's policy"
        return f"{code}: {error.get('Message', '')}".rstrip(": ")
    if isinstance(exc, (EndpointConnectionError, ConnectTimeoutError)):
        return "the endpoint cannot be reached"
    if isinstance(exc, NoCredentialsError):
        return "no credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or a profile"
    return str(exc) or type(exc).__name__


def _is_missing(exc: BaseException | None) -> bool:
    from botocore.exceptions import ClientError

    return isinstance(exc, ClientError) and str(exc.response.get("Error", {}).get("Code")) in ("404", "NoSuchKey")


class S3BlobStore(BlobStore):
    """Blobs at ``<prefix>/<sha256>`` in an S3 bucket; safe to share between threads and processes."""

    def __init__(self, bucket: str, prefix: str = "", endpoint_url: str | None = None, client: Any = None):
        if not _BUCKET_NAME.fullmatch(bucket):
            raise BlobError(f"{bucket!r} is not an S3 bucket name (3-63 lowercase letters, digits, '.' and '-')")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self._client = client if client is not None else _s3_client(endpoint_url)

    @property
    def client(self) -> Any:
        return self._client

    @property
    def endpoint(self) -> str:
        return str(self._client.meta.endpoint_url)

    def key(self, sha256: str) -> str:
        digest = _check_digest(sha256)
        return f"{self.prefix}/{digest}" if self.prefix else digest

    def temp_key(self) -> str:
        """A fresh key for an upload in progress; no sha256 key can take this shape."""
        name = f"tmp/upload-{secrets.token_hex(8)}"
        return f"{self.prefix}/{name}" if self.prefix else name

    @contextlib.contextmanager
    def errors(self, doing: str) -> Iterator[None]:
        """Turn boto3's exceptions into a BlobError that names the bucket and the endpoint."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            yield
        except (BotoCoreError, ClientError) as exc:
            raise BlobError(f"cannot {doing} in S3 bucket {self.bucket!r} at {self.endpoint}: {_reason(exc)}") from exc

    def check(self) -> None:
        """BlobError unless the bucket exists and these credentials may use it."""
        try:
            with self.errors("reach the bucket"):
                self._client.head_bucket(Bucket=self.bucket)
        except BlobError as exc:
            # HEAD answers carry no body, so a missing bucket is a bare 404.
            if _is_missing(exc.__cause__):
                raise BlobError(f"S3 bucket {self.bucket!r} at {self.endpoint} does not exist") from exc.__cause__
            raise

    def writer(self) -> BlobWriter:
        return _S3Writer(self)

    def size(self, sha256: str) -> int | None:
        key = self.key(sha256)
        try:
            with self.errors(f"read {key}"):
                head = self._client.head_object(Bucket=self.bucket, Key=key)
        except BlobError as exc:
            if _is_missing(exc.__cause__):
                return None
            raise
        return int(head["ContentLength"])

    def open(self, sha256: str) -> BinaryIO:
        size = self.size(sha256)
        if size is None:
            raise BlobError(f"no blob {sha256}")
        # The servicer reads 1 MiB at a time: the buffer passes reads that large straight to the raw reader.
        return cast(BinaryIO, io.BufferedReader(_S3Reader(self, self.key(sha256), size), buffer_size=_MiB))

    def delete(self, sha256: str) -> None:
        key = self.key(sha256)
        with self.errors(f"delete {key}"):
            self._client.delete_object(Bucket=self.bucket, Key=key)


def _s3_client(endpoint_url: str | None) -> Any:
    import boto3
    from botocore.config import Config

    # Standard retries: throttling and 5xx are retried with backoff, a refused connection only briefly.
    config = Config(retries={"mode": "standard", "max_attempts": 3}, max_pool_connections=32)
    try:
        return boto3.session.Session().client("s3", endpoint_url=endpoint_url, config=config)
    except Exception as exc:  # botocore's errors for a malformed endpoint or region
        where = endpoint_url or "from the environment"
        raise BlobError(f"cannot make an S3 client for the endpoint {where}: {exc}") from exc


class _S3Reader(io.RawIOBase):
    """The bytes of one object, read with one ranged GET from the position on; seek starts a new GET."""

    def __init__(self, store: S3BlobStore, key: str, size: int):
        self._store, self._key, self._size = store, key, size
        self._pos = 0
        self._body: Any = None

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        if base + offset < 0:
            raise ValueError(f"negative position {base + offset}")
        if base + offset != self._pos:
            self._drop_body()
            self._pos = base + offset
        return self._pos

    def readinto(self, buffer: Any) -> int:
        want = min(len(buffer), self._size - self._pos)
        if want <= 0:
            return 0
        with self._store.errors(f"read {self._key}"):
            if self._body is None:
                got = self._store.client.get_object(
                    Bucket=self._store.bucket, Key=self._key, Range=f"bytes={self._pos}-{self._size - 1}"
                )
                self._body = got["Body"]
            data = self._body.read(want)
        if not data:
            raise BlobError(
                f"{self._key} in S3 bucket {self._store.bucket!r} ended at byte {self._pos} of {self._size}"
            )
        memoryview(buffer)[: len(data)] = data
        self._pos += len(data)
        return len(data)

    def _drop_body(self) -> None:
        if self._body is not None:
            self._body.close()
            self._body = None

    def close(self) -> None:
        self._drop_body()
        super().close()


class _S3Writer(BlobWriter):
    """Hashes while it buffers a part; full parts go up on a small pool while the next one arrives."""

    def __init__(self, store: S3BlobStore):
        self._store = store
        self._hash = hashlib.sha256()
        self._size = 0
        self._buffer = bytearray()
        self._temp = store.temp_key()
        self._upload_id: str | None = None
        self._parts: list[Future[dict[str, Any]]] = []
        self._pool: ThreadPoolExecutor | None = None
        self._temp_written = False  # the multipart upload completed: the temp object exists
        self._closed = False

    def write(self, data: bytes) -> None:
        if self._closed:
            raise BlobError("this blob was already committed or aborted")
        self._hash.update(data)
        self._size += len(data)
        self._buffer += data
        try:
            while len(self._buffer) >= part_bytes(len(self._parts) + 1):
                n = part_bytes(len(self._parts) + 1)
                part = bytes(self._buffer[:n])
                del self._buffer[:n]
                self._send(part)
        except BlobError:
            self.abort()
            raise

    def _send(self, part: bytes) -> None:
        store = self._store
        if self._upload_id is None:
            with store.errors("start an upload"):
                created = store.client.create_multipart_upload(Bucket=store.bucket, Key=self._temp)
            self._upload_id = created["UploadId"]
            self._pool = ThreadPoolExecutor(_PARTS_IN_FLIGHT, thread_name_prefix="s3-part")
        assert self._pool is not None
        # Back-pressure: at most _PARTS_IN_FLIGHT parts held in memory; an upload's error surfaces here.
        pending = [f for f in self._parts if not f.done()]
        if len(pending) >= _PARTS_IN_FLIGHT:
            pending[0].result()
        for f in self._parts:
            if f.done():
                f.result()
        self._parts.append(self._pool.submit(self._upload_part, len(self._parts) + 1, part))

    def _upload_part(self, number: int, part: bytes) -> dict[str, Any]:
        store = self._store
        with store.errors(f"upload part {number} of {self._temp}"):
            sent = store.client.upload_part(
                Bucket=store.bucket, Key=self._temp, UploadId=self._upload_id, PartNumber=number, Body=part
            )
        return {"PartNumber": number, "ETag": sent["ETag"]}

    def commit(self) -> tuple[str, int]:
        if self._closed:
            raise BlobError("this blob was already committed or aborted")
        digest = self._hash.hexdigest()
        store, final = self._store, self._store.key(digest)
        try:
            if self._upload_id is None:  # one part in all: a single PUT is atomic, straight to the final key
                with store.errors(f"store {final}"):
                    store.client.put_object(Bucket=store.bucket, Key=final, Body=bytes(self._buffer))
            else:
                self._publish(digest)
        except BlobError:
            self.abort()
            raise
        self._closed = True
        self._buffer = bytearray()
        return digest, self._size

    def _publish(self, digest: str) -> None:
        from boto3.s3.transfer import TransferConfig

        store, final = self._store, self._store.key(digest)
        if self._buffer or not self._parts:
            self._send(bytes(self._buffer))
            self._buffer = bytearray()
        parts = [f.result() for f in self._parts]
        assert self._pool is not None
        self._pool.shutdown()
        with store.errors(f"finish the upload of {self._temp}"):
            done = store.client.complete_multipart_upload(
                Bucket=store.bucket, Key=self._temp, UploadId=self._upload_id, MultipartUpload={"Parts": parts}
            )
        self._upload_id, self._temp_written = None, True
        # Content-addressed: an object already under this key holds these very bytes.
        if store.size(digest) != self._size:
            with store.errors(f"store {final}"):
                # If-Match: exactly the object this upload completed, never another writer's at the temp key.
                store.client.copy(
                    {"Bucket": store.bucket, "Key": self._temp},
                    store.bucket,
                    final,
                    ExtraArgs={"CopySourceIfMatch": done["ETag"]},
                    # One CopyObject up to 1 GiB, 256 MiB UploadPartCopy parts above (CopyObject stops at 5 GiB).
                    Config=TransferConfig(multipart_threshold=1 << 30, multipart_chunksize=256 * _MiB),
                )
        self._delete_temp()

    def _delete_temp(self) -> None:
        store = self._store
        with store.errors(f"delete {self._temp}"):
            store.client.delete_object(Bucket=store.bucket, Key=self._temp)
        self._temp_written = False

    def abort(self) -> None:
        """Throw the upload away; failures to clean up are logged (the bucket's lifecycle rule is the backstop)."""
        self._closed = True
        self._buffer = bytearray()
        if self._pool is not None:
            for f in self._parts:
                f.cancel()
            self._pool.shutdown(wait=True)  # no part may land after the abort below
        store = self._store
        try:
            if self._upload_id is not None:
                with store.errors(f"abort the upload of {self._temp}"):
                    store.client.abort_multipart_upload(Bucket=store.bucket, Key=self._temp, UploadId=self._upload_id)
                self._upload_id = None
            if self._temp_written:
                self._delete_temp()
        except BlobError as exc:
            log.warning("%s; the bucket's lifecycle rule has to remove it", exc)


def open_blob_store(spec: str, default_root: Path) -> BlobStore:
    """The blob store a spec names: "" is default_root; s3://bucket[/prefix] is S3; anything else a directory.

    A directory given here must exist already: it is meant to be shared by every replica, and creating it
    would hide a mount that failed. An S3 bucket is checked now, so a wrong name or credential stops central
    at start rather than at the first push.
    """
    spec = spec.strip()
    if not spec:
        return LocalBlobStore(default_root)
    scheme, sep, rest = spec.partition("://")
    if sep:
        if scheme.lower() != "s3":
            raise BlobError(f"blob store {spec!r}: unknown scheme {scheme!r}; use s3://bucket/prefix or a directory")
        bucket, _, prefix = rest.partition("/")
        if not bucket:
            raise BlobError(f"blob store {spec!r} names no bucket; write s3://bucket or s3://bucket/prefix")
        store = S3BlobStore(bucket, prefix)
        store.check()
        return store
    root = Path(spec)
    if not root.is_dir():
        raise BlobError(f"blob store directory {root} does not exist; create it, or mount the shared directory")
    return LocalBlobStore(root)
