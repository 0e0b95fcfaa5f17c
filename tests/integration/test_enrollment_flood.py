"""A flood on the enrollment port does not reach the fleet port (issue 16).

A real `central serve` process; 100 nodes, each enrolled for real with a token, heartbeating over real mTLS
from this process (asyncio gRPC clients, one channel and certificate each); and 200 concurrent callers sending
garbage enrollments for EDGEFLEET_FLOOD_S seconds (60 by default, and in CI) from another process, from
another loopback address (::1) than the nodes and the real enrollment (127.0.0.1), as an attacker elsewhere
would. Central's enrollment port listens on both ("localhost:0").

Asserted: no node goes offline, the heartbeat round trip's p99 (measured here, per beat) stays under 100 ms
(the one timed assertion, which the issue demands), the audit log grows by a bounded number of entries
whatever the flood's size, and a real enrollment succeeds during the flood and after it.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest

from central.datadir import initialize
from central_process import CentralProcess, create_token, wait_for
from edge_agent.control.client import EnrollError, enroll
from edge_agent.control.identity import FleetFiles, FleetIdentity
from edgefleet import channels
from edgefleet.v1 import admin_pb2, common_pb2, fleet_pb2, fleet_pb2_grpc

NODES = 100
FLOOD_CALLERS = 200
FLOOD_S = float(os.environ.get("EDGEFLEET_FLOOD_S", "60"))
BEAT_EVERY_S = 1.0
HEARTBEAT_INTERVAL = "2s"  # central's: a node is offline after three missed intervals, 6 s
P99_LIMIT_S = 0.100
# Rows the audit log may gain during the flood: the enrollments, and per 60 s window a few entries per
# (peer, reason) for the refusals, whatever their number.
AUDIT_GROWTH_LIMIT = 200
FLOOD_CLIENT = Path(__file__).resolve().parents[1] / "enroll_flood_client.py"


def _enroll_retrying(address: str, token, files: FleetFiles) -> FleetIdentity:
    """Enroll as an agent would, waiting out the per-peer rate limit when central asks to (its message says
    when to retry)."""
    deadline = time.monotonic() + 120
    while True:
        try:
            return enroll(address, token.ca_fingerprint, token.token, files)
        except EnrollError as exc:
            if "retry in" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(float(str(exc).rsplit("retry in ", 1)[1].split(" s", 1)[0]) + 0.05)


def _audit_size(central) -> int:
    with central.admin() as admin:
        entries = admin.call("ListAuditEntries", admin_pb2.ListAuditEntriesRequest(limit=10_000)).entries
    return len(entries)


def _states(central) -> dict[str, int]:
    with central.admin() as admin:
        nodes = admin.call("ListNodes", admin_pb2.ListNodesRequest(page_size=1000)).nodes
    return {n.node_id: n.state for n in nodes}


async def _heartbeat(identity: FleetIdentity, until: float, rtts: list[float], errors: list[str]) -> None:
    """One node: a heartbeat stream, a beat every BEAT_EVERY_S, each round trip timed."""
    credentials = channels.mtls_credentials(identity.ca_pem, identity.certificate_pem, identity.key_pem)
    async with grpc.aio.secure_channel(identity.central, credentials, options=channels.CLIENT_OPTIONS) as channel:
        stream = fleet_pb2_grpc.FleetServiceStub(channel).Heartbeat()
        request = fleet_pb2.HeartbeatRequest(node_id=identity.node_id, status=common_pb2.NodeStatus())
        await asyncio.sleep(random.uniform(0, BEAT_EVERY_S))  # spread the nodes over the interval
        next_beat = time.monotonic()
        try:
            while time.monotonic() < until:
                started = time.monotonic()
                await stream.write(request)
                reply = await stream.read()
                if reply is grpc.aio.EOF:
                    errors.append(f"{identity.node_id}: stream ended")
                    return
                rtts.append(time.monotonic() - started)
                next_beat += BEAT_EVERY_S
                await asyncio.sleep(max(0.0, next_beat - time.monotonic()))
            await stream.done_writing()
        except grpc.aio.AioRpcError as exc:
            errors.append(f"{identity.node_id}: {exc.code().name} {exc.details()}")


async def _fleet_under_flood(central, nodes, flood: subprocess.Popen, tmp_path: Path) -> dict:
    """Heartbeat every node until the flood ends; meanwhile check liveness and enroll one more node."""
    rtts: list[float] = []
    errors: list[str] = []
    offline: list[dict] = []
    until = time.monotonic() + FLOOD_S + 5  # past the flood's end: beats go on while it stops
    beats = [asyncio.create_task(_heartbeat(n, until, rtts, errors)) for n in nodes]
    ids = {n.node_id for n in nodes}
    enrolled_during = None
    while time.monotonic() < until:
        await asyncio.sleep(min(5.0, max(0.0, until - time.monotonic())))
        states = await asyncio.to_thread(_states, central)
        gone = {i: s for i, s in states.items() if i in ids and s != admin_pb2.NODE_STATE_ONLINE}
        if gone and len(rtts) > NODES:  # every node has beaten once by then
            offline.append(gone)
        if enrolled_during is None and flood.poll() is None:
            token = await asyncio.to_thread(create_token, central)
            enrolled_during = await asyncio.to_thread(
                _enroll_retrying,
                f"127.0.0.1:{central.enroll_address.rsplit(':', 1)[1]}",
                token,
                FleetFiles(tmp_path / "during"),
            )
    await asyncio.gather(*beats)
    return {"rtts": rtts, "errors": errors, "offline": offline, "enrolled_during": enrolled_during}


@pytest.mark.timeout(FLOOD_S + 300)
def test_a_flood_of_garbage_enrollments_does_not_reach_heartbeats_or_grow_the_audit_log(tmp_path):
    data_dir = tmp_path / "central"
    initialize(data_dir, "127.0.0.1:0")
    args = ["--no-superlink", "--heartbeat-interval", HEARTBEAT_INTERVAL]
    central = CentralProcess(data_dir, args).start(enroll_listen="localhost:0")
    flood = None
    try:
        port = central.enroll_address.rsplit(":", 1)[1]
        token = create_token(central, uses=NODES)
        nodes = [_enroll_retrying(f"127.0.0.1:{port}", token, FleetFiles(tmp_path / f"n{i}")) for i in range(NODES)]
        audit_before = _audit_size(central)

        result_file = tmp_path / "flood.json"
        flood = subprocess.Popen(
            [
                sys.executable,
                str(FLOOD_CLIENT),
                "--address",
                f"[::1]:{port}",
                "--ca",
                str(central.paths.ca_cert),
                "--concurrency",
                str(FLOOD_CALLERS),
                "--duration",
                str(FLOOD_S),
                "--out",
                str(result_file),
                # An attacker's CPU is not central's: on a shared test machine the flood yields to central
                # and to the nodes measured here, as a machine elsewhere would, but still runs flat out.
                "--nice",
                "10",
            ]
        )
        outcome = asyncio.run(_fleet_under_flood(central, nodes, flood, tmp_path))
        assert flood.wait(60) == 0
        flooded = json.loads(result_file.read_text())

        token = create_token(central)
        after = _enroll_retrying(f"127.0.0.1:{port}", token, FleetFiles(tmp_path / "after"))
        wait_for(lambda: _audit_size(central) > audit_before, what="the refusal counts in the audit log")
        audit_growth = _audit_size(central) - audit_before
    finally:
        if flood is not None and flood.poll() is None:
            flood.kill()
            flood.wait(10)
        central.stop()

    rtts = sorted(outcome["rtts"])
    p99 = rtts[int(len(rtts) * 0.99)]
    print(
        f"\nflood: {flooded['calls']} calls in {flooded['duration_s']:.0f} s"
        f" ({flooded['calls'] / flooded['duration_s']:.0f}/s),"
        f" {flooded['codes']}; heartbeats: {len(rtts)} beats, p50 {rtts[len(rtts) // 2] * 1e3:.1f} ms,"
        f" p99 {p99 * 1e3:.1f} ms, max {rtts[-1] * 1e3:.1f} ms; audit +{audit_growth} entries"
    )
    assert not outcome["errors"], outcome["errors"][:5]
    assert not outcome["offline"], f"nodes went offline during the flood: {outcome['offline'][:3]}"
    assert len(rtts) >= NODES * FLOOD_S * 0.9 / BEAT_EVERY_S
    assert p99 < P99_LIMIT_S, f"heartbeat p99 {p99 * 1e3:.1f} ms under the flood"
    assert flooded["calls"] > 10 * audit_growth, "the flood was too small to show anything"
    assert flooded["codes"].get("RESOURCE_EXHAUSTED", 0) > flooded["calls"] / 2
    assert "OK" not in flooded["codes"]
    assert audit_growth <= AUDIT_GROWTH_LIMIT, f"the audit log grew by {audit_growth} entries"
    assert outcome["enrolled_during"] is not None and outcome["enrolled_during"].node_id
    assert after.node_id
