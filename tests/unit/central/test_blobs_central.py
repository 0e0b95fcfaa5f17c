"""A real `central serve --blobs s3://...` process on a real moto server: a pushed model lands in the bucket under
its sha256 and nothing else stays there, FetchArtifact streams it from any offset, and the agent's verified
download takes it whole."""

from __future__ import annotations

import hashlib
import json
import os

import pytest

from central_process import create_token, edgefleet_cli, start_central
from edge_agent.control.artifacts import ModelSlots
from edge_agent.control.client import FleetClient, enroll
from edge_agent.control.identity import FleetFiles
from s3_server import start_s3_server

MiB = 1 << 20
BUCKET = "fleet-models"


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    server = start_s3_server(tmp_path_factory.mktemp("moto") / "moto.log")
    try:
        server.create_bucket(BUCKET)
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def central(s3, tmp_path_factory):
    process = start_central(
        tmp_path_factory.mktemp("central-s3") / "central", "--blobs", f"s3://{BUCKET}/blobs", env=s3.env()
    )
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="module")
def client(central, tmp_path_factory):
    token = create_token(central)
    node = enroll(central.enroll_address, token.ca_fingerprint, token.token, FleetFiles(tmp_path_factory.mktemp("n")))
    c = FleetClient(node, rpc_timeout_s=30)
    try:
        yield c
    finally:
        c.close()


def keys(s3) -> list[str]:
    return sorted(o["Key"] for o in s3.client().list_objects_v2(Bucket=BUCKET).get("Contents", []))


def test_push_fetch_and_delete_through_s3(s3, central, client, tmp_path):
    data = os.urandom(20 * MiB + 12345)  # three multipart parts on the way in
    sha = hashlib.sha256(data).hexdigest()
    (tmp_path / "m.gguf").write_bytes(data)
    edgefleet_cli(central, "models", "push", str(tmp_path / "m.gguf"), "--name", "s3m", "--version", "1")
    assert keys(s3) == [f"blobs/{sha}"]
    assert s3.client().list_multipart_uploads(Bucket=BUCKET).get("Uploads", []) == []
    # Central serves a node only the model it is assigned (issue 16).
    edgefleet_cli(central, "nodes", "assign", client.identity.node_id, "s3m@1")

    for offset in (0, 7 * MiB + 3):
        got = list(client.fetch_artifact(sha, offset))
        assert got[0][0] == offset and {total for _, _, total in got} == {len(data)}
        assert b"".join(chunk for _, chunk, _ in got) == data[offset:]

    shown = json.loads(edgefleet_cli(central, "models", "show", "s3m@1", "--json"))
    slots = ModelSlots(tmp_path / "agent", client.identity.signing_public_key_pem)
    wanted = slots.verify_manifest(shown["manifest"].encode(), shown["signature"])
    assert slots.download(wanted, lambda offset: client.fetch_artifact(sha, offset)).read_bytes() == data

    # A version assigned to a node is not deleted: the node moves to another one first.
    (tmp_path / "other.gguf").write_bytes(b"other")
    edgefleet_cli(central, "models", "push", str(tmp_path / "other.gguf"), "--name", "s3other", "--version", "1")
    edgefleet_cli(central, "nodes", "assign", client.identity.node_id, "s3other@1")
    edgefleet_cli(central, "models", "delete", "s3m@1")
    assert keys(s3) == [f"blobs/{hashlib.sha256(b'other').hexdigest()}"]
