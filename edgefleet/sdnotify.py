"""systemd's notification protocol (sd_notify), for both daemons run as ``Type=notify`` units.

One datagram of newline-separated assignments (``READY=1``, ``STATUS=...``, ``WATCHDOG=1``,
``STOPPING=1``, ``RELOADING=1``) to the AF_UNIX socket named by ``$NOTIFY_SOCKET``: a path, or
an abstract name when it starts with '@'. Without the variable every call is a no-op, so the
daemons run the same under a terminal, a test, or another supervisor.

The watchdog is fed from the serving event loop itself (:func:`watchdog`): a loop blocked by a
handler stops the pings, and systemd restarts the unit after ``WatchdogSec``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator

log = logging.getLogger(__name__)

SEND_TIMEOUT_S = 1.0
_warned: set[str] = set()


def notify(*assignments: str) -> bool:
    """Send the assignments as one datagram; False when there is no $NOTIFY_SOCKET or the send failed."""
    address = os.environ.get("NOTIFY_SOCKET", "")
    if not address or not assignments:
        return False
    if address.startswith("@"):
        target = "\0" + address[1:]
    elif address.startswith("/"):
        target = address
    else:  # vsock:... and other forms systemd may grow; not used for a local service
        _warn_once(address, "NOTIFY_SOCKET=%s: only paths and abstract ('@') sockets are supported", address)
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:  # not inherited (PEP 446)
            sock.settimeout(SEND_TIMEOUT_S)
            sock.sendto("\n".join(assignments).encode(), target)
    except OSError as exc:
        _warn_once(address, "cannot notify systemd at %s: %s", address, exc)
        return False
    return True


def status(text: str) -> str:
    """A ``STATUS=`` assignment: one line, shown by ``systemctl status``."""
    return "STATUS=" + " ".join(text.split())


def reloading() -> tuple[str, str]:
    """The assignments that open a reload (``Type=notify-reload`` wants the monotonic time); READY=1 ends it."""
    return "RELOADING=1", f"MONOTONIC_USEC={time.monotonic_ns() // 1000}"


def watchdog_interval_s() -> float | None:
    """Half of ``$WATCHDOG_USEC`` in seconds, when the watchdog is on and meant for this process."""
    pid = os.environ.get("WATCHDOG_PID", "")
    if pid and pid != str(os.getpid()):
        return None
    try:
        usec = int(os.environ.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    return usec / 2e6 if usec > 0 else None


async def watchdog(interval_s: float, alive: Callable[[], bool] = lambda: True) -> None:
    """Send WATCHDOG=1 every ``interval_s`` from the running event loop while ``alive()`` holds; until cancelled.

    ``alive`` adds what the loop's own progress does not show (e.g. the agent's scheduler thread); while it
    fails (or raises), no pings go out, so systemd's watchdog fires."""
    failing = False
    while True:
        try:
            ok = bool(alive())
        except Exception:  # a broken check counts as a failed one
            log.exception("watchdog liveness check failed")
            ok = False
        if ok:
            notify("WATCHDOG=1")
            if failing:
                log.warning("liveness check passes again: pinging systemd's watchdog")
        elif not failing:
            log.error("liveness check failed: no longer pinging systemd's watchdog")
        failing = not ok
        await asyncio.sleep(interval_s)


@contextlib.contextmanager
def pinging_while(what: str, interval_s: float | None = None) -> Iterator[None]:
    """Ping the watchdog from a thread while a blocking start-up step (loading a model) runs, before any loop."""
    interval_s = watchdog_interval_s() if interval_s is None else interval_s
    if interval_s is None or not os.environ.get("NOTIFY_SOCKET"):
        yield
        return
    done = threading.Event()

    def ping() -> None:
        while not done.wait(interval_s):
            notify("WATCHDOG=1")

    thread = threading.Thread(target=ping, name=f"watchdog-{what}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


def _warn_once(address: str, message: str, *args: object) -> None:
    if address not in _warned:
        _warned.add(address)
        log.warning(message, *args)
