"""Validation of OpenAI-style request bodies: pure functions, no I/O.

Each parser takes the decoded JSON body and returns a typed, frozen request
(:mod:`edge_agent.client_request`), or raises its :class:`RequestError` naming
the parameter and the problem, which the HTTP layer turns into OpenAI's error
shape with a 4xx status.

Parameters OpenAI defines but this server does not implement are accepted at
their neutral value and refused otherwise, so a client never silently gets
something other than what it asked for.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from edge_agent.client_request import (
    ChatMessage,
    ChatRequest,
    CompletionRequest,
    EmbeddingRequest,
    GenerationParams,
    RequestError,
    model_not_found,
)
from edge_agent.generation import SamplingParams


@dataclass(frozen=True)
class Limits:
    n_ctx: int
    # The models this box serves.
    model_ids: tuple[str, ...]
    # The model names [[upstreams]] list: a generation request may name one (it is answered upstream, never here).
    upstream_model_ids: tuple[str, ...] = ()
    # Token ids run from 0 to vocab_size - 1 (None: not checked here).
    vocab_size: int | None = None


# OpenAI parameters accepted only at the value that means "not used".
_NEUTRAL: dict[str, tuple[Any, ...]] = {
    "presence_penalty": (0, 0.0, None),
    "frequency_penalty": (0, 0.0, None),
    "logit_bias": (None, {}),
    "logprobs": (None, False),
    "top_logprobs": (None, 0),
    "echo": (None, False),
    "best_of": (None, 1),
    "suffix": (None, ""),
    "tools": (None, []),
    "tool_choice": (None, "none"),
    "response_format": (None, {"type": "text"}),
    "parallel_tool_calls": (None, True, False),
    "store": (None, False),
    "metadata": (None, {}),
}
_SAMPLING_KEYS = (
    "model",
    "max_tokens",
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "seed",
    "stop",
    "n",
    "stream",
    "stream_options",
    "user",
    "ignore_eos",
)
_COMPLETION_KEYS = frozenset({*_SAMPLING_KEYS, "prompt", *_NEUTRAL})
_CHAT_KEYS = frozenset({*_SAMPLING_KEYS, "messages", "max_completion_tokens", *_NEUTRAL})
_EMBEDDING_KEYS = frozenset({"model", "input", "encoding_format", "user", "dimensions"})
_ROLES = ("system", "developer", "user", "assistant")


def parse_completion(body: Any, limits: Limits) -> CompletionRequest:
    obj = _object(body, _COMPLETION_KEYS)
    model = _model(obj, limits)
    params = _generation(obj, limits, default_max_tokens=16, set_by_client=_set_by_client(obj))
    return CompletionRequest(model, _prompt(obj.get("prompt"), limits), params)


def parse_chat(body: Any, limits: Limits) -> ChatRequest:
    obj = _object(body, _CHAT_KEYS)
    model = _model(obj, limits)
    set_by_client = _set_by_client(obj)  # before the alias: what the client wrote
    if "max_completion_tokens" in obj and "max_tokens" not in obj:
        obj = {**obj, "max_tokens": obj["max_completion_tokens"]}
    params = _generation(obj, limits, default_max_tokens=None, set_by_client=set_by_client)
    return ChatRequest(model, _messages(obj.get("messages")), params)


def parse_embeddings(body: Any, limits: Limits) -> EmbeddingRequest:
    obj = _object(body, _EMBEDDING_KEYS)
    model = _model(obj, limits, upstream=False)  # embeddings are always computed here
    raw = obj.get("input")
    if isinstance(raw, str):
        inputs: list[Any] = [raw]
    elif isinstance(raw, list) and raw and all(isinstance(x, str) for x in raw):
        inputs = list(raw)
    elif isinstance(raw, list) and raw and all(_is_int(x) for x in raw):
        inputs = [tuple(raw)]
    elif isinstance(raw, list) and raw and all(isinstance(x, list) and x and all(_is_int(t) for t in x) for x in raw):
        inputs = [tuple(x) for x in raw]
    else:
        raise RequestError("'input' must be a non-empty string, list of strings, or list of token ids", "input")
    if len(inputs) > 2048:
        raise RequestError("'input' may hold at most 2048 items", "input")
    for i, item in enumerate(inputs):
        if isinstance(item, tuple):
            _check_vocab(item, limits, f"input[{i}]" if len(inputs) > 1 else "input", "input")
    fmt = obj.get("encoding_format", "float")
    if fmt not in ("float", "base64"):
        raise RequestError("'encoding_format' must be 'float' or 'base64'", "encoding_format")
    if obj.get("dimensions") is not None:
        raise RequestError("'dimensions' is not supported by this server", "dimensions", code="unsupported_parameter")
    return EmbeddingRequest(model, tuple(inputs), fmt)


# -- pieces --------------------------------------------------------------


def _object(body: Any, allowed: frozenset[str]) -> Mapping[str, Any]:
    if not isinstance(body, dict):
        raise RequestError(f"the request body must be a JSON object, got {_json_type(body)}", None)
    for key in body:
        if key not in allowed:
            raise RequestError(f"unrecognized request argument: {key}", key, code="unknown_parameter")
    for key, neutral in _NEUTRAL.items():
        if key in body and body[key] not in neutral:
            raise RequestError(f"'{key}' is not supported by this server", key, code="unsupported_parameter")
    return body


def _model(obj: Mapping[str, Any], limits: Limits, upstream: bool = True) -> str:
    model = obj.get("model")
    if not isinstance(model, str) or not model:
        raise RequestError("'model' is required and must be a string", "model")
    upstream_ids = limits.upstream_model_ids if upstream else ()
    if model not in limits.model_ids and model not in upstream_ids:
        raise model_not_found(model, limits.model_ids, upstream_ids)
    return model


# Length and sampling parameters whose being set (not null) is recorded: see GenerationParams.set_by_client.
_RECORDED_IF_SET = (
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "seed",
    "ignore_eos",
)


def _set_by_client(obj: Mapping[str, Any]) -> frozenset[str]:
    return frozenset(key for key in _RECORDED_IF_SET if obj.get(key) is not None)


def _generation(
    obj: Mapping[str, Any], limits: Limits, default_max_tokens: int | None, set_by_client: frozenset[str]
) -> GenerationParams:
    max_tokens = obj.get("max_tokens")
    if max_tokens is None:
        max_tokens = default_max_tokens or limits.n_ctx
    elif not _is_int(max_tokens) or not 1 <= max_tokens <= limits.n_ctx:
        raise RequestError(
            f"'max_tokens' must be an integer from 1 to {limits.n_ctx} (the context length), got {max_tokens!r}",
            "max_tokens",
        )
    temperature = _number(obj, "temperature", 1.0, 0.0, 2.0)
    top_p = _number(obj, "top_p", 1.0, 0.0, 1.0)
    min_p = _number(obj, "min_p", 0.05, 0.0, 1.0)
    top_k = obj.get("top_k", 40)
    if not _is_int(top_k) or not 0 <= top_k < 2**31:  # llama.cpp takes an int32
        raise RequestError(f"'top_k' must be an integer from 0 to {2**31 - 1} (0: off), got {top_k!r}", "top_k")
    seed = obj.get("seed")
    if seed is not None and (not _is_int(seed) or not -(2**63) <= seed < 2**64):
        raise RequestError(f"'seed' must be a 64-bit integer, got {seed!r}", "seed")
    stop = _stop(obj.get("stop"))
    ignore_eos = obj.get("ignore_eos", False)
    if not isinstance(ignore_eos, bool):
        raise RequestError(f"'ignore_eos' must be a boolean, got {_json_type(ignore_eos)}", "ignore_eos")
    n = obj.get("n", 1)
    if n != 1 or not _is_int(n):
        raise RequestError(f"only 'n' = 1 is supported, got {n!r}", "n", code="unsupported_parameter")
    stream = obj.get("stream", False)
    if not isinstance(stream, bool) and stream is not None:
        raise RequestError(f"'stream' must be a boolean, got {_json_type(stream)}", "stream")
    options = obj.get("stream_options")
    if options is not None:
        if (
            not isinstance(options, dict)
            or not set(options) <= {"include_usage"}
            or not isinstance(options.get("include_usage", False), bool)
        ):
            raise RequestError("'stream_options' must be an object like {\"include_usage\": true}", "stream_options")
        if not stream:
            raise RequestError("'stream_options' is only allowed when 'stream' is true", "stream_options")
    include_usage = bool(options and options.get("include_usage"))
    user = obj.get("user")
    if user is not None and not isinstance(user, str):
        raise RequestError("'user' must be a string", "user")
    return GenerationParams(
        max_tokens,
        SamplingParams(temperature, top_p, top_k, min_p, seed, ignore_eos),
        stop,
        bool(stream),
        include_usage,
        set_by_client,
    )


def _number(obj: Mapping[str, Any], key: str, default: float, low: float, high: float) -> float:
    value = obj.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise RequestError(f"'{key}' must be a number from {low:g} to {high:g}, got {value!r}", key)
    return float(value)


def _stop(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(s, str) and s for s in value) or len(value) > 4:
        raise RequestError("'stop' must be a non-empty string or a list of up to 4 non-empty strings", "stop")
    return tuple(value)


def _prompt(value: Any, limits: Limits) -> str | tuple[int, ...]:
    if isinstance(value, str):
        return value
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], str):
        return value[0]
    if isinstance(value, list) and value and all(_is_int(t) for t in value):
        _check_vocab(value, limits, "prompt", "prompt")
        return tuple(value)
    if value is None:
        raise RequestError("'prompt' is required", "prompt")
    raise RequestError("'prompt' must be a string or a list of token ids (one prompt per request: n = 1)", "prompt")


def _check_vocab(tokens: Sequence[int], limits: Limits, where: str, param: str) -> None:
    if limits.vocab_size is None:
        return
    outside = next((t for t in tokens if not 0 <= t < limits.vocab_size), None)
    if outside is not None:
        raise RequestError(
            f"'{where}' holds token ids outside the vocabulary (0..{limits.vocab_size - 1}), e.g. {outside}", param
        )


# Keys a message may carry besides role, content and name, only empty (an SDK's assistant message sent back
# as it came: "tool_calls": null, "refusal": null, "annotations": []): nothing the model would see is dropped.
_EMPTY: tuple[Any, ...] = (None, [], {}, "")


def _messages(value: Any) -> tuple[ChatMessage, ...]:
    if not isinstance(value, list) or not value:
        raise RequestError("'messages' must be a non-empty list", "messages")
    messages = []
    for i, message in enumerate(value):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise RequestError(f"'{where}' must be an object with 'role' and 'content'", where)
        role = message.get("role")
        if role not in _ROLES:
            raise RequestError(f"'{where}.role' must be one of {', '.join(_ROLES)}, got {role!r}", f"{where}.role")
        content = _content(message.get("content"), where)
        name = message.get("name")
        if name is not None and (not isinstance(name, str) or not name):
            raise RequestError(f"'{where}.name' must be a non-empty string", f"{where}.name")
        for key, item in message.items():
            if key not in ("role", "content", "name") and not any(item == e and type(item) is type(e) for e in _EMPTY):
                raise RequestError(
                    f"'{where}.{key}' is not supported by this server (a message has 'role', 'content' and 'name')",
                    f"{where}.{key}",
                    code="unsupported_parameter",
                )
        messages.append(ChatMessage("system" if role == "developer" else role, content, name))
    return tuple(messages)


def _content(content: Any, where: str) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for j, part in enumerate(content):
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise RequestError(
                    f'\'{where}.content[{j}]\' must be a text part ({{"type": "text", "text": ...}})',
                    f"{where}.content",
                )
            parts.append(part["text"])
        return "".join(parts)
    raise RequestError(f"'{where}.content' must be a string or a list of text parts", f"{where}.content")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _json_type(value: Any) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}
    return names.get(type(value), "number")
