"""`make run`: a local fleet on this machine — a coordinator on loopback and one agent enrolled to it.

    python -m local_fleet [--dir .fleet] [--listen 127.0.0.1:8080] [--model NAME|PATH]

Central's data dir is DIR/central (initialized on first run), the agent's DIR/agent (enrolled on first
run with a one-time token, as an operator would). Both run as child processes until Ctrl-C, and are
stopped together by pid. It lives apart from both programs because it imports both. In another terminal:

    export EDGEFLEET_CREDENTIAL=DIR/central/admin.credential
    edgefleet nodes list
    edgefleet dashboard    # the web dashboard on http://127.0.0.1:8700/
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from central import credential as credential_file
from central.client import AdminClient
from central.convert import duration
from central.dashboard_command import DEFAULT_LISTEN as DASHBOARD_DEFAULT_LISTEN
from central.datadir import CentralPaths, initialize
from edge_agent.control.client import enroll
from edge_agent.control.identity import FleetFiles
from edgefleet import logs, pki
from edgefleet.v1 import admin_pb2

START_TIMEOUT_S = 30
# Each program drains and stops its own children on SIGTERM well within this; past it, SIGKILL.
STOP_TIMEOUT_S = 30


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="local-fleet", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", default=".fleet", help="where central's and the agent's data dirs live (.fleet)")
    parser.add_argument("--central-listen", default="127.0.0.1:7443", help="FleetService/AdminService (mTLS)")
    parser.add_argument("--enroll-listen", default="127.0.0.1:7444", help="EnrollmentService (TLS)")
    parser.add_argument("--superlink-listen", default="127.0.0.1:7445", help="central's Flower SuperLink")
    parser.add_argument("--listen", default="127.0.0.1:8080", help="the agent's OpenAI-compatible API")
    parser.add_argument("--model", default=None, help="model for the agent (default: SmolLM2-135M-Instruct)")
    args = parser.parse_args(argv)
    # Before any gRPC call or child process: both read the environment this sets.
    logs.configure(logging.INFO)

    root = Path(args.dir).resolve()
    paths = CentralPaths(root / "central")
    agent_dir = root / "agent"
    if not paths.ca_key.exists():
        initialize(paths.root, args.central_listen)
        print(f"initialized central in {paths.root}", flush=True)
    children: dict[str, subprocess.Popen] = {}  # by name, in the order started
    try:
        for f in (paths.fleet_address_file, paths.enroll_address_file):
            f.unlink(missing_ok=True)
        central_cmd = [sys.executable, "-m", "central.cli", "central", "serve", "--data-dir", str(paths.root)]
        central_cmd += ["--listen", args.central_listen, "--enroll-listen", args.enroll_listen]
        central_cmd += ["--superlink-listen", args.superlink_listen]
        children["central"] = subprocess.Popen(central_cmd)
        _wait_for_file(paths.fleet_address_file, children["central"], "central")
        _ensure_enrolled(paths, agent_dir)
        agent_cmd = [sys.executable, "-m", "edge_agent.cli", "serve", "--data-dir", str(agent_dir)]
        agent_cmd += ["--listen", args.listen]
        if args.model:
            agent_cmd += ["--model", args.model]
        children["agent"] = subprocess.Popen(agent_cmd)
        print(
            f"\nlocal fleet: central on {args.central_listen}, agent API on http://{args.listen}/v1\n"
            f"in another terminal:\n  export EDGEFLEET_CREDENTIAL={paths.admin_credential}\n"
            f"  edgefleet nodes list\n"
            f"  edgefleet dashboard    # the web dashboard on http://{DASHBOARD_DEFAULT_LISTEN}/\n"
            "Ctrl-C stops both.\n",
            flush=True,
        )
        return _supervise(children)
    except KeyboardInterrupt:  # Ctrl-C while starting: stop what has started, without a traceback
        return 0
    finally:
        _stop_all(children)
        print("local fleet: stopped", flush=True)


def _ensure_enrolled(paths: CentralPaths, agent_dir: Path) -> None:
    files = FleetFiles(agent_dir)
    ca_fingerprint = pki.fingerprint(pki.load_certificate(paths.ca_cert.read_bytes()))
    if files.enrolled():
        if pki.fingerprint(pki.load_certificate(files.ca.read_bytes())) == ca_fingerprint:
            return
        # The agent was enrolled to a central whose data dir is gone: enroll it to this one.
        shutil.rmtree(files.root)
    cred = credential_file.load(paths.admin_credential)
    fleet_address = paths.fleet_address_file.read_text().strip()
    with AdminClient(cred, fleet_address) as admin:
        token = admin.call(
            "CreateToken", admin_pb2.CreateTokenRequest(labels={"site": "local"}, ttl=duration(600), uses=1)
        )
    identity = enroll(token.enroll_address, token.ca_fingerprint, token.token, files)
    print(f"enrolled the agent as {identity.node_id}", flush=True)


def _supervise(children: dict[str, subprocess.Popen]) -> int:
    stopping = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopping.append(True))
    while not stopping:
        for name, child in children.items():
            if child.poll() is not None:
                print(f"local fleet: {name} exited with {child.returncode}; stopping", file=sys.stderr)
                return 1
        time.sleep(0.2)
    return 0


def _wait_for_file(path: Path, child: subprocess.Popen, name: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while not path.exists():
        if child.poll() is not None:
            raise SystemExit(f"local fleet: {name} exited with {child.returncode} while starting")
        if time.monotonic() > deadline:
            raise SystemExit(f"local fleet: {name} did not start within {START_TIMEOUT_S} s")
        time.sleep(0.1)


def _stop_all(children: dict[str, subprocess.Popen]) -> None:
    """SIGTERM to every child at once, then wait for all of them on one deadline (SIGKILL past it).

    Stopping them one after the other added their drain times up; each stops on its own, and the agent
    rides out central going away (it spools what it cannot report).
    """
    for child in children.values():
        if child.poll() is None:
            os.kill(child.pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    for name, child in children.items():
        try:
            child.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            print(
                f"local fleet: {name} did not stop within {STOP_TIMEOUT_S} s; killing it",
                file=sys.stderr,
                flush=True,
            )
            os.kill(child.pid, signal.SIGKILL)
            child.wait()
