"""ModelSlots with chunks from memory and a key made here: the stream checks (offsets, oversize), what is
kept for a resume and what is thrown away, and slots that stop matching their manifest."""

import hashlib
import json
import os

import pytest

from edge_agent.control.artifacts import ArtifactError, ModelSlots
from edgefleet import manifest, pki

CHUNK = 64 * 1024


@pytest.fixture(scope="module")
def key():
    return pki.generate_signing_key()


@pytest.fixture
def slots(tmp_path, key):
    return ModelSlots(tmp_path, pki.public_key_pem(key))


def signed(slots, key, data, version="1"):
    m = manifest.Manifest(
        name="unit", version=version, format="onnx", sha256=hashlib.sha256(data).hexdigest(), size=len(data)
    )
    return slots.verify_manifest(*manifest.sign(m, key))


def serve(data, offsets=None, fail_after=None, shift=0, extra=b""):
    """chunks_from over data (+ extra past the end); raises ConnectionError after fail_after chunks."""

    def chunks_from(offset):
        if offsets is not None:
            offsets.append(offset)
        blob = data + extra
        for i, start in enumerate(range(offset, len(blob), CHUNK)):
            if i == fail_after:
                raise ConnectionError("the network went away")
            yield start + (shift if i == 1 else 0), blob[start : start + CHUNK], len(blob)

    return chunks_from


def test_download_into_the_spare_slot_and_a_second_call_is_a_no_op(slots, key):
    data = os.urandom(5 * CHUNK + 3)
    wanted = signed(slots, key, data)
    offsets = []
    path = slots.download(wanted, serve(data, offsets))
    assert path == slots.slot_dir("a") / "model.onnx" and path.read_bytes() == data
    assert slots.download(wanted, serve(data, offsets)) == path and offsets == [0]
    assert sorted(p.name for p in slots.slot_dir("a").iterdir()) == ["manifest.json", "model.onnx"]


def test_any_other_exception_keeps_the_part_and_the_next_call_resumes(slots, key):
    data = os.urandom(5 * CHUNK)
    wanted = signed(slots, key, data)
    offsets = []
    with pytest.raises(ConnectionError):
        slots.download(wanted, serve(data, offsets, fail_after=2))
    assert (slots.slot_dir("a") / "download.part").stat().st_size == 2 * CHUNK
    assert slots.download(wanted, serve(data, offsets)).read_bytes() == data
    assert offsets == [0, 2 * CHUNK]


def test_a_part_of_another_model_is_discarded(slots, key):
    old, new = os.urandom(3 * CHUNK), os.urandom(3 * CHUNK)
    with pytest.raises(ConnectionError):
        slots.download(signed(slots, key, old), serve(old, fail_after=1))
    offsets = []
    assert slots.download(signed(slots, key, new, "2"), serve(new, offsets)).read_bytes() == new
    assert offsets == [0]


@pytest.mark.parametrize(
    "source, reason",
    [
        (lambda d: serve(d, shift=5), f"chunk at offset {CHUNK + 5}, expected {CHUNK}"),
        (lambda d: serve(d, extra=b"more"), "oversize: more than the manifest's"),
        (lambda d: serve(d[:-10]), "truncated: got"),
    ],
)
def test_a_bad_stream_is_refused_and_nothing_is_kept(slots, key, source, reason):
    data = os.urandom(3 * CHUNK)
    with pytest.raises(ArtifactError, match=reason):
        slots.download(signed(slots, key, data), source(data))
    assert list(slots.slot_dir("a").iterdir()) == []


def test_a_slot_whose_file_no_longer_matches_is_empty_and_is_replaced(slots, key):
    data = os.urandom(2 * CHUNK)
    wanted = signed(slots, key, data)
    path = slots.download(wanted, serve(data))
    os.truncate(path, CHUNK)
    assert slots.inactive() is None
    offsets = []
    assert slots.download(wanted, serve(data, offsets)).read_bytes() == data and offsets == [0]
    stored = slots.slot_dir("a") / "manifest.json"
    stored.write_text(json.dumps({"body": json.loads(stored.read_text())["body"], "signature": "AAAA"}))
    assert slots.inactive() is None
    with pytest.raises(ArtifactError, match="holds no verified model"):
        slots.activate("a")
