"""The llama.cpp engine: GGUF models through llama-cpp-python's low-level bindings.

Unlike ``python -m llama_cpp.server``, which runs one request at a time behind
a lock, every live sequence goes into one ``llama_batch`` (its own ``seq_id``
and positions) and one ``llama_decode`` per step. Each sequence has a native
sampler chain (top-k, top-p, min-p, temperature, dist with the request's
seed) sampled with ``llama_sampler_sample`` at its logits index, so no
Python work per token grows with the vocabulary. A finished sequence's KV
cells are freed with ``llama_memory_seq_rm``.

Only the scheduler thread calls :meth:`LlamaBackend.step`/``begin``/``end``;
tokenizing and embeddings are safe from other threads (embeddings use their
own context behind a lock).
"""

from __future__ import annotations

import ctypes
import logging
import os
import random
import threading
from collections.abc import Sequence
from dataclasses import dataclass

import llama_cpp
import llama_cpp._logger
import numpy as np
from llama_cpp.llama_chat_format import Jinja2ChatFormatter

from edge_agent.engines import EmbeddingInput, EngineInputError
from edge_agent.engines.prefix import pick_slot, reusable_prefix
from edge_agent.errors import AgentError
from edge_agent.generation import SamplingParams, TokenLogprob, TopLogprob
from edge_agent.models import ModelArtifact

log = logging.getLogger(__name__)

_backend_ready = False

# llama_token_data as a numpy record: token id, logit, probability.
_TOKEN_DATA = np.dtype([("id", "<i4"), ("logit", "<f4"), ("p", "<f4")])
# How many of the most likely tokens a grammar resample looks at first: well above the default top-k (40),
# so that the valid tokens the top-k/top-p/min-p cut keeps are nearly always in it.
_GRAMMAR_WINDOW = 256
_backend_lock = threading.Lock()


class LlamaEngineError(AgentError):
    """llama.cpp refused to load a model or to decode."""


class NoChatTemplateError(AgentError):
    """The model has no chat template: use /v1/completions."""


@dataclass
class _Slot:
    pending: list[int]  # prompt tokens not decoded yet
    pos: int  # position of the next token in the sequence
    sampler: ctypes.c_void_p
    next_token: int | None = None
    # With a grammar: ``full`` is a chain of the grammar then a copy of ``sampler``, used to resample over the
    # whole vocabulary when the grammar refuses the token ``sampler`` picked; ``grammar`` is borrowed from it.
    full: ctypes.c_void_p | None = None
    grammar: ctypes.c_void_p | None = None
    # k of the top alternatives to report with each token's log-probability; None: none asked.
    logprobs: int | None = None
    last_logprob: TokenLogprob | None = None
    # A forked choice (n > 1): the slot whose prompt it copies once that prompt is decoded.
    waits_for: int | None = None
    # Tokens, most likely first, that a refused token's resample looks at before the whole vocabulary
    # (0: the whole vocabulary at once).
    window: int = 0


def _ensure_backend() -> None:
    global _backend_ready
    with _backend_lock:
        if not _backend_ready:
            # llama.cpp prints every load detail to stderr; keep errors only
            # unless the agent runs at debug level.
            llama_cpp._logger.set_verbose(log.isEnabledFor(logging.DEBUG))
            llama_cpp.llama_backend_init()
            _backend_ready = True


class LlamaBackend:
    """Implements :class:`edge_agent.scheduler.Backend` on a llama.cpp context."""

    engine_name = "llama_cpp"

    def __init__(
        self,
        artifact: ModelArtifact,
        n_ctx: int,
        n_parallel: int,
        n_batch: int,
        n_threads: int = 0,
        n_gpu_layers: int = 0,
    ):
        _ensure_backend()
        self.artifact = artifact
        self._closed = False
        self.n_slots = n_parallel
        self.n_batch = n_batch
        self._n_threads = n_threads or os.cpu_count() or 1
        mparams = llama_cpp.llama_model_default_params()
        mparams.n_gpu_layers = n_gpu_layers
        self._model = llama_cpp.llama_model_load_from_file(str(artifact.path).encode(), mparams)
        if not self._model:
            raise LlamaEngineError(f"llama.cpp could not load {artifact.path} (not a valid GGUF model?)")
        self._vocab = llama_cpp.llama_model_get_vocab(self._model)
        self.vocab_size = llama_cpp.llama_vocab_n_tokens(self._vocab)
        n_ctx_train = llama_cpp.llama_model_n_ctx_train(self._model)
        # Each sequence gets its own n_ctx cells (a non-unified KV cache).
        self.n_ctx = min(n_ctx, n_ctx_train) if n_ctx_train > 0 else n_ctx
        cparams = llama_cpp.llama_context_default_params()
        cparams.n_ctx = self.n_ctx * n_parallel
        cparams.n_batch = n_batch
        cparams.n_ubatch = n_batch
        cparams.n_seq_max = n_parallel
        cparams.n_threads = self._n_threads
        cparams.n_threads_batch = self._n_threads
        cparams.kv_unified = False
        cparams.no_perf = True
        self._ctx = llama_cpp.llama_init_from_model(self._model, cparams)
        if not self._ctx:
            llama_cpp.llama_model_free(self._model)
            raise LlamaEngineError(
                f"llama.cpp could not create a context of {cparams.n_ctx} tokens for {artifact.path}"
            )
        self._mem = llama_cpp.llama_get_memory(self._ctx)
        # KV cells in all, every sequence's together (llama.cpp's n_ctx of the context).
        self.kv_cells = int(llama_cpp.llama_n_ctx(self._ctx))
        self._batch = llama_cpp.llama_batch_init(n_batch, 0, 1)
        self._ones = (ctypes.c_int32 * n_batch)(*([1] * n_batch))
        self._slots: dict[int, _Slot] = {}
        # Tokens whose KV cells each slot holds, by position; kept after a
        # sequence ends so the next prompt can reuse a shared prefix.
        self._kv_tokens: dict[int, list[int]] = {}
        # Prompt tokens whose KV cells were kept from the slot's previous sequence (prefix reuse), since start.
        self.reused_prompt_tokens = 0
        # Computed once: the scheduler asks about every sampled token.
        self._eog = frozenset(t for t in range(self.vocab_size) if llama_cpp.llama_vocab_is_eog(self._vocab, t))
        # One candidate, reused: the grammar checks a sampled token on it.
        self._one = llama_cpp.llama_token_data(0, 0.0, 0.0)
        self._one_array = llama_cpp.llama_token_data_array(ctypes.pointer(self._one), 1, -1, False)
        # Reused (grown when needed) for copying a prompt's KV cells to forked choices.
        self._state_buf = (ctypes.c_uint8 * 0)()
        # Candidates of a grammar resample, laid out as llama_token_data (grown when needed).
        self._window_buf = np.zeros(_GRAMMAR_WINDOW, dtype=_TOKEN_DATA)
        # A vocabulary-sized scratch row for the log-probabilities' normaliser.
        self._logit_buf = np.empty(self.vocab_size, dtype=np.float32)
        self._pieces: dict[int, bytes] = {}
        self.device = "gpu" if n_gpu_layers != 0 and llama_cpp.llama_supports_gpu_offload() else "cpu"
        self._chat = self._chat_formatter()
        self._embed_ctx = None
        self._embed_lock = threading.Lock()
        log.info(
            "llama.cpp engine: %s (%s), n_ctx %d per sequence, %d parallel, %d threads, device %s",
            artifact.name,
            artifact.path,
            self.n_ctx,
            n_parallel,
            self._n_threads,
            self.device,
        )

    # -- Backend (scheduler thread only) -----------------------------------

    def choose_slot(self, free_slots: Sequence[int], prompt: Sequence[int]) -> int:
        return pick_slot(free_slots, self._kv_tokens, prompt)

    def begin(self, slot: int, prompt: Sequence[int], sampling: SamplingParams, logprobs: int | None = None) -> int:
        if not prompt:
            raise LlamaEngineError("empty prompt")
        cached = self._kv_tokens.get(slot, [])
        keep = reusable_prefix(cached, prompt)
        if keep < len(cached) and not llama_cpp.llama_memory_seq_rm(self._mem, slot, keep, -1):
            # The memory cannot drop part of a sequence (some recurrent or
            # sliding-window caches): start the slot from scratch.
            llama_cpp.llama_memory_seq_rm(self._mem, slot, -1, -1)
            keep = 0
        self._kv_tokens[slot] = cached[:keep]
        self.reused_prompt_tokens += keep
        self._slots[slot] = self._new_slot(list(prompt[keep:]), keep, sampling, logprobs)
        return keep

    def fork(self, slot: int, parent: int, sampling: SamplingParams) -> None:
        """The parent's prompt KV cells are copied to ``slot`` right after the step that decodes the
        prompt's last chunk, and ``slot`` samples its first token from the parent's logits then."""
        st = self._slots[parent]
        child = self._new_slot([], 0, sampling, st.logprobs)
        child.waits_for = parent
        self._slots[slot] = child

    def _new_slot(self, pending: list[int], pos: int, sampling: SamplingParams, logprobs: int | None) -> _Slot:
        banned = sorted(self._eog) if sampling.ignore_eos else []
        sampler = _sampler_chain(sampling, self.vocab_size, banned)
        st = _Slot(pending, pos, sampler, logprobs=logprobs)
        if sampling.grammar is not None:
            if sampling.ignore_eos:
                # A complete grammar leaves only end-of-generation tokens; with those banned, nothing is valid.
                llama_cpp.llama_sampler_free(sampler)
                raise LlamaEngineError("ignore_eos cannot be combined with a grammar")
            grammar = llama_cpp.llama_sampler_init_grammar(self._vocab, sampling.grammar.encode("utf-8"), b"root")
            if not grammar:
                llama_cpp.llama_sampler_free(sampler)
                raise LlamaEngineError("the grammar does not parse")
            full = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
            llama_cpp.llama_sampler_chain_add(full, grammar)  # the chain owns it from here
            llama_cpp.llama_sampler_chain_add(full, llama_cpp.llama_sampler_clone(sampler))
            st.full, st.grammar = full, grammar
            if sampling.greedy or sampling.top_k > 0 or sampling.min_p > 0.0 or sampling.top_p < 1.0:
                st.window = min(self.vocab_size, max(_GRAMMAR_WINDOW, sampling.top_k))
            # else sampling from the whole distribution: its tail counts, so resample over every token
        return st

    def step(self, slots: Sequence[int]) -> dict[int, int]:
        batch = self._batch
        # Ascending sequence ids: with one KV stream per sequence, llama.cpp
        # splits a batch whose ids are out of order into several ubatches,
        # one graph compute each (measured: 2x slower at 8 sequences).
        slots = sorted(slots)
        n = 0
        logits_at: dict[int, int] = {}
        # Sequences already generating take one token each, then prompts fill
        # what is left of the batch (long prompts are split over steps).
        kv = self._kv_tokens
        prompt_done: list[int] = []
        for slot in slots:
            st = self._slots[slot]
            if not st.pending and st.next_token is not None:
                self._put(n, st.next_token, st.pos, slot, True)
                kv[slot].append(st.next_token)
                logits_at[slot] = n
                st.pos += 1
                n += 1
        for slot in slots:
            st = self._slots[slot]
            room = self.n_batch - n
            if not st.pending or room <= 0:
                continue
            chunk, st.pending = st.pending[:room], st.pending[room:]
            self._put_prompt(n, chunk, st.pos, slot)
            n += len(chunk)
            kv[slot].extend(chunk)
            st.pos += len(chunk)
            if not st.pending:
                batch.logits[n - 1] = 1
                logits_at[slot] = n - 1
                prompt_done.append(slot)
        if n == 0:
            return {}
        batch.n_tokens = n
        rc = llama_cpp.llama_decode(self._ctx, batch)
        if rc != 0:
            # What this batch wrote to the KV cells is unknown: forget them.
            for slot in slots:
                llama_cpp.llama_memory_seq_rm(self._mem, slot, -1, -1)
                kv[slot] = []
            raise LlamaEngineError(f"llama_decode returned {rc}")
        if prompt_done:
            self._start_forks(slots, prompt_done, logits_at)
        sampled = {}
        for slot, idx in logits_at.items():
            st = self._slots[slot]
            token = llama_cpp.llama_sampler_sample(st.sampler, self._ctx, idx)
            if st.grammar is not None:
                token = self._keep_grammar(st, token, idx)
            if st.logprobs is not None:
                st.last_logprob = self._logprob(idx, token, st.logprobs)
            st.next_token = token
            sampled[slot] = token
        return sampled

    def _keep_grammar(self, st: _Slot, token: int, idx: int) -> int:
        """llama-server's order: check the one token the chain picked (microseconds); only when the grammar
        refuses it, resample with the grammar applied to the whole vocabulary first (milliseconds). A
        refused token is never accepted into the grammar: llama.cpp aborts the process on one."""
        one, array = self._one, self._one_array
        one.id = llama_cpp.llama_token(token)
        one.logit, one.p = 1.0, 0.0
        array.size, array.selected, array.sorted = 1, -1, False
        llama_cpp.llama_sampler_apply(st.grammar, ctypes.byref(array))
        if one.logit == float("-inf"):
            resampled = self._resample_in_window(st, idx) if st.window else None
            if resampled is None:
                # Samples over all tokens and accepts the token into the grammar (it is in the chain).
                return int(llama_cpp.llama_sampler_sample(st.full, self._ctx, idx))
            token = resampled
        if token not in self._eog:  # the sequence ends at an EOG: nothing to accept
            llama_cpp.llama_sampler_accept(st.grammar, token)
        return token

    def _resample_in_window(self, st: _Slot, idx: int) -> int | None:
        """The grammar and then the slot's chain over the most likely ``st.window`` tokens only: a fraction
        of a millisecond where the whole vocabulary takes 5-15 ms (SmolLM2) or 40-80 ms (gemma's 262k).
        The same token as the full resample at temperature 0 whenever the window holds a valid token, and
        the same distribution over the valid tokens the top-k/top-p/min-p cut keeps when they lie in the
        window (a slot with no cut at all has no window); None (the caller resamples over the whole
        vocabulary) when no token in it is valid."""
        row = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(self._ctx, idx), shape=(self.vocab_size,))
        k = st.window
        ids = np.argpartition(row, -k)[-k:] if k < self.vocab_size else np.arange(self.vocab_size)
        if len(self._window_buf) < k:
            self._window_buf = np.zeros(k, dtype=_TOKEN_DATA)
        window = self._window_buf[:k]
        window["id"] = ids
        window["logit"] = row[ids]
        window["p"] = 0.0
        array = llama_cpp.llama_token_data_array(
            window.ctypes.data_as(ctypes.POINTER(llama_cpp.llama_token_data)), k, -1, False
        )
        llama_cpp.llama_sampler_apply(st.grammar, ctypes.byref(array))
        if not np.isfinite(window["logit"]).any():
            return None
        llama_cpp.llama_sampler_apply(st.sampler, ctypes.byref(array))
        if not 0 <= array.selected < array.size:
            return None
        chosen = array.data[array.selected]
        if chosen.logit == float("-inf"):  # never: the chain draws by probability, and these have none
            return None
        return int(chosen.id)

    def _logprob(self, idx: int, token: int, k: int) -> TokenLogprob:
        """From the raw logits (before temperature, top-k/p and grammar), as llama-server reports them."""
        row = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(self._ctx, idx), shape=(self.vocab_size,))
        top_logit = row.max()
        scratch = self._logit_buf
        np.subtract(row, top_logit, out=scratch)
        np.exp(scratch, out=scratch)
        log_total = float(top_logit) + float(np.log(scratch.sum(dtype=np.float64)))
        top: tuple[TopLogprob, ...] = ()
        if k > 0:
            best = np.argpartition(row, -k)[-k:]
            best = best[np.argsort(-row[best], kind="stable")]
            top = tuple(TopLogprob(self.piece(int(t)), float(row[t]) - log_total) for t in best)
        return TokenLogprob(token, self.piece(token), float(row[token]) - log_total, top)

    def _start_forks(self, slots: Sequence[int], prompt_done: list[int], logits_at: dict[int, int]) -> None:
        """Copies each just-decoded prompt's KV cells to the choices forked from it, before the parent's
        next decode adds cells. llama_state_seq_* copies only that sequence's cells (time in proportion to
        the prompt); llama_memory_seq_cp across the streams of a non-unified cache copies the whole n_ctx."""
        done = set(prompt_done)
        children = [s for s in slots if self._slots[s].waits_for in done]
        by_parent: dict[int, list[int]] = {}
        for child in children:
            by_parent.setdefault(self._slots[child].waits_for, []).append(child)  # type: ignore[arg-type]
        kv = self._kv_tokens
        for parent, kids in by_parent.items():
            size = llama_cpp.llama_state_seq_get_size(self._ctx, parent)
            if len(self._state_buf) < size:
                self._state_buf = (ctypes.c_uint8 * size)()
            n = llama_cpp.llama_state_seq_get_data(self._ctx, self._state_buf, size, parent)
            for child in kids:
                st = self._slots[child]
                st.waits_for = None
                llama_cpp.llama_memory_seq_rm(self._mem, child, -1, -1)
                if n and llama_cpp.llama_state_seq_set_data(self._ctx, self._state_buf, n, child) == n:
                    kv[child] = list(kv[parent])
                    st.pos = self._slots[parent].pos
                    logits_at[child] = logits_at[parent]
                else:  # the memory would not take the copy: the choice decodes the prompt itself
                    log.warning("could not copy sequence %d's KV cells to %d; decoding the prompt again", parent, child)
                    llama_cpp.llama_memory_seq_rm(self._mem, child, -1, -1)
                    kv[child] = []
                    st.pending, st.pos = list(kv[parent]), 0

    def end(self, slot: int) -> None:
        """Free the samplers; the KV cells stay for prefix reuse by the next prompt."""
        st = self._slots.pop(slot, None)
        if st is not None:
            llama_cpp.llama_sampler_free(st.sampler)
            if st.full is not None:
                llama_cpp.llama_sampler_free(st.full)  # and the grammar in it

    def take_logprobs(self, slot: int) -> TokenLogprob | None:
        st = self._slots.get(slot)
        if st is None:
            return None
        taken, st.last_logprob = st.last_logprob, None
        return taken

    def check_grammar(self, gbnf: str) -> None:
        """Raises EngineInputError when llama.cpp cannot parse ``gbnf`` (root rule "root"); any thread:
        the grammar sampler needs only the vocabulary."""
        sampler = llama_cpp.llama_sampler_init_grammar(self._vocab, gbnf.encode("utf-8"), b"root")
        if not sampler:
            raise EngineInputError("the grammar does not parse (llama.cpp refused it)", 0)
        llama_cpp.llama_sampler_free(sampler)

    def kv_cells_used(self) -> int:
        """KV cells holding a token now, over every slot: live sequences and the prefixes kept for reuse.

        From the engine's own bookkeeping (the tokens each slot's cells hold), which equals llama.cpp's
        ``llama_memory_seq_pos_max + 1`` summed over the sequences (a test checks that); read from any
        thread without a lock: ``list()`` copies the dict's values in one step under the GIL, and each
        list's length is read whole."""
        return sum(len(tokens) for tokens in list(self._kv_tokens.values()))

    def piece(self, token: int) -> bytes:
        cached = self._pieces.get(token)
        if cached is None:
            cached = self._pieces[token] = self.detokenize_one(token)
        return cached

    def is_eog(self, token: int) -> bool:
        return token in self._eog

    def _put_prompt(self, start: int, tokens: list[int], pos: int, seq: int) -> None:
        """A prompt chunk into the batch from ``start``, none of it asking for logits: whole arrays are copied
        at once (four ctypes stores per token were most of the Python time of a long prompt)."""
        b, k = self._batch, len(tokens)
        at = start * ctypes.sizeof(ctypes.c_int32)
        ctypes.memmove(ctypes.addressof(b.token.contents) + at, (ctypes.c_int32 * k)(*tokens), k * 4)
        ctypes.memmove(ctypes.addressof(b.pos.contents) + at, (ctypes.c_int32 * k)(*range(pos, pos + k)), k * 4)
        ctypes.memmove(ctypes.addressof(b.n_seq_id.contents) + at, self._ones, k * 4)
        ctypes.memset(ctypes.addressof(b.logits.contents) + start, 0, k)
        seq_id = b.seq_id
        for i in range(start, start + k):
            seq_id[i][0] = seq

    def _put(self, i: int, token: int, pos: int, seq: int, logits: bool) -> None:
        b = self._batch
        b.token[i] = token
        b.pos[i] = pos
        b.n_seq_id[i] = 1
        b.seq_id[i][0] = seq
        b.logits[i] = logits

    # -- text (any thread) -------------------------------------------------

    def tokenize(self, text: str, add_special: bool = True, parse_special: bool = False) -> list[int]:
        data = text.encode("utf-8")
        capacity = len(data) + 8
        buf = (llama_cpp.llama_token * capacity)()
        n = llama_cpp.llama_tokenize(self._vocab, data, len(data), buf, capacity, add_special, parse_special)
        if n < 0:
            capacity = -n
            buf = (llama_cpp.llama_token * capacity)()
            n = llama_cpp.llama_tokenize(self._vocab, data, len(data), buf, capacity, add_special, parse_special)
        return list(buf[:n])

    def detokenize_one(self, token: int) -> bytes:
        buf = ctypes.create_string_buffer(256)
        n = llama_cpp.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, False)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = llama_cpp.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, False)
        return buf.raw[:n]

    def in_vocab(self, tokens: Sequence[int]) -> bool:
        """Whether every token id names a token of this model (client-supplied ids)."""
        return all(0 <= t < self.vocab_size for t in tokens)

    @property
    def has_chat_template(self) -> bool:
        return self._chat is not None

    def chat_prompt_tokens(self, messages: list[dict[str, str]]) -> list[int]:
        """Render messages with the GGUF's own chat template, then tokenize."""
        if self._chat is None:
            raise NoChatTemplateError(
                f"the model {self.artifact.name} has no chat template (a base model): use /v1/completions"
            )
        # llama-cpp-python types messages as OpenAI's per-role TypedDicts, but only hands them to the
        # Jinja template, which reads role and content: what every dict here has.
        prompt = self._chat(messages=messages).prompt  # type: ignore[arg-type]
        bos = self._token_text(llama_cpp.llama_vocab_bos(self._vocab))
        # The template may already start with BOS; do not add a second one.
        add_special = not (bos and prompt.startswith(bos))
        return self.tokenize(prompt, add_special=add_special, parse_special=True)

    def _chat_formatter(self) -> Jinja2ChatFormatter | None:
        template = self.metadata("tokenizer.chat_template")
        if not template:
            return None
        return Jinja2ChatFormatter(
            template=template,
            eos_token=self._token_text(llama_cpp.llama_vocab_eos(self._vocab)),
            bos_token=self._token_text(llama_cpp.llama_vocab_bos(self._vocab)),
        )

    def metadata(self, key: str) -> str:
        size = 1 << 16
        buf = ctypes.create_string_buffer(size)
        n = llama_cpp.llama_model_meta_val_str(self._model, key.encode(), buf, size)
        if n < 0:
            return ""
        if n >= size:
            buf = ctypes.create_string_buffer(n + 1)
            llama_cpp.llama_model_meta_val_str(self._model, key.encode(), buf, n + 1)
        return buf.value.decode("utf-8", errors="replace")

    def _token_text(self, token: int) -> str:
        if token < 0:
            return ""
        text = llama_cpp.llama_vocab_get_text(self._vocab, token)
        return text.decode("utf-8", errors="replace") if text else ""

    # -- embeddings (own context, any thread) ------------------------------

    def embed_inputs(self, inputs: Sequence[EmbeddingInput]) -> tuple[list[list[float]], int]:
        """Mean-pooled embeddings of text or token-id inputs (EmbeddingEngine)."""
        tokenized = [x if isinstance(x, list) else self.tokenize(x, add_special=True) for x in inputs]
        for i, tokens in enumerate(tokenized):
            if not tokens:
                raise EngineInputError(f"'input[{i}]' is empty", i)
            if len(tokens) > self.n_ctx:
                raise EngineInputError(
                    f"'input[{i}]' has {len(tokens)} tokens; the limit is {self.n_ctx}",
                    i,
                    code="context_length_exceeded",
                )
            if not self.in_vocab(tokens):
                raise EngineInputError(
                    f"'input[{i}]' holds token ids outside the vocabulary (0..{self.vocab_size - 1})", i
                )
        return self.embed(tokenized), sum(len(t) for t in tokenized)

    def embed(self, texts: Sequence[list[int]]) -> list[list[float]]:
        """Mean-pooled embeddings of already tokenized inputs."""
        with self._embed_lock:
            if self._embed_ctx is None:
                cparams = llama_cpp.llama_context_default_params()
                cparams.n_ctx = self.n_ctx
                cparams.n_batch = self.n_ctx
                cparams.n_ubatch = self.n_ctx
                cparams.n_seq_max = 1
                cparams.n_threads = self._n_threads
                cparams.n_threads_batch = self._n_threads
                cparams.embeddings = True
                cparams.pooling_type = llama_cpp.LLAMA_POOLING_TYPE_MEAN
                self._embed_ctx = llama_cpp.llama_init_from_model(self._model, cparams)
                if not self._embed_ctx:
                    raise LlamaEngineError("llama.cpp could not create an embeddings context")
            ctx = self._embed_ctx
            n_embd = llama_cpp.llama_model_n_embd(self._model)
            batch = llama_cpp.llama_batch_init(self.n_ctx, 0, 1)
            try:
                vectors = []
                for tokens in texts:
                    llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(ctx), True)
                    for i, token in enumerate(tokens):
                        batch.token[i] = token
                        batch.pos[i] = i
                        batch.n_seq_id[i] = 1
                        batch.seq_id[i][0] = 0
                        batch.logits[i] = True
                    batch.n_tokens = len(tokens)
                    rc = llama_cpp.llama_decode(ctx, batch)
                    if rc != 0:
                        raise LlamaEngineError(f"llama_decode returned {rc} while embedding")
                    ptr = llama_cpp.llama_get_embeddings_seq(ctx, 0)
                    vectors.append([float(x) for x in ptr[:n_embd]])
                return vectors
            finally:
                llama_cpp.llama_batch_free(batch)

    def close(self) -> None:
        """Free the native memory; safe to call twice (a switched-out model is closed by the switch and
        again at shutdown), since a second free of llama.cpp's objects would corrupt the heap."""
        if self._closed:
            return
        self._closed = True
        for slot in list(self._slots):
            self.end(slot)
        llama_cpp.llama_batch_free(self._batch)
        if self._embed_ctx:
            llama_cpp.llama_free(self._embed_ctx)
        llama_cpp.llama_free(self._ctx)
        llama_cpp.llama_model_free(self._model)


def _sampler_chain(sampling: SamplingParams, n_vocab: int, banned: Sequence[int] = ()) -> ctypes.c_void_p:
    chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
    add = llama_cpp.llama_sampler_chain_add
    if banned:
        biases = (llama_cpp.llama_logit_bias * len(banned))(
            *(llama_cpp.llama_logit_bias(t, float("-inf")) for t in banned)
        )
        add(chain, llama_cpp.llama_sampler_init_logit_bias(n_vocab, len(banned), biases))
    if sampling.greedy:
        add(chain, llama_cpp.llama_sampler_init_greedy())
        return chain
    seed = sampling.seed if sampling.seed is not None else random.getrandbits(32)
    if sampling.top_k > 0:
        add(chain, llama_cpp.llama_sampler_init_top_k(sampling.top_k))
    if sampling.top_p < 1.0:
        add(chain, llama_cpp.llama_sampler_init_top_p(sampling.top_p, 1))
    if sampling.min_p > 0.0:
        add(chain, llama_cpp.llama_sampler_init_min_p(sampling.min_p, 1))
    add(chain, llama_cpp.llama_sampler_init_temp(sampling.temperature))
    add(chain, llama_cpp.llama_sampler_init_dist(seed & 0xFFFFFFFF))
    return chain
