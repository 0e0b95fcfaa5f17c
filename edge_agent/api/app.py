"""The HTTP API: OpenAI-compatible endpoints, health and metrics (Starlette).

Handlers only read the body, call the parser (typed requests) and the gateway
or service, and shape the response: headers, and SSE framing of streamed
answers. Every error becomes a status and OpenAI's error object in one place
(:mod:`edge_agent.api.error_map`): what a client can cause is a 4xx; anything
else a 500 with no traceback in the body.
"""

from __future__ import annotations

import inspect
import json
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Generator, Iterable
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp

from edge_agent.access import Authenticator, AuthError, Caller, retry_after_seconds
from edge_agent.api.error_map import error_for, http_error_for
from edge_agent.api.responses import DONE, error_body, sse
from edge_agent.api.schema import ALL_FEATURES, Limits, parse_chat, parse_completion, parse_embeddings
from edge_agent.client_request import RequestError
from edge_agent.gateway import Gateway, RouteInfo
from edge_agent.openai_objects import EncodedChunk, dumps
from edge_agent.scheduler import OverloadedError
from edge_agent.service import Answer, InferenceService, StreamChunk

log = logging.getLogger(__name__)

_JSON = "application/json"
_KNOWN_PATHS = frozenset(
    {"/v1/completions", "/v1/chat/completions", "/v1/embeddings", "/v1/models", "/healthz", "/readyz", "/metrics"}
)
# Requests that count toward the heartbeat's inference figures (not probes or scrapes).
_INFERENCE_PATHS = frozenset({"/v1/completions", "/v1/chat/completions", "/v1/embeddings"})


def create_app(
    service: InferenceService, gateway: Gateway, authenticator: Authenticator, max_body_bytes: int, retry_after_s: int
) -> ASGIApp:
    def limits() -> Limits:
        # Read per request: the served model can change (a fleet rollout switches it live).
        backend = service.backend
        return Limits(
            n_ctx=backend.n_ctx,
            model_ids=(service.model_id,),
            upstream_model_ids=gateway.upstream_model_ids,
            vocab_size=backend.vocab_size,
            # n choices run in n sequences at once: no more than the engine has.
            n_max=backend.n_slots,
            features=ALL_FEATURES,
        )

    async def read_json(request: Request) -> Any:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > max_body_bytes:
            raise _too_large(int(declared), max_body_bytes)
        chunks, size = [], 0
        try:
            async for chunk in request.stream():
                size += len(chunk)
                if size > max_body_bytes:
                    raise _too_large(size, max_body_bytes)
                chunks.append(chunk)
        except ClientDisconnect:
            raise RequestError(
                "the client closed the connection before sending the whole body", None, "client_disconnect"
            ) from None
        try:
            return json.loads(b"".join(chunks))
        except (ValueError, RecursionError) as exc:
            # ValueError covers malformed JSON, bad UTF-8 and integers past
            # Python's digit limit; RecursionError, absurdly deep nesting.
            raise RequestError(f"the request body is not valid JSON: {exc}", None, code="invalid_json") from None

    async def generation(request: Request, endpoint: str) -> Response:
        started = time.monotonic()
        body = await read_json(request)
        parsed = (parse_chat if endpoint == "chat" else parse_completion)(body, limits())

        async def client_gone() -> None:
            # The body has been read: the next message is the disconnect.
            while (await request.receive())["type"] != "http.disconnect":
                pass

        answer = await gateway.generate(
            parsed,
            _caller(request),
            request.headers.get("cache-control", ""),
            started,
            _route_info(request),
            client_gone=None if parsed.params.stream else client_gone,
        )
        return _respond(answer)

    async def completions(request: Request) -> Response:
        return await generation(request, "completions")

    async def chat_completions(request: Request) -> Response:
        return await generation(request, "chat")

    async def embeddings(request: Request) -> Response:
        parsed = parse_embeddings(await read_json(request), limits())
        await gateway.check_embeddings(parsed, _caller(request), _route_info(request))
        return Response(dumps(await service.embed(parsed)), media_type=_JSON)

    async def models(request: Request) -> Response:
        artifact = service.backend.artifact
        served = {
            "id": service.model_id,
            "object": "model",
            "created": int(artifact.path.stat().st_mtime),
            "owned_by": "edgefleet",
            "sha256": artifact.sha256,
            "engine": service.backend.engine_name,
            "context_length": service.backend.n_ctx,
            "chat_template": service.backend.has_chat_template,
        }
        # The names [[upstreams]] list: answered by those upstreams only, for data classes that may go there.
        listed = [
            {"id": name, "object": "model", "created": 0, "owned_by": "upstream", "upstreams": list(upstreams)}
            for name, upstreams in gateway.upstream_models.items()
            if name != service.model_id
        ]
        return Response(dumps({"object": "list", "data": [served, *listed]}), media_type=_JSON)

    async def healthz(request: Request) -> Response:
        return Response(dumps({"status": "ok"}), media_type=_JSON)

    async def readyz(request: Request) -> Response:
        if service.ready:
            return Response(dumps({"status": "ready", "model": service.model_id}), media_type=_JSON)
        return Response(dumps({"status": "warming up", "model": service.model_id}), status_code=503, media_type=_JSON)

    async def metrics(request: Request) -> Response:
        return Response(service.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    async def on_error(request: Request, exc: Exception) -> Response:
        if isinstance(exc, HTTPException):
            body = http_error_for(exc.status_code, exc.detail, request.method, request.url.path)
            return _error(exc.status_code, body)
        if isinstance(exc, OverloadedError):
            service.metrics.overloaded.inc()
        status, body = error_for(exc)
        return _error(status, body, {"Retry-After": str(retry_after_s)} if status == 429 else None)

    routes = [
        Route("/v1/completions", completions, methods=["POST"]),
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
        Route("/v1/embeddings", embeddings, methods=["POST"]),
        Route("/v1/models", models, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
    ]
    app = Starlette(
        routes=routes,
        # One handler; the classes are listed because Starlette answers those it expects (4xx) and, for the
        # Exception entry, answers and then re-raises, so the server logs what nobody foresaw.
        exception_handlers={
            RequestError: on_error,
            OverloadedError: on_error,
            HTTPException: on_error,
            Exception: on_error,
        },
    )
    return _RequestMetrics(_Access(app, authenticator, service), service)


def _caller(request: Request) -> Caller:
    return request.scope["state"]["caller"]


def _route_info(request: Request) -> RouteInfo:
    return request.scope["state"]["route"]


class _Access:
    """API keys on /v1/*: who is calling (401 without a valid key, when keys exist) and their rate (429)."""

    def __init__(self, app, authenticator: Authenticator, service: InferenceService):
        self.app = app
        self.authenticator = authenticator
        self.service = service

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not scope["path"].startswith("/v1/"):
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        try:
            caller = self.authenticator.authenticate(headers.get(b"authorization", b"").decode("latin-1") or None)
        except AuthError as exc:
            status, body = error_for(exc)
            response = _error(status, body, {"WWW-Authenticate": "Bearer"})
            return await response(scope, receive, send)
        wait_s = self.authenticator.check_rate(caller)
        if wait_s is not None:
            self.service.metrics.rate_limited.inc()
            retry_after = retry_after_seconds(wait_s)
            response = _error(
                429,
                error_body(
                    f"tenant '{caller.tenant}' is over its API key's rate limit; retry in {retry_after} s",
                    "rate_limit_error",
                    None,
                    "rate_limit_exceeded",
                ),
                {"Retry-After": str(retry_after)},
            )
            return await response(scope, receive, send)
        scope["state"]["caller"] = caller
        await self.app(scope, receive, send)


class _RequestMetrics:
    """Counts every request by endpoint, route and status, times it to the last byte, and puts the routing
    headers (X-Edgefleet-Route, X-Edgefleet-Data-Class) on every inference response, errors included."""

    def __init__(self, app, service: InferenceService):
        self.app = app
        self.service = service

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.monotonic()
        status = [500]
        info = RouteInfo()
        scope.setdefault("state", {})["route"] = info
        inference = scope["path"] in _INFERENCE_PATHS

        async def send_with_status(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                if inference:
                    extra = [(b"x-edgefleet-route", info.route.encode())]
                    if info.data_class:
                        extra.append((b"x-edgefleet-data-class", info.data_class.encode()))
                    message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            path = scope["path"] if scope["path"] in _KNOWN_PATHS else "other"
            m = self.service.metrics
            m.requests.labels(path, info.route.split(":")[0], str(status[0])).inc()
            elapsed = time.monotonic() - started
            m.request_duration.labels(path).observe(elapsed)
            if path in _INFERENCE_PATHS:
                m.observe_inference(elapsed, error=status[0] >= 500 or status[0] == 429)


class _EventStream(StreamingResponse):
    """SSE that always runs the answer's cleanup, whether it finished, failed or was never started."""

    def __init__(self, events: AsyncIterator[bytes], on_close: Callable[[], Any] | None, headers: dict[str, str]):
        super().__init__(events, media_type="text/event-stream", headers=headers)
        self._on_close = on_close

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            if self._on_close:
                closing = self._on_close()
                if inspect.isawaitable(closing):  # an upstream's stream closes its connection
                    await closing


def _respond(answer: Answer) -> Response:
    headers = {"X-Cache": answer.cache}
    reply = answer.upstream
    if reply is not None:
        # An upstream's reply keeps its status and type; its stream comes framed already.
        if reply.stream is not None:
            headers["Cache-Control"] = "no-cache"
            return _EventStream(reply.stream, reply.aclose, headers)
        return Response(reply.body, status_code=reply.status, media_type=reply.content_type or _JSON, headers=headers)
    if answer.chunks is not None:
        headers["Cache-Control"] = "no-cache"
        return _EventStream(_sse_events(answer.chunks), answer.on_close, headers)
    return Response(answer.body, media_type=_JSON, headers=headers)


async def _sse_events(chunks: AsyncIterator[StreamChunk] | Iterable[StreamChunk]) -> AsyncIterator[bytes]:
    """Chunk objects (or chunks the service encoded already) as server-sent events, then ``[DONE]``; an error
    raised by the stream becomes an error event before ``[DONE]``, as a stream has sent its status by then."""
    try:
        try:
            if isinstance(chunks, AsyncIterator):
                async for chunk in chunks:
                    yield _event(chunk)
            else:  # a cached answer's replay: already in memory
                for chunk in chunks:
                    yield _event(chunk)
        except Exception as exc:  # noqa: BLE001 - every failure is reported to the client as an event
            yield sse(error_for(exc)[1])
        yield DONE
    finally:
        # Closes the answer's own generator at once (not when it is collected), so its cleanup runs now.
        if isinstance(chunks, AsyncGenerator):
            await chunks.aclose()
        elif isinstance(chunks, Generator):
            chunks.close()


def _event(chunk: StreamChunk) -> bytes:
    return b"data: " + chunk + b"\n\n" if isinstance(chunk, EncodedChunk) else sse(chunk)


def _error(status: int, body: dict, headers: dict | None = None) -> Response:
    return Response(dumps(body), status_code=status, media_type=_JSON, headers=headers)


def _too_large(size: int, limit: int) -> RequestError:
    return RequestError(
        f"the request body is {size} bytes or more; the limit is {limit} bytes (server.max_body_bytes)",
        None,
        code="request_too_large",
        status=413,
    )
