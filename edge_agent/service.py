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
import contextlib
import dataclasses
import json
import logging
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import jinja2
from starlette.concurrency import run_in_threadpool

from edge_agent import structured, tools
from edge_agent.cache import ResponseCache
from edge_agent.cache_policy import cache_decision, cache_key
from edge_agent.client_request import ChatRequest, EmbeddingRequest, InferenceRequest, RequestError
from edge_agent.engines import EmbeddingEngine, EngineInputError
from edge_agent.engines.llama import LlamaBackend, NoChatTemplateError
from edge_agent.errors import AgentError
from edge_agent.generation import (
    DoneEvent,
    ErrorEvent,
    GenerationEvent,
    GenerationRequest,
    SamplingParams,
    TokenEvent,
    TokenLogprob,
)
from edge_agent.metrics import AgentMetrics, model_version
from edge_agent.openai_objects import (
    ChoiceOutcome,
    Completion,
    EncodedChunk,
    chat_logprobs,
    completion_logprobs,
    dumps,
    replay_chunks,
)
from edge_agent.scheduler import DeadlineExceededError, Scheduler, Ticket

if TYPE_CHECKING:
    from edge_agent.upstream import UpstreamReply

log = logging.getLogger(__name__)


class ClientGoneError(AgentError):
    """The client disconnected; nobody is left to answer."""


# An OpenAI response object (a whole body, or one chunk of a stream); a stream's text chunks may come encoded.
OpenAIObject = dict[str, Any]
StreamChunk = OpenAIObject | EncodedChunk


@dataclass
class Answer:
    """What the box, or an upstream, answered. Exactly one of ``body``, ``chunks`` and ``upstream`` is set."""

    cache: str  # "hit" | "miss" | "bypass": what the response cache did
    # A whole OpenAI body, as stored in the response cache.
    body: bytes | None = None
    # A streamed answer: OpenAI chunk objects; an exception raised from it ends the stream with that error.
    chunks: AsyncIterator[StreamChunk] | Iterable[StreamChunk] | None = None
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
    # The scheduler's on_step_end: events reach the event loop once per step (None: once per event).
    events: StepEvents | None = None

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
        grammar, tools_on = self._grammar(model.backend, request)
        generation = GenerationRequest(
            prompt_tokens=tuple(prompt_tokens),
            max_tokens=params.max_tokens,
            sampling=dataclasses.replace(params.sampling, grammar=grammar) if grammar else params.sampling,
            stop=params.stop,
            deadline=started + self.request_timeout_s,
            n=params.n,
            logprobs=params.logprobs,
        )
        answer = _AnswerParts(endpoint, params.n, params.logprobs is not None, tools_on)
        ticket, events = self._submit(model, generation)
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
                    completion, answer, ticket, events, params.include_usage, store_key, flight, key, clock, sha256
                ),
                on_close=on_close,
            )
        watcher = asyncio.ensure_future(self._report_gone(client_gone, events)) if client_gone else None
        try:
            await self._collect(ticket, events, clock, answer)
        except BaseException:
            self._resolve(key, flight, None)
            raise
        finally:
            if watcher:
                watcher.cancel()
        body = dumps(answer.body(completion))
        self._store_and_resolve(body, store_key, flight, key, sha256)
        return Answer(outcome, body=body)

    @staticmethod
    def _grammar(backend: LlamaBackend, request: InferenceRequest) -> tuple[str | None, bool]:
        """The GBNF grammar the answer is generated under, and whether the answer is parsed for tool calls:
        the tools' format when the model may call one, else the response format's JSON. A grammar llama.cpp
        cannot parse is a 400 before anything is queued."""
        if isinstance(request, ChatRequest) and request.tools and request.tool_choice.mode != "none":
            grammar = tools.tool_grammar(request.tools, request.tool_choice, request.parallel_tool_calls)
            param, tools_on = "tools", True
        else:
            rf = request.params.response_format
            if rf is None:
                return None, False
            if rf.type == "json_object" or rf.schema is None:
                grammar = structured.json_object_grammar()
            else:
                grammar = structured.schema_grammar(rf.schema)
            param, tools_on = "response_format", False
        if grammar is None:
            return None, tools_on
        try:
            backend.check_grammar(grammar)
        except EngineInputError as exc:
            raise RequestError(f"'{param}' gives a grammar this engine cannot use: {exc}", param) from None
        return grammar, tools_on

    @staticmethod
    def _prompt_tokens(backend: LlamaBackend, request: InferenceRequest) -> list[int]:
        if isinstance(request, ChatRequest):
            if request.uses_tools:
                # Tools, tool calls and results are written in the generic format (edge_agent.tools): neither
                # shipped model's template knows them.
                messages = tools.render_messages(request.messages, request.tools, request.tool_choice)
            else:
                messages = request.message_dicts()
            try:
                tokens = backend.chat_prompt_tokens(messages)
            except NoChatTemplateError as exc:
                raise RequestError(str(exc), "messages", code="no_chat_template") from None
            except (jinja2.TemplateError, ValueError) as exc:
                # Templates reject what their model was not trained on (e.g. roles that do not alternate) with
                # raise_exception(), which llama-cpp-python's formatter raises as a ValueError.
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
    def _submit(model: ServingModel, request: GenerationRequest) -> tuple[Ticket, asyncio.Queue]:
        """Queue a generation; its events arrive on the returned asyncio queue (the scheduler thread hands them
        to this event loop: a step's events at once when the model has :class:`StepEvents`)."""
        loop = asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()
        if model.events is not None:
            deliver = model.events.sink(loop, events)
        else:

            def deliver(event: GenerationEvent) -> None:
                loop.call_soon_threadsafe(events.put_nowait, event)

        ticket = model.scheduler.submit(request, deliver)
        return ticket, events

    @staticmethod
    async def _report_gone(client_gone: Callable[[], Awaitable[None]], events: asyncio.Queue) -> None:
        await client_gone()
        events.put_nowait(ErrorEvent(ClientGoneError("the client disconnected before the answer was complete")))

    async def _collect(
        self, ticket: Ticket, events: asyncio.Queue, clock: _TokenClock | None, answer: _AnswerParts
    ) -> None:
        """Gathers a whole answer, every choice of it, into ``answer``; ``clock`` None (the warm-up) is kept out
        of the metrics."""
        try:
            while True:
                ev = await events.get()
                if isinstance(ev, TokenEvent):
                    if not answer.started and clock is not None:
                        clock.first_token()
                    answer.add(ev)
                elif isinstance(ev, DoneEvent):
                    answer.finish(ev)
                    if answer.complete:
                        if clock is not None:
                            clock.done(answer.completion_tokens)
                        return
                else:
                    raise ev.error
        finally:
            ticket.cancel()  # a no-op once done; stops generation if the client went away

    async def _stream(
        self,
        completion: Completion,
        answer: _AnswerParts,
        ticket: Ticket,
        events: asyncio.Queue,
        include_usage: bool,
        store_key: str,
        flight,
        key: str,
        clock: _TokenClock,
        sha256: str,
    ) -> AsyncIterator[StreamChunk]:
        try:
            for index in range(answer.n):
                first = completion.first_chunk(index)
                if first:
                    yield first
            while True:
                ev = await events.get()
                if isinstance(ev, TokenEvent):
                    if not answer.started:
                        clock.first_token()
                    for chunk in answer.add(ev, completion):
                        yield chunk
                elif isinstance(ev, DoneEvent):
                    for chunk in answer.finish(ev, completion):
                        yield chunk
                    if answer.complete:
                        clock.done(answer.completion_tokens)
                        if include_usage:
                            yield completion.usage_chunk(*answer.usage)
                        return
                else:
                    raise ev.error
        finally:
            # Runs on completion, on error, and when the client disconnects
            # (the generator is closed): the sequence stops at the next step.
            ticket.cancel()
            if answer.complete:
                self._store_and_resolve(dumps(answer.body(completion)), store_key, flight, key, sha256)
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
        ticket, events = self._submit(model, request)
        await self._collect(ticket, events, None, _AnswerParts("completions", 1, False, False))
        if model is self.current:
            self.ready = True
            log.info("warm-up done: the model generated its first token; ready")


class StepEvents:
    """Hands the events of one scheduler step to the event loop in one wakeup, not one per token: ``sink`` is
    each request's sink (it only collects, on the scheduler thread), ``flush`` the scheduler's on_step_end. Both
    run on the scheduler thread, which emits every event and ends every turn with on_step_end (shutdown too), so
    nothing is left behind and nothing needs a lock."""

    def __init__(self) -> None:
        self._batch: list[tuple[asyncio.Queue, GenerationEvent]] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    def sink(self, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue) -> Callable[[GenerationEvent], None]:
        self._loop = loop  # one event loop serves every request

        def deliver(event: GenerationEvent) -> None:
            self._batch.append((queue, event))

        return deliver

    def flush(self) -> None:
        if not self._batch or self._loop is None:
            return
        batch, self._batch = self._batch, []
        # RuntimeError: the event loop has closed (the agent is stopping) and nobody is left to read them.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(_put_all, batch)


def _put_all(batch: list[tuple[asyncio.Queue, GenerationEvent]]) -> None:
    for queue, event in batch:
        queue.put_nowait(event)


class _ChoiceParts:
    """One choice while it is generated: its text, log-probabilities and, with tools, its output parser."""

    def __init__(self, index: int, with_logprobs: bool, tools_on: bool):
        self.index = index
        self.parts: list[str] = []
        self.logprobs: list[TokenLogprob] | None = [] if with_logprobs else None
        self.parser = tools.ToolOutputParser() if tools_on else None
        # Log-probabilities of text the parser holds back, sent with the next chunk of this choice.
        self.unsent_logprobs: list[TokenLogprob] = []
        self.offset = 0  # where the next token starts in the choice's text (completions' text_offset)
        self.done: DoneEvent | None = None


class _AnswerParts:
    """The choices of one answer as their events arrive, in any order across choices; builds the stream's chunks
    as it goes and the whole body once every choice is done. With tools, each choice's text is parsed into the
    message's content and its tool calls (edge_agent.tools), and a choice that called one and stopped on its
    own ends with finish_reason "tool_calls"."""

    def __init__(self, endpoint: str, n: int, with_logprobs: bool, tools_on: bool):
        self.endpoint = endpoint
        self.n = n
        self.tools_on = tools_on
        self.choices = [_ChoiceParts(i, with_logprobs, tools_on) for i in range(n)]
        self.started = False
        self._done = 0

    @property
    def complete(self) -> bool:
        return self._done == self.n

    @property
    def completion_tokens(self) -> int:
        return sum(c.done.completion_tokens for c in self.choices if c.done is not None)

    @property
    def usage(self) -> tuple[int, int, int]:
        """prompt, completion and cached tokens: the prompt once, the choices' tokens summed."""
        first = next((c.done for c in self.choices if c.done is not None), None)
        if first is None:
            return 0, 0, 0
        return first.prompt_tokens, self.completion_tokens, first.cached_tokens

    def add(self, ev: TokenEvent, completion: Completion | None = None) -> list[StreamChunk]:
        """Takes a token event; with ``completion`` (a stream), returns the chunks to send for it."""
        self.started = True
        choice = self.choices[ev.index]
        choice.parts.append(ev.text)
        if choice.logprobs is not None:
            choice.logprobs.extend(ev.logprobs)
        deltas = choice.parser.feed(ev.text) if choice.parser is not None else []
        if completion is None:
            return []
        choice.unsent_logprobs.extend(ev.logprobs)
        if choice.parser is None:
            return [self._text_chunk(completion, choice, ev.text)] if ev.text or choice.unsent_logprobs else []
        return self._parsed_chunks(completion, choice, deltas)

    def finish(self, ev: DoneEvent, completion: Completion | None = None) -> list[StreamChunk]:
        choice = self.choices[ev.index]
        if choice.done is None:
            self._done += 1
        choice.done = ev
        deltas = choice.parser.finish() if choice.parser is not None else []
        if completion is None:
            return []
        chunks = self._parsed_chunks(completion, choice, deltas)
        if choice.unsent_logprobs:
            chunks.append(self._text_chunk(completion, choice, ""))
        return [*chunks, completion.final_chunk(self._outcome(choice).finish_reason, choice.index)]

    def body(self, completion: Completion) -> OpenAIObject:
        return completion.body([self._outcome(c) for c in self.choices], *self.usage)

    def _outcome(self, choice: _ChoiceParts) -> ChoiceOutcome:
        assert choice.done is not None
        text: str | None = "".join(choice.parts)
        finish = choice.done.finish_reason
        calls: list[dict[str, Any]] = []
        if choice.parser is not None:
            # The parser's own calls: a stream's ids are the ones the client saw, and the stored body keeps them.
            calls = [call.as_dict() for call in choice.parser.calls]
            text = "".join(choice.parser.content)
            if calls and not text:
                text = None
            if calls and finish == "stop":
                finish = "tool_calls"
        return ChoiceOutcome(choice.index, text, finish, calls, choice.logprobs)

    def _text_chunk(self, completion: Completion, choice: _ChoiceParts, text: str) -> StreamChunk:
        entries, choice.unsent_logprobs = choice.unsent_logprobs, []
        if choice.logprobs is None:
            return completion.text_chunk_encoded(text, choice.index)
        if self.endpoint == "chat":
            logprobs = chat_logprobs(entries)
        else:
            logprobs = completion_logprobs(entries, choice.offset)
            choice.offset += sum(len(t) for t in logprobs["tokens"])
        return completion.text_chunk(text, choice.index, logprobs)

    def _parsed_chunks(
        self, completion: Completion, choice: _ChoiceParts, deltas: list[tools.Delta]
    ) -> list[StreamChunk]:
        chunks: list[StreamChunk] = []
        for delta in deltas:
            if delta.tool_call is not None:
                chunks.append(completion.tool_calls_chunk([delta.tool_call], choice.index))
            elif delta.content is not None:
                chunks.append(self._text_chunk(completion, choice, delta.content))
        return chunks


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
