"""`edge-agent enroll` against a real central whose enrollment port is over its per-IP rate limit: the agent
waits as long as central's `grpc-retry-pushback-ms` trailer says and enrolls, instead of failing (many boxes
enrolling at once behind one NAT share one IP)."""

import logging

from central_process import create_token, start_central
from edge_agent.cli import main as edge_agent
from edgefleet.v1 import admin_pb2


def test_enroll_waits_out_the_rate_limit_and_succeeds(tmp_path, caplog, monkeypatch):
    # One call a second per IP, no burst beyond one: the second enrollment right after the first is turned away.
    central = start_central(tmp_path / "central", "--enroll-rate", "1", "--enroll-burst", "1")
    try:
        tokens = [create_token(central), create_token(central)]
        monkeypatch.delenv("EDGEFLEET_TOKEN", raising=False)
        caplog.set_level(logging.WARNING, logger="edge_agent.control.client")
        for i, token in enumerate(tokens):
            token_file = tmp_path / f"token{i}"
            token_file.write_text(token.token)
            token_file.chmod(0o600)
            argv = ["enroll", "--central", central.enroll_address, "--ca-fingerprint", token.ca_fingerprint]
            assert edge_agent([*argv, "--token-file", str(token_file), "--data-dir", str(tmp_path / f"a{i}")]) == 0
        assert any("busy enrolling" in r.getMessage() for r in caplog.records), "the rate limit was never hit"
        with central.admin() as admin:
            assert len(admin.call("ListNodes", admin_pb2.ListNodesRequest()).nodes) == 2
    finally:
        central.stop()
