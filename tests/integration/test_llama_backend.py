"""The llama.cpp backend in-process on the real SmolLM2 model (no HTTP)."""

from pathlib import Path

import pytest

from edge_agent.engines.llama import LlamaBackend
from edge_agent.generation import SamplingParams
from edge_agent.models import resolve_model

GREEDY = SamplingParams(temperature=0.0)


@pytest.fixture(scope="module")
def backend(tmp_path_factory):
    b = LlamaBackend(
        resolve_model("smollm2-135m-instruct", "", Path(tmp_path_factory.mktemp("m"))),
        n_ctx=256,
        n_parallel=4,
        n_batch=64,
    )
    yield b
    b.close()


def run(backend, slot, prompt, n):
    backend.begin(slot, prompt, GREEDY)
    out = []
    while len(out) < n:
        sampled = backend.step([slot])
        if slot in sampled:
            out.append(sampled[slot])
    backend.end(slot)
    return out


def test_batch_holds_sequences_in_ascending_order(backend):
    prompt = backend.tokenize("Hello there")
    for slot in (2, 0, 1):
        backend.begin(slot, prompt, GREEDY)
    backend.step([2, 0, 1])
    backend.step([2, 0, 1])
    ids = [backend._batch.seq_id[i][0] for i in range(backend._batch.n_tokens)]
    assert ids == sorted(ids) == [0, 1, 2]
    for slot in (0, 1, 2):
        backend.end(slot)


def test_reused_prompt_prefix_gives_the_same_greedy_output(backend):
    # A continuation the model is sure of: reused KV cells may differ from
    # recomputed ones in the last bits, which must not flip a near tie.
    prompt = backend.tokenize("1, 2, 3, 4, 5, 6, 7, 8, 9, 10,")
    fresh = run(backend, 3, prompt, 6)
    before = backend.reused_prompt_tokens
    assert backend.choose_slot([0, 3], prompt) == 3  # the slot holding the prefix
    again = run(backend, 3, prompt, 6)
    assert backend.reused_prompt_tokens - before == len(prompt) - 1
    assert again == fresh


def test_long_prompt_is_decoded_over_several_steps(backend):
    prompt = backend.tokenize("word " * 150)  # longer than n_batch = 64
    assert len(prompt) > 64
    backend.begin(0, prompt, GREEDY)
    steps = 0
    while not (sampled := backend.step([0])):
        steps += 1
    assert steps >= 2 and isinstance(sampled[0], int)
    backend.end(0)


def test_prompt_chunks_fill_the_batch_as_the_model_reads_them(backend):
    # Two prompts and one generating sequence in one batch: the prompt chunks are copied in whole arrays.
    backend.begin(1, backend.tokenize("The quick brown fox"), GREEDY)
    backend.step([1])  # its prompt is decoded: it generates from here
    first = backend.tokenize("Hello there, how are you?")
    second = backend.tokenize("word " * 80)  # more than the batch has room for
    backend.begin(0, first, GREEDY)
    backend.begin(3, second, GREEDY)
    backend.step([0, 1, 3])
    b = backend._batch
    n = b.n_tokens
    assert n == 64  # n_batch: the second prompt was cut
    rows = [(b.token[i], b.pos[i], b.n_seq_id[i], b.seq_id[i][0], b.logits[i]) for i in range(n)]
    assert rows[0][1:] == (len(backend.tokenize("The quick brown fox")), 1, 1, 1)  # the generated token
    assert rows[1 : 1 + len(first)] == [
        (t, p, 1, 0, int(p == len(first) - 1)) for p, t in enumerate(first)
    ]  # logits for the prompt's last token only
    rest = n - 1 - len(first)
    assert rows[1 + len(first) :] == [(t, p, 1, 3, 0) for p, t in enumerate(second[:rest])]
    for slot in (0, 1, 3):
        backend.end(slot)
