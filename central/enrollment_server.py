"""The enrollment port (EnrollmentService and health, server TLS) on its own thread and its own event loop.

The port is open to anyone who can reach it, so it must never be able to delay the fleet port: heartbeats
and AdminService run on central's main loop (central.server), enrollment here. Each call is first put to
the :class:`central.services.enrollment.EnrollmentGate` (a token bucket per client IP, a cap on calls in
flight), which refuses without touching the store or the main loop; refusals are counted and written to
the audit log once per window (CentralSettings.enroll_audit_window_s), and once more at shutdown.

What an admitted call does with the store runs through :func:`central.services.base.call` from this loop:
with SQLite, inline here, serialized with the main loop by the store's own lock (one short statement at a
time); with PostgreSQL, on central's bounded worker pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable, Sequence

import grpc

from central import health
from central.servicers import EnrollmentServicer
from central.services import enrollment
from central.services.base import Central, call
from edgefleet.v1 import enrollment_pb2_grpc

log = logging.getLogger(__name__)

# How often the loop looks whether the refusal window has ended (the window itself is a setting).
TALLY_CHECK_INTERVAL_S = 5.0


class EnrollmentServer:
    """In two steps, as central's address must be known before central is built: `bind()` starts the thread and
    binds the port (returns the bound address; raises what binding raised), `start(central)` serves it.
    `stop(grace_s)` answers NOT_SERVING, lets calls in flight finish, writes the last refusal counts and joins
    the thread. All three block briefly: from an event loop, call `stop` through asyncio.to_thread."""

    def __init__(self, bind: Callable[[grpc.aio.Server], str], options: Sequence[tuple]):
        self.address = ""
        self.gate: enrollment.EnrollmentGate | None = None
        self._bind, self._options = bind, list(options)
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._central: asyncio.Future | None = None  # resolved by start() (None: stop before start)
        self._stop: asyncio.Event | None = None
        self._grace_s = 5.0
        self._ready = threading.Event()  # set once bound, and again once serving (or failed)
        self._error: BaseException | None = None

    def bind(self) -> str:
        self._thread = threading.Thread(target=self._run, name="enrollment", daemon=True)
        self._thread.start()
        self._wait_ready()
        return self.address

    def start(self, central: Central) -> None:
        assert self._loop is not None and self._central is not None, "bind() first"
        self._ready.clear()
        self._loop.call_soon_threadsafe(self._central.set_result, central)
        self._wait_ready()

    def stop(self, grace_s: float = 5.0) -> None:
        if self._thread is None or self._loop is None:
            return
        self._grace_s = grace_s
        with contextlib.suppress(RuntimeError):  # the loop already ended

            def stop() -> None:
                assert self._central is not None and self._stop is not None
                if not self._central.done():
                    self._central.set_result(None)
                self._stop.set()

            self._loop.call_soon_threadsafe(stop)
        self._thread.join()

    def _wait_ready(self) -> None:
        self._ready.wait()
        if self._error is not None:
            assert self._thread is not None
            self._thread.join()
            raise self._error

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # handed to bind()/start(), or logged once serving
            if not self._ready.is_set():
                self._error = exc
                self._ready.set()
            else:
                log.exception("the enrollment server stopped on an error")

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._central = self._loop.create_future()
        self._stop = asyncio.Event()
        server = grpc.aio.server(options=self._options)
        self.address = self._bind(server)
        self._ready.set()
        central = await self._central
        if central is None:
            await server.stop(None)
            return
        self.gate = enrollment.EnrollmentGate(central.settings)
        enrollment_pb2_grpc.add_EnrollmentServiceServicer_to_server(EnrollmentServicer(central, self.gate), server)
        check = health.add_health(server)
        await server.start()
        self._ready.set()
        tally = asyncio.create_task(self._write_tally_periodically(central, self.gate))
        await self._stop.wait()
        await health.stop_serving(check)
        await server.stop(grace=self._grace_s)
        tally.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await tally
        await _write_tally(central, self.gate, force=True)

    async def _write_tally_periodically(self, central: Central, gate: enrollment.EnrollmentGate) -> None:
        while True:
            await asyncio.sleep(min(TALLY_CHECK_INTERVAL_S, gate.tally.window_s))
            await _write_tally(central, gate, force=False)


async def _write_tally(central: Central, gate: enrollment.EnrollmentGate, force: bool) -> None:
    events = gate.drain(central, force)
    if not events:
        return
    try:
        await call(central, enrollment.write_audit, central, events)
    except Exception:  # a failing store must not stop enrollment; drain logged the counts
        log.exception("could not write %d enrollment refusal count(s) to the audit log", len(events))
