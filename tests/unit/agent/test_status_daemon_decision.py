"""`edge-agent status` says what is true of a stopped daemon (issue 17, item 7): the pure decision, with the
clock and the daemon's facts given."""

import socket

from edge_agent.control.status import DaemonProbe, describe, heartbeat_age_s, link_line, probe_daemon

NOW = 1_000_000.0
CONTROL = {"state": "connected", "last_heartbeat_at": NOW - 4334, "spooled_reports": 0}


def test_a_running_daemons_link_is_its_state():
    assert link_line(CONTROL, daemon_running=True, now=NOW) == (
        "connected (last heartbeat 4334 s ago, 0 report(s) spooled)"
    )


def test_a_stopped_daemon_is_never_connected():
    line = link_line(CONTROL, daemon_running=False, now=NOW)
    assert "connected" not in line
    assert line == "last heartbeat 4334 s ago (daemon not running), 0 report(s) spooled"
    never = link_line({"state": "connected", "last_heartbeat_at": None}, daemon_running=False, now=NOW)
    assert never.startswith("no heartbeat (daemon not running)")


def test_heartbeat_age():
    assert heartbeat_age_s(NOW - 12.5, NOW) == 12.5
    assert heartbeat_age_s(None, NOW) is None and heartbeat_age_s(0, NOW) is None
    assert heartbeat_age_s(NOW + 30, NOW) == 0.0  # a clock set back since


def test_the_daemon_runs_only_when_its_recorded_address_accepts_a_connection(tmp_path):
    assert probe_daemon(tmp_path) == DaemonProbe(None, False, probe_daemon(tmp_path).detail)
    assert not probe_daemon(tmp_path).running
    (tmp_path / "http-address").write_text("127.0.0.1:8080\n")

    def refused(host, port):
        raise ConnectionRefusedError(111, "Connection refused")

    def accepted(host, port):
        assert (host, port) == ("127.0.0.1", 8080)

    gone = probe_daemon(tmp_path, connect=refused)
    assert not gone.running and "no answer at 127.0.0.1:8080" in gone.detail
    assert probe_daemon(tmp_path, connect=accepted).running
    (tmp_path / "http-address").write_text("garbage")
    assert not probe_daemon(tmp_path, connect=accepted).running


def test_a_real_closed_port_is_not_running(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: connections are refused
        (tmp_path / "http-address").write_text(f"127.0.0.1:{port}\n")
        assert not probe_daemon(tmp_path).running
        s.listen()
        assert probe_daemon(tmp_path).running


def _report(running: bool) -> dict:
    return {
        "data_dir": "/d",
        "enrolled": True,
        "daemon_running": running,
        "node_id": "node-1",
        "labels": {},
        "central": "c:1",
        "certificate_expires_at": NOW + 86400,
        "control": CONTROL,
        "last_heartbeat_age_s": 4334.0,
        "serving": {"running": True, "address": "127.0.0.1:8080", "ready": True}
        if running
        else {"running": False, "address": "127.0.0.1:8080", "detail": "no answer at 127.0.0.1:8080: refused"},
    }


def test_describe_a_stopped_daemon():
    text = describe(_report(False), now=NOW)
    assert "daemon:      not running (no answer at 127.0.0.1:8080: refused)" in text
    assert "link:        last heartbeat 4334 s ago (daemon not running)" in text
    assert "connected" not in text and "serving:" not in text


def test_describe_a_running_daemon():
    text = describe(_report(True), now=NOW)
    assert "daemon:      running at http://127.0.0.1:8080" in text
    assert "link:        connected (last heartbeat 4334 s ago" in text
    assert "serving:     http://127.0.0.1:8080 (ready)" in text
