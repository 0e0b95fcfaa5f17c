"""What a node controls cannot act on the operator's terminal: a node enrolls to a real central with a hostname
holding a clear-screen escape and a bidi override, and reports a status and an event holding more; the real
`edgefleet` process prints them escaped (tables and text), and its --json is ASCII that reads back exactly."""

import json
import socket
import subprocess
import sys

import pytest

from central_process import create_token, start_central
from edge_agent.control.client import enroll
from edge_agent.control.identity import FleetFiles
from edgefleet import channels
from edgefleet.v1 import common_pb2, fleet_pb2, fleet_pb2_grpc

HOSTNAME = "box\x1b[2J\u202eevil"
MODEL = "llama\x1b[31m\u2066red"
VERSION = "0.1\x1b]0;pwned\x07"
EVENT = "boom\x1b[2J\nforged: line\x9b31m"
# Raw bytes no line of output may hold: ESC, C1 CSI and OSC (as UTF-8), BEL, the bidi overrides and isolates.
FORBIDDEN = [b"\x1b", b"\x07", "\x9b".encode(), "\x9d".encode(), *(chr(c).encode() for c in range(0x202A, 0x202F))]
FORBIDDEN += [chr(c).encode() for c in range(0x2066, 0x206A)]


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    central = start_central(tmp_path_factory.mktemp("central") / "data")
    try:
        token = create_token(central)
        node_dir = tmp_path_factory.mktemp("node")
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(socket, "gethostname", lambda: HOSTNAME)  # the node's own name, whatever it likes
            identity = enroll(central.enroll_address, token.ca_fingerprint, token.token, FleetFiles(node_dir))
        status = common_pb2.NodeStatus(agent_version=VERSION, active_model=common_pb2.ModelRef(name=MODEL, version="1"))
        ca_pem = central.paths.ca_cert.read_bytes()
        with channels.mtls_channel(central.fleet_address, ca_pem, identity.certificate_pem, identity.key_pem) as ch:
            stub = fleet_pb2_grpc.FleetServiceStub(ch)
            next(
                stub.Heartbeat(iter([fleet_pb2.HeartbeatRequest(node_id=identity.node_id, status=status)]), timeout=10)
            )
            event = fleet_pb2.Report(sequence=1, event=fleet_pb2.Event(kind="agent_started", message=EVENT))
            stub.ReportEvent(fleet_pb2.ReportEventRequest(node_id=identity.node_id, reports=[event]), timeout=10)
        yield central, identity.node_id
    finally:
        central.stop()


def edgefleet(central, *args: str) -> bytes:
    """The real `edgefleet` CLI, as a process: its raw stdout."""
    credential = ["--credential", str(central.paths.admin_credential), "--central", central.fleet_address]
    done = subprocess.run([sys.executable, "-m", "central.cli", *credential, *args], capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    return done.stdout


def _clean(out: bytes) -> None:
    for raw in FORBIDDEN:
        assert raw not in out, f"{raw!r} reached the terminal:\n{out!r}"


def test_nodes_list_prints_the_nodes_strings_escaped(fleet):
    central, node_id = fleet
    out = edgefleet(central, "nodes", "list")
    _clean(out)
    line = next(line for line in out.decode().splitlines() if node_id in line)
    assert "llama\\x1b[31m\\u2066red@1" in line


def test_nodes_show_prints_hostname_status_and_events_escaped_one_line_each(fleet):
    central, node_id = fleet
    out = edgefleet(central, "nodes", "show", node_id)
    _clean(out)
    text = out.decode()
    assert "box\\x1b[2J\\u202eevil" in text
    assert "0.1\\x1b]0;pwned\\x07" in text
    assert "boom\\x1b[2J\\nforged: line\\x9b31m" in text
    assert not any(line.startswith("forged") for line in text.splitlines()), "a newline in an event forged a line"


def test_json_is_ascii_and_reads_back_exactly(fleet):
    central, node_id = fleet
    out = edgefleet(central, "nodes", "show", node_id, "--json")
    _clean(out)
    assert out.isascii()
    shown = json.loads(out)
    assert shown["node"]["hostname"] == HOSTNAME
    assert shown["summary"]["model"] == f"{MODEL}@1" and shown["summary"]["agent_version"] == VERSION
    assert [r["event"]["message"] for r in shown["reports"] if "event" in r] == [EVENT]
    listed = edgefleet(central, "nodes", "list", "--json")
    _clean(listed)
    assert listed.isascii() and json.loads(listed)[0]["model"] == f"{MODEL}@1"
