"""systemd's notification protocol (edgefleet.sdnotify), against real AF_UNIX datagram sockets."""

import asyncio
import os
import socket
import tempfile
import threading
import time
import uuid
from pathlib import Path

import pytest

from edgefleet import sdnotify


@pytest.fixture
def receiver(monkeypatch):
    """A datagram socket bound at a path, named by $NOTIFY_SOCKET; yields a function returning what arrived."""
    directory = Path(tempfile.mkdtemp(prefix="sd"))  # AF_UNIX paths are limited to 107 bytes: keep it short
    path = directory / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(0)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    yield lambda: _drain(sock)
    sock.close()
    path.unlink()
    directory.rmdir()


def _drain(sock: socket.socket) -> list[str]:
    out = []
    while True:
        try:
            out.append(sock.recv(4096).decode())
        except BlockingIOError:
            return out


def test_notify_sends_one_datagram_to_a_path(receiver):
    assert sdnotify.notify("READY=1", sdnotify.status("serving\n  on 127.0.0.1:8080"))
    assert receiver() == ["READY=1\nSTATUS=serving on 127.0.0.1:8080"]


def test_notify_reaches_an_abstract_socket(monkeypatch):
    name = f"edgefleet-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert sdnotify.notify("STOPPING=1")
        assert sock.recv(4096) == b"STOPPING=1"


def test_without_notify_socket_nothing_is_sent(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert sdnotify.notify("READY=1") is False


def test_unsupported_or_missing_sockets_are_refused_quietly(monkeypatch, tmp_path):
    monkeypatch.setenv("NOTIFY_SOCKET", "vsock:2:1234")
    assert sdnotify.notify("READY=1") is False
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "nobody-listens"))
    assert sdnotify.notify("READY=1") is False


def test_reloading_carries_the_monotonic_time():
    first, second = sdnotify.reloading()
    assert first == "RELOADING=1"
    usec = int(second.removeprefix("MONOTONIC_USEC="))
    assert abs(usec - time.monotonic_ns() // 1000) < 5_000_000


@pytest.mark.parametrize(
    "usec, pid, expected",
    [
        ("1000000", None, 0.5),
        ("30000000", "self", 15.0),
        ("1000000", "1", None),  # meant for another process (WATCHDOG_PID mismatch)
        ("0", None, None),
        ("soon", None, None),
        (None, None, None),
    ],
)
def test_watchdog_interval_is_half_of_watchdog_usec(monkeypatch, usec, pid, expected):
    for name, value in (("WATCHDOG_USEC", usec), ("WATCHDOG_PID", str(os.getpid()) if pid == "self" else pid)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    assert sdnotify.watchdog_interval_s() == expected


def _pings(receiver) -> int:
    return sum(m == "WATCHDOG=1" for m in receiver())


# Generous: the pings come every 0.02 s, but a loaded machine may not run this process for a while.
DEADLINE_S = 30.0


async def _count_pings_until(receiver, enough: int) -> int:
    """Await pings until `enough` have arrived (or DEADLINE_S passed); how many arrived."""
    count, deadline = 0, time.monotonic() + DEADLINE_S
    while count < enough and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
        count += _pings(receiver)
    return count


async def _until_count(count, enough: int) -> None:
    """Await until count() reaches `enough` (or DEADLINE_S passed)."""
    deadline = time.monotonic() + DEADLINE_S
    while count() < enough and time.monotonic() < deadline:
        await asyncio.sleep(0.01)


def test_watchdog_pings_from_the_loop_and_stops_while_the_loop_is_blocked(receiver):
    async def scenario():
        task = asyncio.create_task(sdnotify.watchdog(0.02))
        running = await _count_pings_until(receiver, 3)
        time.sleep(0.3)  # a handler that blocks the event loop: the block itself is what is tested
        blocked = _pings(receiver)
        resumed = await _count_pings_until(receiver, 3)
        task.cancel()
        return running, blocked, resumed

    running, blocked, resumed = asyncio.run(scenario())
    assert running >= 3
    assert blocked <= 1  # at most the ping that was due as the block began
    assert resumed >= 3


def test_watchdog_pings_only_while_the_liveness_check_passes(receiver):
    state = {"alive": True, "checks": 0}

    def alive():
        state["checks"] += 1
        if state["alive"] is None:
            raise RuntimeError("the check itself broke")
        return state["alive"]

    async def scenario():
        task = asyncio.create_task(sdnotify.watchdog(0.02, alive))
        counts = []
        for value in (True, False, None, True):
            state["alive"] = value
            if value:
                counts.append(await _count_pings_until(receiver, 3))
            else:
                # No pings to wait for: wait for the watchdog to have run the failing check a few times.
                await _until_count(lambda checked=state["checks"]: state["checks"] - checked, 3)
                counts.append(_pings(receiver))
        task.cancel()
        return counts

    alive_, dead, broken, again = asyncio.run(scenario())
    assert alive_ >= 3 and again >= 3
    assert dead <= 1 and broken == 0


def test_pinging_while_feeds_the_watchdog_during_a_blocking_start(receiver):
    during, deadline = 0, time.monotonic() + DEADLINE_S
    with sdnotify.pinging_while("load", interval_s=0.02):
        while during < 3 and time.monotonic() < deadline:  # a blocking start that lasts until 3 pings came
            time.sleep(0.01)
            during += _pings(receiver)
    during += _pings(receiver)
    time.sleep(0.1)  # the thread is joined on exit: nothing may come after it, however long we look
    assert during >= 3
    assert _pings(receiver) == 0


def test_pinging_while_without_a_watchdog_starts_no_thread(monkeypatch):
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    with sdnotify.pinging_while("load"):
        assert not any(t.name == "watchdog-load" for t in threading.enumerate())
