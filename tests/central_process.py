"""Runs a real ``edgefleet central serve`` process for a test, and stops it by its pid."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from central import credential as credential_file
from central.client import AdminClient
from central.datadir import CentralPaths, initialize

STARTUP_TIMEOUT_S = 60  # generous: a busy machine imports and starts slowly


@dataclass
class CentralProcess:
    data_dir: Path
    args: list[str]
    proc: subprocess.Popen | None = None
    fleet_address: str = ""
    enroll_address: str = ""
    metrics_address: str = ""  # the /metrics listener's HOST:PORT, or "off"
    log_path: Path = field(default=None)
    env: dict[str, str] | None = None  # added to this process's environment

    @property
    def paths(self) -> CentralPaths:
        return CentralPaths(self.data_dir)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def metrics_address_file(self) -> Path:
        return self.data_dir / "metrics-address"

    def start(self, fleet_listen: str = "127.0.0.1:0", enroll_listen: str = "127.0.0.1:0") -> CentralProcess:
        for f in (self.paths.fleet_address_file, self.paths.enroll_address_file, self.metrics_address_file):
            f.unlink(missing_ok=True)
        # Central's /metrics default port (9470) would clash between the centrals tests run at once.
        metrics = ["--metrics-listen", "127.0.0.1:0"]
        if any(a.startswith("--metrics-listen") for a in self.args):
            metrics = []
        self.log_path = self.data_dir.parent / f"{self.data_dir.name}.log"
        # The child inherits the log file; the parent's handle is not needed once it has started.
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "central.cli",
                    "central",
                    "serve",
                    "--data-dir",
                    str(self.data_dir),
                    "--listen",
                    fleet_listen,
                    "--enroll-listen",
                    enroll_listen,
                    *metrics,
                    *self.args,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(self.env or {})},
            )
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        files = (self.paths.fleet_address_file, self.paths.enroll_address_file, self.metrics_address_file)
        while not all(f.exists() for f in files):
            if self.proc.poll() is not None:
                raise RuntimeError(f"central exited with {self.proc.returncode}:\n{self.log()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"central did not start within {STARTUP_TIMEOUT_S} s:\n{self.log()}")
            time.sleep(0.05)
        self.fleet_address = self.paths.fleet_address_file.read_text().strip()
        self.enroll_address = self.paths.enroll_address_file.read_text().strip()
        self.metrics_address = self.metrics_address_file.read_text().strip()
        return self

    def restart(self) -> None:
        """Stop and start again on the same ports, as a restarted service would."""
        fleet, enroll = self.fleet_address, self.enroll_address
        self.stop()
        self.start(fleet, enroll)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path else ""

    def credential(self) -> credential_file.Credential:
        return replace(credential_file.load(self.paths.admin_credential), central=self.fleet_address)

    def admin(self) -> AdminClient:
        return AdminClient(self.credential())

    def stop(self) -> int | None:
        if self.proc and self.proc.poll() is None:
            os.kill(self.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.proc.wait(10)
        return self.proc.returncode if self.proc else None


def start_central(data_dir: Path, *args: str, env: dict[str, str] | None = None) -> CentralProcess:
    """Initialize a data dir (CA, keys, store, admin credential) and serve it on free loopback ports.

    Without a --superlink-listen argument it runs no SuperLink: only the federated learning tests need one.
    """
    if not CentralPaths(data_dir).ca_key.exists():
        initialize(data_dir, "127.0.0.1:0")
    if not any(a.startswith("--superlink-listen") for a in args):
        args = (*args, "--no-superlink")
    return CentralProcess(data_dir, list(args), env=env).start()


def start_replicas(root: Path, store_url: str, count: int, *args: str) -> list[CentralProcess]:
    """`count` replicas of one central on one PostgreSQL store: the first data dir made by init, the others
    copies of it (as an operator makes them), each serving on its own free loopback ports."""
    import shutil

    first = root / "replica-0"
    initialize(first, "127.0.0.1:0", store=store_url)
    for i in range(1, count):
        shutil.copytree(first, root / f"replica-{i}")
    if not any(a.startswith("--superlink-listen") for a in args):
        args = (*args, "--no-superlink")
    replicas: list[CentralProcess] = []
    try:
        for i in range(count):
            replicas.append(CentralProcess(root / f"replica-{i}", list(args)).start())
    except BaseException:
        for replica in replicas:
            replica.stop()
        raise
    return replicas


def kill(central: CentralProcess) -> None:
    """kill -9, as a lost machine: nothing flushed, nothing handed over."""
    if central.proc and central.proc.poll() is None:
        os.kill(central.pid, signal.SIGKILL)
        central.proc.wait(10)


def create_token(central: CentralProcess, uses: int = 1, ttl_s: float = 3600, **labels: str):
    from central.convert import duration
    from edgefleet.v1 import admin_pb2

    with central.admin() as admin:
        return admin.call("CreateToken", admin_pb2.CreateTokenRequest(labels=labels, ttl=duration(ttl_s), uses=uses))


def edgefleet_cli(central: CentralProcess, *args: str) -> str:
    """Run an `edgefleet` command in-process as the admin of `central`; its stdout. Fails the test on a
    non-zero exit, with what the command printed on stderr."""
    import contextlib
    import io

    from central.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["--credential", str(central.paths.admin_credential), "--central", central.fleet_address, *args])
    assert code == 0, f"edgefleet {' '.join(args)} exited {code}: {err.getvalue()}"
    return out.getvalue()


def central_status(data_dir: Path) -> dict:
    """`edgefleet central status --json` on a data dir, run in-process (it reads the store, not a replica)."""
    import contextlib
    import io
    import json

    from central.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["central", "status", "--data-dir", str(data_dir), "--json"]) == 0
    return json.loads(out.getvalue())


def wait_for(predicate, timeout_s: float = 60.0, interval_s: float = 0.1, what: str = "condition"):
    """Poll until predicate() returns something truthy; return it. For states another process reaches: wait on
    the state itself with a generous deadline, never sleep a guessed time (a busy machine is slow, not broken)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(interval_s)
