"""The data-residency gateway in front of the inference service: classify, check the caller's key, answer
locally, and only when the box cannot and the data class allows it, from an upstream.

    every model-visible string -> data class -> key's max class -> local (cache, queue) -> upstream | refusal
                                                                       -> audit record, metrics, headers

What may leave: a body built from an allow-list (:func:`upstream_request`), every string in it judged with the
prompt (:func:`request_texts`); a prompt of token ids never; a model name only when the box serves it (its
overflow) or an upstream lists it (``[[upstreams]] models``). The decisions are pure
(edge_agent.policy.routing and the two functions at the end); this module does the I/O around them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from edge_agent.access import Caller, exceeds
from edge_agent.client_request import (
    ChatMessage,
    ChatRequest,
    EmbeddingRequest,
    InferenceRequest,
    RequestError,
    ResponseFormat,
    ToolFunction,
    model_not_found,
)
from edge_agent.config import DataClassRule, UpstreamConfig
from edge_agent.errors import AgentError
from edge_agent.metrics import AgentMetrics
from edge_agent.policy.classify import PromptClassifier
from edge_agent.policy.routing import (
    LOCAL,
    NOT_READY,
    QUEUE_FULL,
    REFUSED,
    TOKEN_PROMPT,
    UNKNOWN_MODEL,
    Classification,
    DataClassPolicy,
    decide_route,
    problem_words,
)
from edge_agent.routing_audit import RoutingAudit, RoutingRecord
from edge_agent.scheduler import OverloadedError
from edge_agent.service import Answer, InferenceService
from edge_agent.upstream import UpstreamError, UpstreamPool
from edge_agent.upstream_usage import ReplyTokens, usage_entry

log = logging.getLogger(__name__)

_PATHS = {"chat": "/chat/completions", "completions": "/completions"}
# Up to this much text classification stays inline: ordinary prompts cost well under a millisecond, and the
# worst text found (thousands of digit groups) a few milliseconds; longer text goes to a thread.
_CLASSIFY_INLINE_CHARS = 8_192


@dataclass
class RouteInfo:
    """What the gateway decided for one request; the HTTP layer turns it into headers and metric labels."""

    route: str = LOCAL
    data_class: str = ""


class RoutingRefused(RequestError):
    """The request may not be answered here nor anywhere it may go (status and message say why)."""


def token_prompt_refused(model: str) -> RoutingRefused:
    return RoutingRefused(
        f"'prompt' is given as token ids, and token ids never leave this box (they belong to its own tokenizer); "
        f"the model '{model}' is answered only by an upstream: send the prompt as text",
        "prompt",
        code="token_prompt_not_forwarded",
        status=400,
    )


class Gateway:
    def __init__(
        self,
        service: InferenceService,
        classifier: PromptClassifier,
        metrics: AgentMetrics,
        pool: UpstreamPool | None = None,
        audit: RoutingAudit | None = None,
    ):
        self.service = service
        # The classifier carries its policy: one attribute, so a reload (reload_policy) swaps both at once.
        self.classifier = classifier
        self.metrics = metrics
        self.pool = pool
        self.audit = audit
        # [[upstreams]] models: the names a request may ask for although the box does not serve them.
        self.upstream_models = pool.listed_models() if pool else {}

    @property
    def policy(self) -> DataClassPolicy:
        return self.classifier.policy

    def reload_policy(self, classifier: PromptClassifier) -> None:
        """From now on new requests use this classifier and its policy; requests in flight finish with theirs."""
        self.classifier = classifier

    @property
    def upstream_model_ids(self) -> tuple[str, ...]:
        return tuple(self.upstream_models)

    async def classify(
        self, texts: list[str], caller: Caller, info: RouteInfo, classifier: PromptClassifier | None = None
    ) -> Classification:
        """Classify, count, and refuse a class above what the caller's key may send."""
        classifier = classifier or self.classifier
        started = time.perf_counter()
        if sum(map(len, texts)) > _CLASSIFY_INLINE_CHARS:
            # Long odd text can take the detectors a while: in a thread, other requests keep their share.
            classification = await asyncio.to_thread(classifier.classify, texts)
        else:
            classification = classifier.classify(texts)
        self.metrics.classification_duration.observe(time.perf_counter() - started)
        info.data_class = classification.data_class
        for detector in classification.detectors:
            self.metrics.detector_hits.labels(detector).inc()
        if exceeds(classification.data_class, caller.max_data_class, classifier.policy.class_names):
            raise RoutingRefused(
                f"this API key (tenant '{caller.tenant}') may send data up to class '{caller.max_data_class}'; "
                f"this request is '{classification.data_class}' ({', '.join(classification.detectors)})",
                None,
                code="data_class_not_allowed",
                status=403,
            )
        return classification

    async def generate(
        self,
        request: InferenceRequest,
        caller: Caller,
        cache_control: str,
        started: float,
        info: RouteInfo,
        client_gone: Callable[[], Awaitable[None]] | None = None,
    ) -> Answer:
        endpoint = request.endpoint
        texts = request_texts(request, self._detokenize)
        classifier = self.classifier  # one policy for the whole request, even across a reload
        try:
            classification = await self.classify(texts, caller, info, classifier)
        except RoutingRefused as exc:
            self._record(endpoint, caller, info, (), REFUSED, exc.code, exc.status, texts)
            raise
        detectors = classification.detectors
        token_prompt = request.token_prompt
        local_problem = None
        listed = None  # the model name an upstream lists, when the box does not serve the one asked for
        if request.model != self.service.model_id:
            if request.model not in self.upstream_models:  # the box's model changed since the body was parsed
                raise model_not_found(request.model, (self.service.model_id,), self.upstream_model_ids)
            if token_prompt:
                refusal = token_prompt_refused(request.model)
                self._record(endpoint, caller, info, detectors, REFUSED, TOKEN_PROMPT, refusal.status, texts)
                raise refusal
            local_problem, listed = UNKNOWN_MODEL, request.model
        elif not self.service.ready:
            local_problem = NOT_READY
        rule = classifier.policy.rule(classification.data_class)
        candidates = self._candidates(rule, listed, token_prompt) if local_problem else []
        decision = decide_route(rule, local_problem, candidates)
        overloaded: OverloadedError | None = None
        if decision.route == LOCAL:
            try:
                answer = await self.service.generate(request, cache_control, started, client_gone, tenant=caller.tenant)
            except OverloadedError as exc:
                overloaded = exc
                local_problem = TOKEN_PROMPT if token_prompt else QUEUE_FULL
                decision = decide_route(rule, local_problem, self._candidates(rule, None, token_prompt))
            else:
                self._record(endpoint, caller, info, detectors, LOCAL, decision.reason, 200, texts)
                return answer
        if decision.route == REFUSED:
            self._record(endpoint, caller, info, detectors, REFUSED, decision.reason, decision.status, texts)
            if overloaded is not None and self.pool is None:
                raise overloaded  # a box without upstreams answers a full queue as it always has (and counts it)
            if decision.status == 429:
                self.metrics.overloaded.inc()
            raise RoutingRefused(decision.message, None, code=decision.code, status=decision.status)
        try:
            outgoing = upstream_request(request, classifier.redact if rule.redact else None)
        except RequestError:
            raise
        except UnredactableError as exc:
            self._record(endpoint, caller, info, detectors, REFUSED, "redaction_failed", 503, texts)
            raise RoutingRefused(
                f"{problem_words(local_problem)}, and a structured part cannot be redacted: {exc}; redacting it "
                "would break what the request asks for, so it was not sent; retry later",
                None,
                code="redaction_failed",
                status=503,
            ) from None
        except Exception as exc:  # noqa: BLE001 - text that could not be redacted does not leave, whatever broke
            log.error(
                "redacting a request for an upstream failed (%s: %s); it was refused, not sent", type(exc).__name__, exc
            )
            self._record(endpoint, caller, info, detectors, REFUSED, "redaction_failed", 503, texts)
            raise RoutingRefused(
                f"{problem_words(local_problem)}, and this request could not be redacted for an "
                "upstream, so it was not sent; retry later",
                None,
                code="redaction_failed",
                status=503,
            ) from None
        # decide_route goes upstream only to one of the candidates, and only a pool has candidates.
        assert self.pool is not None
        try:
            reply = await self.pool.forward(
                decision.upstreams,
                _PATHS[endpoint],
                outgoing,
                request.params.stream,
                started + self.service.request_timeout_s,
                on_usage=self._usage_counter(caller.tenant, info.data_class, outgoing),
            )
        except UpstreamError as exc:
            self._record(endpoint, caller, info, detectors, REFUSED, "upstream_failed", 503, texts)
            raise RoutingRefused(
                f"{problem_words(local_problem)}, and every upstream failed: {exc}",
                None,
                code="upstream_failed",
                status=503,
            ) from None
        route = f"upstream:{reply.upstream}"
        self._record(endpoint, caller, info, detectors, route, decision.reason, reply.status, texts)
        return Answer("bypass", upstream=reply)

    async def check_embeddings(self, request: EmbeddingRequest, caller: Caller, info: RouteInfo) -> None:
        """Embeddings are always computed here; they are classified for the key check and the audit."""
        texts = [t if isinstance(t, str) else self._detokenize(t, "input") for t in request.inputs]
        try:
            classification = await self.classify(texts, caller, info)
        except RoutingRefused as exc:
            self._record("embeddings", caller, info, (), REFUSED, exc.code, exc.status, texts)
            raise
        self._record("embeddings", caller, info, classification.detectors, LOCAL, LOCAL, 200, texts)

    def _usage_counter(
        self, tenant: str, data_class: str, outgoing: dict[str, Any]
    ) -> Callable[[UpstreamConfig, ReplyTokens], None]:
        """Counts an upstream's answer (edgefleet_upstream_* and the heartbeat's upstream_usage); tokens the
        upstream did not report are counted with the local model's tokenizer: the model served when the answer
        ends (a stream may outlive a switch, and a switched-out model is closed)."""

        def count(config: UpstreamConfig, tokens: ReplyTokens) -> None:
            backend = self.service.backend

            def count_prompt() -> int:
                if "messages" not in outgoing:
                    return len(backend.tokenize(outgoing.get("prompt", "")))
                if backend.has_chat_template:
                    try:
                        return len(backend.chat_prompt_tokens(outgoing["messages"]))
                    except Exception:  # noqa: BLE001 - a template may refuse what the upstream took: count the text
                        pass
                # An assistant message that only called tools has null content.
                return len(backend.tokenize("\n".join(m["content"] or "" for m in outgoing["messages"])))

            entry = usage_entry(
                config,
                tenant,
                data_class or "unclassified",
                tokens,
                count_prompt,
                lambda text: len(backend.tokenize(text, add_special=False)),
            )
            self.metrics.observe_upstream(entry)

        return count

    def _candidates(self, rule: DataClassRule, listed: str | None, token_prompt: bool) -> list[str]:
        """The upstreams this request may go to now: none for token ids (another tokenizer would read them);
        for a listed model name, only the upstreams that list it."""
        if self.pool is None or token_prompt:
            return []
        return self.pool.candidates(rule.jurisdictions, listed_model=listed)

    def _detokenize(self, tokens: Sequence[int], param: str = "prompt") -> str:
        """The text token ids stand for, to classify; ids this model does not have are a 400, never "" (an
        empty text would classify as the least sensitive class)."""
        backend = self.service.backend
        if not backend.in_vocab(tokens):
            raise RequestError(f"'{param}' holds token ids outside the vocabulary (0..{backend.vocab_size - 1})", param)
        return b"".join(backend.detokenize_one(t) for t in tokens).decode("utf-8", "replace")

    def _record(
        self,
        endpoint: str,
        caller: Caller,
        info: RouteInfo,
        detectors: tuple[str, ...],
        route: str,
        reason: str,
        status: int,
        texts: list[str],
    ) -> None:
        info.route = route
        self.metrics.routed.labels(info.data_class or "unclassified", route).inc()
        if self.audit is not None:
            self.audit.record(
                RoutingRecord(
                    time.time(),
                    caller.tenant,
                    endpoint,
                    info.data_class,
                    tuple(detectors),
                    route,
                    reason,
                    status,
                    self.audit.prompt_hash("\n".join(texts)),
                )
            )


def request_texts(request: InferenceRequest, detokenize: Callable[[Sequence[int]], str]) -> list[str]:
    """Every model-visible string of a request, which its data class is judged on: each message's content (or the
    prompt, token ids detokenized), then each message's name, then each tool call's name and arguments and each
    tool message's call id, then each tool's name, description and parameters (:func:`json_strings`), then the
    response format's name, description and schema, then the stop strings. Whatever of the request may leave the
    box is among these (see :func:`upstream_request`); a request without tools or a response format is judged on
    what it always was."""
    if isinstance(request, ChatRequest):
        messages = request.messages
        texts = [m.content for m in messages] + [m.name for m in messages if m.name is not None]
        for m in messages:
            for call in m.tool_calls:
                texts += [call.id, call.name, call.arguments]
            if m.tool_call_id is not None:
                texts.append(m.tool_call_id)
        for tool in request.tools:
            texts.append(tool.name)
            if tool.description is not None:
                texts.append(tool.description)
            texts += json_strings(tool.parameters)
    else:
        prompt = request.prompt
        texts = [prompt if isinstance(prompt, str) else detokenize(prompt)]
    response_format = request.params.response_format
    if response_format is not None:
        texts += [t for t in (response_format.name, response_format.description) if t is not None]
        if response_format.schema is not None:
            texts += json_strings(response_format.schema)
    return texts + list(request.params.stop)


def json_strings(value: Any) -> Iterator[str]:
    """Every string a JSON value holds: object keys, string values, and numbers as text (a schema's enum, const
    or default may be a number that identifies someone); true, false and null say nothing."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield str(key)
            yield from json_strings(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from json_strings(item)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        yield str(value)


class UnredactableError(AgentError):
    """Text its data class redacts is in a part of the request that redaction would break: a schema's keys,
    enum, const or pattern, a function's name, a call's id. The message says which part, never the text."""


# Parameters forwarded when the client set them, with their validated values: numbers and flags only, nothing a
# model reads as text. top_k, min_p and ignore_eos are llama.cpp's; an upstream that does not know them says so.
_FORWARDED = ("temperature", "top_p", "seed", "top_k", "min_p", "ignore_eos")
# In a JSON schema, the keywords whose string value is prose for the model: redacted like any text. Every other
# string (property names, enum and const values, patterns, formats, defaults) is structure.
_SCHEMA_PROSE = frozenset({"description", "title"})
# Keywords whose value is data, not a schema: everything inside is structure, even a key named "description".
_SCHEMA_DATA = frozenset({"enum", "const", "default", "examples"})


def upstream_request(request: InferenceRequest, redact: Callable[[str], str] | None) -> dict[str, Any]:
    """The body sent upstream, built from an allow-list, never copied from the client's: the model, the messages
    (role, content with text parts joined, name, tool calls, tool call id) or the text prompt, the tools, tool
    choice and parallel_tool_calls, the stop strings, stream options, n, logprobs, response_format, and the
    sampling parameters the client set (``GenerationParams.set_by_client``). For a class that redacts, every
    string among them goes through ``redact``; they are all among :func:`request_texts`, so all were classified.
    A string that redaction would change in a structured part (a schema's keys, enum or const, a function name, a
    call id) raises :class:`UnredactableError`: it cannot leave either way. ``user``, ``metadata``, ``store`` and
    anything else the client sent stay here. A token-id prompt never leaves: :class:`RoutingRefused` (the gateway
    never asks for one)."""
    keep = (lambda text: text) if redact is None else redact

    def fixed(text: str, where: str) -> str:
        if redact is not None and redact(text) != text:
            raise UnredactableError(where)
        return text

    params = request.params
    out: dict[str, Any] = {"model": request.model}
    if isinstance(request, ChatRequest):
        out["messages"] = [_upstream_message(m, i, keep, fixed) for i, m in enumerate(request.messages)]
        if request.tools:
            out["tools"] = [_upstream_tool(t, i, keep, fixed) for i, t in enumerate(request.tools)]
            out["tool_choice"] = request.tool_choice.as_value()
            out["parallel_tool_calls"] = request.parallel_tool_calls
    elif isinstance(request.prompt, str):
        out["prompt"] = keep(request.prompt)
    else:
        raise token_prompt_refused(request.model)
    if "max_tokens" in params.set_by_client:
        out["max_tokens"] = params.max_tokens
    elif isinstance(request, ChatRequest) and "max_completion_tokens" in params.set_by_client:
        out["max_completion_tokens"] = params.max_tokens
    sampling = asdict(params.sampling)
    out.update({key: sampling[key] for key in _FORWARDED if key in params.set_by_client})
    if params.n != 1:
        out["n"] = params.n
    if params.logprobs is not None:
        if isinstance(request, ChatRequest):
            out["logprobs"] = True
            if params.logprobs:
                out["top_logprobs"] = params.logprobs
        else:
            out["logprobs"] = params.logprobs
    if params.response_format is not None:
        out["response_format"] = _upstream_response_format(params.response_format, keep, fixed)
    if params.stop:
        out["stop"] = [keep(s) for s in params.stop]
    out["stream"] = params.stream
    if params.stream and params.include_usage:
        out["stream_options"] = {"include_usage": True}
    return out


_Keep = Callable[[str], str]
_Fixed = Callable[[str, str], str]


def _upstream_message(m: ChatMessage, i: int, keep: _Keep, fixed: _Fixed) -> dict[str, Any]:
    # An assistant message that only called tools goes with null content, as OpenAI's own do.
    out: dict[str, Any] = {"role": m.role, "content": None if m.tool_calls and not m.content else keep(m.content)}
    if m.name is not None:
        out["name"] = keep(m.name)
    if m.tool_calls:
        out["tool_calls"] = [
            {
                "id": fixed(call.id, f"messages[{i}].tool_calls[{k}].id"),
                "type": "function",
                "function": {
                    "name": fixed(call.name, f"messages[{i}].tool_calls[{k}].function.name"),
                    "arguments": keep(call.arguments),
                },
            }
            for k, call in enumerate(m.tool_calls)
        ]
    if m.tool_call_id is not None:
        out["tool_call_id"] = fixed(m.tool_call_id, f"messages[{i}].tool_call_id")
    return out


def _upstream_tool(tool: ToolFunction, i: int, keep: _Keep, fixed: _Fixed) -> dict[str, Any]:
    where = f"tools[{i}].function"
    function: dict[str, Any] = {"name": fixed(tool.name, f"{where}.name")}
    if tool.description is not None:
        function["description"] = keep(tool.description)
    function["parameters"] = _upstream_schema(tool.parameters, f"{where}.parameters", keep, fixed)
    if tool.strict is not None:
        function["strict"] = tool.strict
    return {"type": "function", "function": function}


def _upstream_response_format(rf: ResponseFormat, keep: _Keep, fixed: _Fixed) -> dict[str, Any]:
    if rf.type == "json_object":
        return {"type": "json_object"}
    where = "response_format.json_schema"
    json_schema: dict[str, Any] = {"name": fixed(rf.name or "", f"{where}.name")}
    if rf.description is not None:
        json_schema["description"] = keep(rf.description)
    if rf.schema is not None:
        json_schema["schema"] = _upstream_schema(rf.schema, f"{where}.schema", keep, fixed)
    if rf.strict is not None:
        json_schema["strict"] = rf.strict
    return {"type": "json_schema", "json_schema": json_schema}


def _upstream_schema(value: Any, where: str, keep: _Keep, fixed: _Fixed, data: bool = False) -> Any:
    """A copy of a JSON schema with its prose (description, title) redacted and every other string, keys
    included, checked to be left as it is by redaction (``fixed``); ``data`` is inside enum/const/default.
    ``where`` names the schema, not the key within it: a key may be the very text that must not be repeated."""
    if isinstance(value, str):
        return fixed(value, where)
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            fixed(str(key), where)
            if not data and key in _SCHEMA_PROSE and isinstance(item, str):
                out[key] = keep(item)
            else:
                out[key] = _upstream_schema(item, where, keep, fixed, data or key in _SCHEMA_DATA)
        return out
    if isinstance(value, (list, tuple)):
        return [_upstream_schema(item, where, keep, fixed, data) for item in value]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        fixed(str(value), where)
    return value
