"""`edgefleet slo` against a real central over mTLS: two nodes enroll (region=eu, region=us) and beat with inference
figures as a real agent's heartbeat carries them; the objectives central judges from its rollups of those beats
are what `slo status` prints, `slo rules` prints the shipped example, and bad input and absent names exit as the
docs say."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest

from central.cli import main
from central_process import create_token, start_central
from edge_agent.control.client import enroll
from edge_agent.control.identity import FleetFiles
from edgefleet import channels, histogram_buckets
from edgefleet.v1 import common_pb2, fleet_pb2, fleet_pb2_grpc

EXAMPLE_RULES = Path(__file__).resolve().parents[2] / "packaging" / "prometheus" / "edgefleet-slo-example.yml"


def _beat(central, identity, requests: int, errors: int, latencies_ms: list[float]) -> None:
    stats = common_pb2.InferenceStats(
        interval_seconds=15,
        requests=requests,
        errors=errors,
        latency_buckets=histogram_buckets.counts(latencies_ms),
    )
    ca_pem = central.paths.ca_cert.read_bytes()
    with channels.mtls_channel(central.fleet_address, ca_pem, identity.certificate_pem, identity.key_pem) as ch:
        stub = fleet_pb2_grpc.FleetServiceStub(ch)
        request = fleet_pb2.HeartbeatRequest(node_id=identity.node_id, status=common_pb2.NodeStatus(inference=stats))
        next(stub.Heartbeat(iter([request]), timeout=10))


@pytest.fixture(scope="module")
def central(tmp_path_factory):
    process = start_central(tmp_path_factory.mktemp("slo") / "central")
    try:
        for region, requests, errors, slow in (("eu", 1000, 20, 10), ("us", 100, 100, 0)):
            token = create_token(process, region=region)
            files = FleetFiles(tmp_path_factory.mktemp(f"node-{region}"))
            identity = enroll(process.enroll_address, token.ca_fingerprint, token.token, files)
            _beat(process, identity, requests, errors, [100.0] * (requests - slow) + [2500.0] * slow)
        yield process
    finally:
        process.stop()


def run(central, *args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    credential = ["--credential", str(central.paths.admin_credential), "--central", central.fleet_address]
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([*credential, *args])
    return code, out.getvalue(), err.getvalue()


def test_set_list_status_rules_and_delete(central):
    code, out, err = run(
        central, "slo", "set", "eu-latency", "--selector", "region=eu", "--availability", "99.9", "--p99-ms", "2000"
    )
    assert code == 0, err
    assert out.strip() == "objective eu-latency set: region=eu; availability 99.9%, 99% within 2000 ms; over 30d"
    assert err == ""  # 2000 ms is a bucket bound: no note

    code, out, _ = run(central, "slo", "list", "--json")
    [listed] = json.loads(out)
    assert listed["selector"] == {"region": "eu"} and listed["window_seconds"] == 30 * 86400
    assert listed["updated_by"] == "admin:admin"

    code, out, _ = run(central, "slo", "status", "eu-latency", "--json")
    status = json.loads(out)
    # Only the eu node's beat counts: 1000 requests, 20 failed (2%: burn 20), 10 slower than 2 s (1%: burn 1).
    assert (status["requests"], status["errors"], status["slow_requests"]) == (1000, 20, 10)
    assert status["availability_percent"] == pytest.approx(98.0)
    assert status["latency_good_percent"] == pytest.approx(99.0)
    assert status["compliant"] is False
    assert status["error_budget_remaining"] == pytest.approx(1 - 20)
    five = next(b for b in status["burn_rates"] if b["window_seconds"] == 300)
    assert five["availability"] == pytest.approx(20) and five["latency"] == pytest.approx(1)
    assert status["alert"] == "page"

    code, out, _ = run(central, "slo", "status")
    assert code == 0
    header, row = out.splitlines()
    assert header.split()[:3] == ["NAME", "REQUESTS", "AVAILABLE"] and row.split()[-1] == "PAGE"
    code, out, _ = run(central, "slo", "status", "eu-latency")
    assert "compliant:            NO" in out and "alert:                page" in out

    code, out, _ = run(central, "slo", "rules")
    assert code == 0 and out == EXAMPLE_RULES.read_text()

    assert run(central, "slo", "delete", "eu-latency")[:2] == (0, "deleted objective eu-latency\n")
    code, _, err = run(central, "slo", "delete", "eu-latency")
    assert code == 5 and "no objective 'eu-latency'" in err
    code, _, err = run(central, "slo", "status", "eu-latency")
    assert code == 5 and "no objective 'eu-latency'" in err


def test_the_fleet_and_a_bound_between_buckets(central):
    code, out, err = run(
        central, "slo", "set", "fleet", "--p99-ms", "1800", "--latency-percent", "95", "--window", "1d"
    )
    assert code == 0, err
    assert "1800 ms is not a latency bucket bound" in err and "1500 or 2000 ms would be exact" in err
    code, out, _ = run(central, "slo", "status", "fleet", "--json")
    status = json.loads(out)
    assert status["requests"] == 1100 and status["slow_requests"] == 10
    assert status["compliant"] is True  # 99.1% within 1800 ms against 95%
    code, _, err = run(central, "slo", "rules")
    assert code == 2 and "no rules written" in err and "set it to 1500 or 2000 ms" in err
    assert run(central, "slo", "delete", "fleet")[0] == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["bad name", "--availability", "99"], "objective name 'bad name' must be 1 to 64"),
        (["x", "--availability", "100"], "availability percent must be above 0 and below 100"),
        (["x"], "has neither part"),
        (["x", "--availability", "99", "--window", "30m"], "window must be from 1h to 90d"),
    ],
)
def test_bad_objectives_exit_2_and_say_why(central, args, message):
    code, _, err = run(central, "slo", "set", *args)
    assert code == 2 and message in err
