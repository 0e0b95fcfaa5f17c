"""`make run`'s launcher (python -m local_fleet): central and an enrolled agent start, the log reads as state
changes, and Ctrl-C stops every process it started and says so."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import psutil

from central_process import wait_for
from edgefleet.ports import free_port

ROOT = Path(__file__).resolve().parents[2]


def test_local_fleet_starts_logs_state_changes_and_stops_everything_on_ctrl_c(tmp_path):
    api = f"127.0.0.1:{free_port('127.0.0.1')}"
    log_path = tmp_path / "local_fleet.log"
    command = [
        sys.executable,
        "-m",
        "local_fleet",
        "--dir",
        str(tmp_path / "fleet"),
        "--listen",
        api,
        *(
            arg
            for flag in ("--central-listen", "--enroll-listen", "--superlink-listen")
            for arg in (flag, f"127.0.0.1:{free_port('127.0.0.1')}")
        ),
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRPC_")}
    with open(log_path, "wb") as log:
        # Its own session, as a terminal's foreground job: Ctrl-C reaches the launcher and its children.
        launcher = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:

        def ready():
            assert launcher.poll() is None, log_path.read_text()
            try:
                with urllib.request.urlopen(f"http://{api}/readyz", timeout=5) as reply:
                    return reply.status == 200
            except OSError:
                return False

        wait_for(ready, 180, 0.5, "the agent to be ready")
        # Central polls its SuperLink every 2 s, a request httpx would log at INFO: let two go by.
        superlink_log = tmp_path / "fleet" / "central" / "flower" / "superlink.log"
        wait_for(
            lambda: superlink_log.exists() and superlink_log.read_text().count("list-nodes") >= 2,
            60,
            0.2,
            "two of central's SuperLink polls",
        )
        started = launcher.pid, *(p.pid for p in psutil.Process(launcher.pid).children(recursive=True))
        assert len(started) >= 4, started  # the launcher, central, its SuperLink, the agent

        os.killpg(launcher.pid, signal.SIGINT)
        assert launcher.wait(120) == 0, log_path.read_text()
    finally:
        if launcher.poll() is None:
            os.killpg(launcher.pid, signal.SIGKILL)
            launcher.wait()

    output = log_path.read_text()
    assert output.rstrip().endswith("local fleet: stopped"), output
    assert "enrolled the agent as node-" in output and "central serving" in output, output
    for noise in ("httpx", "HTTP Request", "skipping fork() handlers", "uvicorn", "Traceback"):
        assert noise not in output, f"{noise!r} in the launcher's output:\n{output}"
    left = [pid for pid in started if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]
    assert not left, f"still running after the launcher stopped: {left}"
