"""llama.cpp's own grammar engine, for tests of the grammars the agent builds: which texts a grammar lets a
model write, checked token by token on a real vocabulary (SmolLM2's, loaded without its weights)."""

from __future__ import annotations

import ctypes
import math
from pathlib import Path

import llama_cpp

from edge_agent.models import resolve_model


def vocab_model(tmp: Path) -> llama_cpp.Llama:
    artifact = resolve_model("smollm2-135m-instruct", "", tmp)
    return llama_cpp.Llama(str(artifact.path), vocab_only=True, verbose=False)


def parses(llm: llama_cpp.Llama, gbnf: str) -> bool:
    """Whether llama.cpp parses the grammar (what LlamaBackend.check_grammar asks)."""
    sampler = llama_cpp.llama_sampler_init_grammar(_vocab(llm), gbnf.encode(), b"root")
    if not sampler:
        return False
    llama_cpp.llama_sampler_free(sampler)
    return True


def accepts(llm: llama_cpp.Llama, gbnf: str, text: str) -> bool:
    """Whether ``text`` is a complete answer under the grammar: each of its tokens allowed in turn (checked
    before it is accepted: llama.cpp aborts on accepting a refused token), then the end of generation."""
    vocab = _vocab(llm)
    sampler = llama_cpp.llama_sampler_init_grammar(vocab, gbnf.encode(), b"root")
    assert sampler, "llama.cpp refused the grammar"

    def allows(token: int) -> bool:
        data = (llama_cpp.llama_token_data * 1)(llama_cpp.llama_token_data(token, 1.0, 0.0))
        array = llama_cpp.llama_token_data_array(data, 1, -1, False)
        llama_cpp.llama_sampler_apply(sampler, ctypes.byref(array))
        return not math.isinf(data[0].logit)

    try:
        for token in llm.tokenize(text.encode(), add_bos=False, special=False):
            if not allows(token):
                return False
            llama_cpp.llama_sampler_accept(sampler, token)
        return allows(llama_cpp.llama_vocab_eos(vocab))
    finally:
        llama_cpp.llama_sampler_free(sampler)


def _vocab(llm: llama_cpp.Llama) -> ctypes.c_void_p:
    return llama_cpp.llama_model_get_vocab(llm._model.model)
