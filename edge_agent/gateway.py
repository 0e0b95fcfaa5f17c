"""The data-residency gateway in front of the inference service: classify, check the caller's key, answer
locally, and only when the box cannot and the data class allows it, from an upstream.

    text of all messages -> data class -> key's max class -> local (cache, queue) -> upstream | refusal
                                                                   -> audit record, metrics, headers

The decisions are pure (edge_agent.policy.routing); this module does the I/O around them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

from edge_agent.access import Caller, exceeds
from edge_agent.api.schema import RequestError, model_not_found
from edge_agent.metrics import AgentMetrics
from edge_agent.policy.classify import PromptClassifier
from edge_agent.policy.routing import (LOCAL, NOT_READY, QUEUE_FULL, REFUSED, TOKEN_PROMPT, UNKNOWN_MODEL,
                                       Classification, DataClassPolicy, decide_route, problem_words)
from edge_agent.routing_audit import RoutingAudit, RoutingRecord
from edge_agent.scheduler import OverloadedError
from edge_agent.service import Answer, InferenceService
from edge_agent.upstream import UpstreamError, UpstreamPool

log = logging.getLogger(__name__)

_PATHS = {"chat": "/chat/completions", "completions": "/completions"}
# Up to this much text (a few thousand tokens) classification costs well under a millisecond: inline.
_CLASSIFY_INLINE_CHARS = 32_768


@dataclass
class RouteInfo:
    """What the gateway decided for one request; the HTTP layer turns it into headers and metric labels."""
    route: str = LOCAL
    data_class: str = ""


class RoutingRefused(RequestError):
    """The request may not be answered here nor anywhere it may go (status and message say why)."""


class Gateway:
    def __init__(self, service: InferenceService, classifier: PromptClassifier, metrics: AgentMetrics,
                 pool: UpstreamPool | None = None, audit: RoutingAudit | None = None,
                 upstream_unknown_models: bool = True):
        self.service = service
        # The classifier carries its policy: one attribute, so a reload (reload_policy) swaps both at once.
        self.classifier = classifier
        self.metrics = metrics
        self.pool = pool
        self.audit = audit
        self.upstream_unknown_models = upstream_unknown_models and pool is not None

    @property
    def policy(self) -> DataClassPolicy:
        return self.classifier.policy

    def reload_policy(self, classifier: PromptClassifier) -> None:
        """From now on new requests use this classifier and its policy; requests in flight finish with theirs."""
        self.classifier = classifier

    @property
    def accepts_any_model(self) -> bool:
        return self.upstream_unknown_models

    async def classify(self, texts: list[str], caller: Caller, info: RouteInfo,
                       classifier: PromptClassifier | None = None) -> Classification:
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
                None, code="data_class_not_allowed", status=403)
        return classification

    async def generate(self, endpoint: str, body: dict[str, Any], params: dict[str, Any], caller: Caller,
                       cache_control: str, started: float, info: RouteInfo,
                       client_gone: Callable[[], Awaitable[None]] | None = None) -> Answer:
        texts = request_texts(endpoint, params, self._detokenize)
        classifier = self.classifier  # one policy for the whole request, even across a reload
        try:
            classification = await self.classify(texts, caller, info, classifier)
        except RoutingRefused as exc:
            self._record(endpoint, caller, info, (), REFUSED, exc.code, exc.status, texts)
            raise
        detectors = classification.detectors
        local_problem = None
        if params["model"] != self.service.model_id:
            if not self.upstream_unknown_models:
                raise model_not_found(params["model"], (self.service.model_id,))
            local_problem = UNKNOWN_MODEL
        elif not self.service.ready:
            local_problem = NOT_READY
        rule = classifier.policy.rule(classification.data_class)
        candidates = self.pool.candidates(rule.jurisdictions) if self.pool and local_problem else []
        decision = decide_route(rule, local_problem, candidates)
        overloaded: OverloadedError | None = None
        if decision.route == LOCAL:
            try:
                answer = await self.service.generate(endpoint, params, cache_control, started, client_gone,
                                                     tenant=caller.tenant)
            except OverloadedError as exc:
                overloaded = exc
                local_problem = TOKEN_PROMPT if isinstance(params.get("prompt"), list) else QUEUE_FULL
                candidates = self.pool.candidates(rule.jurisdictions) if self.pool else []
                decision = decide_route(rule, local_problem, candidates)
            else:
                self._record(endpoint, caller, info, detectors, LOCAL, decision.reason, 200, texts)
                return answer
        if decision.route == REFUSED:
            self._record(endpoint, caller, info, detectors, REFUSED, decision.reason, decision.status, texts)
            if overloaded is not None and self.pool is None:
                raise overloaded  # a box without upstreams answers a full queue as it always has (and counts it)
            if decision.status == 429:
                self.metrics.overloaded.inc()
            raise RoutingRefused(decision.message, None, code=local_problem, status=decision.status)
        outgoing = upstream_request(endpoint, body, params, classifier.redact if rule.redact else None)
        try:
            reply = await self.pool.forward(decision.upstreams, _PATHS[endpoint], outgoing, params["stream"],
                                            started + self.service.request_timeout_s)
        except UpstreamError as exc:
            self._record(endpoint, caller, info, detectors, REFUSED, "upstream_failed", 503, texts)
            raise RoutingRefused(f"{problem_words(local_problem)}, and every upstream failed: {exc}", None,
                                 code="upstream_failed", status=503) from None
        route = f"upstream:{reply.upstream}"
        self._record(endpoint, caller, info, detectors, route, decision.reason, reply.status, texts)
        return Answer("bypass", body=reply.body, stream=reply.stream, on_close=reply.aclose, status=reply.status,
                      media_type=reply.content_type or "application/json")

    async def check_embeddings(self, params: dict[str, Any], caller: Caller, info: RouteInfo) -> None:
        """Embeddings are always computed here; they are classified for the key check and the audit."""
        texts = [t if isinstance(t, str) else self._detokenize(t) for t in params["input"]]
        try:
            classification = await self.classify(texts, caller, info)
        except RoutingRefused as exc:
            self._record("embeddings", caller, info, (), REFUSED, exc.code, exc.status, texts)
            raise
        self._record("embeddings", caller, info, classification.detectors, LOCAL, LOCAL, 200, texts)

    def _detokenize(self, tokens: list[int]) -> str:
        backend = self.service.backend
        if not backend.in_vocab(tokens):
            return ""  # refused later by the service with the vocabulary's bounds
        return b"".join(backend.detokenize_one(t) for t in tokens).decode("utf-8", "replace")

    def _record(self, endpoint: str, caller: Caller, info: RouteInfo, detectors: tuple[str, ...], route: str,
                reason: str, status: int, texts: list[str]) -> None:
        info.route = route
        self.metrics.routed.labels(info.data_class or "unclassified", route).inc()
        if self.audit is not None:
            self.audit.record(RoutingRecord(time.time(), caller.tenant, endpoint, info.data_class, tuple(detectors),
                                            route, reason, status, self.audit.prompt_hash("\n".join(texts))))


def request_texts(endpoint: str, params: dict[str, Any], detokenize: Callable[[list[int]], str]) -> list[str]:
    """The text a request's data class is judged on: every message, or the prompt."""
    if endpoint == "chat":
        return [m["content"] for m in params["messages"]]
    prompt = params["prompt"]
    return [detokenize(prompt) if isinstance(prompt, list) else prompt]


def upstream_request(endpoint: str, body: dict[str, Any], params: dict[str, Any],
                     redact: Callable[[str], str] | None) -> dict[str, Any]:
    """The body sent upstream: the client's, with the text normalized (content parts joined) and, for a class
    that redacts, every detected span replaced."""
    keep = (lambda text: text) if redact is None else redact
    out = dict(body)
    if endpoint == "chat":
        out["messages"] = [{"role": m["role"], "content": keep(m["content"])} for m in params["messages"]]
    else:
        out["prompt"] = keep(params["prompt"])
    return out
