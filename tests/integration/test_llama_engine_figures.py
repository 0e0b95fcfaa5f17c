"""The llama.cpp engine's read-only figures on the real SmolLM2 model, in-process: KV cells in use from the
engine's bookkeeping agree with llama.cpp's own memory API, and prefix reuse is counted in prompt tokens."""

from pathlib import Path

import llama_cpp
import pytest

from edge_agent.engines.llama import LlamaBackend
from edge_agent.generation import SamplingParams
from edge_agent.models import resolve_model
from edge_agent.scheduler import Scheduler

GREEDY = SamplingParams(temperature=0.0)
SLOTS = 3


@pytest.fixture(scope="module")
def backend(tmp_path_factory):
    b = LlamaBackend(resolve_model("smollm2-135m-instruct", "", Path(tmp_path_factory.mktemp("m"))), 256, SLOTS, 64)
    yield b
    b.close()


def _cells_by_llama_cpp(backend) -> int:
    """Cells per sequence as llama.cpp sees them: its highest position + 1 (positions are contiguous from 0)."""
    return sum(llama_cpp.llama_memory_seq_pos_max(backend._mem, seq) + 1 for seq in range(SLOTS))


def _generate(backend, slot, prompt, n):
    backend.begin(slot, prompt, GREEDY)
    got = 0
    while got < n:
        if slot in backend.step([slot]):
            got += 1
    backend.end(slot)


def test_kv_cells_used_matches_llama_cpps_memory(backend):
    assert backend.kv_cells == llama_cpp.llama_n_ctx(backend._ctx) == 256 * SLOTS
    assert backend.kv_cells_used() == _cells_by_llama_cpp(backend) == 0
    _generate(backend, 0, backend.tokenize("The quick brown fox"), 5)
    _generate(backend, 1, backend.tokenize("Once upon a time, in a land far away"), 3)
    assert backend.kv_cells_used() == _cells_by_llama_cpp(backend) > 0
    # A new prompt sharing a prefix keeps those cells and drops the rest of the slot's.
    prompt = backend.tokenize("The quick brown cat jumps")
    before = backend.reused_prompt_tokens
    assert backend.choose_slot([0, 2], prompt) == 0
    _generate(backend, 0, prompt, 2)
    assert backend.reused_prompt_tokens - before >= 3
    assert backend.kv_cells_used() == _cells_by_llama_cpp(backend)


def test_scheduler_stats_read_the_engines_figures(backend):
    stats = Scheduler(backend, max_queue=1).stats()  # never started: read-only figures only
    assert stats.kv_cells == backend.kv_cells and stats.kv_cells_used == backend.kv_cells_used()
    assert stats.prefix_cache_hits == backend.reused_prompt_tokens
