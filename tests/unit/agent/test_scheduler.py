"""Scheduling logic on a fake engine (FakeBackend); the real engine is in tests/integration."""

import itertools
import queue
import threading

import pytest

from edge_agent.generation import DoneEvent, ErrorEvent, GenerationRequest, TokenEvent
from edge_agent.scheduler import DeadlineExceededError, EngineError, OverloadedError, Scheduler

EOG = 0
# Every wait below ends on its condition; the bound is only there for a defect, so a busy machine that runs
# the scheduler's thread late never fails a test.
WAIT_S = 60.0


class FakeBackend:
    """A fake engine: slot s emits the tokens of its prompt's script, one per step."""

    def __init__(self, n_slots=4, n_ctx=64, scripts=None):
        self.n_slots = n_slots
        self.n_ctx = n_ctx
        self.scripts = scripts or {}
        self.cursor = {}
        self.batches = []
        self.ended = []
        self.gate = threading.Event()
        self.gate.set()
        self.fail_next = False

    def choose_slot(self, free_slots, prompt):
        return free_slots[-1]

    def begin(self, slot, prompt, sampling):
        self.cursor[slot] = iter(self.scripts.get(prompt[0], itertools.repeat(1)))

    def step(self, slots):
        # A test holds the gate closed while it queues requests, then opens it.
        if not self.gate.wait(WAIT_S):
            raise AssertionError(f"the test left the fake engine's gate closed for {WAIT_S} s")
        self.batches.append(sorted(slots))
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("boom")
        return {s: next(self.cursor[s]) for s in slots}

    def end(self, slot):
        self.ended.append(slot)
        self.cursor.pop(slot, None)

    def piece(self, token):
        return {1: b"a", 2: b"b", 3: b"STOP", 4: "€".encode()[:2], 5: "€".encode()[2:]}[token]

    def is_eog(self, token):
        return token == EOG


class Collector:
    def __init__(self):
        self.q = queue.Queue()

    def __call__(self, ev):
        self.q.put(ev)

    def result(self, timeout=WAIT_S):
        text = []
        while True:
            ev = self.q.get(timeout=timeout)
            if isinstance(ev, TokenEvent):
                text.append(ev.text)
            else:
                return "".join(text), ev


@pytest.fixture
def make():
    started = []

    def _make(backend, max_queue=8, clock=None):
        s = Scheduler(backend, max_queue, **({"clock": clock} if clock else {}))
        s.start()
        started.append(s)
        return s

    yield _make
    for s in started:
        s.stop()


def req(first_token=9, max_tokens=10, stop=(), deadline=float("inf"), prompt_len=1):
    return GenerationRequest(
        prompt_tokens=(first_token,) * prompt_len, max_tokens=max_tokens, stop=stop, deadline=deadline
    )


def test_generation_ends_at_end_of_generation_token(make):
    s = make(FakeBackend(scripts={7: [1, 2, 1, EOG]}))
    c = Collector()
    s.submit(req(7), c)
    text, done = c.result()
    assert text == "aba" and done == DoneEvent("stop", 1, 3)


def test_generation_ends_at_max_tokens_with_length(make):
    s = make(FakeBackend())
    c = Collector()
    s.submit(req(max_tokens=5), c)
    assert c.result() == ("aaaaa", DoneEvent("length", 1, 5))


def test_generation_ends_at_the_context_limit(make):
    s = make(FakeBackend(n_ctx=8))
    c = Collector()
    s.submit(req(max_tokens=100, prompt_len=5), c)
    assert c.result() == ("aaa", DoneEvent("length", 5, 3))


def test_stop_string_ends_generation_and_is_not_emitted(make):
    s = make(FakeBackend(scripts={7: [1, 3, 1]}))
    c = Collector()
    s.submit(req(7, stop=("STOP",)), c)
    assert c.result() == ("a", DoneEvent("stop", 1, 2))


def test_multibyte_character_split_across_tokens(make):
    s = make(FakeBackend(scripts={7: [4, 5, EOG]}))
    c = Collector()
    s.submit(req(7), c)
    assert c.result()[0] == "€"


def test_concurrent_requests_share_one_batch(make):
    backend = FakeBackend(n_slots=4)
    backend.gate.clear()
    s = make(backend)
    collectors = [Collector() for _ in range(4)]
    for c in collectors:
        s.submit(req(max_tokens=3), c)
    backend.gate.set()
    for c in collectors:
        assert c.result() == ("aaa", DoneEvent("length", 1, 3))
    assert [0, 1, 2, 3] in backend.batches
    assert len(backend.batches) <= 4  # 3 steps for all four, plus at most one partial first batch


def test_full_queue_refuses_at_once(make):
    backend = FakeBackend(n_slots=1)
    backend.gate.clear()
    s = make(backend, max_queue=1)
    first, second = Collector(), Collector()
    s.submit(req(max_tokens=2), first)
    s.submit(req(max_tokens=2), second)
    with pytest.raises(OverloadedError, match="at capacity"):
        s.submit(req(max_tokens=2), Collector())
    backend.gate.set()
    assert first.result()[1].finish_reason == "length"
    assert second.result()[1].finish_reason == "length"


def test_cancelled_request_stops_within_one_step_and_frees_its_slot(make):
    backend = FakeBackend(n_slots=1, n_ctx=1_000_000)
    s = make(backend)
    c = Collector()
    ticket = s.submit(req(max_tokens=100_000), c)
    assert isinstance(c.q.get(timeout=WAIT_S), TokenEvent)
    ticket.cancel()
    generated_at_cancel = ticket.generated
    other = Collector()
    s.submit(req(max_tokens=2), other)  # needs the only slot
    assert other.result() == ("aa", DoneEvent("length", 1, 2))
    assert 0 in backend.ended
    assert ticket.generated - generated_at_cancel <= 1  # the step already running, at most


def test_request_past_its_deadline_gets_an_error(make):
    now = [0.0]
    backend = FakeBackend(n_slots=1, n_ctx=1_000_000)
    s = make(backend, clock=lambda: now[0])
    c = Collector()
    s.submit(req(max_tokens=10_000, deadline=5.0), c)
    assert isinstance(c.q.get(timeout=WAIT_S), TokenEvent)
    now[0] = 6.0
    _, ev = c.result()
    assert isinstance(ev, ErrorEvent) and isinstance(ev.error, DeadlineExceededError)


def test_engine_failure_fails_current_requests_and_keeps_serving(make):
    backend = FakeBackend(n_slots=2)
    backend.fail_next = True
    s = make(backend)
    c = Collector()
    s.submit(req(max_tokens=3), c)
    _, ev = c.result()
    assert isinstance(ev, ErrorEvent) and isinstance(ev.error, EngineError)
    again = Collector()
    s.submit(req(max_tokens=3), again)
    assert again.result() == ("aaa", DoneEvent("length", 1, 3))


def test_stop_fails_waiting_requests_instead_of_leaving_them_hanging():
    backend = FakeBackend(n_slots=1)
    backend.gate.clear()
    s = Scheduler(backend, max_queue=4)
    s.start()
    c1, c2 = Collector(), Collector()
    s.submit(req(max_tokens=5), c1)
    s.submit(req(max_tokens=5), c2)
    stopper = threading.Thread(target=s.stop)
    stopper.start()
    backend.gate.set()
    stopper.join(WAIT_S)
    for c in (c1, c2):
        _, ev = c.result()
        assert isinstance(ev, (ErrorEvent, DoneEvent))
    with pytest.raises(EngineError):
        s.submit(req(), Collector())
