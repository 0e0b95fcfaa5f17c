"""What one inference request goes through, apart from HTTP.

    typed request -> cache decision -> cache lookup / single flight
                  -> prompt tokens -> scheduler -> events -> answer (+ cache store)

The HTTP layer (``edge_agent.api``) parses bodies into the typed requests of
:mod:`edge_agent.client_request` and turns an :class:`Answer` into a response:
statuses, headers and SSE framing are its business. Here errors are raised, and
a streamed answer is a sequence of OpenAI chunk objects that ends by returning
or by raising; everything that decides lives here or in the pure modules this calls.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import jinja2
from starlette.concurrency import run_in_threadpool

from edge_agent.cache import ResponseCache
from edge_agent.cache_policy import cache_decision, cache_key
from edge_agent.client_request import ChatRequest, EmbeddingRequest, InferenceRequest, RequestError
from edge_agent.engines import EmbeddingEngine, EngineInputError
from edge_agent.engines.llama import LlamaBackend, NoChatTemplateError
from edge_agent.errors import AgentError
from edge_agent.generation import DoneEvent, ErrorEvent, GenerationEvent, GenerationRequest, SamplingParams, TokenEvent
from edge_agent.metrics import AgentMetrics, model_version
from edge_agent.openai_objects import Completion, dumps, replay_chunks
from edge_agent.scheduler import DeadlineExceededError, Scheduler, Ticket

if TYPE_CHECKING:
    from edge_agent.upstream import UpstreamReply

log = logging.getLogger(__name__)


class ClientGoneError(AgentError):
    """The client disconnected; nobody is left to answer."""


# An OpenAI response object (a whole body, or one chunk of a stream).
OpenAIObject = dict[str, Any]


@dataclass
class Answer:
    """What the box, or an upstream, answered. Exactly one of ``body``, ``chunks`` and ``upstream`` is set."""

    cache: str  # "hit" | "miss" | "bypass": what the response cache did
    # A whole OpenAI body, as stored in the response cache.
    body: bytes | None = None
    # A streamed answer: OpenAI chunk objects; an exception raised from it ends the stream with that error.
    chunks: AsyncIterator[OpenAIObject] | Iterable[OpenAIObject] | None = None
    # Called once the response is over, however it ended, even when the
    # stream was never started (a client gone before the first byte); awaited when it returns an awaitable.
    on_close: Callable[[], Any] | None = None
    # An upstream's reply, relayed as it came: its status, type, body or event stream.
    upstream: UpstreamReply | None = None


@dataclass(frozen=True)
class ServingModel:
    """One loaded model: its engine, the scheduler thread that drives it, and the id clients ask for."""

    backend: LlamaBackend
    scheduler: Scheduler
    model_id: str

    @property
    def sha256(self) -> str:
        return self.backend.artifact.sha256

    @property
    def model_version(self) -> str:
        """The metrics' model_version label, "NAME@VERSION" (the daemon's model_info spells it the same)."""
        a = self.backend.artifact
        return model_version(a.name, a.version or a.sha256[:12])

    def close(self) -> None:
        self.scheduler.stop()
        self.backend.close()


class InferenceService:
    def __init__(
        self,
        model: ServingModel,
        cache: ResponseCache | None,
        metrics: AgentMetrics,
        request_timeout_s: float,
        embedder: EmbeddingEngine | None = None,
    ):
        # Every request reads `current` once and uses that model throughout, so a switch (switch_to) never
        # splits a request across two models.
        self.current = model
        self.cache = cache
        self.metrics = metrics
        self.request_timeout_s = request_timeout_s
        self.embedder = embedder
        self._inflight: dict[str, asyncio.Future[bytes | None]] = {}
        self.ready = False

    @property
    def backend(self) -> LlamaBackend:
        return self.current.backend

    @property
    def model_id(self) -> str:
        return self.current.model_id

    @property
    def model_sha256(self) -> str:
        return self.current.sha256

    async def switch_to(self, new: ServingModel, drain_timeout_s: float, warm: bool = True) -> ServingModel:
        """Warm `new` up (unless the caller did), then send every new request to it; requests already on the
        old model finish there. Returns the old model once it has drained (or drain_timeout_s passed) and
        stopped."""
        if warm:
            await self.warm_up(new)
        old, self.current = self.current, new
        deadline = time.monotonic() + drain_timeout_s
        while time.monotonic() < deadline:
            stats = old.scheduler.stats()
            if stats.queue_depth == 0 and stats.inflight == 0:
                break
            await asyncio.sleep(0.05)
        await asyncio.to_thread(old.close)
        log.info("switched from %s (%s) to %s (%s)", old.model_id, old.sha256[:12], new.model_id, new.sha256[:12])
        return old

    # -- generation --------------------------------------------------------

    async def generate(
        self,
        request: InferenceRequest,
        cache_control: str,
        started: float,
        client_gone: Callable[[], Awaitable[None]] | None = None,
        tenant: str = "",
    ) -> Answer:
        """``client_gone`` returns when the client disconnects; a non-streamed
        generation then stops (a streamed one stops when its stream is closed).
        Raises OverloadedError, before touching the cache's single flight, when the queue is full."""
        model = self.current
        endpoint, params = request.endpoint, request.params
        canonical = request.canonical()
        decision = cache_decision(canonical, cache_control, enabled=self.cache is not None)
        key = cache_key(model.sha256, endpoint, canonical, tenant) if decision.lookup or decision.store else ""
        if decision.lookup and self.cache is not None:  # a lookup is only ever decided with a cache
            cached = self.cache.get(key)
            if cached is None and key in self._inflight:
                # Single flight: the same request is generating now; wait for
                # it, within this request's own deadline.
                remaining = started + self.request_timeout_s - time.monotonic()
                try:
                    cached = await asyncio.wait_for(asyncio.shield(self._inflight[key]), max(remaining, 0))
                except asyncio.TimeoutError:
                    raise DeadlineExceededError(
                        "the request ran past its deadline waiting for an identical one"
                    ) from None
            if cached is not None:
                self.metrics.cache_hits.inc()
                self.metrics.observe_cache(True)
                return self._from_cache(endpoint, cached, request)
            self.metrics.cache_misses.inc()
            self.metrics.observe_cache(False)
        prompt_tokens = self._prompt_tokens(model.backend, request)
        generation = GenerationRequest(
            prompt_tokens=tuple(prompt_tokens),
            max_tokens=params.max_tokens,
            sampling=params.sampling,
            stop=params.stop,
            deadline=started + self.request_timeout_s,
        )
        ticket, events = self._submit(model.scheduler, generation)
        clock = _TokenClock(self.metrics, endpoint, model.model_version, started)
        flight: asyncio.Future[bytes | None] | None = None
        if decision.lookup and key not in self._inflight:
            flight = self._inflight[key] = asyncio.get_running_loop().create_future()
        store_key = key if decision.store else ""
        sha256 = model.sha256
        completion = Completion.new(endpoint, model.model_id)
        outcome = "miss" if decision.lookup else "bypass"
        if params.stream:

            def on_close() -> None:
                ticket.cancel()  # a no-op once generation has finished
                self._resolve(key, flight, None)  # a no-op once the answer is in

            return Answer(
                outcome,
                chunks=self._stream(
                    completion, ticket, events, params.include_usage, store_key, flight, key, clock, sha256
                ),
                on_close=on_close,
            )
        watcher = asyncio.ensure_future(self._report_gone(client_gone, events)) if client_gone else None
        try:
            text, done = await self._collect(ticket, events, clock)
        except BaseException:
            self._resolve(key, flight, None)
            raise
        finally:
            if watcher:
                watcher.cancel()
        body = dumps(completion.body(text, done.finish_reason, done.prompt_tokens, done.completion_tokens))
        self._store_and_resolve(body, store_key, flight, key, sha256)
        return Answer(outcome, body=body)

    @staticmethod
    def _prompt_tokens(backend: LlamaBackend, request: InferenceRequest) -> list[int]:
        if isinstance(request, ChatRequest):
            try:
                tokens = backend.chat_prompt_tokens(request.message_dicts())
            except NoChatTemplateError as exc:
                raise RequestError(str(exc), "messages", code="no_chat_template") from None
            except jinja2.TemplateError as exc:
                # Templates reject what their model was not trained on
                # (e.g. roles that do not alternate) with raise_exception().
                raise RequestError(f"the model's chat template rejected the messages: {exc}", "messages") from None
        elif isinstance(request.prompt, str):
            tokens = backend.tokenize(request.prompt, add_special=True)
        else:
            tokens = list(request.prompt)
            if not backend.in_vocab(tokens):
                raise RequestError(
                    f"'prompt' holds token ids outside the vocabulary (0..{backend.vocab_size - 1})", "prompt"
                )
        if not tokens:
            raise RequestError("the prompt is empty", "prompt")
        if len(tokens) >= backend.n_ctx:
            raise RequestError(
                f"the prompt has {len(tokens)} tokens; this model's context is {backend.n_ctx} tokens, "
                "which must also hold at least one generated token",
                "messages" if isinstance(request, ChatRequest) else "prompt",
                code="context_length_exceeded",
            )
        return tokens

    @staticmethod
    def _submit(scheduler: Scheduler, request: GenerationRequest) -> tuple[Ticket, asyncio.Queue]:
        """Queue a generation; its events arrive on the returned asyncio queue
        (the scheduler thread hands each one to this event loop)."""
        loop = asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()

        def deliver(event: GenerationEvent) -> None:
            loop.call_soon_threadsafe(events.put_nowait, event)

        ticket = scheduler.submit(request, deliver)
        return ticket, events

    @staticmethod
    async def _report_gone(client_gone: Callable[[], Awaitable[None]], events: asyncio.Queue) -> None:
        await client_gone()
        events.put_nowait(ErrorEvent(ClientGoneError("the client disconnected before the answer was complete")))

    async def _collect(self, ticket: Ticket, events: asyncio.Queue, clock: _TokenClock | None) -> tuple[str, DoneEvent]:
        """Gathers a whole answer; ``clock`` None (the warm-up) is kept out of the metrics."""
        parts: list[str] = []
        try:
            while True:
                ev = await events.get()
                if isinstance(ev, TokenEvent):
                    if not parts and clock is not None:
                        clock.first_token()
                    parts.append(ev.text)
                elif isinstance(ev, DoneEvent):
                    if clock is not None:
                        clock.done(ev.completion_tokens)
                    return "".join(parts), ev
                else:
                    raise ev.error
        finally:
            ticket.cancel()  # a no-op once done; stops generation if the client went away

    async def _stream(
        self,
        completion: Completion,
        ticket: Ticket,
        events: asyncio.Queue,
        include_usage: bool,
        store_key: str,
        flight,
        key: str,
        clock: _TokenClock,
        sha256: str,
    ) -> AsyncIterator[OpenAIObject]:
        parts: list[str] = []
        done: DoneEvent | None = None
        try:
            first = completion.first_chunk()
            if first:
                yield first
            while True:
                ev = await events.get()
                if isinstance(ev, TokenEvent):
                    if not parts:
                        clock.first_token()
                    parts.append(ev.text)
                    yield completion.text_chunk(ev.text)
                elif isinstance(ev, DoneEvent):
                    done = ev
                    clock.done(ev.completion_tokens)
                    yield completion.final_chunk(ev.finish_reason)
                    if include_usage:
                        yield completion.usage_chunk(ev.prompt_tokens, ev.completion_tokens)
                    return
                else:
                    raise ev.error
        finally:
            # Runs on completion, on error, and when the client disconnects
            # (the generator is closed): the sequence stops at the next step.
            ticket.cancel()
            if done is not None:
                body = dumps(
                    completion.body("".join(parts), done.finish_reason, done.prompt_tokens, done.completion_tokens)
                )
                self._store_and_resolve(body, store_key, flight, key, sha256)
            else:
                self._resolve(key, flight, None)

    def _store_and_resolve(self, body: bytes, store_key: str, flight, key: str, sha256: str) -> None:
        if store_key and self.cache is not None:  # a key to store under is only ever made with a cache
            self.cache.put(store_key, sha256, body)
        self._resolve(key, flight, body)

    def _resolve(self, key: str, flight, body: bytes | None) -> None:
        if flight is not None:
            self._inflight.pop(key, None)
            if not flight.done():
                flight.set_result(body)

    @staticmethod
    def _from_cache(endpoint: str, cached: bytes, request: InferenceRequest) -> Answer:
        if not request.params.stream:
            return Answer("hit", body=cached)
        return Answer("hit", chunks=replay_chunks(endpoint, json.loads(cached), request.params.include_usage))

    # -- embeddings --------------------------------------------------------

    async def embed(self, request: EmbeddingRequest) -> OpenAIObject:
        engine: EmbeddingEngine = self.embedder or self.backend
        # The engines take token ids as lists.
        inputs = [item if isinstance(item, str) else list(item) for item in request.inputs]
        try:
            vectors, n_tokens = await run_in_threadpool(engine.embed_inputs, inputs)
        except EngineInputError as exc:
            raise RequestError(str(exc), "input", code=exc.code) from None
        data = [
            {"object": "embedding", "index": i, "embedding": _encode(v, request.encoding_format)}
            for i, v in enumerate(vectors)
        ]
        return {
            "object": "list",
            "data": data,
            "model": request.model,
            "usage": {"prompt_tokens": n_tokens, "total_tokens": n_tokens},
        }

    # -- warm-up -----------------------------------------------------------

    async def warm_up(self, model: ServingModel | None = None) -> None:
        """Generate one token end to end on `model` (default: the current one); /readyz turns ready after it."""
        model = model or self.current
        tokens = model.backend.tokenize("Hello", add_special=True)
        request = GenerationRequest(tuple(tokens), max_tokens=1, sampling=SamplingParams(temperature=0.0))
        ticket, events = self._submit(model.scheduler, request)
        await self._collect(ticket, events, clock=None)
        if model is self.current:
            self.ready = True
            log.info("warm-up done: the model generated its first token; ready")


class _TokenClock:
    """Times one generation for the metrics: time to first token from the request's start, and time per output
    token from the first token to the last (when the generation ends)."""

    def __init__(self, metrics: AgentMetrics, endpoint: str, version: str, started: float):
        self._metrics = metrics
        self._endpoint = endpoint
        self._version = version
        self._started = started
        self._first_at: float | None = None

    def first_token(self) -> None:
        self._first_at = time.monotonic()
        self._metrics.observe_first_token(self._endpoint, self._version, self._first_at - self._started)

    def done(self, completion_tokens: int) -> None:
        if self._first_at is not None:
            self._metrics.observe_output(self._version, self._first_at, time.monotonic(), completion_tokens)


def _encode(vector: list[float], fmt: str) -> Any:
    if fmt == "float":
        return vector
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
