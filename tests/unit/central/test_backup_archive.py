"""The backup archive's encrypted container (central.backup.archive): a round trip, and every way of altering,
cutting or mis-opening an archive refused with its own reason.

Archives here use 1 KiB chunks (the smallest the format allows), so a few KiB of plaintext spans several chunks
and a test can aim at a header byte, a chunk, a chunk boundary or the final chunk. Scrypt runs at the format's
real cost (n=2**15), about 0.1 s a derivation.
"""

from __future__ import annotations

import io
import json
import os
import struct

import pytest

from central.backup import BackupError
from central.backup import archive as ar

CHUNK = ar.MIN_CHUNK_BYTES
RECORD = CHUNK + ar.TAG_BYTES
PASS = ar.Passphrase(b"correct horse battery staple")
# 3.5 chunks of plaintext: chunks 0, 1, 2 full, chunk 3 (the final one) half.
PLAINTEXT = os.urandom(3 * CHUNK + CHUNK // 2)


def seal(plaintext: bytes = PLAINTEXT, sealer: ar.Sealer = PASS, pieces: int = 7) -> bytes:
    out = io.BytesIO()
    writer = ar.ArchiveWriter(out, sealer, chunk_bytes=CHUNK)
    step = max(1, len(plaintext) // pieces)
    for i in range(0, len(plaintext), step):  # written in uneven pieces, as tar writes
        writer.write(plaintext[i : i + step])
    writer.close()
    return out.getvalue()


def unseal(data: bytes, opener: ar.Opener | None = PASS) -> bytes:
    reader = ar.ArchiveReader(io.BytesIO(data), opener)
    parts = []
    while True:
        part = reader.read(333)
        if not part:
            return b"".join(parts)
        parts.append(part)


def header_length(data: bytes) -> int:
    return len(ar.MAGIC) + 6 + struct.unpack_from(">I", data, len(ar.MAGIC) + 2)[0]


def test_round_trip_with_a_passphrase_across_chunk_sizes():
    for size in (0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK, len(PLAINTEXT)):
        plaintext = PLAINTEXT[:size]
        data = seal(plaintext)
        assert unseal(data) == plaintext, size
        # Every chunk but the last is full; the last holds 0..CHUNK bytes (an empty payload is one empty chunk).
        chunks = -(-(len(data) - header_length(data)) // RECORD)
        assert chunks == max(1, -(-size // CHUNK)), size


def test_round_trip_to_a_recipient_key():
    private_pem, public_pem = ar.generate_identity()
    data = seal(sealer=ar.load_recipient(public_pem))
    assert unseal(data, ar.load_identity(private_pem)) == PLAINTEXT
    assert b"PRIVATE KEY" not in data and PLAINTEXT[:64] not in data


def test_read_to_end_authenticates_what_was_not_read():
    reader = ar.ArchiveReader(io.BytesIO(seal()), PASS)
    assert reader.read(10) == PLAINTEXT[:10]
    assert reader.read_to_end() == len(PLAINTEXT) - 10
    assert reader.plaintext_bytes == len(PLAINTEXT) and reader.chunks == 4


def test_any_changed_header_byte_is_refused():
    """Every header byte of an archive sealed to a recipient key (cheap to open), and every 8th of one sealed with
    a passphrase (each try derives a scrypt key)."""
    private_pem, public_pem = ar.generate_identity()
    for data, opener, step in (
        (seal(sealer=ar.load_recipient(public_pem)), ar.load_identity(private_pem), 1),
        (seal(), PASS, 8),
    ):
        end = header_length(data)
        for i in [*range(0, end, step), end - 1]:
            altered = bytearray(data)
            altered[i] ^= 0x01
            with pytest.raises(ar.ArchiveError):
                unseal(bytes(altered), opener)


def test_any_changed_chunk_byte_is_refused_naming_the_chunk():
    data = seal()
    start = header_length(data)
    # The first, middle and last byte of each chunk (its ciphertext and its tag).
    for chunk in range(4):
        end = min(start + (chunk + 1) * RECORD, len(data))
        for i in (start + chunk * RECORD, start + chunk * RECORD + CHUNK // 2, end - 1):
            altered = bytearray(data)
            altered[i] ^= 0x80
            with pytest.raises(ar.DamagedError, match=f"chunk {chunk} .*fails authentication"):
                unseal(bytes(altered))


def test_a_cut_at_a_chunk_boundary_is_called_truncated():
    data = seal()
    start = header_length(data)
    for chunks_kept in (1, 2, 3):
        with pytest.raises(ar.DamagedError, match="before its final chunk: it was truncated"):
            unseal(data[: start + chunks_kept * RECORD])
    with pytest.raises(
        ar.DamagedError, match=r"ends before chunk 0 \(at byte \d+\), with no final chunk: it was truncated"
    ):
        unseal(data[:start])


def test_a_cut_inside_a_chunk_is_refused():
    data = seal()
    start = header_length(data)
    for cut in (start + 5, start + RECORD + 100, len(data) - 1):
        with pytest.raises(ar.DamagedError, match="truncated or altered"):
            unseal(data[:cut])


def test_dropping_the_last_chunk_is_refused():
    data = seal()
    start = header_length(data)
    with pytest.raises(ar.DamagedError, match="truncated"):
        unseal(data[: start + 3 * RECORD])


def test_swapped_repeated_and_appended_chunks_are_refused():
    data = seal()
    start = header_length(data)
    chunks = [data[start + i * RECORD : start + (i + 1) * RECORD] for i in range(4)]
    head = data[:start]
    with pytest.raises(ar.DamagedError, match=r"chunk 0 .*altered, or its chunks reordered"):
        unseal(head + chunks[1] + chunks[0] + chunks[2] + chunks[3])
    with pytest.raises(ar.DamagedError, match=r"chunk 2 .*reordered"):
        unseal(head + chunks[0] + chunks[1] + chunks[1] + chunks[2] + chunks[3])
    # A final chunk that is full, then bytes after it.
    full = seal(PLAINTEXT[: 2 * CHUNK])
    with pytest.raises(ar.DamagedError, match="bytes follow the final chunk"):
        unseal(full + full[-RECORD:])


def test_an_archive_from_another_passphrase_cannot_lend_its_chunks():
    """Chunks carry the header as associated data: another archive's chunk does not fit, even at its index."""
    data, other = seal(), seal()
    start = header_length(data)
    spliced = data[: start + RECORD] + other[start + RECORD : start + 2 * RECORD] + data[start + 2 * RECORD :]
    with pytest.raises(ar.DamagedError, match="chunk 1 "):
        unseal(spliced)


def test_a_wrong_passphrase_is_told_apart_from_damage():
    with pytest.raises(ar.WrongKeyError, match="the passphrase does not open this backup"):
        unseal(seal(), ar.Passphrase(b"correct horse battery stapler"))


def test_the_wrong_kind_of_key_says_what_to_give():
    private_pem, public_pem = ar.generate_identity()
    with pytest.raises(ar.WrongKeyError, match="sealed with a passphrase: give it with --passphrase-file"):
        unseal(seal(), ar.load_identity(private_pem))
    sealed_for_key = seal(sealer=ar.load_recipient(public_pem))
    with pytest.raises(ar.WrongKeyError, match=r"sealed for the recipient key x25519:[0-9a-f]{64}: give its private"):
        unseal(sealed_for_key, PASS)
    with pytest.raises(ar.WrongKeyError, match="give its private key with --identity"):
        unseal(sealed_for_key, None)


def test_a_wrong_identity_names_both_keys():
    _, public_pem = ar.generate_identity()
    other_private, _ = ar.generate_identity()
    recipient, other = ar.load_recipient(public_pem), ar.load_identity(other_private)
    with pytest.raises(ar.WrongKeyError) as refused:
        unseal(seal(sealer=recipient), other)
    assert recipient.key_id in str(refused.value) and other.key_id in str(refused.value)


def test_keys_of_the_wrong_type_are_refused():
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    key = ed25519.Ed25519PrivateKey.generate()
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(ar.WrongKeyError, match="not an X25519 public key"):
        ar.load_recipient(public)
    with pytest.raises(ar.WrongKeyError, match="not an X25519 private key"):
        ar.load_identity(private)
    with pytest.raises(ar.WrongKeyError, match="not a PEM public key"):
        ar.load_recipient(b"hello")


@pytest.mark.parametrize("secret", [b"", b"   ", b"\n"])
def test_an_empty_passphrase_is_refused(secret):
    with pytest.raises(BackupError, match="passphrase is empty"):
        ar.Passphrase(secret)


def test_the_passphrase_never_shows_in_repr():
    assert "staple" not in repr(PASS)


def test_not_a_backup():
    for data in (b"", b"hello world, this is a text file\n", b"SQLite format 3\x00" + bytes(100), ar.MAGIC[:-1]):
        with pytest.raises(ar.NotABackupError, match="not an edgefleet backup"):
            unseal(data)


def test_a_newer_format_version_is_refused_by_name():
    data = bytearray(seal())
    struct.pack_into(">H", data, len(ar.MAGIC), ar.FORMAT_VERSION + 1)
    with pytest.raises(ar.FormatVersionError, match=f"format {ar.FORMAT_VERSION + 1}; this edgefleet reads format 1"):
        unseal(bytes(data))


def _with_header(fields: dict, length: int | None = None) -> bytes:
    body = json.dumps(fields).encode()
    return ar.MAGIC + struct.pack(">HI", ar.FORMAT_VERSION, len(body) if length is None else length) + body


def _fields() -> dict:
    data = seal(b"x")
    return json.loads(data[len(ar.MAGIC) + 6 : header_length(data)])


def test_a_huge_header_length_is_refused_before_reading_it():
    with pytest.raises(ar.NotABackupError, match="claims 4294967295 bytes"):
        unseal(_with_header({}, length=0xFFFFFFFF))


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda f: f["key"].update(n=1 << 30), "scrypt|n is"),  # gigabytes of memory to derive
        (lambda f: f["key"].update(n=3 << 10), "n is 3072, not a power of two"),
        (lambda f: f["key"].update(r=10**9), "r is"),
        (lambda f: f["key"].update(p=-1), "p is"),
        (lambda f: f["key"].update(salt="ab" * 30000), "salt is"),
        (lambda f: f["key"].update(salt="zz" * 16), "salt is"),
        (lambda f: f["key"].update(kdf="argon9"), "key derivation 'argon9'"),
        (lambda f: f["key"].update(kind="mystery"), "key kind 'mystery'"),
        (lambda f: f.update(chunk_bytes=1 << 40), "chunk_bytes is"),
        (lambda f: f.update(chunk_bytes="1024"), "chunk_bytes is"),
        (lambda f: f.update(nonce_prefix="00" * 12), "nonce_prefix is"),
        (lambda f: f.update(key_check="00" * 1000), "key_check is"),
        (lambda f: f.update(cipher="rot13"), "cipher 'rot13'"),
        (lambda f: f.update(key="x" * 60000), "does not say how its key is derived"),
    ],
)
def test_header_fields_out_of_bounds_are_refused(change, reason):
    fields = _fields()
    change(fields)
    with pytest.raises(ar.NotABackupError, match=reason):
        unseal(_with_header(fields) + bytes(RECORD))


def test_a_recipient_header_with_a_forged_key_id_or_ephemeral_key_is_refused():
    _, public_pem = ar.generate_identity()
    data = seal(b"x", sealer=ar.load_recipient(public_pem))
    fields = json.loads(data[len(ar.MAGIC) + 6 : header_length(data)])
    fields["key"]["recipient"] = "x25519:" + "g" * 10
    with pytest.raises(ar.NotABackupError, match=r"recipient .* is not an x25519: key id"):
        unseal(_with_header(fields))
    fields = json.loads(data[len(ar.MAGIC) + 6 : header_length(data)])
    fields["key"]["ephemeral"] = "00" * 64
    with pytest.raises(ar.NotABackupError, match="ephemeral is"):
        unseal(_with_header(fields))


def test_nonces_follow_stream():
    prefix = bytes(range(7))
    assert ar.chunk_nonce(prefix, 0, False) == prefix + b"\x00\x00\x00\x00\x00"
    assert ar.chunk_nonce(prefix, 258, True) == prefix + b"\x00\x00\x01\x02\x01"
    with pytest.raises(ar.DamagedError):
        ar.chunk_nonce(prefix, 1 << 32, False)
