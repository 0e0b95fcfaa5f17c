"""Grammar-constrained sampling, log-probabilities, n > 1 forks and cached prompt tokens in the llama.cpp
engine, in-process under the real scheduler, on both shipped models: SmolLM2 (a chat model, 49k vocabulary)
and gemma-3-270m (a base model, 262k vocabulary, an interleaved sliding-window KV cache)."""

import json
import math
import queue
import re
from pathlib import Path

import llama_cpp
import pytest
from llama_cpp.llama_grammar import json_schema_to_gbnf

from edge_agent.engines import EngineInputError
from edge_agent.engines.llama import LlamaBackend
from edge_agent.generation import DoneEvent, ErrorEvent, GenerationRequest, SamplingParams, TokenEvent
from edge_agent.models import resolve_model
from edge_agent.scheduler import Scheduler

SLOTS = 4
# Bounds a defect only: every wait ends on its condition first.
WAIT_S = 300.0

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 24},
        "age": {"type": "integer"},
        "pet": {"type": "string", "enum": ["cat", "dog", "none"]},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 12}, "maxItems": 3},
    },
    "required": ["name", "age", "pet", "tags"],
}
# llama-cpp-python's string rule lets raw control characters into strings, which JSON refuses.
_CHAR = r'char ::= [^"\\\x00-\x1F] | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F])'
PERSON_GBNF = "\n".join(
    _CHAR if line.startswith("char ::=") else line for line in json_schema_to_gbnf(json.dumps(PERSON)).splitlines()
)
# Text no model would write unprompted: nearly every token the sampler picks is refused and resampled.
ODD_GBNF = 'root ::= "ZQ-" [0-9] [0-9] [0-9] "-" ("alpha" | "omega") "."'


@pytest.fixture(scope="module", params=["smollm2-135m-instruct", "gemma-3-270m"])
def engine(request, tmp_path_factory):
    backend = LlamaBackend(
        resolve_model(request.param, "", Path(tmp_path_factory.mktemp("m"))),
        n_ctx=512,
        n_parallel=SLOTS,
        n_batch=64,
        n_threads=1,
    )
    scheduler = Scheduler(backend, max_queue=8)
    scheduler.start()
    yield backend, scheduler
    scheduler.stop()
    backend.close()


@pytest.fixture(scope="module")
def solo(engine):
    """A second engine on the same model, driven step by step from the test thread (the scheduler's own
    engine belongs to its thread)."""
    backend, _ = engine
    other = LlamaBackend(backend.artifact, n_ctx=256, n_parallel=3, n_batch=256, n_threads=1)
    yield other
    other.close()


def run_solo(backend, slot, prompt, sampling, max_tokens):
    """From an empty slot: a reused prefix would change the last bits of the logits."""
    llama_cpp.llama_memory_seq_rm(backend._mem, slot, -1, -1)
    backend._kv_tokens[slot] = []
    backend.begin(slot, prompt, sampling)
    out = []
    try:
        while len(out) < max_tokens:
            token = backend.step([slot]).get(slot)
            if token is None:
                continue
            if backend.is_eog(token):
                break
            out.append(token)
    finally:
        backend.end(slot)
    return b"".join(backend.piece(t) for t in out).decode()


def generate(scheduler, request):
    """Each choice's text, DoneEvent and TokenEvents, read until all of the request's choices are done."""
    events = queue.Queue()
    scheduler.submit(request, events.put)
    text, done, tokens = {}, {}, {}
    while len(done) < request.n:
        ev = events.get(timeout=WAIT_S)
        if isinstance(ev, ErrorEvent):
            raise ev.error
        if isinstance(ev, TokenEvent):
            text[ev.index] = text.get(ev.index, "") + ev.text
            tokens.setdefault(ev.index, []).append(ev)
        else:
            done[ev.index] = ev
    return text, done, tokens


def prompt(backend, text):
    return tuple(backend.tokenize(text))


@pytest.mark.parametrize("temperature", [0.0, 0.9])
def test_json_schema_grammar_output_parses_and_keeps_to_the_schema(engine, temperature):
    backend, scheduler = engine
    asks = ["Describe a person as JSON:\n", "A JSON record for Ada Lovelace:\n", "Here is a dog owner in JSON: "]
    for seed, ask in enumerate(asks):
        sampling = SamplingParams(temperature, seed=seed, grammar=PERSON_GBNF)
        text, done, _ = generate(scheduler, GenerationRequest(prompt(backend, ask), 256, sampling))
        assert done[0].finish_reason == "stop", text  # the grammar ended, not the token budget
        person = json.loads(text[0])
        assert set(person) == {"name", "age", "pet", "tags"}, text
        assert isinstance(person["name"], str) and len(person["name"]) <= 24
        assert isinstance(person["age"], int) and person["pet"] in ("cat", "dog", "none")
        assert len(person["tags"]) <= 3 and all(isinstance(t, str) and len(t) <= 12 for t in person["tags"])


@pytest.mark.parametrize("temperature", [0.0, 0.9])
def test_tokens_the_grammar_refuses_are_resampled_never_kept(engine, temperature):
    backend, scheduler = engine
    sampling = SamplingParams(temperature, seed=4, grammar=ODD_GBNF)
    text, done, _ = generate(scheduler, GenerationRequest(prompt(backend, "The weather today is"), 64, sampling))
    assert re.fullmatch(r"ZQ-[0-9]{3}-(alpha|omega)\.", text[0]), text
    assert done[0].finish_reason == "stop"


def test_sampling_without_any_cut_resamples_over_the_whole_vocabulary(engine):
    # No top-k, top-p or min-p: the distribution's tail counts, so there is no window of likely tokens.
    backend, scheduler = engine
    sampling = SamplingParams(1.0, top_p=1.0, top_k=0, min_p=0.0, seed=9, grammar=ODD_GBNF)
    text, _, _ = generate(scheduler, GenerationRequest(prompt(backend, "The weather today is"), 64, sampling))
    assert re.fullmatch(r"ZQ-[0-9]{3}-(alpha|omega)\.", text[0]), text


def test_grammar_in_one_sequence_leaves_its_neighbours_free(engine):
    backend, scheduler = engine
    ask = prompt(backend, "1, 2, 3, 4, 5,")
    free_alone, _, _ = generate(scheduler, GenerationRequest(ask, 8, SamplingParams(0.0)))
    events = queue.Queue()
    scheduler.submit(GenerationRequest(ask, 64, SamplingParams(0.0, grammar=ODD_GBNF)), events.put)
    free_beside, _, _ = generate(scheduler, GenerationRequest(ask, 8, SamplingParams(0.0)))
    constrained = ""
    while not isinstance(ev := events.get(timeout=WAIT_S), DoneEvent):
        assert not isinstance(ev, ErrorEvent), ev
        constrained += ev.text
    assert free_beside == free_alone
    assert re.fullmatch(r"ZQ-[0-9]{3}-(alpha|omega)\.", constrained)


def test_check_grammar_refuses_a_grammar_llama_cpp_cannot_parse(engine):
    backend, _ = engine
    backend.check_grammar(PERSON_GBNF)  # parses: no error
    for bad in ('root ::= "unterminated', "root ::= undefined-rule", 'no-root ::= "a"'):
        with pytest.raises(EngineInputError, match="does not parse"):
            backend.check_grammar(bad)


def test_a_grammar_that_does_not_parse_fails_only_its_request(engine):
    backend, scheduler = engine
    ask = prompt(backend, "Hello")
    with pytest.raises(Exception, match="grammar does not parse"):
        generate(scheduler, GenerationRequest(ask, 4, SamplingParams(0.0, grammar="root ::= nowhere")))
    _, done, _ = generate(scheduler, GenerationRequest(ask, 4, SamplingParams(0.0)))
    assert done[0].completion_tokens == 4
    assert all(s not in backend._slots for s in range(SLOTS))  # every sampler was freed


def test_ignore_eos_with_a_grammar_is_refused_for_its_request_only(engine):
    # A complete grammar leaves only end-of-generation tokens: with those banned nothing would be valid.
    backend, scheduler = engine
    with pytest.raises(Exception, match="ignore_eos cannot be combined with a grammar"):
        generate(
            scheduler,
            GenerationRequest(prompt(backend, "Hi"), 4, SamplingParams(0.0, ignore_eos=True, grammar=ODD_GBNF)),
        )
    _, done, _ = generate(scheduler, GenerationRequest(prompt(backend, "Hi"), 2, SamplingParams(0.0)))
    assert done[0].completion_tokens <= 2


def test_logprobs_are_finite_sorted_and_greedy_picks_the_top_one(engine):
    backend, scheduler = engine
    ask = prompt(backend, "The capital of France is")
    text, done, tokens = generate(scheduler, GenerationRequest(ask, 12, SamplingParams(0.0), logprobs=5))
    entries = [lp for ev in tokens[0] for lp in ev.logprobs]
    assert len(entries) == done[0].completion_tokens == 12
    assert b"".join(lp.piece for lp in entries).decode() == text[0]
    for lp in entries:
        assert math.isfinite(lp.logprob) and lp.logprob <= 0.0
        assert len(lp.top) == 5
        values = [t.logprob for t in lp.top]
        assert values == sorted(values, reverse=True) and all(math.isfinite(v) for v in values)
        assert lp.top[0].piece == lp.piece and lp.top[0].logprob == pytest.approx(lp.logprob)
        assert sum(math.exp(v) for v in values) <= 1.0 + 1e-6
    # Asked with no alternatives: the token's own log-probability only.
    _, _, tokens = generate(scheduler, GenerationRequest(ask, 3, SamplingParams(0.0), logprobs=0))
    assert all(lp.top == () for ev in tokens[0] for lp in ev.logprobs)
    # Not asked: none.
    _, _, tokens = generate(scheduler, GenerationRequest(ask, 3, SamplingParams(0.0)))
    assert all(ev.logprobs == () for ev in tokens[0])


def test_greedy_choices_are_identical(engine):
    # Each fork decodes from a copy of the parent's prompt cells (llama_state_seq_*; on gemma an iSWA cache)
    # in the same batches as the parent: a wrong copy would make a choice drift from the parent's text.
    # (Compared with an n = 1 run the text may differ after a near tie: a reused prefix and another batch
    # shape change the last bits of the logits.)
    backend, scheduler = engine
    ask = prompt(backend, "Once upon a time, in a small village by the sea,")
    text, done, _ = generate(scheduler, GenerationRequest(ask, 16, SamplingParams(0.0), n=SLOTS))
    assert set(text) == set(range(SLOTS))
    assert len(set(text.values())) == 1, text
    assert all(d.prompt_tokens == len(ask) and d.completion_tokens == 16 for d in done.values())


def test_forks_hold_the_parents_prompt_cells(solo):
    """The copy itself, checked in llama.cpp's memory: each child holds cells up to the parent's position
    (no fallback to decoding the prompt again) right after the step that decoded the prompt."""
    ask = tuple(solo.tokenize("Write a short poem about the moon and the tides:"))
    solo.begin(0, ask, SamplingParams(0.0))
    solo.fork(1, 0, SamplingParams(0.0))
    solo.fork(2, 0, SamplingParams(0.9, seed=1))
    try:
        sampled = solo.step([0, 1, 2])
        assert set(sampled) == {0, 1, 2} and sampled[0] == sampled[1]
        for child in (1, 2):
            assert llama_cpp.llama_memory_seq_pos_max(solo._mem, child) == len(ask) - 1
            assert solo._kv_tokens[child] == list(ask)
        assert solo.kv_cells_used() == 3 * len(ask)
    finally:
        for slot in (0, 1, 2):
            solo.end(slot)


def test_the_windowed_resample_picks_what_the_full_vocabulary_resample_picks(solo):
    # A refused token is resampled over the most likely 256 tokens first; at temperature 0 that is the
    # same token as the grammar over the whole vocabulary (the best valid token is in the window whenever
    # any valid token is).
    ask = tuple(solo.tokenize("Describe a person as JSON:\n"))
    windowed = []
    resample = solo._resample_in_window

    def counted(st, idx):
        windowed.append(resample(st, idx))
        return windowed[-1]

    solo._resample_in_window = counted
    try:
        with_window = run_solo(solo, 0, ask, SamplingParams(0.0, grammar=PERSON_GBNF), 200)
        solo._resample_in_window = lambda st, idx: None  # every resample over the whole vocabulary
        full = run_solo(solo, 0, ask, SamplingParams(0.0, grammar=PERSON_GBNF), 200)
    finally:
        del solo._resample_in_window
    assert any(t is not None for t in windowed)  # the window path was taken
    assert with_window == full
    json.loads(with_window)


def test_seeded_choices_repeat_and_differ_from_each_other(engine):
    backend, scheduler = engine
    ask = prompt(backend, "List three colours:")
    request = GenerationRequest(ask, 16, SamplingParams(1.0, seed=1234), n=3)
    first, _, _ = generate(scheduler, request)
    again, _, _ = generate(scheduler, request)
    assert first == again
    assert len(set(first.values())) > 1  # seed, seed + 1, seed + 2: not one sample three times
    # Choice 0 is the request's own seed: the same text as n = 1 with that seed.
    alone, _, _ = generate(scheduler, GenerationRequest(ask, 16, SamplingParams(1.0, seed=1234)))
    assert alone[0] == first[0]


def test_grammar_holds_in_every_forked_choice(engine):
    backend, scheduler = engine
    sampling = SamplingParams(0.9, seed=7, grammar=PERSON_GBNF)
    text, done, _ = generate(scheduler, GenerationRequest(prompt(backend, "A person as JSON:\n"), 256, sampling, n=3))
    for i in range(3):
        assert done[i].finish_reason == "stop"
        assert set(json.loads(text[i])) == {"name", "age", "pet", "tags"}


def test_cached_tokens_count_a_repeated_prefix(engine):
    backend, scheduler = engine
    system = "You are a careful assistant who answers in one short sentence. " * 3
    generate(scheduler, GenerationRequest(prompt(backend, system + "Name a fruit."), 4))
    _, again, _ = generate(scheduler, GenerationRequest(prompt(backend, system + "Name a tree."), 4))
    shared = len(prompt(backend, system))
    assert again[0].cached_tokens >= shared - 2  # the tokenizer may merge across the join
    assert again[0].cached_tokens < again[0].prompt_tokens


def test_cancelling_a_group_frees_every_slot(engine):
    backend, scheduler = engine
    ask = prompt(backend, "Tell me a very long story about a dragon.")
    events = queue.Queue()
    ticket = scheduler.submit(GenerationRequest(ask, 400, SamplingParams(0.8, ignore_eos=True), n=SLOTS), events.put)
    seen = set()
    while len(seen) < SLOTS:  # every choice is generating
        ev = events.get(timeout=WAIT_S)
        assert isinstance(ev, TokenEvent), ev
        seen.add(ev.index)
    ticket.cancel()
    # A request that needs every slot runs: the group's slots were all freed.
    _, done, _ = generate(scheduler, GenerationRequest(ask, 2, SamplingParams(0.0), n=SLOTS))
    assert len(done) == SLOTS
    assert scheduler.stats().cancelled >= 1
