"""The model registry on a real central over mTLS: push (content-addressed, signed manifest, immutable
versions), list/show/delete, assignment reaching a node's heartbeat, and FetchArtifact with offsets.

Bad input tried: an existing version with other bytes, bad names and parameters, a missing file, an
unknown format, deleting a version in use, fetching an unknown blob, an offset past the end, an admin
certificate on FetchArtifact, and a push cut off midway (nothing half-written is kept)."""

import hashlib
import json
import os

import grpc
import pytest

from central.cli import main as edgefleet
from central_process import create_token, start_central, wait_for
from edge_agent.control.client import CentralRefused, FleetClient, enroll
from edge_agent.control.identity import FleetFiles
from edgefleet import channels, manifest
from edgefleet.v1 import admin_pb2, admin_pb2_grpc, common_pb2, fleet_pb2, fleet_pb2_grpc


@pytest.fixture(scope="module")
def central(tmp_path_factory):
    process = start_central(tmp_path_factory.mktemp("registry") / "central")
    yield process
    process.stop()


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    path = tmp_path_factory.mktemp("files") / "model.gguf"
    path.write_bytes(os.urandom(3 * (1 << 20) + 12345))  # not a multiple of the 1 MiB chunk
    return path


def run(capsys, central, *args):
    code = edgefleet(["--credential", str(central.paths.admin_credential), "--central", central.fleet_address, *args])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="module")
def node(central, tmp_path_factory):
    token = create_token(central)
    return enroll(
        central.enroll_address, token.ca_fingerprint, token.token, FleetFiles(tmp_path_factory.mktemp("node"))
    )


def test_push_list_show_and_immutable_versions(central, artifact, capsys, tmp_path):
    code, out, _ = run(
        capsys,
        central,
        "models",
        "push",
        str(artifact),
        "--name",
        "tiny",
        "--version",
        "1.0.0",
        "--param",
        "n_ctx=4096",
        "--json",
    )
    pushed = json.loads(out)
    assert code == 0 and not pushed["already_present"]
    assert pushed["sha256"] == hashlib.sha256(artifact.read_bytes()).hexdigest()
    assert int(pushed["size"]) == artifact.stat().st_size and pushed["params"] == {"n_ctx": "4096"}
    code, out, _ = run(capsys, central, "models", "push", str(artifact), "--name", "tiny", "--version", "1.0.0")
    assert code == 0 and "already present" in out
    other = tmp_path / "other.gguf"
    other.write_bytes(b"other bytes")
    code, _, err = run(capsys, central, "models", "push", str(other), "--name", "tiny", "--version", "1.0.0")
    assert code == 6 and "immutable" in err
    code, out, _ = run(capsys, central, "models", "list", "--json")
    assert [(m["name"], m["version"]) for m in json.loads(out)] == [("tiny", "1.0.0")]
    assert not any(central.paths.blobs.joinpath("tmp").iterdir()), "no upload left behind"
    code, out, _ = run(capsys, central, "models", "show", "tiny@1.0.0", "--json")
    shown = json.loads(out)
    signing_key = central.paths.signing_public_key.read_bytes()
    verified = manifest.verify(shown["manifest"].encode(), shown["signature"], signing_key)
    assert (verified.name, verified.version, verified.sha256) == ("tiny", "1.0.0", pushed["sha256"])
    assert verified.pushed_by == "admin:admin"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--name", "Tiny", "--version", "1"], "lowercase"),
        (["--name", "tiny", "--version", "1 0"], "version"),
        (["--name", "tiny", "--version", "2", "--param", "n-ctx=1"], "parameter name"),
        (["--name", "tiny", "--version", "2", "--param", "novalue"], "KEY=VALUE"),
    ],
)
def test_bad_push_input(central, artifact, capsys, args, message):
    code, _, err = run(capsys, central, "models", "push", str(artifact), *args)
    assert code == 2 and message in err


def test_push_of_a_missing_or_unknown_file(central, capsys, tmp_path):
    code, _, err = run(capsys, central, "models", "push", str(tmp_path / "nope.gguf"), "--name", "a", "--version", "1")
    assert code == 2 and "is not a file" in err
    (tmp_path / "weights.bin").write_bytes(b"x")
    code, _, err = run(
        capsys, central, "models", "push", str(tmp_path / "weights.bin"), "--name", "a", "--version", "1"
    )
    assert code == 2 and "--format" in err


def test_a_push_cut_off_midway_keeps_nothing(central):
    def requests():
        yield admin_pb2.PushModelRequest(
            upload=admin_pb2.ModelUpload(
                name="cut", version="1", format="gguf", size=2000, sha256=hashlib.sha256(b"x" * 2000).hexdigest()
            )
        )
        yield admin_pb2.PushModelRequest(chunk=b"x" * 1000)
        raise RuntimeError("the operator's laptop went to sleep")

    cred = central.credential()
    with (
        channels.mtls_channel(cred.central, cred.ca_pem, cred.certificate_pem, cred.key_pem) as channel,
        pytest.raises(grpc.RpcError),
    ):
        admin_pb2_grpc.AdminServiceStub(channel).PushModel(requests(), timeout=10)
    with central.admin() as admin:
        models = admin.call("ListModels", admin_pb2.ListModelsRequest(name="cut")).models
    assert list(models) == []
    # Central removes the partial file once its handler sees the stream end, which may come after the client's
    # error on a busy machine.
    wait_for(lambda: not any(central.paths.blobs.joinpath("tmp").iterdir()), what="the partial upload removed")
    cut = hashlib.sha256(b"x" * 1000).hexdigest()
    assert not (central.paths.blobs / "sha256" / cut[:2] / cut).exists(), "the partial bytes are not kept"


def test_a_push_whose_bytes_do_not_match_its_header_is_refused(central):
    def requests():
        yield admin_pb2.PushModelRequest(
            upload=admin_pb2.ModelUpload(name="liar", version="1", format="gguf", size=5, sha256="0" * 64)
        )
        yield admin_pb2.PushModelRequest(chunk=b"12345")

    cred = central.credential()
    with (
        channels.mtls_channel(cred.central, cred.ca_pem, cred.certificate_pem, cred.key_pem) as channel,
        pytest.raises(grpc.RpcError) as err,
    ):
        admin_pb2_grpc.AdminServiceStub(channel).PushModel(requests(), timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "hash to" in err.value.details()


def test_assignment_reaches_the_node_with_a_manifest_it_can_verify(central, artifact, node, capsys):
    run(capsys, central, "models", "push", str(artifact), "--name", "tiny", "--version", "1.0.0")
    assert run(capsys, central, "nodes", "assign", node.node_id, "tiny@1.0.0")[0] == 0
    client = FleetClient(node, rpc_timeout_s=10)
    try:
        reply = client.heartbeat(common_pb2.NodeStatus().SerializeToString())
    finally:
        client.close()
    assert reply.model.name == "tiny" and reply.config_generation >= 1
    verified = manifest.verify(reply.manifest_body, reply.manifest_signature, node.signing_public_key_pem)
    assert verified.sha256 == reply.model.sha256
    with pytest.raises(manifest.ManifestError, match="does not verify"):
        manifest.verify(
            reply.manifest_body.replace(b'"tiny"', b'"tinx"'), reply.manifest_signature, node.signing_public_key_pem
        )
    code, _, err = run(capsys, central, "models", "delete", "tiny@1.0.0")
    assert code == 6 and node.node_id in err, "a version in use is not deleted"


def test_fetch_artifact_streams_from_any_offset(central, artifact, node, capsys):
    run(capsys, central, "models", "push", str(artifact), "--name", "tiny", "--version", "1.0.0")
    data = artifact.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    client = FleetClient(node, rpc_timeout_s=10)
    try:
        got = b"".join(chunk for _, chunk, _ in client.fetch_artifact(sha, 0))
        assert got == data
        resumed = list(client.fetch_artifact(sha, 2_000_000))
        assert resumed[0][0] == 2_000_000 and resumed[0][2] == len(data)
        assert b"".join(c for _, c, _ in resumed) == data[2_000_000:]
        assert list(client.fetch_artifact(sha, len(data))) == []
        with pytest.raises(CentralRefused, match="INVALID_ARGUMENT"):
            list(client.fetch_artifact(sha, len(data) + 1))
        # A digest the node is not assigned is refused whether or not any model has it (issue 16).
        with pytest.raises(CentralRefused, match=r"PERMISSION_DENIED.*is not assigned sha256:0000"):
            list(client.fetch_artifact("0" * 64, 0))
    finally:
        client.close()
    cred = central.credential()
    with (
        channels.mtls_channel(cred.central, cred.ca_pem, cred.certificate_pem, cred.key_pem) as channel,
        pytest.raises(grpc.RpcError) as err,
    ):
        list(
            fleet_pb2_grpc.FleetServiceStub(channel).FetchArtifact(
                fleet_pb2.FetchArtifactRequest(sha256=sha), timeout=10
            )
        )
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_delete_after_reassignment_removes_the_blob(central, node, capsys, tmp_path):
    first, second = tmp_path / "a.gguf", tmp_path / "b.gguf"
    first.write_bytes(b"first version")
    second.write_bytes(b"second version")
    run(capsys, central, "models", "push", str(first), "--name", "gone", "--version", "1")
    run(capsys, central, "models", "push", str(second), "--name", "gone", "--version", "2")
    run(capsys, central, "nodes", "assign", node.node_id, "gone@1")
    assert run(capsys, central, "models", "delete", "gone@1")[0] == 6
    run(capsys, central, "nodes", "assign", node.node_id, "gone@2")
    code, out, _ = run(capsys, central, "models", "delete", "gone@1")
    assert code == 0 and "and its blob" in out
    sha = hashlib.sha256(b"first version").hexdigest()
    assert not (central.paths.blobs / "sha256" / sha[:2] / sha).exists()
    assert run(capsys, central, "models", "show", "gone@1")[0] == 5
