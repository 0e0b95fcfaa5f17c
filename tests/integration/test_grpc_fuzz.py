"""A fuzz of the fleet gRPC surface: generated messages for every RPC, as a node, as another node and as an
operator, against one real central process over real mTLS.

Every service and method comes from the descriptors of the generated modules (edgefleet/v1/*_pb2.py), and
every request from a strategy that walks the request's descriptor (tests/proto_strategies.py), so an RPC or
field added to proto/ is fuzzed without a change here. Callers:

- `node`: a node enrolled for real, with a model assigned to it (so FetchArtifact has something to serve);
- `other-node`: a second enrolled node, whose generated requests often name the first node's id;
- `operator`: the admin credential `central init` wrote;
- `anonymous`: a TLS client without a certificate, on the enrollment port (the only port it can reach).

Generated strings are mixed with real ones (node ids, the model's name, version and sha256, a live bootstrap
token), so the fuzz reaches the code behind lookups that succeed, not only NOT_FOUND.

Each call must end OK or with one of the documented statuses (:data:`DOCUMENTED`): never UNKNOWN (an
exception a servicer did not handle), INTERNAL, DEADLINE_EXCEEDED (a hang) or UNIMPLEMENTED. After each
example central still answers the health check on both ports and the operator's ListNodes; at the end the
process is alive and its log has no traceback.

Destructive methods (those whose name starts with one of :data:`DESTRUCTIVE_PREFIXES`: RevokeNode,
DeleteModel, RevokeToken and whatever revokes or archives later) are still fuzzed, but without the real
names mixed in, so they cannot revoke the nodes or the operator the rest of the fuzz speaks as, or delete the
model it fetches.

Budget: FUZZ_EXAMPLES examples per (caller, method), derandomized so CI draws the same ones every run; set
EDGEFLEET_FUZZ_EXAMPLES for a longer run.
"""

from __future__ import annotations

import collections
import hashlib
import importlib
import os
import pkgutil
import time
from dataclasses import dataclass

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc  # type: ignore[import-untyped]
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import edgefleet.v1
from central_process import CentralProcess, create_token, edgefleet_cli, start_central
from edge_agent.control.client import enroll
from edge_agent.control.identity import FleetFiles
from edgefleet import channels
from edgefleet.v1 import admin_pb2, admin_pb2_grpc, fleet_pb2
from proto_strategies import Rpc, messages, rpcs

FUZZ_EXAMPLES = int(os.environ.get("EDGEFLEET_FUZZ_EXAMPLES", "200"))
CALL_TIMEOUT_S = 60  # generous: a hang is what this catches, not slowness
MAX_STREAM_MESSAGES = 3
MAX_RESPONSES = 64  # responses read from a server stream before the call is cancelled
MAX_PUSHBACKS = 5  # a rate-limited call is retried after the wait central names, this many times

# The statuses central documents (docs/fleet.md, "Status codes"). UNAVAILABLE only where a method says so.
DOCUMENTED = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.OUT_OF_RANGE,
}
# FetchArtifact: the blob store failed under the download (the agent resumes from its offset).
UNAVAILABLE_DOCUMENTED = {"/edgefleet.v1.FleetService/FetchArtifact"}

DESTRUCTIVE_PREFIXES = ("Revoke", "Delete", "Archive", "Prune", "Remove")
# Rotations replace the CA and keys the fuzz's own channels trust (a forced `ca finish` strands every one of
# them): fuzzed as the nodes, who are refused; the operator's calls are tests/integration/test_key_rotation.py's.
TRUST_CHANGING = {"RotateCa", "FinishCaRotation", "RotateSigningKey", "FinishSigningKeyRotation"}

# What central's clients accept (the CLI, the agent): a reply larger than this is an error for them. The fuzz's
# own channels take any size, so a reply too large is reported as such rather than as the client's
# RESOURCE_EXHAUSTED (which is documented, for requests too large for central).
CLIENT_RECEIVE_LIMIT = dict(channels.CLIENT_OPTIONS)["grpc.max_receive_message_length"]
FUZZ_OPTIONS = [(k, v) for k, v in channels.CLIENT_OPTIONS if k != "grpc.max_receive_message_length"] + [
    ("grpc.max_receive_message_length", -1)
]

# Served on the enrollment port (server TLS only); every other service is on the fleet port (mTLS).
ENROLLMENT_PORT_SERVICES = {"edgefleet.v1.EnrollmentService"}


def _generated_modules():
    names = sorted(m.name for m in pkgutil.iter_modules(edgefleet.v1.__path__) if m.name.endswith("_pb2"))
    return [importlib.import_module(f"edgefleet.v1.{name}") for name in names]


RPCS = list(rpcs(*_generated_modules()))


def _cases():
    for rpc in RPCS:
        callers = (
            ["anonymous"] if rpc.service.full_name in ENROLLMENT_PORT_SERVICES else ["node", "other-node", "operator"]
        )
        if rpc.method.name in TRUST_CHANGING:
            callers.remove("operator")
        for caller in callers:
            yield pytest.param(caller, rpc, id=f"{caller}-{rpc.name}")


CALLS: collections.Counter[str] = collections.Counter()  # calls made, by status name
STATUSES: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)  # by RPC
DETAILS: dict[str, str] = {}  # the first details seen of each status, for the summary


@dataclass
class Fleet:
    central: CentralProcess
    channels: dict[str, grpc.Channel]
    hints: dict[str, tuple[str, ...]]
    operator_check: grpc.Channel  # the ListNodes after each example, on its own channel
    enroll_check: grpc.Channel  # the health check on the enrollment port

    def __repr__(self) -> str:  # what Hypothesis prints beside a failing example
        return f"Fleet(central at {self.central.fleet_address}, log {self.central.log_path})"


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    central = start_central(tmp_path_factory.mktemp("fuzz") / "data")
    opened: list[grpc.Channel] = []
    try:
        root = tmp_path_factory.mktemp("fuzz-nodes")
        token = create_token(central, uses=2)
        node = enroll(central.enroll_address, token.ca_fingerprint, token.token, FleetFiles(root / "a"))
        other = enroll(central.enroll_address, token.ca_fingerprint, token.token, FleetFiles(root / "b"))
        model = root / "model.gguf"
        model.write_bytes(b"fuzz" * 4096)
        sha256 = hashlib.sha256(model.read_bytes()).hexdigest()
        edgefleet_cli(central, "models", "push", str(model), "--name", "fuzz", "--version", "1.0.0")
        edgefleet_cli(central, "nodes", "assign", node.node_id, "fuzz@1.0.0")
        live_token = create_token(central, uses=100_000, ttl_s=86_400)  # the fuzz reaches the CSR checks

        cred = central.credential()
        ca = cred.ca_pem

        def channel(address, cert_pem=None, key_pem=None):
            creds = (
                channels.mtls_credentials(ca, cert_pem, key_pem)
                if cert_pem
                else grpc.ssl_channel_credentials(ca.encode())
            )
            opened.append(grpc.secure_channel(address, creds, options=FUZZ_OPTIONS))
            return opened[-1]

        fuzz_channels = {
            "node": channel(central.fleet_address, node.certificate_pem, node.key_pem),
            "other-node": channel(central.fleet_address, other.certificate_pem, other.key_pem),
            "operator": channel(central.fleet_address, cred.certificate_pem, cred.key_pem),
            "anonymous": channel(central.enroll_address),
        }
        model_names = ("fuzz", "1.0.0", sha256, "fuzz@1.0.0")
        hints = {
            "node": (node.node_id, *model_names),
            "other-node": (node.node_id, other.node_id, *model_names),
            "operator": (node.node_id, other.node_id, token.info.token_id, *model_names),
            "anonymous": (live_token.token, token.token),
        }
        # The checks after each example dial as the CLI does, with its receive limit.
        operator_check = channels.mtls_channel(central.fleet_address, ca, cred.certificate_pem, cred.key_pem)
        enroll_check = channels.tls_channel(central.enroll_address, ca)
        opened += [operator_check, enroll_check]
        yield Fleet(central, fuzz_channels, hints, operator_check, enroll_check)
    finally:
        for c in opened:
            c.close()
        central.stop()


def _requests(rpc: Rpc, hints: tuple[str, ...]):
    if rpc.method.name.startswith(DESTRUCTIVE_PREFIXES):
        hints = ()
    one = messages(rpc.method.input_type, hints)
    return st.lists(one, min_size=1, max_size=MAX_STREAM_MESSAGES) if rpc.client_streaming else one


def _call(channel: grpc.Channel, rpc: Rpc, request) -> tuple[grpc.StatusCode, str, int]:
    """Make the call, again after the wait central names when it refuses one for its rate limit (the enrollment
    port's, 5 a second from one address), so the request reaches the handler as an agent's retry would."""
    for _ in range(MAX_PUSHBACKS):
        code, details, largest, pushback_ms = _call_once(channel, rpc, request)
        if code != grpc.StatusCode.RESOURCE_EXHAUSTED or pushback_ms is None:
            break
        time.sleep(pushback_ms / 1000)  # the wait central asked for, not a guess
    return code, details, largest


def _call_once(channel: grpc.Channel, rpc: Rpc, request) -> tuple[grpc.StatusCode, str, int, int | None]:
    """Make the call; its status and details (the stream's end status for streaming methods), the size of the
    largest reply message, and the grpc-retry-pushback-ms central sent with a refusal (None without one)."""
    serialize, deserialize = rpc.request_class.SerializeToString, rpc.response_class.FromString
    kinds = {
        (False, False): channel.unary_unary,
        (False, True): channel.unary_stream,
        (True, False): channel.stream_unary,
        (True, True): channel.stream_stream,
    }
    multicallable = kinds[(rpc.client_streaming, rpc.server_streaming)](
        rpc.path, request_serializer=serialize, response_deserializer=deserialize
    )
    argument = iter(request) if rpc.client_streaming else request
    largest = 0
    try:
        if rpc.server_streaming:
            responses = multicallable(argument, timeout=CALL_TIMEOUT_S)
            for count, response in enumerate(responses):
                largest = max(largest, response.ByteSize())
                if count >= MAX_RESPONSES:
                    responses.cancel()
                    return grpc.StatusCode.OK, "read enough", largest, None
        else:
            largest = multicallable(argument, timeout=CALL_TIMEOUT_S).ByteSize()
    except grpc.RpcError as exc:
        pushback = dict(exc.trailing_metadata() or ()).get("grpc-retry-pushback-ms")
        return exc.code(), exc.details() or "", largest, int(pushback) if pushback else None
    return grpc.StatusCode.OK, "", largest, None


def _assert_central_serves(fleet: Fleet) -> None:
    for name, check_channel in (("fleet", fleet.operator_check), ("enrollment", fleet.enroll_check)):
        reply = health_pb2_grpc.HealthStub(check_channel).Check(health_pb2.HealthCheckRequest(), timeout=CALL_TIMEOUT_S)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING, f"the {name} port's health check: {reply}"
    nodes = admin_pb2.ListNodesRequest(page_size=1000)
    admin_pb2_grpc.AdminServiceStub(fleet.operator_check).ListNodes(nodes, timeout=CALL_TIMEOUT_S)


def _allowed(rpc: Rpc, code: grpc.StatusCode, details: str) -> bool:
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED and "metadata size" in details:
        return False  # the client's own: central's status details were too large to receive, its status lost
    return code in DOCUMENTED or (code == grpc.StatusCode.UNAVAILABLE and rpc.path in UNAVAILABLE_DOCUMENTED)


def _short(request, limit: int = 2000) -> str:
    text = repr(request)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} characters)"


@pytest.mark.timeout(600)
@pytest.mark.parametrize(("caller", "rpc"), list(_cases()))
@settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
@given(data=st.data())
def test_every_rpc_answers_generated_requests_with_a_documented_status(fleet, caller, rpc, data):
    request = data.draw(_requests(rpc, fleet.hints[caller]), label="request")
    code, details, reply_bytes = _call(fleet.channels[caller], rpc, request)
    CALLS[code.name] += 1
    STATUSES[f"{caller} {rpc.name}"][code.name] += 1
    DETAILS.setdefault(code.name, f"{caller} {rpc.name}: {details[:200]!r}")
    assert _allowed(rpc, code, details), (
        f"{rpc.path} as {caller} answered {code.name}: {details}\nrequest: {_short(request)}\n"
        f"central's log ends:\n{fleet.central.log()[-3000:]}"
    )
    assert reply_bytes <= CLIENT_RECEIVE_LIMIT, (
        f"{rpc.path} as {caller} answered a message of {reply_bytes} bytes, more than clients accept "
        f"({CLIENT_RECEIVE_LIMIT})\nrequest: {_short(request)}"
    )
    try:
        _assert_central_serves(fleet)
    except grpc.RpcError as exc:
        pytest.fail(
            f"after {rpc.path} as {caller} ({code.name}) central no longer serves: {exc.code().name} {exc.details()}\n"
            f"request: {_short(request)}\ncentral's log ends:\n{fleet.central.log()[-4000:]}"
        )


# What the fuzz found, kept as plain cases: each was UNKNOWN, or a status clients could not read, before its fix.
# The request is made from the real node id (hints[caller][0]) where one matters.
FOUND = {
    # OverflowError: the wire's uint64 past SQLite's signed 64-bit integers.
    "list-audit-after-2^64": (
        "operator",
        "ListAuditEntries",
        lambda node_id: admin_pb2.ListAuditEntriesRequest(after_sequence=2**64 - 2),
        "OK",
    ),
    "archive-audit-before-2^64": (
        "operator",
        "ArchiveAudit",
        lambda node_id: admin_pb2.ArchiveAuditRequest(before_sequence=2**64 - 2, last_hash="x"),
        "NOT_FOUND",
    ),
    # ValueError from protobuf: a timestamp outside years 1-9999.
    "report-observed-at-out-of-range": (
        "node",
        "ReportEvent",
        lambda node_id: fleet_pb2.ReportEventRequest(
            node_id=node_id,
            reports=[fleet_pb2.Report(sequence=1, observed_at={"seconds": -(2**63)}, event=fleet_pb2.Event())],
        ),
        "INVALID_ARGUMENT",
    ),
    # OverflowError: dropped_count past SQLite's signed 64-bit integers.
    "report-dropped-count-2^64": (
        "node",
        "ReportEvent",
        lambda node_id: fleet_pb2.ReportEventRequest(node_id=node_id, dropped_count=2**64 - 2),
        "INVALID_ARGUMENT",
    ),
    # A megabyte id echoed in the status details: the trailer past 16 KiB made the client see RESOURCE_EXHAUSTED.
    "megabyte-node-id": (
        "operator",
        "GetNode",
        lambda node_id: admin_pb2.GetNodeRequest(node_id="😀" * 300_000),
        "NOT_FOUND",
    ),
}


@pytest.mark.parametrize("case", list(FOUND))
def test_what_the_fuzz_found_stays_fixed(fleet, case):
    caller, method, make, expected = FOUND[case]
    rpc = next(r for r in RPCS if r.method.name == method)
    code, details, _ = _call(fleet.channels[caller], rpc, make(fleet.hints[caller][0]))
    assert code.name == expected and len(details) < 1000, f"{rpc.path}: {code.name} {details[:2000]}"
    _assert_central_serves(fleet)


def test_a_nodes_dropped_reports_saturate(fleet):
    """Each report's dropped_count is bounded and the node's total saturates there, so many reports of the
    largest count never overflow the store's integer (SQLite would turn it into a float that no reply can carry)."""
    node_id = fleet.hints["node"][0]
    largest = 2**53
    for _ in range(3):
        code, details, _ = _call(
            fleet.channels["node"],
            next(r for r in RPCS if r.method.name == "ReportEvent"),
            fleet_pb2.ReportEventRequest(node_id=node_id, dropped_count=largest),
        )
        assert code == grpc.StatusCode.OK, details
    node = admin_pb2_grpc.AdminServiceStub(fleet.operator_check).GetNode(
        admin_pb2.GetNodeRequest(node_id=node_id), timeout=CALL_TIMEOUT_S
    )
    assert node.node.dropped_reports == largest
    _assert_central_serves(fleet)


def test_central_survived_the_fuzz(fleet, capsys):
    """Runs after the fuzz (pytest keeps a module's order): central is alive, serving, and logged no traceback."""
    _assert_central_serves(fleet)
    assert fleet.central.proc.poll() is None, "central exited during the fuzz"
    log = fleet.central.log()
    assert "Traceback" not in log, log[log.index("Traceback") - 2000 :][:6000]
    with capsys.disabled():
        total = sum(CALLS.values())
        print(f"\ngRPC fuzz: {total} calls over {len(STATUSES)} (caller, method) pairs; by status: {dict(CALLS)}")
        for name, counts in sorted(STATUSES.items()):
            print(f"  {name}: {dict(counts)}")
        for code, example in sorted(DETAILS.items()):
            print(f"  first {code}: {example}")
    if CALLS:  # empty when this test runs alone
        assert total >= len(STATUSES)
