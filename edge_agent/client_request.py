"""What a client asked for, validated: typed, frozen requests that the service and the gateway take, and
:class:`RequestError` for a request that cannot be taken as asked.

``edge_agent.api.schema`` builds them from OpenAI request bodies and is the only place that reads a body;
nothing below it sees a ``dict`` of parameters or anything of HTTP.

    CompletionRequest (model, prompt: text | token ids, params) ─┐
    ChatRequest       (model, messages, tools, tool_choice, params) ├─ GenerationParams (limits, sampling, delivery,
    EmbeddingRequest  (model, inputs, encoding_format)           ┘     n, logprobs, response_format)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from edge_agent.errors import AgentError
from edge_agent.generation import SamplingParams


class RequestError(AgentError):
    """A request that cannot be taken as asked: ``param`` names the part, ``code`` and ``type`` are OpenAI's
    words for the problem. ``status`` is the class of refusal, spelled as the HTTP status a client knows it by
    (400 bad input, 403 not allowed, 404 no such model, 429 and 503 later); only ``edge_agent.api`` makes
    a response of it."""

    def __init__(
        self,
        message: str,
        param: str | None = None,
        code: str = "invalid_value",
        status: int = 400,
        type: str = "invalid_request_error",
    ):
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code
        self.status = status
        self.type = type


def model_not_found(model: str, model_ids: tuple[str, ...], upstream_ids: tuple[str, ...] = ()) -> RequestError:
    """404 model_not_found naming what may be asked for: the box's models, and the names its upstreams list."""
    available = ", ".join(model_ids)
    if upstream_ids:
        available += f"; through an upstream: {', '.join(upstream_ids)}"
    return RequestError(
        f"the model '{model}' does not exist here; available: {available}", "model", code="model_not_found", status=404
    )


@dataclass(frozen=True)
class ToolCall:
    """One function call an assistant made: ``arguments`` is the JSON text as the model wrote it."""

    id: str
    name: str
    arguments: str

    def as_dict(self) -> dict[str, Any]:
        """OpenAI's shape of an entry of ``tool_calls``."""
        return {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": self.arguments}}


@dataclass(frozen=True)
class ToolFunction:
    """One entry of ``tools``: a function the model may call, ``parameters`` a checked JSON schema."""

    name: str
    description: str | None = None
    parameters: Mapping[str, Any] = field(default_factory=lambda: {"type": "object", "properties": {}})
    strict: bool | None = None

    def as_dict(self) -> dict[str, Any]:
        function: dict[str, Any] = {"name": self.name, "parameters": self.parameters}
        if self.description is not None:
            function["description"] = self.description
        if self.strict is not None:
            function["strict"] = self.strict
        return {"type": "function", "function": function}


@dataclass(frozen=True)
class ToolChoice:
    """Whether the model may, must, or must not call a function; ``name`` only for mode "function"."""

    mode: Literal["none", "auto", "required", "function"] = "none"
    name: str | None = None

    def as_value(self) -> str | dict[str, Any]:
        """OpenAI's shape of ``tool_choice``."""
        if self.mode == "function":
            return {"type": "function", "function": {"name": self.name}}
        return self.mode


@dataclass(frozen=True)
class ResponseFormat:
    """``response_format`` other than text: any JSON object, or JSON that a checked schema describes."""

    type: Literal["json_object", "json_schema"]
    name: str | None = None  # json_schema's name
    schema: Mapping[str, Any] | None = None  # json_schema's schema (None: any JSON object)
    description: str | None = None
    strict: bool | None = None

    def as_value(self) -> dict[str, Any]:
        """OpenAI's shape of ``response_format``."""
        if self.type == "json_object":
            return {"type": "json_object"}
        json_schema: dict[str, Any] = {"name": self.name}
        if self.description is not None:
            json_schema["description"] = self.description
        if self.schema is not None:
            json_schema["schema"] = self.schema
        if self.strict is not None:
            json_schema["strict"] = self.strict
        return {"type": "json_schema", "json_schema": json_schema}


@dataclass(frozen=True)
class ChatMessage:
    role: str  # "system" | "user" | "assistant" | "tool" ("developer" arrives as "system")
    content: str  # text parts already joined; an assistant message's null content (it made tool calls) is ""
    name: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()  # an assistant message's calls
    tool_call_id: str | None = None  # a tool message's answer to that call

    def as_dict(self) -> dict[str, str]:
        """OpenAI's shape of role, content and name, as chat templates read it; ``name`` only when given.
        Tool calls and tool results reach a template through ``edge_agent.tools.render_messages``."""
        out = {"role": self.role, "content": self.content}
        if self.name is not None:
            out["name"] = self.name
        return out

    def canonical(self) -> dict[str, Any]:
        """``as_dict`` plus the tool calls and the call answered, only when set (older cache keys stay the same)."""
        out: dict[str, Any] = dict(self.as_dict())
        if self.tool_calls:
            out["tool_calls"] = [call.as_dict() for call in self.tool_calls]
        if self.tool_call_id is not None:
            out["tool_call_id"] = self.tool_call_id
        return out


@dataclass(frozen=True)
class GenerationParams:
    """Limits, sampling and delivery of one generation."""

    max_tokens: int
    sampling: SamplingParams = field(default_factory=SamplingParams)
    stop: tuple[str, ...] = ()
    stream: bool = False
    include_usage: bool = False
    # The length and sampling parameters the client gave a value (null counts as not given): an upstream gets
    # only these, so the local defaults stay here.
    set_by_client: frozenset[str] = frozenset()
    n: int = 1  # choices
    logprobs: int | None = None  # None: none; k >= 0: each token's logprob and its k most likely alternatives
    response_format: ResponseFormat | None = None  # None: text

    def canonical(self) -> dict[str, Any]:
        """The flat form the response cache's key and decision are built from (edge_agent.cache_policy)."""
        s = self.sampling
        return {
            "max_tokens": self.max_tokens,
            "temperature": s.temperature,
            "top_p": s.top_p,
            "min_p": s.min_p,
            "top_k": s.top_k,
            "seed": s.seed,
            "stop": list(self.stop),
            "ignore_eos": s.ignore_eos,
            "stream": self.stream,
            "include_usage": self.include_usage,
            # The issue-19 fields only when not their default, so that every key made before them stays the same.
            **({"n": self.n} if self.n != 1 else {}),
            **({"logprobs": self.logprobs} if self.logprobs is not None else {}),
            **({"response_format": self.response_format.as_value()} if self.response_format is not None else {}),
        }


@dataclass(frozen=True)
class CompletionRequest:
    """POST /v1/completions: a text prompt, or token ids of the box's own tokenizer."""

    endpoint: ClassVar[str] = "completions"
    model: str
    prompt: str | tuple[int, ...]
    params: GenerationParams

    @property
    def token_prompt(self) -> bool:
        return not isinstance(self.prompt, str)

    def canonical(self) -> dict[str, Any]:
        prompt = self.prompt if isinstance(self.prompt, str) else list(self.prompt)
        return {"model": self.model, **self.params.canonical(), "prompt": prompt}


@dataclass(frozen=True)
class ChatRequest:
    """POST /v1/chat/completions."""

    endpoint: ClassVar[str] = "chat"
    token_prompt: ClassVar[bool] = False
    model: str
    messages: tuple[ChatMessage, ...]
    params: GenerationParams
    tools: tuple[ToolFunction, ...] = ()
    tool_choice: ToolChoice = ToolChoice("none")
    parallel_tool_calls: bool = True

    def message_dicts(self) -> list[dict[str, str]]:
        return [m.as_dict() for m in self.messages]

    @property
    def uses_tools(self) -> bool:
        """Tools offered, or tool calls or results in the history: the prompt is rendered by edge_agent.tools."""
        return bool(self.tools) or any(m.tool_calls or m.role == "tool" for m in self.messages)

    def canonical(self) -> dict[str, Any]:
        out = {"model": self.model, **self.params.canonical(), "messages": [m.canonical() for m in self.messages]}
        if self.tools:
            out["tools"] = [tool.as_dict() for tool in self.tools]
            out["tool_choice"] = self.tool_choice.as_value()
            out["parallel_tool_calls"] = self.parallel_tool_calls
        return out


# The two requests that generate text (the service and the gateway take either).
InferenceRequest = CompletionRequest | ChatRequest


@dataclass(frozen=True)
class EmbeddingRequest:
    """POST /v1/embeddings: always computed on the box."""

    model: str
    inputs: tuple[str | tuple[int, ...], ...]
    encoding_format: str = "float"  # "float" | "base64"
