"""The BlobStore contract, run on LocalBlobStore and on S3BlobStore against a real moto server process, then
what is particular to S3 (where a push lives before it is committed, error messages) and open_blob_store."""

from __future__ import annotations

import hashlib
import os
import secrets

import pytest

from central.blobs import PART_BYTES, BlobError, LocalBlobStore, S3BlobStore, open_blob_store, part_bytes
from edgefleet.ports import free_port
from s3_server import start_s3_server

MiB = 1 << 20
MULTIPART = 2 * PART_BYTES + 3 * MiB + 5  # three parts, the last one short


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    server = start_s3_server(tmp_path_factory.mktemp("moto") / "moto.log")
    try:
        yield server
    finally:
        server.stop()


def fresh_bucket(s3) -> str:
    return s3.create_bucket(f"blobs-{secrets.token_hex(6)}")


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path):
    if request.param == "local":
        return LocalBlobStore(tmp_path / "blobs")
    s3 = request.getfixturevalue("s3")
    return S3BlobStore(fresh_bucket(s3), prefix="models/blobs", client=s3.client())


def push(store, data: bytes, chunk: int = MiB) -> tuple[str, int]:
    writer = store.writer()
    for start in range(0, len(data), chunk):
        writer.write(data[start : start + chunk])
    return writer.commit()


def read_all(store, sha256: str, offset: int = 0) -> bytes:
    """As servicers.FetchArtifact reads: seek to the offset, then 1 MiB reads until an empty one."""
    with store.open(sha256) as blob:
        blob.seek(offset)
        return b"".join(iter(lambda: blob.read(MiB), b""))


def stored_names(store) -> list[str]:
    """Every object or file the store holds, temp ones included."""
    if isinstance(store, LocalBlobStore):
        return sorted(str(p.relative_to(store.root)) for p in store.root.rglob("*") if p.is_file())
    listed = store.client.list_objects_v2(Bucket=store.bucket).get("Contents", [])
    return sorted(o["Key"] for o in listed)


def open_uploads(store) -> list[str]:
    if isinstance(store, LocalBlobStore):
        return []
    return [u["Key"] for u in store.client.list_multipart_uploads(Bucket=store.bucket).get("Uploads", [])]


# -- the contract, on both stores ------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1000, MULTIPART])
def test_round_trip(store, size):
    data = os.urandom(size)
    sha, n = push(store, data)
    assert (sha, n) == (hashlib.sha256(data).hexdigest(), size)
    assert store.size(sha) == size
    assert read_all(store, sha) == data
    assert open_uploads(store) == []


def test_each_blob_is_one_object_under_its_sha256_and_no_temp_is_left(store):
    data = os.urandom(MULTIPART)
    sha, _ = push(store, data)
    names = stored_names(store)
    assert len(names) == 1 and names[0].endswith(sha)


def test_the_size_of_a_missing_blob_is_none_and_opening_it_is_a_blob_error(store):
    missing = hashlib.sha256(b"never pushed").hexdigest()
    assert store.size(missing) is None
    with pytest.raises(BlobError, match=missing):
        store.open(missing)


@pytest.mark.parametrize("offset", [0, 1, MiB, PART_BYTES + 7, MULTIPART - 1, MULTIPART])
def test_open_from_an_offset(store, offset):
    data = os.urandom(MULTIPART)
    sha, _ = push(store, data)
    assert read_all(store, sha, offset) == data[offset:]


def test_seek_back_and_forth_reads_the_right_bytes(store):
    data = os.urandom(3 * MiB)
    sha, _ = push(store, data)
    with store.open(sha) as blob:
        assert blob.read(10) == data[:10]
        blob.seek(2 * MiB)
        assert blob.read(MiB) == data[2 * MiB :]
        blob.seek(5)
        assert blob.tell() == 5 and blob.read(5) == data[5:10]
        assert blob.read(0) == b""


def test_abort_leaves_nothing(store):
    writer = store.writer()
    for _ in range(MULTIPART // MiB):
        writer.write(os.urandom(MiB))
    writer.abort()
    assert stored_names(store) == [] and open_uploads(store) == []


def test_a_half_written_push_is_never_visible(store):
    data = os.urandom(MULTIPART)
    writer = store.writer()
    half = 2 * PART_BYTES + MiB  # past two whole parts, which S3 has received by now
    writer.write(data[:half])
    for digest in (hashlib.sha256(data).hexdigest(), hashlib.sha256(data[:half]).hexdigest()):
        assert store.size(digest) is None
    assert not any(name.endswith(hashlib.sha256(data[:half]).hexdigest()) for name in stored_names(store))
    writer.write(data[half:])
    sha, _ = writer.commit()
    assert read_all(store, sha) == data


def test_delete(store):
    sha, _ = push(store, b"x" * 1000)
    store.delete(sha)
    assert store.size(sha) is None and stored_names(store) == []
    store.delete(sha)  # deleting what is gone is no error


@pytest.mark.parametrize("size", [1000, MULTIPART])
def test_the_same_bytes_pushed_twice_make_one_blob(store, size):
    data = os.urandom(size)
    first, second = push(store, data), push(store, data, chunk=3 * MiB + 1)
    assert first == second
    assert len(stored_names(store)) == 1 and read_all(store, first[0]) == data


def test_two_pushes_at_once_do_not_mix(store):
    a, b = os.urandom(PART_BYTES + MiB), os.urandom(PART_BYTES + 2 * MiB)
    wa, wb = store.writer(), store.writer()
    for start in range(0, len(b), MiB):
        wa.write(a[start : start + MiB])
        wb.write(b[start : start + MiB])
    sha_a, sha_b = wa.commit()[0], wb.commit()[0]
    assert read_all(store, sha_a) == a and read_all(store, sha_b) == b


def test_a_malformed_digest_is_refused(store):
    with pytest.raises(BlobError, match="not a lowercase hex sha256"):
        store.size("../" + "a" * 61)


# -- S3 in particular --------------------------------------------------------------------------------------------


def test_part_sizes_grow_so_ten_thousand_parts_hold_430_gib():
    assert part_bytes(1) == part_bytes(1000) == 8 * MiB and part_bytes(1001) == 16 * MiB
    assert sum(part_bytes(n) for n in range(1, 10_001)) == 440_000 * MiB  # 430 GiB


def test_s3_keys_sit_under_the_prefix(s3):
    store = S3BlobStore(fresh_bucket(s3), prefix="/a/b/", client=s3.client())
    sha, _ = push(store, os.urandom(MULTIPART))
    assert stored_names(store) == [f"a/b/{sha}"]
    unprefixed = S3BlobStore(store.bucket, client=s3.client())
    sha2, _ = push(unprefixed, b"plain")
    assert stored_names(unprefixed) == sorted([f"a/b/{sha}", sha2])


def test_a_missing_bucket_names_the_bucket_and_the_endpoint(s3):
    store = S3BlobStore("no-such-bucket-here", client=s3.client())
    with pytest.raises(BlobError, match=r"'no-such-bucket-here' at http://127\.0\.0\.1:\d+ does not exist"):
        store.check()
    with pytest.raises(BlobError, match=r"'no-such-bucket-here' at http://127\.0\.0\.1:\d+: no such bucket"):
        push(store, os.urandom(MULTIPART))


def test_an_unreachable_endpoint_is_named_and_no_credential_is(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIASECRETKEYID")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "very-secret-value")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    store = S3BlobStore("some-bucket", endpoint_url=endpoint)
    with pytest.raises(BlobError) as caught:
        store.check()
    message = str(caught.value)
    assert endpoint in message and "'some-bucket'" in message and "cannot be reached" in message
    assert "SECRET" not in message and "very-secret" not in message


def test_bad_credentials_are_access_denied(tmp_path):
    # moto checks signatures against its IAM users only when told to; it has none, so every key is refused.
    strict = start_s3_server(tmp_path / "moto-auth.log", env={"INITIAL_NO_AUTH_ACTION_COUNT": "0"})
    try:
        store = S3BlobStore("guarded-bucket", client=strict.client())
        with pytest.raises(BlobError, match=r"'guarded-bucket' at .*: access denied") as caught:
            push(store, b"refused")
        assert "testing" not in str(caught.value)
    finally:
        strict.stop()


def test_open_blob_store_specs(s3, tmp_path, monkeypatch):
    assert isinstance(open_blob_store("", tmp_path / "default"), LocalBlobStore)
    assert (tmp_path / "default" / "tmp").is_dir()
    shared = tmp_path / "shared"
    shared.mkdir()
    local = open_blob_store(str(shared), tmp_path / "default")
    assert isinstance(local, LocalBlobStore) and local.root == shared
    for key, value in s3.env().items():
        monkeypatch.setenv(key, value)
    bucket = fresh_bucket(s3)
    store = open_blob_store(f"s3://{bucket}/fleet/blobs", tmp_path / "default")
    assert isinstance(store, S3BlobStore) and (store.bucket, store.prefix) == (bucket, "fleet/blobs")
    assert store.endpoint == s3.endpoint_url  # AWS_ENDPOINT_URL, read by boto3 itself
    sha, _ = push(store, b"via the environment")
    assert stored_names(store) == [f"fleet/blobs/{sha}"]


@pytest.mark.parametrize(
    "spec, message",
    [
        ("s3://", "names no bucket"),
        ("s3:///prefix", "names no bucket"),
        ("s3://Not_A_Bucket", "is not an S3 bucket name"),
        ("gs://bucket", "unknown scheme 'gs'"),
        ("/no/such/shared/dir", "does not exist; create it, or mount"),
    ],
)
def test_bad_specs(spec, message, tmp_path):
    with pytest.raises(BlobError, match=message):
        open_blob_store(spec, tmp_path)


def test_a_missing_bucket_stops_open_blob_store(s3, tmp_path, monkeypatch):
    for key, value in s3.env().items():
        monkeypatch.setenv(key, value)
    with pytest.raises(BlobError, match=r"'absent-bucket' at .* does not exist"):
        open_blob_store("s3://absent-bucket", tmp_path)
