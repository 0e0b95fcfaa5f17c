"""The upstream side of hybrid routing: OpenAI-compatible endpoints to burst to, in priority order.

    AgentError
    └── UpstreamError   every upstream tried failed, or none was allowed; the message names each

:class:`CircuitBreaker` is pure, with an injected clock. :class:`UpstreamPool` owns one shared
``httpx.AsyncClient``, a breaker and a health flag per upstream, the health-check tasks, and
:meth:`UpstreamPool.forward`, which tries upstreams in the order given, retries each within its
timeouts and the request's deadline, and proxies a streamed answer as a stream.

What counts against an upstream (a breaker failure, and retried): a connection error, a timeout,
HTTP 5xx and HTTP 429. Any other 4xx is the client's problem: it is returned as the answer.

What an upstream sends is read within caps (max_reply_bytes for a body, max_stream_bytes and max_event_bytes
for a stream, :class:`StreamBudget`): an answer past one is closed at once (its connection with it), counts as a
failure, and is not retried: the client gets 502 ``upstream_reply_too_large`` (a stream: that error as its last
event), and the agent goes on serving.

Usage: given ``on_usage``, :meth:`UpstreamPool.forward` reports each 2xx answer's tokens
(:class:`edge_agent.upstream_usage.ReplyTokens`) once: a body's at once, a stream's when it ends, however it ends.
A streamed request then asks the upstream for its usage (``stream_options.include_usage``, unless the upstream's
``stream_usage`` is false); the usage-only chunk reaches the client only when the client asked for it too.
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field

import httpx

from edge_agent.config import UpstreamConfig
from edge_agent.errors import AgentError
from edge_agent.upstream_usage import ReplyTokens, StreamTap, body_tokens

log = logging.getLogger(__name__)

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"
# A Retry-After longer than this moves on to the next upstream instead of waiting for the same one.
MAX_RETRY_WAIT_S = 1.0
# Wait before the n-th retry on the same upstream (no Retry-After given): RETRY_BACKOFF_S * 2**n.
RETRY_BACKOFF_S = 0.05
# One client for every upstream; connections are kept for reuse, as bursts come in bunches.
POOL_LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=20, keepalive_expiry=30.0)
_DONE = b"data: [DONE]\n\n"
# Told an answered request's tokens, with the config of the upstream that answered.
UsageCallback = Callable[[UpstreamConfig, ReplyTokens], None]


class UpstreamError(AgentError):
    """Every upstream tried failed; the message lists each: 'cloud-a: connection refused; cloud-b: HTTP 503'.
    ``failures`` maps each upstream's name to why it failed."""

    def __init__(self, message: str, failures: Mapping[str, str] | None = None):
        super().__init__(message)
        self.failures = dict(failures or {})


class CircuitBreaker:
    """closed -> (failure_threshold consecutive failures) -> open for open_s -> half_open: exactly one
    trial request allowed at a time; its success closes, its failure re-opens for open_s.

    Pure: time comes from ``clock``; the open -> half_open step is taken when the state is next read.
    A failure recorded while open (a health check, a request let through before the circuit opened)
    starts the open period again; a success recorded while open changes nothing."""

    def __init__(
        self, failure_threshold: int, open_s: float, clock: Callable[[], float] = time.monotonic, name: str = ""
    ):
        if failure_threshold < 1:
            raise ValueError(f"failure_threshold: expected 1 or more, got {failure_threshold}")
        self._threshold = failure_threshold
        self._open_s = open_s
        self._clock = clock
        self.name = name or "?"
        self._state = CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._trial = False

    @property
    def state(self) -> str:
        if self._state == OPEN and self._clock() >= self._opened_at + self._open_s:
            self._state, self._trial = HALF_OPEN, False
            log.warning(
                "upstream %s: circuit half-open after %gs open: one trial request allowed", self.name, self._open_s
            )
        return self._state

    @property
    def failures(self) -> int:
        """Consecutive failures recorded since the last success."""
        return self._failures

    def available(self) -> bool:
        """Would :meth:`allow` say yes now? Unlike it, takes nothing (no trial is used up)."""
        state = self.state
        return state == CLOSED or (state == HALF_OPEN and not self._trial)

    def allow(self) -> bool:
        """May a request go now? In half_open, True once until the trial's outcome is recorded."""
        state = self.state
        if state == CLOSED:
            return True
        if state == HALF_OPEN and not self._trial:
            self._trial = True
            return True
        return False

    def record_success(self, reason: str = "a request succeeded") -> None:
        state = self.state
        if state == OPEN:
            return
        self._failures = 0
        if state == HALF_OPEN:
            self._state, self._trial = CLOSED, False
            log.warning("upstream %s: circuit closed: %s", self.name, reason)

    def record_failure(self, reason: str = "a request failed") -> None:
        state = self.state
        self._failures += 1
        if state == HALF_OPEN:
            self._open(f"the trial failed: {reason}")
        elif state == OPEN:
            self._opened_at = self._clock()
            log.debug("upstream %s: circuit stays open for %gs: %s", self.name, self._open_s, reason)
        elif self._failures >= self._threshold:
            self._open(f"{self._failures} consecutive failures, the last: {reason}")

    def release(self) -> None:
        """The half-open trial ended with no verdict (the client left, the request's deadline passed):
        another request may be the trial."""
        self._trial = False

    def _open(self, reason: str) -> None:
        self._state, self._trial, self._opened_at = OPEN, False, self._clock()
        log.warning("upstream %s: circuit open for %gs: %s", self.name, self._open_s, reason)


@dataclass
class UpstreamReply:
    """An upstream's answer. Exactly one of ``body`` (non-streamed answers, and every error answer) and
    ``stream`` (a streamed 2xx SSE answer: the upstream's bytes as they come) is set. Whoever takes a
    reply with a stream iterates it to its end or calls :meth:`aclose`, which closes the upstream response."""

    upstream: str
    status: int
    body: bytes | None
    stream: AsyncIterator[bytes] | None
    content_type: str

    async def aclose(self) -> None:
        if self.stream is not None:
            await self.stream.aclose()  # type: ignore[attr-defined]


def upstream_model(config: UpstreamConfig, requested: str) -> str:
    """The model name asked of this upstream for a request naming ``requested``: its ``models`` entry for that
    name when it lists it (renamed or not), else its ``model`` (the box's own model overflowing), else as asked."""
    return config.model_map.get(requested) or config.model or requested


def upstream_body(body: dict, model: str) -> dict:
    """A copy of the (already allow-listed) request body for an upstream, asking it for ``model``."""
    return {**body, "model": model}


def error_json(message: str, type: str, code: str) -> bytes:
    """OpenAI's error object, as bytes."""
    error = {"error": {"message": message, "type": type, "param": None, "code": code}}
    return json.dumps(error, separators=(",", ":")).encode()


def sse_error(message: str, type: str, code: str) -> bytes:
    """The SSE events that end a stream which broke after its first byte: an OpenAI error, then [DONE]."""
    return b"data: " + error_json(message, type, code) + b"\n\n" + _DONE


TOO_LARGE = "upstream_reply_too_large"


class StreamBudget:
    """A streamed (SSE) answer held to ``max_total`` bytes in all and ``max_event`` bytes per event, and relayed in
    whole lines: :meth:`feed` returns the complete lines received so far (b"" while a line is still coming) and
    keeps the unfinished one, so a cut stream never relays half a line before its error event. Past a cap it
    returns None and ``exceeded`` says which. Pure: no I/O, no clock."""

    def __init__(self, max_total: int, max_event: int):
        self._max_total = max_total
        self._max_event = max_event
        self.total = 0
        self.exceeded = ""
        self._event = 0  # bytes of the event under way, in complete lines
        self._held: list[bytes] = []  # the unfinished line
        self._held_bytes = 0

    def feed(self, chunk: bytes) -> bytes | None:
        self.total += len(chunk)
        if self.total > self._max_total:
            return self._exceed(f"the streamed answer passed {self._max_total} bytes (max_stream_bytes)")
        cut = chunk.rfind(b"\n") + 1
        if not cut:
            self._held.append(chunk)
            self._held_bytes += len(chunk)
            return self._check_event()
        ready = b"".join([*self._held, chunk[:cut]])
        rest = chunk[cut:]
        self._held, self._held_bytes = ([rest] if rest else []), len(rest)
        for line in ready.split(b"\n")[:-1]:
            if line in (b"", b"\r"):
                self._event = 0  # a blank line ends an event
            else:
                self._event += len(line) + 1
        return ready if self._check_event() is not None else None

    def rest(self) -> bytes:
        """What is held at the end of the stream (a last line with no newline), to relay as it is."""
        held, self._held, self._held_bytes = b"".join(self._held), [], 0
        return held

    def _check_event(self) -> bytes | None:
        if self._event + self._held_bytes > self._max_event:
            return self._exceed(f"one event of the stream passed {self._max_event} bytes (max_event_bytes)")
        return b""

    def _exceed(self, why: str) -> bytes | None:
        self.exceeded = why
        return None


class _TooLarge(AgentError):
    """An answer past its cap (internal: it becomes a 502 reply or a stream's error event, never escapes)."""


@dataclass
class _Upstream:
    config: UpstreamConfig
    breaker: CircuitBreaker
    api_key: str = ""
    # None: not checked yet; False: the last health check failed.
    healthy: bool | None = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class _Failure:
    reason: str
    # Seconds the upstream asked us to wait (Retry-After), when it said.
    retry_after: float | None = None
    # False: not the upstream's fault (the request's deadline passed); nothing is recorded on its breaker.
    counts: bool = True


class UpstreamPool:
    """The configured upstreams, in priority order, each with a circuit breaker and a health flag."""

    def __init__(
        self,
        configs: Sequence[UpstreamConfig],
        clock: Callable[[], float] = time.monotonic,
        environ: Mapping[str, str] = os.environ,
    ):
        self._upstreams: dict[str, _Upstream] = {}
        for c in configs:
            if c.name in self._upstreams:
                raise ValueError(f"upstream {c.name!r} is configured twice")
            key = environ.get(c.api_key_env, "") if c.api_key_env else ""
            if c.api_key_env and not key:
                log.warning(
                    "upstream %s: environment variable %s is not set; requests go without a key", c.name, c.api_key_env
                )
            headers = {"Authorization": f"Bearer {key}"} if key else {}
            breaker = CircuitBreaker(c.failure_threshold, c.open_s, clock, name=c.name)
            self._upstreams[c.name] = _Upstream(c, breaker, key, headers=headers)
        self._client: httpx.AsyncClient | None = None
        self._health_tasks: list[asyncio.Task] = []

    def names(self) -> list[str]:
        return list(self._upstreams)

    def candidates(self, jurisdictions: tuple[str, ...], listed_model: str | None = None) -> list[str]:
        """Names, in priority order, an answer may come from for a class with these allowed jurisdictions
        ('*' = any; () = none): jurisdiction allowed, circuit allows, last health check not failed; and with
        ``listed_model``, only the upstreams whose ``models`` list it."""
        any_place = "*" in jurisdictions
        return [
            name
            for name, up in self._upstreams.items()
            if (any_place or up.config.jurisdiction in jurisdictions)
            and (listed_model is None or listed_model in up.config.model_map)
            and up.healthy is not False
            and up.breaker.available()
        ]

    def listed_models(self) -> dict[str, tuple[str, ...]]:
        """Every model name an upstream lists -> the upstreams listing it, in priority order."""
        listed: dict[str, list[str]] = {}
        for name, up in self._upstreams.items():
            for model in up.config.model_map:
                listed.setdefault(model, []).append(name)
        return {model: tuple(names) for model, names in listed.items()}

    def states(self) -> dict[str, str]:
        return {name: up.breaker.state for name, up in self._upstreams.items()}

    def health(self) -> dict[str, bool | None]:
        """name -> the last health check's verdict (None: not checked yet)."""
        return {name: up.healthy for name, up in self._upstreams.items()}

    async def start(self) -> None:
        """Start checking each upstream's health (GET {url}/models) now and every health_interval_s."""
        if not self._health_tasks:
            self._health_tasks = [
                asyncio.create_task(self._health_loop(up), name=f"upstream-health-{name}")
                for name, up in self._upstreams.items()
            ]

    async def aclose(self) -> None:
        tasks, self._health_tasks = self._health_tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()

    async def check_health(self, name: str) -> bool:
        """One health check of one upstream; what :meth:`start` runs every health_interval_s."""
        up = self._get(name)
        c = up.config
        limit = min(c.timeout_s, c.health_interval_s)
        timeout = httpx.Timeout(limit, connect=min(c.connect_timeout_s, limit))
        client = self._http()
        request = client.build_request("GET", _url(c, "/models"), headers=up.headers, timeout=timeout)

        async def get() -> int:
            response = await client.send(request, stream=True)
            try:
                await read_capped(response, c.max_reply_bytes)
            finally:
                await response.aclose()
            return response.status_code

        try:
            status = await asyncio.wait_for(get(), limit)
            reason = f"HTTP {status}" if _counts_against(status) else ""
        except asyncio.TimeoutError:
            reason = f"no answer within {limit:g}s"
        except _TooLarge as exc:
            reason = str(exc)
        except httpx.HTTPError as exc:
            reason = _describe(exc)
        if reason:
            if up.healthy is not False:
                log.warning("upstream %s: health check failed: %s", name, reason)
            up.healthy = False
            up.breaker.record_failure(f"health check: {reason}")
            return False
        if up.healthy is False:
            log.info("upstream %s: health check succeeded again", name)
        up.healthy = True
        if up.breaker.state == HALF_OPEN:
            up.breaker.record_success("a health check succeeded")
        return True

    async def forward(
        self,
        names: Sequence[str],
        path: str,
        body: dict,
        stream: bool,
        deadline: float,
        on_usage: UsageCallback | None = None,
    ) -> UpstreamReply:
        """POST {url}{path} with JSON ``body`` to the named upstreams in order until one answers.

        The body's model is renamed for each upstream (:func:`upstream_model`), and its ``stream`` set to
        ``stream``. Per upstream up to 1+retries attempts on a connection error, a timeout
        (connect_timeout_s to connect, timeout_s to the response headers, or to the whole answer when
        not streamed; never past ``deadline``, a time.monotonic() value), HTTP 5xx or 429; each is
        recorded on its breaker, and an upstream whose breaker does not allow is skipped. Any other
        4xx is returned as the reply. A streamed reply's ``stream`` yields the upstream's SSE bytes as
        they arrive; a failure after the first byte ends it with an SSE error event and [DONE].
        ``on_usage`` is told the tokens of a 2xx answer (see the module's docstring).
        Raises UpstreamError when every upstream failed or none was allowed."""
        failures: dict[str, str] = {}
        for name in names:
            outcome = await self._try(self._get(name), path, body, stream, deadline, on_usage)
            if isinstance(outcome, UpstreamReply):
                return outcome
            failures[name] = outcome
        if not failures:
            raise UpstreamError("no upstream to try")
        raise UpstreamError("; ".join(f"{n}: {r}" for n, r in failures.items()), failures)

    async def _try(
        self, up: _Upstream, path: str, body: dict, stream: bool, deadline: float, on_usage: UsageCallback | None
    ) -> UpstreamReply | str:
        """The reply, or why this upstream gave none."""
        c, breaker = up.config, up.breaker
        payload = upstream_body(body, upstream_model(c, body["model"]))
        if bool(payload.get("stream", False)) != stream:
            payload["stream"] = stream
        usage = None
        if on_usage is not None:
            client_asked = stream and bool((payload.get("stream_options") or {}).get("include_usage"))
            if stream and c.stream_usage:
                payload["stream_options"] = {**(payload.get("stream_options") or {}), "include_usage": True}
            usage = _UsageReport(c, on_usage, client_asked)
        headers = dict(up.headers, Accept="text/event-stream" if stream else "application/json")
        reason = "circuit open"
        for attempt in range(1 + c.retries):
            if time.monotonic() >= deadline:
                return "deadline passed" if attempt == 0 else reason
            if not breaker.allow():
                return reason  # "circuit open", or why the attempt that opened it failed
            try:
                result = await self._attempt(up, _url(c, path), payload, headers, stream, deadline, usage)
            except BaseException:
                breaker.release()  # cancelled (the client left): no verdict on the upstream
                raise
            if isinstance(result, UpstreamReply):
                return result
            reason = result.reason
            if not result.counts:
                breaker.release()
                return reason
            breaker.record_failure(reason)
            log.info("upstream %s: attempt %d of %d failed: %s", c.name, attempt + 1, 1 + c.retries, reason)
            if attempt == c.retries:
                break
            wait = result.retry_after if result.retry_after is not None else RETRY_BACKOFF_S * 2**attempt
            if wait > MAX_RETRY_WAIT_S or time.monotonic() + wait >= deadline:
                break
            await asyncio.sleep(wait)
        return reason

    async def _attempt(
        self,
        up: _Upstream,
        url: str,
        payload: dict,
        headers: dict[str, str],
        stream: bool,
        deadline: float,
        usage: _UsageReport | None = None,
    ) -> UpstreamReply | _Failure:
        c = up.config
        remaining = deadline - time.monotonic()
        limit = min(c.timeout_s, remaining)
        timeout = httpx.Timeout(limit, connect=min(c.connect_timeout_s, limit))
        client = self._http()
        request = client.build_request("POST", url, json=payload, headers=headers, timeout=timeout)
        opened: list[httpx.Response] = []

        async def send() -> tuple[httpx.Response, bytes | None]:
            response = await client.send(request, stream=True)
            opened.append(response)
            if stream and _is_event_stream(response):
                return response, None
            return response, await read_capped(response, c.max_reply_bytes)

        try:
            response, body = await asyncio.wait_for(send(), limit)
        except _TooLarge as exc:
            await _close_all(opened)  # unread: the connection is closed, not kept for reuse
            up.breaker.record_failure(str(exc))
            log.warning("upstream %s: %s; answered 502 %s", c.name, exc, TOO_LARGE)
            return too_large_reply(c.name, str(exc))
        except asyncio.TimeoutError:
            await _close_all(opened)
            if _deadline_passed(deadline):
                return _Failure("deadline passed", counts=False)
            what = "response headers" if stream else "answer"
            return _Failure(f"timeout: no {what} within {c.timeout_s:g}s")
        except httpx.HTTPError as exc:
            await _close_all(opened)
            if isinstance(exc, httpx.TimeoutException) and _deadline_passed(deadline):
                return _Failure("deadline passed", counts=False)
            return _Failure(_describe(exc))
        except BaseException:
            await _close_all(opened)
            raise
        status = response.status_code
        if _counts_against(status):
            await response.aclose()
            return _Failure(f"HTTP {status}", _retry_after(response))
        content_type = response.headers.get("content-type", "")
        if body is not None:
            up.breaker.record_success()
            if usage is not None and 200 <= status < 300:
                usage.report(body_tokens(body))
            return UpstreamReply(c.name, status, body, None, content_type)
        # A streamed answer: its outcome is recorded when the stream ends.
        budget = StreamBudget(c.max_stream_bytes, c.max_event_bytes)
        events = _ReplyStream(c.name, response, up.breaker, c.timeout_s, deadline, budget, usage)
        return UpstreamReply(c.name, status, None, events, content_type)

    def _get(self, name: str) -> _Upstream:
        try:
            return self._upstreams[name]
        except KeyError:
            raise ValueError(f"no upstream named {name!r} (configured: {', '.join(self._upstreams)})") from None

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(limits=POOL_LIMITS, follow_redirects=False)
        return self._client

    async def _health_loop(self, up: _Upstream) -> None:
        while True:
            try:
                await self.check_health(up.config.name)
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug must not end the checks for good
                log.exception("upstream %s: health check crashed", up.config.name)
            await asyncio.sleep(up.config.health_interval_s)


class _UsageReport:
    """Reports one answer's tokens to the caller's callback, once; a failing callback is logged, never raised
    into the answer."""

    def __init__(self, config: UpstreamConfig, callback: UsageCallback, client_asked: bool):
        self.config = config
        self._callback = callback
        self.client_asked = client_asked
        self._done = False

    def report(self, tokens: ReplyTokens) -> None:
        if self._done:
            return
        self._done = True
        try:
            self._callback(self.config, tokens)
        except Exception:  # counting must never break an answer
            log.exception("upstream %s: counting the answer's usage failed", self.config.name)


class _ReplyStream:
    """An upstream's streamed answer, relayed chunk by chunk as it arrives.

    Ends cleanly: a success on the breaker. Breaks (a transport error, or nothing for timeout_s): the
    stream yields an SSE error event and [DONE], and it is a failure. The request's deadline passing, a
    cancellation or :meth:`aclose` (the client left) close the upstream response with no verdict."""

    def __init__(
        self,
        name: str,
        response: httpx.Response,
        breaker: CircuitBreaker,
        timeout_s: float,
        deadline: float,
        budget: StreamBudget,
        usage: _UsageReport | None = None,
    ):
        self._name = name
        self._usage = usage
        self._tap = StreamTap(relay_usage=usage.client_asked) if usage is not None else None
        self._response = response
        self._chunks = response.aiter_bytes()
        self._breaker = breaker
        self._timeout_s = timeout_s
        self._deadline = deadline
        self._budget = budget
        self._tail: bytes | None = None
        self._ended = False

    def __aiter__(self) -> _ReplyStream:
        return self

    async def __anext__(self) -> bytes:
        while not self._ended:
            try:
                chunk = await self._next_chunk()
            except BaseException:
                await self._end()
                self._breaker.release()
                raise
            if chunk is None:
                last = self._tapped(self._budget.rest())
                await self._end()
                self._breaker.record_success()
                if last:
                    return last
            elif chunk:
                lines = self._budget.feed(chunk)
                if lines is None:
                    await self._too_large()
                elif lines:
                    lines = self._tapped(lines)
                    if lines:
                        return lines
        if self._tail is not None:
            tail, self._tail = self._tail, None
            return tail
        raise StopAsyncIteration

    async def _next_chunk(self) -> bytes | None:
        """The next chunk; None at the end; b"" once the stream broke (its tail is then set)."""
        remaining = self._deadline - time.monotonic()
        try:
            if remaining <= 0:
                raise asyncio.TimeoutError
            if remaining < self._timeout_s:
                return await asyncio.wait_for(self._read(), remaining)
            return await self._read()  # the response's read timeout (timeout_s) catches a stall
        except asyncio.TimeoutError:
            await self._end()
            self._breaker.release()
            self._tail = sse_error(
                f"upstream {self._name}: the request's deadline passed mid-stream", "timeout_error", "deadline_exceeded"
            )
        except httpx.HTTPError as exc:
            reason = (
                f"nothing for {self._timeout_s:g}s mid-stream"
                if isinstance(exc, httpx.TimeoutException)
                else f"broke mid-stream: {_describe(exc)}"
            )
            await self._end()
            self._breaker.record_failure(reason)
            log.warning("upstream %s: the stream %s", self._name, reason)
            self._tail = sse_error(f"upstream {self._name}: {reason}", "upstream_error", "upstream_failed")
        return b""

    async def _read(self) -> bytes | None:
        try:
            return await self._chunks.__anext__()
        except StopAsyncIteration:
            return None

    async def _too_large(self) -> None:
        """Past a cap: close the upstream response (and its connection) now; the stream ends with the error."""
        reason = self._budget.exceeded
        await self._end()
        self._breaker.record_failure(reason)
        log.warning("upstream %s: %s; the stream ends with %s", self._name, reason, TOO_LARGE)
        self._tail = sse_error(
            f"upstream {self._name}: {reason}; the rest was not relayed", "upstream_error", TOO_LARGE
        )

    async def aclose(self) -> None:
        """Close the upstream response now (the client left); no verdict on the upstream."""
        self._tail = None
        if not self._ended:
            await self._end()
            self._breaker.release()

    def _tapped(self, lines: bytes) -> bytes:
        return self._tap.lines(lines) if self._tap is not None and lines else lines

    async def _end(self) -> None:
        if not self._ended:
            self._ended = True
            if self._usage is not None and self._tap is not None:
                # However the stream ended (done, broken, cut, the client gone): what was received was answered.
                self._usage.report(self._tap.tokens())
            await self._response.aclose()


def _url(c: UpstreamConfig, path: str) -> str:
    return c.url.rstrip("/") + "/" + path.lstrip("/")


def _deadline_passed(deadline: float) -> bool:
    # A timer set for the deadline may fire a hair before it on the monotonic clock.
    return time.monotonic() >= deadline - 0.01


def _counts_against(status: int) -> bool:
    return status == 429 or status >= 500


def _is_event_stream(response: httpx.Response) -> bool:
    return 200 <= response.status_code < 300 and response.headers.get("content-type", "").startswith(
        "text/event-stream"
    )


def _retry_after(response: httpx.Response) -> float | None:
    try:
        value = float(response.headers.get("retry-after", ""))
    except ValueError:
        return None  # absent, or an HTTP date: we do not wait that long anyway
    return max(value, 0.0)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, httpx.ConnectTimeout):
        return "connect timeout"
    if isinstance(exc, httpx.TimeoutException):
        return f"timeout ({type(exc).__name__})"
    if isinstance(exc, httpx.ConnectError):
        cause: BaseException | None = exc
        while cause is not None:
            if isinstance(cause, ConnectionRefusedError) or getattr(cause, "errno", None) == errno.ECONNREFUSED:
                return "connection refused"
            cause = cause.__cause__ or cause.__context__
        return f"connect error: {exc}"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


async def read_capped(response: httpx.Response, max_bytes: int) -> bytes:
    """The response's body, or _TooLarge as soon as it (its Content-Length, or the bytes read) passes max_bytes."""
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise _TooLarge(f"the answer is {int(declared)} bytes, more than max_reply_bytes ({max_bytes})")
    parts: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > max_bytes:
            raise _TooLarge(f"the answer passed max_reply_bytes ({max_bytes} bytes)")
        parts.append(chunk)
    return b"".join(parts)


def too_large_reply(name: str, why: str) -> UpstreamReply:
    """The reply the client gets for an answer past its cap: 502, OpenAI's error object."""
    message = f"upstream {name}: {why}; it was not relayed and the connection was closed"
    return UpstreamReply(name, 502, error_json(message, "upstream_error", TOO_LARGE), None, "application/json")


async def _close_all(responses: list[httpx.Response]) -> None:
    for response in responses:
        await response.aclose()
