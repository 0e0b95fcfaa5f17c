"""The agent's model slots against a real central over mTLS: models pushed with the CLI, fetched with
FetchArtifact, verified against the signing key the node pinned at enrollment, switched and rolled back.

Faults tried: a download broken midway (resumed by a new store, as after a restart), a tampered blob,
a truncated blob, a manifest signed by another key, a manifest bigger than the free disk, a real ENOSPC
while writing (/dev/full), and a garbage active.json. After each the active model is the last good one
and no slot holds a half-written model."""

import hashlib
import json
import logging
import os
import shutil

import pytest

from central.cli import main as edgefleet
from central_process import create_token, start_central
from edge_agent.control.artifacts import ArtifactError, ModelSlots
from edge_agent.control.client import CentralUnavailable, FleetClient, enroll
from edge_agent.control.identity import FleetFiles
from edgefleet import manifest, pki
from edgefleet.v1 import common_pb2

MiB = 1 << 20


@pytest.fixture(scope="module")
def central(tmp_path_factory):
    process = start_central(tmp_path_factory.mktemp("artifacts") / "central")
    yield process
    process.stop()


@pytest.fixture(scope="module")
def node(central, tmp_path_factory):
    token = create_token(central)
    return enroll(
        central.enroll_address, token.ca_fingerprint, token.token, FleetFiles(tmp_path_factory.mktemp("node"))
    )


@pytest.fixture(scope="module")
def client(node):
    c = FleetClient(node, rpc_timeout_s=10)
    yield c
    c.close()


@pytest.fixture
def slots(node, tmp_path):
    return ModelSlots(tmp_path / "agent", node.signing_public_key_pem)


def cli(capsys, central, *args):
    code = edgefleet(["--credential", str(central.paths.admin_credential), "--central", central.fleet_address, *args])
    out = capsys.readouterr()
    assert code == 0, out.err
    return out.out


def publish(capsys, central, tmp_path, name, version, size=3 * MiB + 4321):
    """Push random bytes as name@version and assign it to the enrolled node (central serves a node only the model
    it is assigned); (bytes, signed body, signature) as central serves them."""
    data = os.urandom(size)
    path = tmp_path / f"{name}-{version}.gguf"
    path.write_bytes(data)
    cli(capsys, central, "models", "push", str(path), "--name", name, "--version", version)
    for row in json.loads(cli(capsys, central, "nodes", "list", "--json")):
        cli(capsys, central, "nodes", "assign", row["node"], f"{name}@{version}")
    shown = json.loads(cli(capsys, central, "models", "show", f"{name}@{version}", "--json"))
    return data, shown["manifest"].encode(), shown["signature"]


def blob_path(central, sha):
    return central.paths.blobs / "sha256" / sha[:2] / sha


def recording(client, sha, offsets, break_after=None):
    """client.fetch_artifact(sha, offset), recording offsets; raises CentralUnavailable after break_after chunks."""

    def chunks_from(offset):
        offsets.append(offset)
        for i, chunk in enumerate(client.fetch_artifact(sha, offset), 1):
            yield chunk
            if i == break_after:
                raise CentralUnavailable("artifact download: central unavailable (test cut the stream)")

    return chunks_from


def slot_files(slots):
    return sorted(str(p.relative_to(slots.root)) for p in slots.root.rglob("*"))


def test_download_verify_activate_switch_and_roll_back(central, node, client, slots, capsys, tmp_path):
    v1, _, _ = publish(capsys, central, tmp_path, "lifecycle", "1.0.0")
    cli(capsys, central, "nodes", "assign", node.node_id, "lifecycle@1.0.0")
    reply = client.heartbeat(common_pb2.NodeStatus().SerializeToString())  # the manifest as the agent gets it
    first = slots.verify_manifest(reply.manifest_body, reply.manifest_signature)
    assert slots.active() is None and slots.inactive() is None
    offsets, seen = [], []
    path = slots.download(first, recording(client, first.sha256, offsets), lambda done, total: seen.append(done))
    assert path.read_bytes() == v1 and path.name == "model.gguf" and offsets == [0]
    assert seen[0] == 0 and seen[-1] == first.size
    assert slots.inactive().manifest == first and slots.active() is None
    assert slots.activate("a").path == path and slots.active().manifest == first
    assert slots.download(first, recording(client, first.sha256, offsets)) == path and offsets == [0], (
        "the same sha256 again downloads nothing"
    )

    v2, body, signature = publish(capsys, central, tmp_path, "lifecycle", "1.1.0")
    second = slots.verify_manifest(body, signature)
    path2 = slots.download(second, recording(client, second.sha256, offsets))
    assert path2.parent.name == "slot-b" and path2.read_bytes() == v2
    assert slots.active().manifest == first and slots.inactive().manifest == second
    slots.activate("b")
    assert slots.active().manifest == second and slots.inactive().manifest == first, "v1 stays for a rollback"
    assert slot_files(slots) == [
        "active.json",
        "slot-a",
        "slot-a/manifest.json",
        "slot-a/model.gguf",
        "slot-b",
        "slot-b/manifest.json",
        "slot-b/model.gguf",
    ]

    restarted = ModelSlots(slots.root.parent.parent, node.signing_public_key_pem)
    assert restarted.active().manifest == second and restarted.inactive().manifest == first
    back = restarted.rollback()
    assert back.slot == "a" and back.manifest == first and back.path.read_bytes() == v1
    assert ModelSlots(slots.root.parent.parent, node.signing_public_key_pem).active().manifest == first

    # A third version replaces the one not active (1.1.0), never the active one.
    v3, body, signature = publish(capsys, central, tmp_path, "lifecycle", "1.2.0", size=MiB)
    third = restarted.verify_manifest(body, signature)
    assert restarted.download(third, recording(client, third.sha256, [])).read_bytes() == v3
    assert restarted.active().manifest == first and restarted.inactive().manifest == third


def test_a_broken_download_resumes_after_a_restart(central, node, client, slots, capsys, tmp_path):
    data, body, signature = publish(capsys, central, tmp_path, "resume", "1")
    wanted = slots.verify_manifest(body, signature)
    offsets = []
    with pytest.raises(CentralUnavailable):
        slots.download(wanted, recording(client, wanted.sha256, offsets, break_after=1))
    part = slots.slot_dir("a") / "download.part"
    assert 0 < part.stat().st_size < len(data) and slots.inactive() is None

    restarted = ModelSlots(slots.root.parent.parent, node.signing_public_key_pem)
    wanted = restarted.verify_manifest(body, signature)
    path = restarted.download(wanted, recording(client, wanted.sha256, offsets))
    assert offsets[0] == 0 and offsets[1] == MiB, "the second call resumed from the part's size"
    assert path.read_bytes() == data and not part.exists()
    assert not (slots.slot_dir("a") / "download.json").exists()


def test_a_tampered_blob_is_refused_and_the_active_model_stays(central, client, slots, capsys, tmp_path):
    good, body, signature = publish(capsys, central, tmp_path, "tamper", "1")
    slots.download(slots.verify_manifest(body, signature), recording(client, hashlib.sha256(good).hexdigest(), []))
    slots.activate("a")
    _, body, signature = publish(capsys, central, tmp_path, "tamper", "2")
    bad = slots.verify_manifest(body, signature)
    with open(blob_path(central, bad.sha256), "r+b") as blob:
        blob.seek(MiB + 7)
        byte = blob.read(1)
        blob.seek(MiB + 7)
        blob.write(bytes([byte[0] ^ 0x01]))
    with pytest.raises(ArtifactError, match=f"sha256 mismatch: expected {bad.sha256}, got "):
        slots.download(bad, recording(client, bad.sha256, []))
    assert slot_files(slots) == ["active.json", "slot-a", "slot-a/manifest.json", "slot-a/model.gguf", "slot-b"]
    assert slots.active().path.read_bytes() == good and slots.inactive() is None


def test_a_truncated_blob_is_refused(central, client, slots, capsys, tmp_path):
    data, body, signature = publish(capsys, central, tmp_path, "truncated", "1")
    wanted = slots.verify_manifest(body, signature)
    os.truncate(blob_path(central, wanted.sha256), 2 * MiB)
    with pytest.raises(ArtifactError, match=f"truncated: got {2 * MiB} of {len(data)} bytes"):
        slots.download(wanted, recording(client, wanted.sha256, []))
    assert slot_files(slots) == ["slot-a"], "a blob that ends early is not kept for a resume that cannot finish"


def test_a_manifest_signed_by_another_key_is_refused(central, client, slots, capsys, tmp_path):
    _, body, _ = publish(capsys, central, tmp_path, "forged", "1")
    forged_body, forged_signature = manifest.sign(manifest.Manifest(**json.loads(body)), pki.generate_signing_key())
    assert forged_body == body
    with pytest.raises(ArtifactError, match="does not verify") as err:
        slots.verify_manifest(forged_body, forged_signature)
    assert "does not verify" in err.value.reason
    unverified = manifest.Manifest(**json.loads(body))
    with pytest.raises(ArtifactError, match="not verified"):
        slots.download(unverified, recording(client, unverified.sha256, []))
    assert not slots.root.exists() or slot_files(slots) == []


def test_a_model_bigger_than_the_free_disk_fails_before_any_byte(central, client, slots, capsys, tmp_path):
    _, body, _ = publish(capsys, central, tmp_path, "huge", "1", size=MiB)
    real = manifest.Manifest(**json.loads(body))
    free = shutil.disk_usage(tmp_path).free
    huge = manifest.Manifest(**{**json.loads(body), "size": free + (1 << 40)})
    signing_key = pki.load_private_key(central.paths.signing_key.read_bytes())
    wanted = slots.verify_manifest(*manifest.sign(huge, signing_key))
    offsets = []
    with pytest.raises(ArtifactError, match=r"disk full: need \d+ MiB, \d+ MiB free"):
        slots.download(wanted, recording(client, real.sha256, offsets))
    assert offsets == [] and not any(slots.root.rglob("download.*"))


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full for a real ENOSPC")
def test_enospc_while_writing_fails_and_keeps_nothing(central, client, slots, capsys, tmp_path):
    _, body, signature = publish(capsys, central, tmp_path, "enospc", "1", size=2 * MiB)
    wanted = slots.verify_manifest(body, signature)
    slot = slots.slot_dir("a")
    slot.mkdir(parents=True)
    (slot / "download.json").write_text(json.dumps({"sha256": wanted.sha256}))
    (slot / "download.part").symlink_to("/dev/full")  # the resumed part: every write fails with ENOSPC
    with pytest.raises(ArtifactError, match="disk full: No space left on device"):
        slots.download(wanted, recording(client, wanted.sha256, []))
    assert list(slot.iterdir()) == [] and os.path.exists("/dev/full")
    assert slots.inactive() is None and slots.active() is None


def test_active_json_is_replaced_whole_and_garbage_is_ignored(central, client, slots, capsys, tmp_path, caplog):
    _, body, signature = publish(capsys, central, tmp_path, "pointer", "1", size=MiB)
    first = slots.verify_manifest(body, signature)
    slots.download(first, recording(client, first.sha256, []))
    _, body, signature = publish(capsys, central, tmp_path, "pointer", "2", size=MiB)
    slots.activate("a")
    second = slots.verify_manifest(body, signature)
    slots.download(second, recording(client, second.sha256, []))
    pointer = slots.root / "active.json"
    before = pointer.stat().st_ino
    slots.activate("b")
    assert pointer.stat().st_ino != before, "a new file renamed over the old one, not rewritten in place"
    assert sorted(p.name for p in slots.root.iterdir()) == ["active.json", "slot-a", "slot-b"], "no temp file left"
    with pytest.raises(ArtifactError, match="no slot 'c'"):
        slots.activate("c")

    pointer.write_text('{"slot": "a"')  # as if half written by something that did not use os.replace
    with caplog.at_level(logging.WARNING, logger="edge_agent.control.artifacts"):
        assert slots.active() is None
    assert "cannot be read" in caplog.text
    pointer.write_text('{"slot": "../etc"}')
    assert slots.active() is None

    # A slot whose stored manifest or file no longer matches is treated as empty, not loaded.
    slots.activate("b")
    stored = slots.slot_dir("b") / "manifest.json"
    record = json.loads(stored.read_text())
    stored.write_text(json.dumps({**record, "body": record["body"].replace('"pointer"', '"pointex"')}))
    assert slots.active() is None
    with pytest.raises(ArtifactError, match="slot b holds no verified model"):
        slots.activate("b")
    with open(slots.slot_dir("a") / "model.gguf", "ab") as f:
        f.write(b"x")
    assert slots.inactive() is None
    with pytest.raises(ArtifactError, match="nothing to roll back to"):
        slots.rollback()
