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
import logging
import threading
import time
from collections.abc import Callable, Sequence
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
class Ticket:
    """A submitted request; ``cancel()`` stops it within one step."""

    request: GenerationRequest
    sink: Sink
    stops: StopMatcher
    cancelled: bool = False
    slot: int = -1
    generated: int = 0
    text: Utf8Assembler = field(default_factory=Utf8Assembler)

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
        self._active: dict[int, Ticket] = {}
        self._free_slots = list(range(backend.n_slots - 1, -1, -1))
        self._running = False
        self._thread: threading.Thread | None = None
        self._prompt_tokens = 0
        self._generated_tokens = 0
        self._cancelled = 0

    # -- caller side -------------------------------------------------------

    def submit(self, request: GenerationRequest, sink: Sink) -> Ticket:
        ticket = Ticket(request, sink, stops=StopMatcher(request.stop))
        with self._cond:
            if not self._running:
                raise EngineError("the scheduler is not running")
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
            for slot in slots:
                self._finish(slot, ErrorEvent(EngineError(f"decode failed: {exc}")))
            return
        for slot, token in sampled.items():
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
        while self._waiting and self._free_slots:
            ticket = self._waiting.popleft()
            if ticket.cancelled:
                self._cancelled += 1
                continue
            if now > ticket.request.deadline:
                _emit(ticket, ErrorEvent(DeadlineExceededError("the request waited past its deadline")))
                continue
            slot = self._backend.choose_slot(self._free_slots, ticket.request.prompt_tokens)
            self._free_slots.remove(slot)
            ticket.slot = slot
            try:
                self._backend.begin(slot, ticket.request.prompt_tokens, ticket.request.sampling)
            except Exception as exc:  # noqa: BLE001 - whatever the engine raised, only this request fails
                self._free_slots.append(slot)
                _emit(ticket, ErrorEvent(EngineError(f"could not start the sequence: {exc}")))
                continue
            self._active[slot] = ticket
            self._prompt_tokens += len(ticket.request.prompt_tokens)

    def _drop_finished_early(self, slots: list[int]) -> None:
        now = self._clock()
        for slot in slots:
            ticket = self._active[slot]
            if ticket.cancelled:
                self._cancelled += 1
                self._finish(slot, None)
            elif now > ticket.request.deadline:
                self._finish(slot, ErrorEvent(DeadlineExceededError("the request ran past its deadline")))

    def _advance(self, slot: int, token: int) -> None:
        ticket = self._active[slot]
        request = ticket.request
        backend = self._backend
        if backend.is_eog(token):
            return self._finish(slot, self._done(ticket, "stop"))
        ticket.generated += 1
        self._generated_tokens += 1
        text, hit_stop = ticket.stops.feed(ticket.text.feed(backend.piece(token)))
        if text:
            _emit(ticket, TokenEvent(text))
        if hit_stop:
            return self._finish(slot, self._done(ticket, "stop", flush=False))
        if ticket.generated >= request.max_tokens or len(request.prompt_tokens) + ticket.generated >= backend.n_ctx:
            return self._finish(slot, self._done(ticket, "length"))

    def _done(self, ticket: Ticket, reason: str, flush: bool = True) -> DoneEvent:
        if flush:
            tail, hit_stop = ticket.stops.feed(ticket.text.flush())
            tail += "" if hit_stop else ticket.stops.flush()
            if tail:
                _emit(ticket, TokenEvent(tail))
        return DoneEvent(reason, len(ticket.request.prompt_tokens), ticket.generated)

    def _finish(self, slot: int, event: GenerationEvent | None) -> None:
        ticket = self._active.pop(slot)
        try:
            self._backend.end(slot)
        finally:
            with self._cond:
                self._free_slots.append(slot)
        if event is not None:
            _emit(ticket, event)

    def _fail_all_locked(self, error: Exception) -> None:
        for ticket in self._waiting:
            _emit(ticket, ErrorEvent(error))
        self._waiting.clear()
        for slot in list(self._active):
            ticket = self._active.pop(slot)
            self._backend.end(slot)
            self._free_slots.append(slot)
            _emit(ticket, ErrorEvent(error))


def _emit(ticket: Ticket, event: GenerationEvent) -> None:
    try:
        ticket.sink(event)
    except Exception:  # a broken sink must not stop the loop for everyone
        log.exception("event sink failed")
        ticket.cancelled = True
