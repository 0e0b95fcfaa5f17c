"""ModelSlots with chunks from memory and a key made here: the stream checks (offsets, oversize), what is
kept for a resume and what is thrown away, and slots that stop matching their manifest."""

import hashlib
import json
import os
import sys
import threading

import pytest

from edge_agent.control import artifacts
from edge_agent.control.artifacts import ArtifactError, ModelSlots, slot_of
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


def test_bytes_that_differ_from_the_manifest_are_refused_and_nothing_is_kept(slots, key):
    data = os.urandom(4 * CHUNK)
    tampered = data[:CHUNK] + bytes([data[CHUNK] ^ 1]) + data[CHUNK + 1 :]
    with pytest.raises(ArtifactError, match="sha256 mismatch"):
        slots.download(signed(slots, key, data), serve(tampered))
    assert list(slots.slot_dir("a").iterdir()) == []


def test_a_resume_is_verified_over_the_whole_file(slots, key):
    """A part altered on disk between two tries fails the check, though the bytes after it are right."""
    data = os.urandom(4 * CHUNK)
    wanted = signed(slots, key, data)
    with pytest.raises(ConnectionError):
        slots.download(wanted, serve(data, fail_after=2))
    part = slots.slot_dir("a") / "download.part"
    with open(part, "r+b") as f:
        f.write(b"\0")
    offsets = []
    with pytest.raises(ArtifactError, match="sha256 mismatch"):
        slots.download(wanted, serve(data, offsets))
    assert offsets == [2 * CHUNK] and list(slots.slot_dir("a").iterdir()) == []


def test_a_download_of_many_chunks_is_whole_and_leaves_no_thread(slots, key):
    data = os.urandom(40 * artifacts._MiB + 3)
    chunks = [(start, data[start : start + artifacts._MiB]) for start in range(0, len(data), artifacts._MiB)]
    seen = []
    path = slots.download(
        signed(slots, key, data),
        lambda offset: ((o, d, len(data)) for o, d in chunks if o >= offset),
        progress=lambda done, total: seen.append(done),
    )
    assert path.read_bytes() == data and seen[-1] == len(data) and len(seen) == len(chunks) + 1
    assert not [t for t in threading.enumerate() if t.name == "artifact-sha256"]


def test_the_sha256_thread_ends_when_the_stream_breaks(slots, key):
    data = os.urandom(5 * CHUNK)
    with pytest.raises(ConnectionError):
        slots.download(signed(slots, key, data), serve(data, fail_after=3))
    assert not [t for t in threading.enumerate() if t.name == "artifact-sha256"]


def test_writeback_is_asked_for_each_16_mib_in_turn_and_given_up_when_refused(monkeypatch, tmp_path):
    calls = []
    answer = [0]

    def sync_file_range(fd, start, length, flags):
        calls.append((start, length, flags))
        return answer[0]

    monkeypatch.setattr(artifacts, "_sync_file_range", lambda: sync_file_range)
    step = artifacts._Writeback._EVERY
    writeback = artifacts._Writeback(3, 100)
    for end in (100 + step - 1, 100 + step, 100 + step + 5, 100 + 2 * step + 5):
        writeback.wrote(end)
    assert calls == [(100, step, 2), (100 + step, step + 5, 2)]
    answer[0] = -1
    writeback.wrote(100 + 4 * step)
    writeback.wrote(100 + 6 * step)
    assert len(calls) == 3  # refused once (a file system without it): never asked again


def test_sync_file_range_is_found_on_linux():
    assert (artifacts._sync_file_range() is not None) == sys.platform.startswith("linux")


def test_the_slot_a_model_lies_in_is_read_from_its_path(slots, key, tmp_path):
    """What the heartbeat's model_slot says: "a" or "b" for a file in a fleet slot, "" for any other file."""
    data = os.urandom(CHUNK + 1)
    path = slots.download(signed(slots, key, data), serve(data))
    assert slot_of(path, tmp_path) == "a"
    assert slot_of(slots.slot_dir("b") / "model.gguf", tmp_path) == "b"
    assert slot_of(tmp_path / "models" / "smollm2.gguf", tmp_path) == ""
    assert slot_of(tmp_path / "elsewhere" / "slot-a" / "model.gguf", tmp_path) == ""
