"""Both daemons under systemd's notification protocol: a real `edge-agent serve` on the real model and a real
`edgefleet central serve`, each with NOTIFY_SOCKET naming a datagram socket this test owns and
WATCHDOG_USEC=1000000 (so WATCHDOG=1 every 0.5 s). READY=1 only once serving, STATUS= lines, the watchdog's
cadence, pings stopping while the serving loop is stalled, SIGHUP reloads while a stream is in flight, and
SIGTERM draining a stream, sending STOPPING=1 and exiting 0.
"""

import contextlib
import itertools
import json
import math
import os
import re
import signal
import socket
import sqlite3
import statistics
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from agent_process import STARTUP_TIMEOUT_S, start_agent, write_config
from central_process import create_token, start_central, wait_for

MODEL = "smollm2-135m-instruct"
# The agent's drain lasts 30 s (edge_agent.daemon.DRAIN_TIMEOUT_S). The draining test sizes its stream to take
# about DRAIN_STREAM_S at the speed the agent streams at just before, within these bounds: long enough to be in
# flight when SIGTERM lands, short enough to end well inside the drain however busy the machine is.
DRAIN_STREAM_S = 8.0
DRAIN_STREAM_TOKENS_MIN, DRAIN_STREAM_TOKENS_MAX = 16, 1000
# The reload test's stream: longer than its checks take on any machine here (the model streams 150 tokens/s on a
# quiet one), and the test closes it once they are done instead of waiting for it to end.
OPEN_STREAM_TOKENS = 1900


class Notifications:
    """The socket systemd would own: a thread records every datagram as (arrival time, text)."""

    def __init__(self):
        self.dir = Path(tempfile.mkdtemp(prefix="sd"))  # AF_UNIX paths are limited to 107 bytes
        self.path = self.dir / "notify"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(self.path))
        self.sock.settimeout(0.1)
        self.messages: list[tuple[float, str]] = []
        self._lock = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._receive, daemon=True)
        self._thread.start()

    @property
    def env(self) -> dict[str, str]:
        return {"NOTIFY_SOCKET": str(self.path), "WATCHDOG_USEC": "1000000"}

    def _receive(self) -> None:
        while not self._closed:
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self.messages.append((time.monotonic(), data.decode()))

    def all(self) -> list[tuple[float, str]]:
        with self._lock:
            return list(self.messages)

    def wait_for(self, pattern: str, after: float = 0.0, timeout_s: float = 60.0) -> tuple[float, str]:
        """The first message at or after `after` with a line matching `pattern`."""

        def find():
            for t, text in self.all():
                if t >= after and any(re.fullmatch(pattern, line) for line in text.split("\n")):
                    return t, text
            return None

        return wait_for(find, timeout_s, 0.02, f"a notification matching {pattern!r}")

    def statuses(self) -> list[str]:
        return [
            line[len("STATUS=") :] for _, text in self.all() for line in text.split("\n") if line.startswith("STATUS=")
        ]

    def pings(self, start: float = 0.0, end: float = math.inf) -> list[float]:
        return [t for t, text in self.all() if "WATCHDOG=1" in text.split("\n") and start <= t <= end]

    def close(self) -> None:
        self._closed = True
        self._thread.join(2)
        self.sock.close()
        self.path.unlink(missing_ok=True)
        self.dir.rmdir()


@pytest.fixture
def notifications():
    n = Notifications()
    yield n
    n.close()


def stream_completion(
    base_url: str,
    started: threading.Event,
    max_tokens: int,
    arrivals: list[float] | None = None,
    close: threading.Event | None = None,
) -> dict:
    """A streamed completion of max_tokens tokens; sets `started` at the first token, appends each token's arrival
    time to `arrivals`, and closes the stream early (done stays False) once `close` is set."""
    body = {
        "model": MODEL,
        "prompt": "Once upon a time",
        "max_tokens": max_tokens,
        "stream": True,
        "ignore_eos": True,
        "temperature": 0.0,
        "stream_options": {"include_usage": True},
    }
    chunks, usage, done, finish = [], None, False, None
    with httpx.stream("POST", base_url + "/v1/completions", json=body, timeout=180) as response:
        assert response.status_code == 200, response.read()
        for line in response.iter_lines():
            if not line.startswith("data: "):
                continue
            if line == "data: [DONE]":
                done = True
                break
            event = json.loads(line[len("data: ") :])
            assert "error" not in event, event
            if event.get("usage"):
                usage = event["usage"]
            for choice in event.get("choices", []):
                chunks.append(choice.get("text", ""))
                finish = choice.get("finish_reason") or finish
                if arrivals is not None:
                    arrivals.append(time.monotonic())
            started.set()
            if close is not None and close.is_set():
                break
    return {"done": done, "usage": usage, "finish_reason": finish, "text": "".join(chunks)}


def complete(base_url: str, prompt: str, **extra) -> httpx.Response:
    return httpx.post(
        base_url + "/v1/completions",
        timeout=120,
        json={"model": MODEL, "prompt": prompt, "max_tokens": 2, "temperature": 0.0, **extra},
    )


def test_agent_ready_status_watchdog_and_a_draining_sigterm(tmp_path, notifications):
    # One engine thread: with two on a 2-core box beside another busy process, llama.cpp's OpenMP workers
    # spin and starve the event loop that streams the tokens (measured here: 150 tokens/s quiet, under 4 during
    # the drain with one CPU-bound process beside it), and the 100-token stream outlasted the 30 s drain.
    agent = start_agent(
        tmp_path / "agent", sections={"model": {"n_threads": 1}}, env=notifications.env, wait_ready=False
    )
    try:
        readyz = []  # (sent, status)
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not any(MODEL in s and s.startswith("serving") for s in notifications.statuses()):
            sent = time.monotonic()
            with contextlib.suppress(httpx.TransportError):
                readyz.append((sent, httpx.get(agent.base_url + "/readyz", timeout=5).status_code))
            assert agent.proc.poll() is None, agent.log()
            assert sent < deadline, f"the agent was not serving within {STARTUP_TIMEOUT_S} s:\n{agent.log()}"
            time.sleep(0.02)
        ready_at, ready = notifications.wait_for("READY=1")
        # READY=1 only once the agent can serve: every /readyz asked after it arrived says ready.
        assert httpx.get(agent.base_url + "/readyz").status_code == 200
        assert all(status == 200 for sent, status in readyz if sent > ready_at)
        address = agent.base_url.removeprefix("http://")
        assert f"STATUS=serving {MODEL} on {address}: 0 in flight, 0 queued" in ready.split("\n")
        before = [s for t, text in notifications.all() if t < ready_at for s in text.split("\n")]
        assert f"STATUS=warming up {MODEL}" in before and "READY=1" not in before

        _assert_watchdog_cadence(notifications, ready_at)

        drain_tokens = _tokens_streamed_in(agent.base_url, DRAIN_STREAM_S)
        started = threading.Event()
        with ThreadPoolExecutor(1) as pool:
            stream = pool.submit(stream_completion, agent.base_url, started, drain_tokens)
            assert started.wait(60), "the stream never started"
            term_at = time.monotonic()
            os.kill(agent.pid, signal.SIGTERM)
            _, stopping = notifications.wait_for("STOPPING=1", after=term_at, timeout_s=60)
            assert "STATUS=draining: 1 requests in flight" in stopping.split("\n")
            # The listener is closed at once: a new connection is refused while the stream goes on.
            wait_for(lambda: _refused(agent.base_url), 60, 0.05, "new connections refused")
            result = stream.result(timeout=60)
        assert result["done"] and result["finish_reason"] == "length"
        assert result["usage"]["completion_tokens"] == drain_tokens, "the stream was cut during the drain"
        assert agent.proc.wait(60) == 0
        # serve()'s cleanup ran (audit, spool, cache, address file) instead of the signal killing the process.
        assert not (agent.data_dir / "http-address").exists()
        assert "draining: 1 requests in flight" in agent.log()
    finally:
        agent.stop()


def _assert_watchdog_cadence(notifications: Notifications, since: float, count: int = 8) -> None:
    """The first `count` pings after `since` come every 0.5 s or so (WATCHDOG_USEC=1000000): the median gap is
    within what systemd's WatchdogSec=1s accepts. Waited for, not counted in a fixed window, so a busy machine
    that delays the test's own receiving thread does not fail it."""
    pings = wait_for(
        lambda: (p := notifications.pings(since))[count - 1 :] and p[:count], 60, 0.05, f"{count} watchdog pings"
    )
    assert 0.25 <= statistics.median(b - a for a, b in itertools.pairwise(pings)) <= 1.0, pings


def _tokens_streamed_in(base_url: str, seconds: float) -> int:
    """How many tokens the agent streams in about `seconds` now, measured on a short stream, within the
    draining test's bounds."""
    arrivals: list[float] = []
    stream_completion(base_url, threading.Event(), 32, arrivals)
    per_s = (len(arrivals) - 1) / max(arrivals[-1] - arrivals[0], 1e-3)
    return max(DRAIN_STREAM_TOKENS_MIN, min(DRAIN_STREAM_TOKENS_MAX, int(per_s * seconds)))


def _wait_statuses(notifications: Notifications, text: str) -> list[str]:
    wait_for(lambda: any(text in s for s in notifications.statuses()), 60, 0.05, f"a STATUS with {text!r}")
    return notifications.statuses()


def _refused(base_url: str) -> bool:
    try:
        httpx.get(base_url + "/healthz", timeout=10)
    except httpx.ConnectError:
        return True
    except httpx.TimeoutException:  # accepted but not answered yet (a busy machine): ask again
        pass
    return False


def test_a_stalled_serving_loop_stops_the_watchdog_pings(tmp_path, notifications):
    """The serving loop stalled for real: another process holds the response cache's SQLite write lock, so the
    agent's cache write after an answer waits on it, on the loop (operator patterns, the way this test stalled it
    before, are RE2 now and cannot). No ping while the loop waits (systemd, at WatchdogSec=1s, would restart
    the agent), pings before it, and again once the lock is gone."""
    data_dir = tmp_path / "agent"
    agent = start_agent(data_dir, env=notifications.env)
    blocker = sqlite3.connect(data_dir / "cache" / "responses.db", isolation_level=None)
    try:
        notifications.wait_for("READY=1")
        assert complete(agent.base_url, "Hello there").status_code == 200  # ordinary requests: no stall
        wait_for(lambda: len(notifications.pings(time.monotonic() - 1.0)) >= 1, what="a watchdog ping")
        blocker.execute("BEGIN IMMEDIATE")  # the write lock, until ROLLBACK
        with ThreadPoolExecutor(1) as pool:
            sent = time.monotonic()
            answer = pool.submit(complete, agent.base_url, "Name a colour.")
            # The loop is stalled once no ping has come for 2 s (they come every 0.5 s): then let it go.
            wait_for(
                lambda: time.monotonic() - max(notifications.pings() or [sent]) >= 2.0,
                timeout_s=60,
                interval_s=0.05,
                what="the pings to stop while the cache write waits on the lock",
            )
            blocker.execute("ROLLBACK")
            released = time.monotonic()
            assert answer.result(timeout=60).status_code == 200  # the stalled request itself is answered
        wait_for(lambda: len(notifications.pings(released)) >= 2, what="the pings to resume")
        around = notifications.pings(sent - 2, released + 2)
        gaps = [b - a for a, b in itertools.pairwise(around)]
        assert max(gaps) >= 2.0, gaps
        assert notifications.pings(sent - 2, sent)
        assert agent.stop() == 0
    finally:
        blocker.close()
        agent.stop()


def test_sighup_reloads_live_settings_while_a_stream_is_in_flight(tmp_path, notifications):
    data_dir = tmp_path / "agent"
    sections = {
        "cache": {"max_bytes": 1_000_000},
        "policy.custom": [{"name": "project", "data_class": "restricted", "keywords": ["bluebird"]}],
    }
    agent = start_agent(data_dir, sections=sections, env=notifications.env)
    config = data_dir / "agent.toml"
    try:
        notifications.wait_for("READY=1")
        assert complete(agent.base_url, "We land in zanzibar").headers["x-edgefleet-data-class"] == "public"
        assert complete(agent.base_url, "Say hi").headers["x-cache"] == "miss"
        assert complete(agent.base_url, "Say hi").headers["x-cache"] == "hit"

        started, close, arrivals = threading.Event(), threading.Event(), []
        with ThreadPoolExecutor(1) as pool:
            stream = pool.submit(stream_completion, agent.base_url, started, OPEN_STREAM_TOKENS, arrivals, close)
            assert started.wait(60), "the stream never started"
            assert any(
                re.fullmatch(rf"serving {MODEL} on .*: 1 in flight, 0 queued", s)
                for s in _wait_statuses(notifications, "1 in flight")
            )
            write_config(
                config,
                {
                    "server": {"listen": "127.0.0.1:0"},
                    "model": {"n_parallel": 4},
                    "cache": {"max_bytes": 1},
                    "policy.custom": [
                        {"name": "project", "data_class": "restricted", "keywords": ["bluebird"]},
                        {"name": "travel", "data_class": "internal", "keywords": ["zanzibar"]},
                    ],
                },
                {"data_dir": str(data_dir), "log_level": "debug"},
            )
            hup_at = time.monotonic()
            os.kill(agent.pid, signal.SIGHUP)
            reloading_at, reloading = notifications.wait_for("RELOADING=1", after=hup_at, timeout_s=60)
            assert any(line.startswith("MONOTONIC_USEC=") for line in reloading.split("\n"))
            ready_at, _ = notifications.wait_for("READY=1", after=reloading_at, timeout_s=60)
            assert complete(agent.base_url, "We land in zanzibar").headers["x-edgefleet-data-class"] == "internal"
            assert complete(agent.base_url, "Say hi").headers["x-cache"] == "miss"  # evicted: max_bytes = 1
            assert complete(agent.base_url, "Say hi").headers["x-cache"] == "miss"  # and too big to keep
            # The stream went on across the reload: tokens kept coming after it, and it had not ended.
            wait_for(lambda: sum(t > ready_at for t in arrivals) >= 3, 60, 0.05, "stream tokens after the reload")
            assert not stream.done(), f"the {OPEN_STREAM_TOKENS}-token stream ended before the checks were done"
            close.set()
            result = stream.result(timeout=60)
        assert not result["done"] and arrivals[0] < hup_at < ready_at < arrivals[-1]

        log = agent.log()
        assert "SIGHUP: model.n_parallel changed (8 -> 4) but needs a restart" in log
        assert "SIGHUP: log_level changed (info -> debug): applied" in log
        assert "SIGHUP: cache.max_bytes changed (1000000 -> 1): applied" in log
        assert "SIGHUP: policy.custom changed: applied" in log

        # An invalid file changes nothing: the error is logged and the agent serves on with what it runs.
        config.write_text("cache = 5\n")
        hup_at = time.monotonic()
        os.kill(agent.pid, signal.SIGHUP)
        notifications.wait_for("READY=1", after=hup_at, timeout_s=60)
        assert "keeping the running configuration" in agent.log()
        assert complete(agent.base_url, "We land in zanzibar").headers["x-edgefleet-data-class"] == "internal"
        assert agent.stop() == 0
    finally:
        agent.stop()


def test_central_ready_status_watchdog_reload_and_stop(tmp_path, notifications):
    from edge_agent.control.client import FleetClient, ModelInfo, encode_status, enroll
    from edge_agent.control.identity import FleetFiles
    from edge_agent.control.interval_stats import InferenceWindow
    from edge_agent.control.telemetry import SystemSample

    central = start_central(tmp_path / "central", "--heartbeat-interval", "2s", env=notifications.env)
    try:
        ready_at, ready = notifications.wait_for("READY=1", timeout_s=60)
        assert (
            f"STATUS=serving fleet API on {central.fleet_address}, enrollment on {central.enroll_address}; "
            "0 nodes online (of 0); leader"
        ) in ready.split("\n")
        _assert_watchdog_cadence(notifications, ready_at, count=4)

        token = create_token(central)
        identity = enroll(central.enroll_address, token.ca_fingerprint, token.token, FleetFiles(tmp_path / "box"))
        client = FleetClient(identity, rpc_timeout_s=10)
        try:
            status = encode_status(
                "test",
                ModelInfo("m", "1", "0" * 64),
                SystemSample(0.0, 2, 0.0, 0, 0, 0, 0, (), ()),
                InferenceWindow(15.0, 0, 0, 0, 0.0, 0.0, 0.0, 0, 0),
                0,
                0,
                1.0,
                time.time(),
            )
            beating = threading.Event()

            def beat():
                while not beating.is_set():
                    client.heartbeat(status)
                    beating.wait(0.3)

            with ThreadPoolExecutor(1) as pool:
                beats = pool.submit(beat)
                try:
                    _wait_statuses(notifications, "; 1 node online (of 1); leader")
                finally:
                    beating.set()
                beats.result(10)
        finally:
            client.close()

        (central.data_dir / "log-level").write_text("debug\n")
        hup_at = time.monotonic()
        os.kill(central.pid, signal.SIGHUP)
        reloading_at, _ = notifications.wait_for("RELOADING=1", after=hup_at, timeout_s=60)
        notifications.wait_for("READY=1", after=reloading_at, timeout_s=60)
        log = wait_for(lambda: "SIGHUP: log level debug" in central.log() and central.log(), 60, 0.1, "the reload line")
        assert f"(from {central.data_dir / 'log-level'})" in log
        assert "need a restart" in log

        term_at = time.monotonic()
        assert central.stop() == 0
        notifications.wait_for("STOPPING=1", after=term_at, timeout_s=60)
    finally:
        central.stop()
