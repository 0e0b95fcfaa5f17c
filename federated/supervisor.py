"""Keeps one child process (central's SuperLink, an agent's SuperNode) running.

The child runs in its own process group, so stopping it also stops what it
spawned (the SuperLink's ServerApp, the SuperNode's ClientApps), and on Linux
it gets SIGTERM when its parent dies, so a killed daemon leaves no orphan
holding the port. When the child exits on its own it is started again after
an exponential backoff with jitter; every exit is logged with its code.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from edgefleet.backoff import backoff_delay

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
# A child that stayed up this long had a good run: its next failure starts the backoff over.
HEALTHY_AFTER_S = 60.0


def _die_with_parent() -> None:
    os.setsid()
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def venv_env(extra: dict[str, str] | None = None, bin_dir: Path | None = None) -> dict[str, str]:
    """The environment for a child: its venv's bin dir (default this interpreter's) first on PATH (Flower
    spawns its own console scripts by name), nothing downloaded at run time."""
    env = dict(os.environ)
    env["PATH"] = f"{bin_dir or Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra or {})
    return env


class Supervisor:
    def __init__(
        self,
        name: str,
        command: Callable[[], Sequence[str]],
        log_path: Path,
        *,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        max_backoff_s: float = 60.0,
    ):
        # `command` is called at every start, so a restart picks up a renewed certificate or key.
        self.name, self.command, self.log_path = name, command, Path(log_path)
        self.env, self.cwd, self.max_backoff_s = env or venv_env(), cwd, max_backoff_s
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        self.last_exit: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc and self.proc.poll() is None else None

    def start(self) -> Supervisor:
        self._thread = threading.Thread(target=self._run, name=f"supervise-{self.name}", daemon=True)
        self._thread.start()
        return self

    def _spawn(self) -> subprocess.Popen:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as out:
            proc = subprocess.Popen(
                list(self.command()),
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.cwd,
                preexec_fn=_die_with_parent,
            )
        self.starts += 1
        log.info("%s started (pid %d, log %s)", self.name, proc.pid, self.log_path)
        return proc

    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self.proc = self._spawn()
            except OSError as exc:
                log.error("%s could not start: %s", self.name, exc)
                self.last_exit = None
            else:
                while self.proc.poll() is None and not self._stop.wait(0.5):
                    pass
                if self._stop.is_set():
                    return
                self.last_exit = self.proc.returncode
                log.error("%s exited with %s; see %s", self.name, self.last_exit, self.log_path)
            failures = 1 if time.monotonic() - started > HEALTHY_AFTER_S else failures + 1
            delay = backoff_delay(failures, 1.0, self.max_backoff_s, random.random())
            log.info("%s restarting in %.1f s", self.name, delay)
            self._stop.wait(delay)

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout_s)
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        _signal_group(proc, signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            _signal_group(proc, signal.SIGKILL)
            proc.wait(timeout_s)
        log.info("%s stopped", self.name)


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)
