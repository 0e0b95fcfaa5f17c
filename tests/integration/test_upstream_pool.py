"""UpstreamPool against real upstreams: `edge-agent serve` processes on loopback, closed ports, and a TCP relay
in front of a live agent that can go down and come back (and counts the connections it gets)."""

import asyncio
import contextlib
import json
import logging
import socket
import threading
import time

import httpx
import pytest

from agent_process import start_agent
from edge_agent.config import UpstreamConfig
from edge_agent.upstream import UpstreamError, UpstreamPool

SMOL = "smollm2-135m-instruct"
CHAT = {"model": SMOL, "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 8, "temperature": 0}
# ignore_eos: a generation that cannot end early, whatever the sampler draws.
LONG = {"model": SMOL, "prompt": "Once upon a time", "max_tokens": 1500, "temperature": 0.8, "ignore_eos": True}


@pytest.fixture(scope="module")
def busy_agent(tmp_path_factory):
    """One sequence slot and no queue: while one generation runs, every other request gets 429 at once."""
    agent = start_agent(
        tmp_path_factory.mktemp("busy"),
        sections={"model": {"n_parallel": 1}, "scheduler": {"max_queue": 0, "retry_after_s": 1}},
    )
    yield agent
    agent.stop()


def closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def upstream(name, url, **kwargs):
    if isinstance(url, int):
        url = f"http://127.0.0.1:{url}/v1"
    return UpstreamConfig(name=name, url=url, jurisdiction=kwargs.pop("jurisdiction", "eu"), **kwargs)


def at(agent) -> str:
    return agent.base_url + "/v1"


def soon(seconds=300.0) -> float:
    """A request deadline that no answer here comes near, however busy the machine."""
    return time.monotonic() + seconds


class ManualClock:
    """The breakers' clock, moved only by the test: an open period ends when the test says so, not when a slow
    answer from another upstream happens to outlast it."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def run(scenario, *configs, environ=None, clock=time.monotonic):
    """Run ``scenario(pool)`` on a fresh pool of ``configs`` in its own event loop; the pool is closed after."""

    async def main():
        pool = UpstreamPool(configs, clock=clock, environ=environ or {})
        try:
            return await scenario(pool)
        finally:
            await pool.aclose()

    return asyncio.run(main())


def wait_for(predicate, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


async def async_wait_for(predicate, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(0.05)
    return False


def events(data: bytes) -> list[str]:
    return [e for e in data.decode().split("\n\n") if e]


class Relay:
    """A TCP relay on a fixed loopback port to a live agent: an upstream that is down until started, can be
    cut mid-answer, and counts the connections made to it."""

    def __init__(self, port: int, target: str):
        self.port = port
        host, _, target_port = target.removeprefix("http://").rpartition(":")
        self.target = (host, int(target_port))
        self.accepted = 0
        self._listener: socket.socket | None = None
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()

    def start(self):
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(16)
        listener.settimeout(0.05)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener):
        while self._listener is listener:
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(None)
            self.accepted += 1
            onward = socket.create_connection(self.target)
            with self._lock:
                self._sockets += [conn, onward]
            for src, dst in ((conn, onward), (onward, conn)):
                threading.Thread(target=self._pipe, args=(src, dst), daemon=True).start()

    @staticmethod
    def _pipe(src, dst):
        try:
            while data := src.recv(65536):
                dst.sendall(data)
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def cut(self):
        """Drop every connection now, mid-answer or not."""
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for s in sockets:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def stop(self):
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        self.cut()


# (a) a live upstream answers, whole and streamed


def test_forward_to_a_live_agent_non_streamed_with_the_upstreams_model(smol_agent):
    async def scenario(pool):
        return await pool.forward(["live"], "/chat/completions", {**CHAT, "model": "gpt-4o-mini"}, False, soon())

    reply = run(scenario, upstream("live", at(smol_agent), model=SMOL))
    assert reply.upstream == "live" and reply.status == 200 and reply.stream is None
    assert reply.content_type.startswith("application/json")
    answer = json.loads(reply.body)
    assert answer["object"] == "chat.completion" and answer["model"] == SMOL
    assert answer["choices"][0]["message"]["role"] == "assistant"


def test_forward_streams_the_upstreams_sse_chunks_as_they_come(smol_agent):
    async def scenario(pool):
        reply = await pool.forward(["live"], "/chat/completions", {**CHAT, "max_tokens": 16}, True, soon())
        chunks = [chunk async for chunk in reply.stream]
        return reply, chunks, pool.states()

    reply, chunks, states = run(scenario, upstream("live", at(smol_agent)))
    assert reply.status == 200 and reply.body is None
    assert reply.content_type.startswith("text/event-stream")
    assert len(chunks) > 1, "the answer came in one piece: buffered, not streamed"
    data = events(b"".join(chunks))
    assert len(data) > 3 and all(e.startswith("data: ") for e in data)
    assert json.loads(data[0][6:])["object"] == "chat.completion.chunk"
    assert data[-1] == "data: [DONE]"
    assert states == {"live": "closed"}


def test_closing_a_stream_early_closes_the_upstream_response(smol_agent):
    before = smol_agent.metrics()["edgefleet_cancelled_requests_total"]

    async def scenario(pool):
        reply = await pool.forward(["live"], "/completions", LONG, True, soon())
        for _ in range(3):
            await reply.stream.__anext__()
        await reply.aclose()
        return pool.states()

    assert run(scenario, upstream("live", at(smol_agent))) == {"live": "closed"}
    assert wait_for(lambda: smol_agent.metrics()["edgefleet_inflight_requests"] == 0)
    assert smol_agent.metrics()["edgefleet_cancelled_requests_total"] == before + 1


def test_a_stream_cut_after_its_first_byte_ends_with_an_error_event_and_counts_as_a_failure(smol_agent):
    relay = Relay(closed_port(), smol_agent.base_url)
    relay.start()

    async def scenario(pool):
        reply = await pool.forward(["relayed", "direct"], "/completions", LONG, True, soon())
        chunks = [await reply.stream.__anext__() for _ in range(3)]
        relay.cut()
        chunks += [chunk async for chunk in reply.stream]
        return reply, chunks, pool._upstreams["relayed"].breaker.failures

    try:
        reply, chunks, failures = run(scenario, upstream("relayed", relay.port), upstream("direct", at(smol_agent)))
    finally:
        relay.stop()
    assert reply.upstream == "relayed"  # not retried elsewhere once bytes went out
    data = events(b"".join(chunks))
    assert data[-1] == "data: [DONE]"
    error = json.loads(data[-2][6:])["error"]
    assert error["code"] == "upstream_failed" and "relayed" in error["message"]
    assert failures == 1
    assert wait_for(lambda: smol_agent.metrics()["edgefleet_inflight_requests"] == 0)


# (b) an upstream down: fall over, open the circuit, skip it, half-open trial


def test_down_upstream_falls_over_opens_its_circuit_and_a_half_open_trial_goes_through(smol_agent):
    relay = Relay(closed_port(), smol_agent.base_url)  # down until started
    flaky = upstream("flaky", relay.port, retries=1, failure_threshold=2, open_s=0.5)
    clock = ManualClock()

    async def scenario(pool):
        seen = []
        reply = await pool.forward(["flaky", "good"], "/chat/completions", CHAT, False, soon())
        seen.append((reply.upstream, pool.states()["flaky"]))  # two refused attempts: open
        clock.advance(0.6)  # the open period passes
        seen.append(pool.states()["flaky"])
        reply = await pool.forward(["flaky", "good"], "/chat/completions", CHAT, False, soon())
        seen.append((reply.upstream, pool.states()["flaky"]))  # the trial was refused: open again
        relay.start()  # back, but its circuit is open: not even a connection attempt
        reply = await pool.forward(["flaky", "good"], "/chat/completions", CHAT, False, soon())
        seen.append((reply.upstream, pool.states()["flaky"], relay.accepted, pool.candidates(("eu",))))
        clock.advance(0.6)
        reply = await pool.forward(["flaky", "good"], "/chat/completions", CHAT, False, soon())
        seen.append((reply.upstream, pool.states()["flaky"], relay.accepted))
        return seen

    try:
        seen = run(scenario, flaky, upstream("good", at(smol_agent)), clock=clock)
    finally:
        relay.stop()
    assert seen == [
        ("good", "open"),
        "half_open",
        ("good", "open"),
        ("good", "open", 0, ["good"]),
        ("flaky", "closed", 1),
    ]


# (c) a slow upstream: its timeout is a failure and the next one answers


def test_slow_answer_times_out_counts_as_a_failure_and_the_next_upstream_answers(smol_agent):
    # A whole answer of 50 tokens takes well over 0.05 s (a third of a second on a quiet machine, 150 tokens/s).
    body = {**LONG, "max_tokens": 50}

    async def scenario(pool):
        reply = await pool.forward(["slow", "steady"], "/completions", body, False, soon())
        return reply, pool.states()

    # "steady" waits as long as the whole answer takes (on a busy 2-core box that can pass its default 60 s), and
    # the breakers' clock stands still meanwhile, so "slow" is still open however long that was.
    reply, states = run(
        scenario,
        upstream("slow", at(smol_agent), timeout_s=0.05, retries=0, failure_threshold=1),
        upstream("steady", at(smol_agent), timeout_s=300.0),
        clock=ManualClock(),
    )
    assert reply.upstream == "steady" and reply.status == 200
    assert json.loads(reply.body)["usage"]["completion_tokens"] == 50
    assert states == {"slow": "open", "steady": "closed"}
    assert wait_for(lambda: smol_agent.metrics()["edgefleet_inflight_requests"] == 0)


def test_the_request_deadline_bounds_every_attempt_and_is_no_fault_of_the_upstream(smol_agent):
    before = smol_agent.metrics()["edgefleet_generated_tokens_total"]

    async def scenario(pool):
        started = time.monotonic()
        with pytest.raises(UpstreamError) as caught:
            await pool.forward(["steady", "other"], "/completions", LONG, False, started + 0.5)
        return str(caught.value), time.monotonic() - started, pool.states(), pool._upstreams["steady"].breaker.failures

    message, took, states, failures = run(
        scenario, upstream("steady", at(smol_agent), failure_threshold=1), upstream("other", at(smol_agent))
    )
    assert message == "steady: deadline passed; other: deadline passed"
    # Returned at the deadline, not after the whole answer: the agent stopped generating when the attempt was
    # dropped. The time bound only catches a hang; how soon after 0.5 s depends on the machine's load.
    assert took < 30
    assert states == {"steady": "closed", "other": "closed"} and failures == 0
    assert wait_for(lambda: smol_agent.metrics()["edgefleet_inflight_requests"] == 0)
    assert smol_agent.metrics()["edgefleet_generated_tokens_total"] - before < LONG["max_tokens"]


# (d) an erroring upstream: 429 is retried and falls over; another 4xx is the client's answer


def test_429_from_a_saturated_agent_is_retried_then_falls_over(busy_agent, smol_agent, caplog):
    async def fall_over(pool):
        reply = await pool.forward(["busy", "good"], "/chat/completions", CHAT, False, soon())
        return reply, pool.states()

    async def only_busy(pool):
        with pytest.raises(UpstreamError) as caught:
            await pool.forward(["busy"], "/chat/completions", CHAT, False, soon())
        return caught.value

    with (
        httpx.Client(timeout=60) as client,
        client.stream("POST", busy_agent.base_url + "/v1/completions", json={**LONG, "stream": True}) as held,
    ):
        assert held.status_code == 200
        assert wait_for(lambda: busy_agent.metrics()["edgefleet_inflight_requests"] == 1)
        with caplog.at_level(logging.INFO, logger="edge_agent.upstream"):
            reply, states = run(
                fall_over,
                upstream("busy", at(busy_agent), retries=1, failure_threshold=2),
                upstream("good", at(smol_agent)),
            )
        # Read now: whether the next call's INFO lines are captured too depends on log levels other tests set.
        attempts = [r.getMessage() for r in caplog.records if "attempt" in r.getMessage()]
        error = run(only_busy, upstream("busy", at(busy_agent), retries=0))
    assert reply.upstream == "good" and reply.status == 200
    assert states == {"busy": "open", "good": "closed"}
    assert attempts == [
        "upstream busy: attempt 1 of 2 failed: HTTP 429",
        "upstream busy: attempt 2 of 2 failed: HTTP 429",
    ]
    assert str(error) == "busy: HTTP 429" and error.failures == {"busy": "HTTP 429"}


def test_a_4xx_is_the_clients_answer_not_retried_nor_a_failure(smol_agent):
    async def scenario(pool):
        reply = await pool.forward(
            ["first", "second"], "/chat/completions", {"model": SMOL, "messages": "hi"}, False, soon()
        )
        return reply, pool.states(), pool._upstreams["first"].breaker.failures

    reply, states, failures = run(
        scenario, upstream("first", at(smol_agent), failure_threshold=1), upstream("second", at(smol_agent))
    )
    assert reply.upstream == "first" and reply.status == 400
    assert json.loads(reply.body)["error"]["type"] == "invalid_request_error"
    assert states == {"first": "closed", "second": "closed"} and failures == 0


# (e) every upstream failing


def test_every_upstream_failing_raises_upstream_error_naming_each():
    async def scenario(pool):
        errors = []
        for _ in range(2):
            with pytest.raises(UpstreamError) as caught:
                await pool.forward(["a", "b"], "/chat/completions", CHAT, False, soon())
            errors.append(caught.value)
        return errors

    first, second = run(
        scenario,
        upstream("a", closed_port(), failure_threshold=2),
        upstream("b", closed_port(), retries=0, failure_threshold=1),
    )
    assert str(first) == "a: connection refused; b: connection refused"
    assert str(second) == "a: circuit open; b: circuit open"
    assert second.failures == {"a": "circuit open", "b": "circuit open"}


# (f) health checks


def test_health_checks_mark_a_dead_upstream_unhealthy_and_a_returning_one_healthy(smol_agent):
    relay = Relay(closed_port(), smol_agent.base_url)

    async def scenario(pool):
        await pool.start()
        seen = []
        assert await async_wait_for(lambda: pool.health() == {"dead": False, "live": True})
        seen.append((pool.candidates(("*",)), pool.states()["dead"]))
        relay.start()
        # Healthy at the first good check; closed at the first one after its open period.
        assert await async_wait_for(lambda: pool.health()["dead"] and pool.states()["dead"] == "closed")
        seen.append((pool.candidates(("*",)), pool.states()["dead"]))
        return seen

    try:
        # Checks every 1 s (each may take that long to answer) and an open period of 3 s: while the relay is
        # down each failed check re-opens the circuit before it could turn half_open, on any machine.
        seen = run(
            scenario,
            upstream("dead", relay.port, failure_threshold=1, open_s=3.0, health_interval_s=1.0),
            upstream("live", at(smol_agent), health_interval_s=5.0),
        )
    finally:
        relay.stop()
    assert seen == [(["live"], "open"), (["dead", "live"], "closed")]
