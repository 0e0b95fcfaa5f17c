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

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from edge_agent import structured
from edge_agent.client_request import (
    ChatMessage,
    ChatRequest,
    CompletionRequest,
    EmbeddingRequest,
    GenerationParams,
    RequestError,
    ResponseFormat,
    ToolCall,
    ToolChoice,
    ToolFunction,
    model_not_found,
)
from edge_agent.generation import SamplingParams

# What a box's engine may serve beyond plain generation; Limits.features says which it does (a request for
# another is refused with a 400 rather than answered without it).
RESPONSE_FORMAT = "response_format"
TOOLS = "tools"
LOGPROBS = "logprobs"
ALL_FEATURES = frozenset({RESPONSE_FORMAT, TOOLS, LOGPROBS})


@dataclass(frozen=True)
class Limits:
    n_ctx: int
    # The models this box serves.
    model_ids: tuple[str, ...]
    # The model names [[upstreams]] list: a generation request may name one (it is answered upstream, never here).
    upstream_model_ids: tuple[str, ...] = ()
    # Token ids run from 0 to vocab_size - 1 (None: not checked here).
    vocab_size: int | None = None
    # The most choices ('n') one request to a local model may ask for (the engine's sequences).
    n_max: int = 1
    # Of ALL_FEATURES, those the local engine serves.
    features: frozenset[str] = frozenset()


# OpenAI's own caps.
UPSTREAM_N_MAX = 128
TOP_LOGPROBS_MAX = 20
COMPLETION_LOGPROBS_MAX = 5
TOOLS_MAX = 128
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


# OpenAI parameters accepted only at the value that means "not used".
_NEUTRAL: dict[str, tuple[Any, ...]] = {
    "presence_penalty": (0, 0.0, None),
    "frequency_penalty": (0, 0.0, None),
    "logit_bias": (None, {}),
    "echo": (None, False),
    "best_of": (None, 1),
    "suffix": (None, ""),
    "store": (None, False),
    "metadata": (None, {}),
}
# Chat's parameters that /v1/completions does not have (accepted there only at their neutral value).
_COMPLETION_NEUTRAL: dict[str, tuple[Any, ...]] = {
    "top_logprobs": (None, 0),
    "tools": (None, []),
    "tool_choice": (None, "none"),
    "parallel_tool_calls": (None, True, False),
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
    "logprobs",
    "response_format",
)
_COMPLETION_KEYS = frozenset({*_SAMPLING_KEYS, "prompt", *_NEUTRAL, *_COMPLETION_NEUTRAL})
_CHAT_KEYS = frozenset(
    {
        *_SAMPLING_KEYS,
        "messages",
        "max_completion_tokens",
        "top_logprobs",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
    }
    | set(_NEUTRAL)
)
_EMBEDDING_KEYS = frozenset({"model", "input", "encoding_format", "user", "dimensions"})
_ROLES = ("system", "developer", "user", "assistant", "tool")


def parse_completion(body: Any, limits: Limits) -> CompletionRequest:
    obj = _object(body, _COMPLETION_KEYS, _COMPLETION_NEUTRAL)
    model = _model(obj, limits)
    logprobs = obj.get("logprobs")
    if logprobs is False:  # not OpenAI's type (an integer), but what "none" is in chat
        logprobs = None
    if logprobs is not None and (not _is_int(logprobs) or not 0 <= logprobs <= COMPLETION_LOGPROBS_MAX):
        raise RequestError(
            f"'logprobs' must be an integer from 0 to {COMPLETION_LOGPROBS_MAX} (the alternatives listed per token), "
            f"got {logprobs!r}",
            "logprobs",
        )
    params = _generation(obj, limits, model, 16, _set_by_client(obj), logprobs, grammar_from_tools=False)
    return CompletionRequest(model, _prompt(obj.get("prompt"), limits), params)


def parse_chat(body: Any, limits: Limits) -> ChatRequest:
    obj = _object(body, _CHAT_KEYS)
    model = _model(obj, limits)
    set_by_client = _set_by_client(obj)  # before the alias: what the client wrote
    if "max_completion_tokens" in obj and "max_tokens" not in obj:
        obj = {**obj, "max_tokens": obj["max_completion_tokens"]}
    tools = _tools(obj.get("tools"))
    tool_choice = _tool_choice(obj.get("tool_choice"), tools)
    parallel = obj.get("parallel_tool_calls")
    if parallel is not None and not isinstance(parallel, bool):
        raise RequestError(
            f"'parallel_tool_calls' must be a boolean, got {_json_type(parallel)}", "parallel_tool_calls"
        )
    params = _generation(
        obj, limits, model, None, set_by_client, _chat_logprobs(obj), grammar_from_tools=tool_choice.mode != "none"
    )
    if tools and tool_choice.mode != "none" and params.response_format is not None:
        raise RequestError(
            "'response_format' together with 'tools' is not supported: use one, or 'tool_choice': 'none'",
            "response_format",
            code="unsupported_parameter",
        )
    request = ChatRequest(
        model, _messages(obj.get("messages")), params, tools, tool_choice, parallel if parallel is not None else True
    )
    if request.uses_tools:
        _require(TOOLS, model, limits, "tools" if tools else "messages")
    return request


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


def _object(
    body: Any, allowed: frozenset[str], more_neutral: Mapping[str, tuple[Any, ...]] | None = None
) -> Mapping[str, Any]:
    if not isinstance(body, dict):
        raise RequestError(f"the request body must be a JSON object, got {_json_type(body)}", None)
    for key in body:
        if key not in allowed:
            raise RequestError(f"unrecognized request argument: {key}", key, code="unknown_parameter")
    for key, neutral in {**_NEUTRAL, **(more_neutral or {})}.items():
        if key in body and body[key] not in neutral:
            raise RequestError(f"'{key}' is not supported by this server", key, code="unsupported_parameter")
    return body


def _is_local(model: str, limits: Limits) -> bool:
    return model in limits.model_ids


def _require(feature: str, model: str, limits: Limits, param: str) -> None:
    """Refuse a feature the local engine does not serve (an upstream model gets what its upstream serves)."""
    if _is_local(model, limits) and feature not in limits.features:
        raise RequestError(
            f"'{param}' ({feature}) is not served by this agent's engine yet", param, code="unsupported_parameter"
        )


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
    obj: Mapping[str, Any],
    limits: Limits,
    model: str,
    default_max_tokens: int | None,
    set_by_client: frozenset[str],
    logprobs: int | None,
    grammar_from_tools: bool,
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
    n = obj.get("n")
    n_max = limits.n_max if _is_local(model, limits) else UPSTREAM_N_MAX
    if n is None:
        n = 1
    elif not _is_int(n) or not 1 <= n <= n_max:
        raise RequestError(f"'n' must be an integer from 1 to {n_max} (the choices one request gets), got {n!r}", "n")
    response_format = _response_format(obj.get("response_format"))
    if ignore_eos and (response_format is not None or grammar_from_tools):
        raise RequestError(
            "'ignore_eos' cannot be used with 'response_format' or 'tools': the answer ends where its grammar does",
            "ignore_eos",
        )
    if response_format is not None:
        _require(RESPONSE_FORMAT, model, limits, "response_format")
    if logprobs is not None:
        _require(LOGPROBS, model, limits, "logprobs")
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
        n,
        logprobs,
        response_format,
    )


def _chat_logprobs(obj: Mapping[str, Any]) -> int | None:
    """Chat's ``logprobs`` (a boolean) and ``top_logprobs`` (0 to 20, only with it) as one count, or None."""
    wanted = obj.get("logprobs")
    if wanted is not None and not isinstance(wanted, bool):
        raise RequestError(f"'logprobs' must be a boolean, got {_json_type(wanted)}", "logprobs")
    top = obj.get("top_logprobs")
    if top is not None:
        if not _is_int(top) or not 0 <= top <= TOP_LOGPROBS_MAX:
            raise RequestError(
                f"'top_logprobs' must be an integer from 0 to {TOP_LOGPROBS_MAX}, got {top!r}", "top_logprobs"
            )
        if not wanted and top:  # 0 without logprobs asks for nothing (accepted as before)
            raise RequestError("'top_logprobs' needs 'logprobs': true", "top_logprobs")
    return (top or 0) if wanted else None


def _response_format(value: Any) -> ResponseFormat | None:
    param = "response_format"
    if value is None:
        return None
    if not isinstance(value, dict) or value.get("type") not in ("text", "json_object", "json_schema"):
        raise RequestError(
            '\'response_format\' must be {"type": "text"}, {"type": "json_object"} or '
            '{"type": "json_schema", "json_schema": {"name": ..., "schema": {...}}}',
            param,
        )
    kind = value["type"]
    allowed = {"type", "json_schema"} if kind == "json_schema" else {"type"}
    extra = sorted(set(value) - allowed)
    if extra:
        raise RequestError(f"'response_format' of type {kind} takes no '{extra[0]}'", f"{param}.{extra[0]}")
    if kind == "text":
        return None
    if kind == "json_object":
        return ResponseFormat("json_object")
    spec = value.get("json_schema")
    if not isinstance(spec, dict):
        raise RequestError(
            "'response_format.json_schema' must be an object with 'name' and 'schema'", f"{param}.json_schema"
        )
    extra = sorted(set(spec) - {"name", "description", "schema", "strict"})
    if extra:
        raise RequestError(
            f"'response_format.json_schema' takes name, description, schema and strict, not '{extra[0]}'",
            f"{param}.json_schema.{extra[0]}",
            code="unknown_parameter",
        )
    name = spec.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise RequestError(
            "'response_format.json_schema.name' is required: 1 to 64 letters, digits, '_' or '-'",
            f"{param}.json_schema.name",
        )
    description = spec.get("description")
    if description is not None and not isinstance(description, str):
        raise RequestError(
            "'response_format.json_schema.description' must be a string", f"{param}.json_schema.description"
        )
    strict = spec.get("strict")
    if strict is not None and not isinstance(strict, bool):
        raise RequestError("'response_format.json_schema.strict' must be a boolean", f"{param}.json_schema.strict")
    schema = spec.get("schema")
    if schema is not None:
        structured.check_schema(schema, f"{param}.json_schema.schema")
    return ResponseFormat("json_schema", name, schema, description, strict)


def _tools(value: Any) -> tuple[ToolFunction, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or len(value) > TOOLS_MAX:
        raise RequestError(f"'tools' must be a list of at most {TOOLS_MAX} functions", "tools")
    tools: list[ToolFunction] = []
    for i, tool in enumerate(value):
        where = f"tools[{i}]"
        if not isinstance(tool, dict) or tool.get("type") != "function" or not isinstance(tool.get("function"), dict):
            raise RequestError(
                f'\'{where}\' must be {{"type": "function", "function": {{"name": ..., "parameters": ...}}}}',
                where,
            )
        if set(tool) - {"type", "function"}:
            key = sorted(set(tool) - {"type", "function"})[0]
            raise RequestError(
                f"'{where}' takes type and function, not '{key}'", f"{where}.{key}", code="unknown_parameter"
            )
        function = tool["function"]
        extra = sorted(set(function) - {"name", "description", "parameters", "strict"})
        if extra:
            raise RequestError(
                f"'{where}.function' takes name, description, parameters and strict, not '{extra[0]}'",
                f"{where}.function.{extra[0]}",
                code="unknown_parameter",
            )
        name = function.get("name")
        if not isinstance(name, str) or not _NAME.match(name):
            raise RequestError(
                f"'{where}.function.name' is required: 1 to 64 letters, digits, '_' or '-', got {name!r}",
                f"{where}.function.name",
            )
        if any(t.name == name for t in tools):
            raise RequestError(f"'tools' names the function {name!r} twice", f"{where}.function.name")
        description = function.get("description")
        if description is not None and not isinstance(description, str):
            raise RequestError(f"'{where}.function.description' must be a string", f"{where}.function.description")
        strict = function.get("strict")
        if strict is not None and not isinstance(strict, bool):
            raise RequestError(f"'{where}.function.strict' must be a boolean", f"{where}.function.strict")
        parameters = function.get("parameters")
        param = f"{where}.function.parameters"
        if parameters is None:
            tools.append(ToolFunction(name, description, strict=strict))
            continue
        structured.check_schema(parameters, param)
        if parameters.get("type", "object") != "object" or not ({"type", "properties", "$ref"} & set(parameters)):
            raise RequestError(f'\'{param}\' must describe an object ("type": "object"): arguments are one', param)
        tools.append(ToolFunction(name, description, parameters, strict))
    return tuple(tools)


def _tool_choice(value: Any, tools: tuple[ToolFunction, ...]) -> ToolChoice:
    if value is None:
        return ToolChoice("auto" if tools else "none")
    if value in ("none", "auto", "required"):
        choice = ToolChoice(value)
    elif (
        isinstance(value, dict)
        and value.get("type") == "function"
        and isinstance(value.get("function"), dict)
        and isinstance(value["function"].get("name"), str)
    ):
        choice = ToolChoice("function", value["function"]["name"])
    else:
        raise RequestError(
            "'tool_choice' must be 'none', 'auto', 'required' or "
            '{"type": "function", "function": {"name": ...}}',
            "tool_choice",
        )
    if choice.mode == "none":
        return choice
    if not tools:
        raise RequestError(f"'tool_choice' {value!r} needs 'tools'", "tool_choice")
    if choice.mode == "function" and all(t.name != choice.name for t in tools):
        known = ", ".join(t.name for t in tools)
        raise RequestError(
            f"'tool_choice' names the function {choice.name!r}, which 'tools' does not hold; known: {known}",
            "tool_choice",
        )
    return choice


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
    raise RequestError("'prompt' must be a string or a list of token ids (one prompt per request)", "prompt")


def _check_vocab(tokens: Sequence[int], limits: Limits, where: str, param: str) -> None:
    if limits.vocab_size is None:
        return
    outside = next((t for t in tokens if not 0 <= t < limits.vocab_size), None)
    if outside is not None:
        raise RequestError(
            f"'{where}' holds token ids outside the vocabulary (0..{limits.vocab_size - 1}), e.g. {outside}", param
        )


# Keys a message may carry besides its own, only empty (an SDK's assistant message sent back as it came:
# "function_call": null, "refusal": null, "annotations": []): nothing the model would see is dropped.
_EMPTY: tuple[Any, ...] = (None, [], {}, "")
# A message's own keys, by role.
_MESSAGE_KEYS = {"assistant": ("role", "content", "name", "tool_calls"), "tool": ("role", "content", "tool_call_id")}


def _messages(value: Any) -> tuple[ChatMessage, ...]:
    if not isinstance(value, list) or not value:
        raise RequestError("'messages' must be a non-empty list", "messages")
    messages = []
    calls: set[str] = set()  # the ids of the calls made so far, which a tool message answers
    for i, message in enumerate(value):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise RequestError(f"'{where}' must be an object with 'role' and 'content'", where)
        role = message.get("role")
        if role not in _ROLES:
            raise RequestError(f"'{where}.role' must be one of {', '.join(_ROLES)}, got {role!r}", f"{where}.role")
        own = _MESSAGE_KEYS.get(role, ("role", "content", "name"))
        tool_calls = _tool_calls(message.get("tool_calls"), where) if role == "assistant" else ()
        raw_content = message.get("content")
        content = "" if raw_content is None and tool_calls else _content(raw_content, where)
        name = message.get("name")
        if name is not None and "name" in own and (not isinstance(name, str) or not name):
            raise RequestError(f"'{where}.name' must be a non-empty string", f"{where}.name")
        for key, item in message.items():
            if key not in own and not any(item == e and type(item) is type(e) for e in _EMPTY):
                raise RequestError(
                    f"'{where}.{key}' is not supported by this server (a {role} message has {', '.join(own[1:])})",
                    f"{where}.{key}",
                    code="unsupported_parameter",
                )
        tool_call_id = None
        if role == "tool":
            tool_call_id = message.get("tool_call_id")
            if not isinstance(tool_call_id, str) or not tool_call_id:
                raise RequestError(f"'{where}.tool_call_id' is required in a tool message", f"{where}.tool_call_id")
            if tool_call_id not in calls:
                raise RequestError(
                    f"'{where}.tool_call_id' {tool_call_id!r} answers no tool call of an earlier assistant message",
                    f"{where}.tool_call_id",
                )
        calls.update(call.id for call in tool_calls)
        messages.append(
            ChatMessage(
                "system" if role == "developer" else role,
                content,
                name if "name" in own else None,
                tool_calls,
                tool_call_id,
            )
        )
    return tuple(messages)


def _tool_calls(value: Any, where: str) -> tuple[ToolCall, ...]:
    if value is None or value == []:
        return ()
    param = f"{where}.tool_calls"
    if not isinstance(value, list):
        raise RequestError(f"'{param}' must be a list of tool calls", param)
    calls = []
    for j, call in enumerate(value):
        function = call.get("function") if isinstance(call, dict) else None
        if (
            not isinstance(call, dict)
            or call.get("type", "function") != "function"
            or not isinstance(call.get("id"), str)
            or not call["id"]
            or not isinstance(function, dict)
            or not isinstance(function.get("name"), str)
            or not isinstance(function.get("arguments"), str)
        ):
            raise RequestError(
                f"'{param}[{j}]' must be "
                '{"id": ..., "type": "function", "function": {"name": ..., "arguments": "<JSON text>"}}',
                param,
            )
        calls.append(ToolCall(call["id"], function["name"], function["arguments"]))
    return tuple(calls)


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
