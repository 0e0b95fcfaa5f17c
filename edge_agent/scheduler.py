"""Bounded admission and continuous batching over a :class:`Backend`.

One thread owns the backend. Each turn of its loop admits waiting requests
into free sequence slots, drops cancelled and expired ones, and asks the
backend for one batched step: every live sequence advances by one token (or
one prompt chunk) in a single decode. Requests beyond the slots wait in a
bounded queue; past it, :meth:`Scheduler.submit` raises :class:`OverloadedError`
at once, so the HTTP layer answers 429 instead of hanging.

Events reach the caller through the ``sink`` callback, called on the
scheduler thread; it must not block.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from edge_agent.errors import AgentError
from edge_agent.generation import (
    DoneEvent,
    ErrorEvent,
    GenerationEvent,
    GenerationRequest,
    SamplingParams,
    StopMatcher,
    TokenEvent,
    TokenLogprob,
    Utf8Assembler,
)

log = logging.getLogger(__name__)

Sink = Callable[[GenerationEvent], None]


class OverloadedError(AgentError):
    """The admission queue is full; retry later."""


class DeadlineExceededError(AgentError):
    """The request ran past its deadline."""


class EngineError(AgentError):
    """The engine failed while decoding."""


class Backend(Protocol):
    """What the scheduler needs from an engine: slots, one batched step, tokens."""

    n_slots: int
    n_ctx: int

    def choose_slot(self, free_slots: Sequence[int], prompt: Sequence[int]) -> int:
        """The free slot to start ``prompt`` in (an engine may prefer one holding a shared prefix)."""

    def begin(
        self, slot: int, prompt: Sequence[int], sampling: SamplingParams, logprobs: int | None = None
    ) -> int | None:
        """Start a sequence in ``slot``; its prompt is decoded by later steps. Returns how many prompt
        tokens were reused from the slot's cached prefix (None: the engine keeps no cache). With
        ``logprobs`` (k >= 0), each sampled token's log-probability and top k are kept for
        :meth:`take_logprobs`."""

    def fork(self, slot: int, parent: int, sampling: SamplingParams) -> None:
        """Start ``slot`` as a copy of ``parent``, begun in the same admission (n > 1): it shares the
        parent's prompt and first logits, and samples with its own ``sampling``."""

    def step(self, slots: Sequence[int]) -> dict[int, int]:
        """One batched decode over ``slots``; the token sampled for each slot that has one."""

    def take_logprobs(self, slot: int) -> TokenLogprob | None:
        """The log-probabilities of the token the last step sampled for ``slot``, if it asked for them."""

    def end(self, slot: int) -> None:
        """Free the slot's state (KV cells, sampler)."""

    def piece(self, token: int) -> bytes:
        """The bytes a token stands for."""

    def is_eog(self, token: int) -> bool:
        """Whether a token ends generation."""


@dataclass(eq=False)
class Choice:
    """One of a request's n generations, in its own sequence slot."""

    index: int
    slot: int
    stops: StopMatcher
    text: Utf8Assembler = field(default_factory=Utf8Assembler)
    generated: int = 0
    # Log-probabilities of the tokens whose text is still held back (a partial character or stop string).
    pending_logprobs: list[TokenLogprob] = field(default_factory=list)


@dataclass(eq=False)
class Ticket:
    """A submitted request and its choices; ``cancel()`` stops all of them within one step."""

    request: GenerationRequest
    sink: Sink
    cancelled: bool = False
    choices: list[Choice] = field(default_factory=list)
    # Prompt tokens reused from a cached prefix, on every DoneEvent of the request.
    cached_tokens: int = 0

    @property
    def generated(self) -> int:
        return sum(c.generated for c in self.choices)

    def cancel(self) -> None:
        self.cancelled = True


@dataclass(frozen=True)
class SchedulerStats:
    queue_depth: int
    inflight: int
    slots: int
    # Since start; cancelled generations included, so work done for clients
    # that went away is visible.
    prompt_tokens: int = 0
    generated_tokens: int = 0
    cancelled: int = 0
    # Read from the engine when it keeps them (LlamaBackend does; a fake engine need not): prompt tokens
    # whose KV cells were reused from a previous sequence in the slot instead of decoded, since start, and
    # the KV cells holding tokens now (cached prefixes of finished sequences included) of how many.
    prefix_cache_hits: int = 0
    kv_cells_used: int = 0
    kv_cells: int = 0


class Scheduler:
    def __init__(
        self,
        backend: Backend,
        max_queue: int,
        clock: Callable[[], float] = time.monotonic,
        on_step_end: Callable[[], None] | None = None,
    ):
        self._backend = backend
        # Called on the scheduler thread after each step's events were emitted: a sink that batches
        # events delivers them here at once (one wakeup of the event loop per step, not per token).
        self._on_step_end = on_step_end
        self._max_queue = max_queue
        self._clock = clock
        self._cond = threading.Condition()
        self._waiting: collections.deque[Ticket] = collections.deque()
        # slot -> the request and which of its choices runs there.
        self._active: dict[int, tuple[Ticket, Choice]] = {}
        self._free_slots = list(range(backend.n_slots - 1, -1, -1))
        self._running = False
        self._thread: threading.Thread | None = None
        self._prompt_tokens = 0
        self._generated_tokens = 0
        self._cancelled = 0

    # -- caller side -------------------------------------------------------

    def submit(self, request: GenerationRequest, sink: Sink) -> Ticket:
        ticket = Ticket(request, sink)
        with self._cond:
            if not self._running:
                raise EngineError("the scheduler is not running")
            if not 1 <= request.n <= self._backend.n_slots:
                # The request surface refuses it first; here it would wait for slots that never free up.
                raise EngineError(f"n = {request.n} is outside 1..{self._backend.n_slots} (the sequence slots)")
            waiting_room = self._max_queue + len(self._free_slots)
            if len(self._waiting) >= waiting_room:
                raise OverloadedError(
                    f"the server is at capacity ({len(self._active)} generating, "
                    f"{len(self._waiting)} queued); retry later"
                )
            self._waiting.append(ticket)
            self._cond.notify()
        return ticket

    def stats(self) -> SchedulerStats:
        backend = self._backend
        with self._cond:
            return SchedulerStats(
                len(self._waiting),
                len(self._active),
                backend.n_slots,
                self._prompt_tokens,
                self._generated_tokens,
                self._cancelled,
                # Read-only counters, read without stopping the scheduler thread (see LlamaBackend).
                prefix_cache_hits=int(getattr(backend, "reused_prompt_tokens", 0)),
                kv_cells_used=int(backend.kv_cells_used()) if hasattr(backend, "kv_cells_used") else 0,
                kv_cells=int(getattr(backend, "kv_cells", 0)),
            )

    @property
    def alive(self) -> bool:
        """The thread that runs every generation is running (a watchdog's liveness check)."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        with self._cond:
            self._running = True
        self._thread = threading.Thread(target=self._run, name="scheduler", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        with self._cond:
            self._running = False
            self._cond.notify()
        if self._thread:
            self._thread.join(timeout)

    # -- scheduler thread --------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._running and not self._waiting and not self._active:
                    self._cond.wait()
                if not self._running:
                    self._fail_all_locked(EngineError("the server is shutting down"))
                    self._step_ended()
                    return
                self._admit_locked()
                slots = list(self._active)
            self._turn(slots)
            self._step_ended()

    def _turn(self, slots: list[int]) -> None:
        self._drop_finished_early(slots)
        slots = [s for s in slots if s in self._active]
        if not slots:
            return
        try:
            sampled = self._backend.step(slots)
        except Exception as exc:  # the engine failed: fail these requests, keep serving
            log.exception("batched decode failed")
            for ticket in _tickets(self._active[s][0] for s in slots if s in self._active):
                self._finish_ticket(ticket, ErrorEvent(EngineError(f"decode failed: {exc}")))
            return
        for slot, token in sampled.items():
            if slot in self._active:
                self._advance(slot, token)

    def _step_ended(self) -> None:
        if self._on_step_end is None:
            return
        try:
            self._on_step_end()
        except Exception:  # a broken hook must not stop the loop for everyone
            log.exception("on_step_end hook failed")

    def _admit_locked(self) -> None:
        now = self._clock()
        while self._waiting:
            ticket = self._waiting[0]
            request = ticket.request
            if ticket.cancelled:
                self._waiting.popleft()
                self._cancelled += 1
                continue
            if now > request.deadline:
                self._waiting.popleft()
                _emit(ticket, ErrorEvent(DeadlineExceededError("the request waited past its deadline")))
                continue
            if len(self._free_slots) < request.n:
                break  # first come, first served: the head waits for all its slots, and so do those behind it
            self._waiting.popleft()
            try:
                self._start(ticket)
            except Exception as exc:  # noqa: BLE001 - whatever the engine raised, only this request fails
                for choice in ticket.choices:
                    self._active.pop(choice.slot, None)
                    self._backend.end(choice.slot)
                    self._free_slots.append(choice.slot)
                _emit(ticket, ErrorEvent(EngineError(f"could not start the sequence: {exc}")))
                continue
            self._prompt_tokens += len(request.prompt_tokens)

    def _start(self, ticket: Ticket) -> None:
        """The prompt goes into the slot that caches most of it; the other choices fork from it into the
        emptiest slots, choice i seeded with seed + i so that every choice is reproducible."""
        request = ticket.request
        backend = self._backend
        parent = -1
        for index in range(request.n):
            slot = backend.choose_slot(self._free_slots, request.prompt_tokens if index == 0 else ())
            self._free_slots.remove(slot)
            choice = Choice(index, slot, StopMatcher(request.stop))
            ticket.choices.append(choice)
            self._active[slot] = (ticket, choice)
            if index == 0:
                parent = slot
                cached = backend.begin(slot, request.prompt_tokens, request.sampling, request.logprobs)
                ticket.cached_tokens = cached or 0
            else:
                backend.fork(slot, parent, _choice_sampling(request.sampling, index))

    def _drop_finished_early(self, slots: list[int]) -> None:
        now = self._clock()
        for ticket in _tickets(self._active[s][0] for s in slots):
            if ticket.cancelled:
                self._cancelled += 1
                self._finish_ticket(ticket, None)
            elif now > ticket.request.deadline:
                self._finish_ticket(ticket, ErrorEvent(DeadlineExceededError("the request ran past its deadline")))

    def _advance(self, slot: int, token: int) -> None:
        ticket, choice = self._active[slot]
        request = ticket.request
        backend = self._backend
        logprob = backend.take_logprobs(slot) if request.logprobs is not None else None
        if backend.is_eog(token):
            return self._finish(slot, self._done(ticket, choice, "stop"))
        choice.generated += 1
        self._generated_tokens += 1
        if logprob is not None:
            choice.pending_logprobs.append(logprob)
        text, hit_stop = choice.stops.feed(choice.text.feed(backend.piece(token)))
        if text:
            self._emit_text(ticket, choice, text)
        if hit_stop:
            return self._finish(slot, self._done(ticket, choice, "stop", flush=False))
        if choice.generated >= request.max_tokens or len(request.prompt_tokens) + choice.generated >= backend.n_ctx:
            return self._finish(slot, self._done(ticket, choice, "length"))

    def _emit_text(self, ticket: Ticket, choice: Choice, text: str) -> None:
        """Log-probabilities go with the text their tokens produced; those of tokens whose text a stop
        string swallowed whole are never sent."""
        pending = choice.pending_logprobs
        if pending:
            choice.pending_logprobs = []
            _emit(ticket, TokenEvent(text, choice.index, tuple(pending)))
        else:
            _emit(ticket, TokenEvent(text, choice.index))

    def _done(self, ticket: Ticket, choice: Choice, reason: str, flush: bool = True) -> DoneEvent:
        if flush:
            tail, hit_stop = choice.stops.feed(choice.text.flush())
            tail += "" if hit_stop else choice.stops.flush()
            if tail:
                self._emit_text(ticket, choice, tail)
        prompt = len(ticket.request.prompt_tokens)
        return DoneEvent(reason, prompt, choice.generated, choice.index, ticket.cached_tokens)

    def _finish(self, slot: int, event: GenerationEvent | None) -> None:
        ticket, _ = self._active.pop(slot)
        try:
            self._backend.end(slot)
        finally:
            with self._cond:
                self._free_slots.append(slot)
        if event is not None:
            _emit(ticket, event)

    def _finish_ticket(self, ticket: Ticket, event: GenerationEvent | None) -> None:
        """Ends every choice still running; ``event`` (an error) is sent once for the request."""
        for choice in ticket.choices:
            if choice.slot in self._active and self._active[choice.slot][0] is ticket:
                self._finish(choice.slot, None)
        if event is not None:
            _emit(ticket, event)

    def _fail_all_locked(self, error: Exception) -> None:
        for ticket in self._waiting:
            _emit(ticket, ErrorEvent(error))
        self._waiting.clear()
        for ticket in _tickets(t for t, _ in list(self._active.values())):
            self._finish_ticket(ticket, ErrorEvent(error))


def _tickets(tickets: Iterable[Ticket]) -> list[Ticket]:
    """Each request once, in order (a request with n > 1 holds several slots)."""
    return list(dict.fromkeys(tickets))


def _choice_sampling(sampling: SamplingParams, index: int) -> SamplingParams:
    if sampling.seed is None:
        return sampling
    return dataclasses.replace(sampling, seed=(sampling.seed + index) & 0xFFFFFFFF)


def _emit(ticket: Ticket, event: GenerationEvent) -> None:
    try:
        ticket.sink(event)
    except Exception:  # a broken sink must not stop the loop for everyone
        log.exception("event sink failed")
        ticket.cancelled = True
