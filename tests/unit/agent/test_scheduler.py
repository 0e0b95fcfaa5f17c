"""Scheduling logic on a fake engine (FakeBackend); the real engine is in tests/integration."""

import itertools
import queue
import threading

import pytest

from edge_agent.generation import DoneEvent, ErrorEvent, GenerationRequest, SamplingParams, TokenEvent, TokenLogprob
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
        self.begun = []
        self.forked = []
        self.cached = None
        self.last = {}

    def choose_slot(self, free_slots, prompt):
        return free_slots[-1]

    def begin(self, slot, prompt, sampling, logprobs=None):
        self.begun.append((slot, tuple(prompt), sampling, logprobs))
        self.cursor[slot] = iter(self.scripts.get(prompt[0], itertools.repeat(1)))
        return self.cached

    def fork(self, slot, parent, sampling):
        # A forked choice follows the script keyed by its seed (if any), else its parent's.
        self.forked.append((slot, parent, sampling))
        self.cursor[slot] = iter(self.scripts.get(("seed", sampling.seed), itertools.repeat(1)))

    def take_logprobs(self, slot):
        return TokenLogprob(self.last[slot], self.piece(self.last[slot]), -0.5)

    def step(self, slots):
        # A test holds the gate closed while it queues requests, then opens it.
        if not self.gate.wait(WAIT_S):
            raise AssertionError(f"the test left the fake engine's gate closed for {WAIT_S} s")
        self.batches.append(sorted(slots))
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("boom")
        self.last = {s: next(self.cursor[s]) for s in slots}
        return dict(self.last)

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


def choices_of(c, n):
    """Text and DoneEvent per choice index, read until all n choices are done."""
    text, done = {}, {}
    while len(done) < n:
        ev = c.q.get(timeout=WAIT_S)
        assert not isinstance(ev, ErrorEvent), ev
        if isinstance(ev, TokenEvent):
            assert ev.index not in done  # nothing after a choice's DoneEvent
            text[ev.index] = text.get(ev.index, "") + ev.text
        else:
            done[ev.index] = ev
    return text, done


def test_n_choices_fork_from_one_prompt_each_seeded_in_turn(make):
    # Choice 0 runs the prompt's script; choices 1 and 2 fork with seed + 1 and seed + 2.
    backend = FakeBackend(scripts={7: [1, 1, EOG], ("seed", 11): [2, EOG], ("seed", 12): [1, 2, 1, 2]})
    s = make(backend)
    c = Collector()
    sampling = SamplingParams(temperature=0.8, seed=10)
    s.submit(GenerationRequest((7, 7), max_tokens=4, sampling=sampling, n=3), c)
    text, done = choices_of(c, 3)
    assert text == {0: "aa", 1: "b", 2: "abab"}
    assert done == {0: DoneEvent("stop", 2, 2, 0), 1: DoneEvent("stop", 2, 1, 1), 2: DoneEvent("length", 2, 4, 2)}
    assert len(backend.begun) == 1  # the prompt is started once
    parent = backend.begun[0][0]
    assert [(p, sp.seed) for _, p, sp in backend.forked] == [(parent, 11), (parent, 12)]
    assert len({parent, *(slot for slot, _, _ in backend.forked)}) == 3
    assert s.stats().prompt_tokens == 2  # counted once for the request


def test_unseeded_choices_keep_the_requests_sampling(make):
    backend = FakeBackend()
    s = make(backend)
    s.submit(GenerationRequest((7,), max_tokens=1, n=2), c := Collector())
    choices_of(c, 2)
    assert backend.forked[0][2] == SamplingParams()


def test_a_request_with_n_choices_waits_for_n_free_slots_and_keeps_its_place(make):
    backend = FakeBackend(n_slots=2, n_ctx=1_000_000)
    backend.gate.clear()
    s = make(backend)
    first, group, last = Collector(), Collector(), Collector()
    s.submit(req(max_tokens=3), first)
    s.submit(GenerationRequest((9,), max_tokens=2, n=2), group)
    s.submit(req(8, max_tokens=2), last)  # a slot is free, but the group came first
    backend.gate.set()
    assert first.result() == ("aaa", DoneEvent("length", 1, 3))
    assert choices_of(group, 2)[0] == {0: "aa", 1: "aa"}
    assert last.result() == ("aa", DoneEvent("length", 1, 2))
    assert [prompt for _, prompt, *_ in backend.begun] == [(9,), (9,), (8,)]


def test_n_above_the_slots_is_refused_at_submit(make):
    s = make(FakeBackend(n_slots=2))
    with pytest.raises(EngineError, match=r"n = 3 is outside 1\.\.2"):
        s.submit(GenerationRequest((7,), max_tokens=1, n=3), Collector())
    with pytest.raises(EngineError, match=r"n = 0 is outside"):
        s.submit(GenerationRequest((7,), max_tokens=1, n=0), Collector())


def test_cancelling_a_group_frees_every_slot(make):
    backend = FakeBackend(n_slots=3, n_ctx=1_000_000)
    s = make(backend)
    c = Collector()
    ticket = s.submit(GenerationRequest((9,), max_tokens=100_000, n=3), c)
    assert isinstance(c.q.get(timeout=WAIT_S), TokenEvent)
    ticket.cancel()
    other = Collector()
    s.submit(GenerationRequest((9,), max_tokens=2, n=3), other)  # needs all three slots
    assert choices_of(other, 3)[0] == {0: "aa", 1: "aa", 2: "aa"}
    assert {0, 1, 2} <= set(backend.ended[:3])
    assert s.stats().cancelled == 1


def test_engine_failure_fails_a_group_with_one_error(make):
    backend = FakeBackend(n_slots=2)
    backend.fail_next = True
    s = make(backend)
    c = Collector()
    s.submit(GenerationRequest((9,), max_tokens=3, n=2), c)
    ev = c.q.get(timeout=WAIT_S)
    assert isinstance(ev, ErrorEvent) and isinstance(ev.error, EngineError)
    again = Collector()
    s.submit(GenerationRequest((9,), max_tokens=1, n=2), again)  # both slots were freed
    assert choices_of(again, 2)[1] == {0: DoneEvent("length", 1, 1, 0), 1: DoneEvent("length", 1, 1, 1)}
    assert c.q.empty()  # one error for the whole request, nothing after it


def test_cached_prompt_tokens_are_on_every_choices_done_event(make):
    backend = FakeBackend()
    backend.cached = 5
    s = make(backend)
    c = Collector()
    s.submit(GenerationRequest((7,) * 6, max_tokens=1, n=2), c)
    _, done = choices_of(c, 2)
    assert [d.cached_tokens for d in done.values()] == [5, 5]


def test_logprobs_go_with_the_text_their_tokens_produced(make):
    # "€" arrives in two tokens: both entries go with the one event that shows it. The stop string's
    # token is held back and then swallowed, so its entry is never sent.
    backend = FakeBackend(scripts={7: [1, 4, 5, 3]})
    s = make(backend)
    c = Collector()
    s.submit(GenerationRequest((7,), max_tokens=10, stop=("STOP",), logprobs=0), c)
    events = []
    while not isinstance(ev := c.q.get(timeout=WAIT_S), DoneEvent):
        events.append(ev)
    shown = [(e.text, [lp.token for lp in e.logprobs]) for e in events if e.text]
    assert shown == [("a", [1]), ("€", [4, 5])]
    assert ev == DoneEvent("stop", 1, 4)


def test_no_logprobs_are_taken_unless_asked(make):
    backend = FakeBackend(scripts={7: [1, EOG]})
    backend.take_logprobs = None  # would raise if called
    s = make(backend)
    s.submit(req(7), c := Collector())
    text, done = c.result()
    assert text == "a" and done.finish_reason == "stop"


def test_on_step_end_runs_after_the_steps_events(make):
    seen, emitted = [], []
    c = Collector()

    def sink(ev):
        emitted.append(ev)
        c(ev)

    s = Scheduler(FakeBackend(scripts={7: [1, 2, EOG]}), max_queue=4, on_step_end=lambda: seen.append(len(emitted)))
    s.start()
    try:
        s.submit(req(7), sink)
        assert c.result() == ("ab", DoneEvent("stop", 1, 2))
    finally:
        s.stop()
    # called once per turn, each time after the events of that turn were emitted: 1, 2, then 3
    assert seen[:3] == [1, 2, 3]


def test_a_failing_on_step_end_hook_does_not_stop_the_scheduler(make):
    def broken():
        raise RuntimeError("hook")

    s = Scheduler(FakeBackend(), max_queue=4, on_step_end=broken)
    s.start()
    try:
        s.submit(req(max_tokens=2), c := Collector())
        assert c.result() == ("aa", DoneEvent("length", 1, 2))
    finally:
        s.stop()
