"""The backup archive's encrypted container: a header, then the payload in authenticated chunks.

    magic            21 bytes  b"\\x89edgefleet-backup\\r\\n\\x1a\\n" (binary-safe: a text-mode copy alters it)
    format version    2 bytes  big-endian; a reader refuses a version newer than its own
    header length     4 bytes  big-endian, at most MAX_HEADER_BYTES
    header               JSON  how the key is derived, the chunk size, the nonce prefix, a key check
    chunks                     AES-256-GCM, each CHUNK_BYTES of plaintext (the last 0..CHUNK_BYTES) + a 16-byte tag

The key is derived either from a passphrase (scrypt, n=2**15, r=8, p=1, a random salt) or for a recipient's
X25519 public key (an ephemeral X25519 key agreement, then HKDF-SHA256): 64 bytes, the first 32 the AES key,
the last 32 stored in the header as a key check, so a wrong passphrase or identity is told apart from a damaged
archive before any chunk is read.

Chunks follow the STREAM construction (Hoang, Reyhanitabar, Rogaway, Vizár 2015): chunk i's nonce is the
header's 7-byte random prefix, i as 4 bytes, then a byte that is 1 on the last chunk only, and every chunk
carries the whole header as associated data. So a changed byte anywhere (header included), chunks swapped,
dropped or repeated, a cut at a chunk boundary and bytes appended after the last chunk all fail
authentication, and plaintext is released a chunk at a time only once that chunk is authenticated.

Nothing here touches the file system or the clock: callers hand in binary streams.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import x25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from central.backup import BackupError

MAGIC = b"\x89edgefleet-backup\r\n\x1a\n"
FORMAT_VERSION = 1
MAX_HEADER_BYTES = 64 * 1024
CHUNK_BYTES = 1 << 20
MIN_CHUNK_BYTES, MAX_CHUNK_BYTES = 1024, 16 << 20
TAG_BYTES = 16
NONCE_PREFIX_BYTES = 7
MAX_CHUNKS = 1 << 32  # the nonce's counter is 4 bytes

SCRYPT_N, SCRYPT_R, SCRYPT_P = 1 << 15, 8, 1
# What a reader accepts from a header: a forged header must not make it spend gigabytes or hours deriving a key.
MAX_SCRYPT_N, MAX_SCRYPT_R, MAX_SCRYPT_P = 1 << 18, 16, 4
SALT_BYTES = 16
KEY_CHECK_BYTES = 32
_HKDF_INFO = b"edgefleet-backup v1 x25519"

_PREAMBLE = struct.Struct(">HI")  # format version, header length


class ArchiveError(BackupError):
    """An archive that cannot be read; the subclasses say why."""


class NotABackupError(ArchiveError):
    """The file is not an edgefleet backup (wrong magic, or a header this format cannot hold)."""


class FormatVersionError(ArchiveError):
    """The archive was written in a newer format than this edgefleet reads."""


class WrongKeyError(ArchiveError):
    """The passphrase or identity given does not open this archive (or none of the right kind was given)."""


class DamagedError(ArchiveError):
    """A chunk fails authentication: the archive was altered, truncated or reordered."""


# -- keys ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Passphrase:
    """Seal to (or open with) a passphrase the operator holds."""

    secret: bytes

    def __post_init__(self) -> None:
        if not self.secret.strip():
            raise BackupError(
                "the backup passphrase is empty: give one with at least one character that is not a space"
            )

    def __repr__(self) -> str:  # never print the secret
        return "Passphrase(***)"


@dataclass(frozen=True)
class Recipient:
    """Seal for the holder of an X25519 private key (made by `edgefleet central backup keygen`)."""

    public_key: x25519.X25519PublicKey

    @property
    def key_id(self) -> str:
        return recipient_id(self.public_key)


@dataclass(frozen=True)
class Identity:
    """Open an archive sealed for a Recipient: the X25519 private key."""

    private_key: x25519.X25519PrivateKey

    @property
    def key_id(self) -> str:
        return recipient_id(self.private_key.public_key())

    def __repr__(self) -> str:
        return f"Identity({self.key_id})"


Sealer = Passphrase | Recipient
Opener = Passphrase | Identity


def recipient_id(public_key: x25519.X25519PublicKey) -> str:
    """How a header and messages name a recipient key: x25519: and the sha256 of its 32 raw bytes."""
    return "x25519:" + hashlib.sha256(_raw(public_key)).hexdigest()


def _raw(public_key: x25519.X25519PublicKey) -> bytes:
    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def load_recipient(pem: bytes) -> Recipient:
    try:
        key = serialization.load_pem_public_key(pem)
    except ValueError:  # cryptography's reason names PEM delimiters and links its FAQ: ours says what to give
        raise WrongKeyError(
            "the recipient is not a PEM public key (give the FILE.pub `edgefleet central backup keygen --out FILE`"
            " wrote)"
        ) from None
    if not isinstance(key, x25519.X25519PublicKey):
        raise WrongKeyError(
            "the recipient is not an X25519 public key (make one with `edgefleet central backup keygen`)"
        )
    return Recipient(key)


def load_identity(pem: bytes) -> Identity:
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError):
        raise WrongKeyError(
            "the identity is not an unencrypted PEM private key (give the FILE `edgefleet central backup keygen"
            " --out FILE` wrote, not FILE.pub)"
        ) from None
    if not isinstance(key, x25519.X25519PrivateKey):
        raise WrongKeyError("the identity is not an X25519 private key (made by `edgefleet central backup keygen`)")
    return Identity(key)


def generate_identity() -> tuple[bytes, bytes]:
    """A new X25519 key pair as (private PKCS#8 PEM, public SubjectPublicKeyInfo PEM)."""
    key = x25519.X25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return private, public


# -- the header ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Header:
    """What the header says. `kind` is "passphrase" (scrypt fields set) or "recipient" (x25519 fields set)."""

    kind: str
    chunk_bytes: int
    nonce_prefix: bytes
    key_check: bytes
    salt: bytes = b""
    scrypt_n: int = 0
    scrypt_r: int = 0
    scrypt_p: int = 0
    recipient: str = ""
    ephemeral_public: bytes = b""

    def fields(self) -> dict:
        common = {
            "cipher": "aes-256-gcm-stream",
            "chunk_bytes": self.chunk_bytes,
            "nonce_prefix": self.nonce_prefix.hex(),
            "key_check": self.key_check.hex(),
        }
        if self.kind == "passphrase":
            key = {"kind": "passphrase", "kdf": "scrypt", "salt": self.salt.hex(), "n": self.scrypt_n}
            key.update(r=self.scrypt_r, p=self.scrypt_p)
        else:
            key = {"kind": "recipient", "recipient": self.recipient, "ephemeral": self.ephemeral_public.hex()}
        return {**common, "key": key}

    def encode(self) -> bytes:
        """The header's bytes as written: magic, version, length, JSON. Every chunk's associated data."""
        body = json.dumps(self.fields(), sort_keys=True, separators=(",", ":")).encode()
        return MAGIC + _PREAMBLE.pack(FORMAT_VERSION, len(body)) + body


def parse_preamble(data: bytes) -> tuple[int, int]:
    """(format version, header length) from the first len(MAGIC) + 6 bytes; refuses what is not a backup."""
    if len(data) < len(MAGIC) or data[: len(MAGIC)] != MAGIC:
        raise NotABackupError("it is not an edgefleet backup (it does not start with an edgefleet backup's header)")
    if len(data) < len(MAGIC) + _PREAMBLE.size:
        raise NotABackupError("it ends inside its header: not a whole edgefleet backup")
    version, length = _PREAMBLE.unpack_from(data, len(MAGIC))
    if version > FORMAT_VERSION:
        raise FormatVersionError(
            f"it was written in backup format {version}; this edgefleet reads format {FORMAT_VERSION} and older:"
            " verify or restore it with a newer edgefleet"
        )
    if version < 1:
        raise NotABackupError(f"its header names format version {version}, which no edgefleet writes")
    if length > MAX_HEADER_BYTES:
        raise NotABackupError(
            f"its header claims {length} bytes, more than the {MAX_HEADER_BYTES} an edgefleet backup's header holds"
        )
    return version, length


def parse_header(body: bytes) -> Header:
    """The header from its JSON body; every field is checked and bounded (a forged header is refused here)."""
    try:
        fields = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise NotABackupError(f"its header is not JSON: {exc}") from None
    if not isinstance(fields, dict) or not isinstance(fields.get("key"), dict):
        raise NotABackupError("its header does not say how its key is derived")
    if fields.get("cipher") != "aes-256-gcm-stream":
        raise NotABackupError(f"its header names cipher {_shown(fields.get('cipher'))}, not aes-256-gcm-stream")
    chunk_bytes = _int_field(fields, "chunk_bytes", MIN_CHUNK_BYTES, MAX_CHUNK_BYTES)
    nonce_prefix = _hex_field(fields, "nonce_prefix", NONCE_PREFIX_BYTES, NONCE_PREFIX_BYTES)
    key_check = _hex_field(fields, "key_check", KEY_CHECK_BYTES, KEY_CHECK_BYTES)
    key = fields["key"]
    if key.get("kind") == "passphrase":
        if key.get("kdf") != "scrypt":
            raise NotABackupError(f"its header names key derivation {_shown(key.get('kdf'))}, not scrypt")
        n = _int_field(key, "n", 2, MAX_SCRYPT_N)
        if n & (n - 1):
            raise NotABackupError(f"its header's scrypt n is {n}, not a power of two")
        return Header(
            "passphrase",
            chunk_bytes,
            nonce_prefix,
            key_check,
            salt=_hex_field(key, "salt", SALT_BYTES, 64),
            scrypt_n=n,
            scrypt_r=_int_field(key, "r", 1, MAX_SCRYPT_R),
            scrypt_p=_int_field(key, "p", 1, MAX_SCRYPT_P),
        )
    if key.get("kind") == "recipient":
        recipient = key.get("recipient")
        if not isinstance(recipient, str) or len(recipient) != 71 or not recipient.startswith("x25519:"):
            raise NotABackupError(f"its header's recipient {_shown(recipient)} is not an x25519: key id")
        ephemeral = _hex_field(key, "ephemeral", 32, 32)
        return Header(
            "recipient", chunk_bytes, nonce_prefix, key_check, recipient=recipient, ephemeral_public=ephemeral
        )
    raise NotABackupError(f"its header names key kind {_shown(key.get('kind'))}, not passphrase or recipient")


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _int_field(fields: dict, name: str, low: int, high: int) -> int:
    value = fields.get(name)
    if type(value) is not int or not low <= value <= high:
        raise NotABackupError(f"its header's {name} is {_shown(value)}, not a whole number from {low} to {high}")
    return value


def _hex_field(fields: dict, name: str, low: int, high: int) -> bytes:
    value = fields.get(name)
    try:
        raw = bytes.fromhex(value) if isinstance(value, str) and len(value) <= 2 * high else None
    except ValueError:
        raw = None
    if raw is None or not low <= len(raw) <= high:
        raise NotABackupError(f"its header's {name} is {_shown(value)}, not {low} to {high} bytes in hex")
    return raw


# -- deriving the key ------------------------------------------------------------------------------------------


def _scrypt(secret: bytes, salt: bytes, n: int, r: int, p: int) -> bytes:
    return Scrypt(salt=salt, length=32 + KEY_CHECK_BYTES, n=n, r=r, p=p).derive(secret)


def _hkdf(shared: bytes, ephemeral_public: bytes, recipient_public: bytes) -> bytes:
    hkdf = HKDF(
        algorithm=hashes.SHA256(),
        length=32 + KEY_CHECK_BYTES,
        salt=ephemeral_public + recipient_public,
        info=_HKDF_INFO,
    )
    return hkdf.derive(shared)


def seal_header(
    sealer: Sealer, chunk_bytes: int = CHUNK_BYTES, random: Callable[[int], bytes] = os.urandom
) -> tuple[Header, bytes]:
    """A new header for `sealer` and the AES key it derives. `random` is a parameter so tests can fix it."""
    if not MIN_CHUNK_BYTES <= chunk_bytes <= MAX_CHUNK_BYTES:
        raise ValueError(f"chunk_bytes must be from {MIN_CHUNK_BYTES} to {MAX_CHUNK_BYTES}")
    nonce_prefix = random(NONCE_PREFIX_BYTES)
    if isinstance(sealer, Passphrase):
        salt = random(SALT_BYTES)
        derived = _scrypt(sealer.secret, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
        header = Header(
            "passphrase",
            chunk_bytes,
            nonce_prefix,
            derived[32:],
            salt=salt,
            scrypt_n=SCRYPT_N,
            scrypt_r=SCRYPT_R,
            scrypt_p=SCRYPT_P,
        )
        return header, derived[:32]
    ephemeral = x25519.X25519PrivateKey.from_private_bytes(random(32))
    ephemeral_public = _raw(ephemeral.public_key())
    derived = _hkdf(ephemeral.exchange(sealer.public_key), ephemeral_public, _raw(sealer.public_key))
    header = Header(
        "recipient", chunk_bytes, nonce_prefix, derived[32:], recipient=sealer.key_id, ephemeral_public=ephemeral_public
    )
    return header, derived[:32]


def open_key(header: Header, opener: Opener | None) -> bytes:
    """The AES key for `header` from the passphrase or identity given; WrongKeyError when it does not fit."""
    if header.kind == "passphrase":
        if not isinstance(opener, Passphrase):
            raise WrongKeyError(
                "this backup is sealed with a passphrase: give it with --passphrase-file FILE or"
                " EDGEFLEET_BACKUP_PASSPHRASE"
            )
        derived = _scrypt(opener.secret, header.salt, header.scrypt_n, header.scrypt_r, header.scrypt_p)
        if not hmac.compare_digest(derived[32:], header.key_check):
            raise WrongKeyError(
                "the passphrase does not open this backup (wrong passphrase, or its header was altered)"
            )
        return derived[:32]
    if not isinstance(opener, Identity):
        raise WrongKeyError(
            f"this backup is sealed for the recipient key {header.recipient}: give its private key with --identity FILE"
        )
    if opener.key_id != header.recipient:
        raise WrongKeyError(
            f"this backup is sealed for the recipient key {header.recipient}, not for the identity given"
            f" ({opener.key_id})"
        )
    try:
        shared = opener.private_key.exchange(x25519.X25519PublicKey.from_public_bytes(header.ephemeral_public))
    except ValueError:
        raise WrongKeyError("the header's ephemeral key is not a usable X25519 key: the header was altered") from None
    derived = _hkdf(shared, header.ephemeral_public, _raw(opener.private_key.public_key()))
    if not hmac.compare_digest(derived[32:], header.key_check):
        raise WrongKeyError("the identity does not open this backup (its header was altered)")
    return derived[:32]


def chunk_nonce(prefix: bytes, counter: int, last: bool) -> bytes:
    """STREAM's nonce: 7-byte prefix, 4-byte big-endian counter, 1 on the last chunk else 0."""
    if not 0 <= counter < MAX_CHUNKS:
        raise DamagedError(f"chunk {counter} is past the {MAX_CHUNKS} chunks one archive may hold")
    return prefix + counter.to_bytes(4, "big") + (b"\x01" if last else b"\x00")


# -- writing ---------------------------------------------------------------------------------------------------


class ArchiveWriter:
    """Encrypts what is written to it onto `out`, a chunk at a time; close() seals the last chunk. Nothing is
    readable as a whole archive until close() returns."""

    def __init__(self, out: BinaryIO, sealer: Sealer, chunk_bytes: int = CHUNK_BYTES):
        self.header, key = seal_header(sealer, chunk_bytes)
        self._header_bytes = self.header.encode()
        self._aead = AESGCM(key)
        self._out = out
        self._buffer = bytearray()
        self._counter = 0
        self._closed = False
        self.plaintext_bytes = 0
        out.write(self._header_bytes)

    def write(self, data: bytes) -> int:
        if self._closed:
            raise ValueError("write to a closed archive")
        self._buffer += data
        self.plaintext_bytes += len(data)
        size = self.header.chunk_bytes
        # Keep at least one byte back: only close() knows which chunk is the last.
        while len(self._buffer) > size:
            self._seal(bytes(self._buffer[:size]), last=False)
            del self._buffer[:size]
        return len(data)

    def close(self) -> None:
        if not self._closed:
            self._seal(bytes(self._buffer), last=True)
            self._buffer.clear()
            self._closed = True

    def _seal(self, plaintext: bytes, last: bool) -> None:
        nonce = chunk_nonce(self.header.nonce_prefix, self._counter, last)
        self._out.write(self._aead.encrypt(nonce, plaintext, self._header_bytes))
        self._counter += 1


# -- reading ---------------------------------------------------------------------------------------------------


def read_header(src: BinaryIO) -> tuple[Header, bytes]:
    """The header and its bytes, read from the start of src."""
    start = _read_exactly(src, len(MAGIC) + _PREAMBLE.size)
    _, length = parse_preamble(start)
    body = _read_exactly(src, length)
    if len(body) < length:
        raise NotABackupError("it ends inside its header: not a whole edgefleet backup")
    return parse_header(body), start + body


class ArchiveReader:
    """Decrypts an archive from `src`: read(n) returns authenticated plaintext only, b"" at the authenticated end.

    A DamagedError is raised at the first chunk that fails, saying where; read_to_end() authenticates the rest
    (a reader that stops early, e.g. at the end of a tar stream, must call it to know the archive is whole)."""

    def __init__(self, src: BinaryIO, opener: Opener | None):
        self.header, self._header_bytes = read_header(src)
        self._aead = AESGCM(open_key(self.header, opener))
        self._src = src
        self._record = self.header.chunk_bytes + TAG_BYTES
        self._pending = _read_exactly(src, self._record)
        self._plain = b""
        self._offset = 0
        self._counter = 0
        self._done = False
        self.chunks = 0
        self.plaintext_bytes = 0

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            parts = [self._take(len(self._plain) - self._offset)]
            while self._fill():
                parts.append(self._take(len(self._plain)))
            return b"".join(parts)
        if self._offset >= len(self._plain) and not self._fill():
            return b""
        return self._take(size)

    def read_to_end(self) -> int:
        """Authenticate every chunk left; returns the plaintext bytes that were left unread."""
        left = len(self._plain) - self._offset
        self._offset = len(self._plain)
        while self._fill():
            left += len(self._plain)
            self._offset = len(self._plain)
        return left

    def _take(self, size: int) -> bytes:
        data = self._plain[self._offset : self._offset + size]
        self._offset += len(data)
        return data

    def _fill(self) -> bool:
        """Decrypt the next chunk into the buffer; False at the authenticated end."""
        while not self._done:
            record, self._pending = self._pending, b""
            after = _read_exactly(self._src, self._record) if len(record) == self._record else b""
            self._pending = after
            self._plain = self._open(record, last=not after)
            self._offset = 0
            if self._plain:
                return True
        return False

    def _open(self, record: bytes, last: bool) -> bytes:
        counter = self._counter
        where = f"chunk {counter} (at byte {len(self._header_bytes) + counter * self._record})"
        if not record:
            raise DamagedError(f"the archive ends before {where}, with no final chunk: it was truncated")
        plaintext = self._decrypt(record, counter, last)
        if plaintext is None:
            if last and len(record) == self._record and self._decrypt(record, counter, False) is not None:
                raise DamagedError(f"the archive ends after {where}, before its final chunk: it was truncated")
            if not last and self._decrypt(record, counter, True) is not None:
                raise DamagedError(f"bytes follow the final chunk, {where}: something was appended to the archive")
            if last and len(record) < self._record:
                raise DamagedError(f"{where} fails authentication: the archive was truncated or altered there")
            raise DamagedError(f"{where} fails authentication: the archive was altered, or its chunks reordered")
        self._counter += 1
        self.chunks += 1
        self.plaintext_bytes += len(plaintext)
        self._done = last
        return plaintext

    def _decrypt(self, record: bytes, counter: int, last: bool) -> bytes | None:
        try:
            return self._aead.decrypt(chunk_nonce(self.header.nonce_prefix, counter, last), record, self._header_bytes)
        except InvalidTag:
            return None


def _read_exactly(src: BinaryIO, size: int) -> bytes:
    """Up to `size` bytes; fewer only at the end of src."""
    parts, got = [], 0
    while got < size:
        part = src.read(size - got)
        if not part:
            break
        parts.append(part)
        got += len(part)
    return b"".join(parts)
