"""Runs a real S3-compatible server (moto's standalone ``moto_server``) for a test, and stops it by its pid.

moto keeps its buckets in the server process's memory, so each server starts empty and everything in it goes
when it stops. Clients reach it with :meth:`S3Server.client` or, like central, through the environment of
:meth:`S3Server.env` (AWS_ENDPOINT_URL and dummy credentials, which moto accepts whatever they are).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from edgefleet.ports import free_port

STARTUP_TIMEOUT_S = 60  # generous: moto imports a lot, and a busy machine is slow, not broken
REGION = "us-east-1"


@dataclass
class S3Server:
    log_path: Path
    host: str = "127.0.0.1"
    port: int = 0
    extra_env: dict[str, str] = field(default_factory=dict)  # e.g. INITIAL_NO_AUTH_ACTION_COUNT=0: check credentials
    proc: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def endpoint_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def env(self) -> dict[str, str]:
        """What a child process needs in its environment to use this server through boto3's own lookup."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": REGION,
        }

    def client(self):
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            region_name=REGION,
        )

    def create_bucket(self, name: str) -> str:
        self.client().create_bucket(Bucket=name)
        return name

    def start(self) -> S3Server:
        self.port = free_port(self.host)
        # moto_server is the console script of the same package; `-m moto.server` finds it in this interpreter.
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", self.host, "-p", str(self.port)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **self.extra_env},
            )
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not self._answers():
            if self.proc.poll() is not None:
                raise RuntimeError(f"moto_server exited with {self.proc.returncode}:\n{self.log()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"moto_server did not answer within {STARTUP_TIMEOUT_S} s:\n{self.log()}")
            time.sleep(0.05)
        return self

    def _answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.endpoint_url}/moto-api/", timeout=2):
                return True
        except urllib.error.HTTPError:
            return True  # any HTTP answer means it is serving
        except OSError:
            return False

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> int | None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        return self.proc.returncode if self.proc else None


def start_s3_server(log_path: Path, env: dict[str, str] | None = None) -> S3Server:
    """A moto server on 127.0.0.1 on a free port, answering; stop it with .stop()."""
    return S3Server(Path(log_path), extra_env=env or {}).start()
