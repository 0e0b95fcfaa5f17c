"""What may leave the box: the allow-listed upstream body, the texts it is judged on, and the gateway's routing of
model names and token-id prompts.

The last group drives :class:`Gateway` with a fake inference service and a fake upstream pool (named as such): they
stand for the model and the network, so each route a request can take is tried without either. The same routes
run end to end, on the real model and a real upstream, in tests/integration/test_residency.py.
"""

import asyncio
import dataclasses
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.access import Caller
from edge_agent.api.schema import Limits, parse_chat, parse_completion
from edge_agent.client_request import (
    ChatMessage,
    ChatRequest,
    CompletionRequest,
    GenerationParams,
    RequestError,
    ResponseFormat,
    ToolCall,
    ToolChoice,
    ToolFunction,
)
from edge_agent.config import DataClassRule, PolicyConfig
from edge_agent.gateway import Gateway, RouteInfo, RoutingRefused, json_strings, request_texts, upstream_request
from edge_agent.metrics import AgentMetrics
from edge_agent.policy.classify import PromptClassifier
from edge_agent.scheduler import OverloadedError
from edge_agent.service import Answer
from edge_agent.upstream import UpstreamReply

LIMITS = Limits(n_ctx=2048, model_ids=("box",), upstream_model_ids=("cloud",), vocab_size=100)


def never(ids):
    raise AssertionError("no token ids here")


# -- request_texts ---------------------------------------------------------------------------------


def test_request_texts_hold_every_content_name_and_stop_string():
    params = parse_chat(
        {
            "model": "box",
            "stop": ["END", "4111 1111 1111 1111"],
            "messages": [
                {"role": "system", "content": "be brief"},
                {
                    "role": "user",
                    "name": "jane_doe",
                    "content": [{"type": "text", "text": "mail "}, {"type": "text", "text": "a@b.example"}],
                },
            ],
        },
        LIMITS,
    )
    assert request_texts(params, never) == ["be brief", "mail a@b.example", "jane_doe", "END", "4111 1111 1111 1111"]


def test_request_texts_of_a_prompt_and_of_token_ids():
    assert request_texts(parse_completion({"model": "box", "prompt": "hello"}, LIMITS), never) == ["hello"]
    params = parse_completion({"model": "box", "prompt": [1, 2], "stop": "x"}, LIMITS)
    assert request_texts(params, lambda ids: f"{len(ids)} ids") == ["2 ids", "x"]


# -- upstream_request: the allow-list ---------------------------------------------------------------


FULL_CHAT = {
    "model": "cloud",
    "messages": [
        {"role": "developer", "content": [{"type": "text", "text": "be "}, {"type": "text", "text": "brief"}]},
        {"role": "user", "name": "jane", "content": "mail jane@example.com"},
        {"role": "assistant", "content": "ok", "tool_calls": None, "refusal": None, "annotations": []},
    ],
    "max_completion_tokens": 9,
    "temperature": 0.5,
    "top_p": 0.9,
    "seed": 7,
    "stop": ["jane@example.com"],
    "stream": True,
    "stream_options": {"include_usage": True},
    # Never forwarded: not model-visible, or neutral values of what this server does not implement.
    "user": "ssn 123-45-6789",
    "metadata": {},
    "store": False,
    "presence_penalty": 0,
    "logit_bias": {},
    "tools": [],
    "n": 1,
}


def test_the_upstream_body_holds_only_what_the_agent_understands():
    params = parse_chat(FULL_CHAT, LIMITS)
    out = upstream_request(params, None)
    assert out == {
        "model": "cloud",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "name": "jane", "content": "mail jane@example.com"},
            {"role": "assistant", "content": "ok"},
        ],
        "max_completion_tokens": 9,
        "temperature": 0.5,
        "top_p": 0.9,
        "seed": 7,
        "stop": ["jane@example.com"],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    assert "123-45-6789" not in json.dumps(out)


def test_a_class_that_redacts_redacts_every_string_that_leaves():
    params = parse_chat(FULL_CHAT, LIMITS)
    out = upstream_request(params, lambda text: text.replace("jane", "[X]"))
    assert out["messages"][1] == {"role": "user", "name": "[X]", "content": "mail [X]@example.com"}
    assert out["stop"] == ["[X]@example.com"]
    assert "jane" not in json.dumps(out)
    assert FULL_CHAT["messages"][1]["content"] == "mail jane@example.com"  # the client's body is left alone


def test_completions_forward_the_parameters_the_client_set_and_nothing_else():
    body = {"model": "cloud", "prompt": "p x", "max_tokens": 5, "top_k": 3, "ignore_eos": False, "user": "u"}
    out = upstream_request(parse_completion(body, LIMITS), lambda t: t.upper())
    assert out == {"model": "cloud", "prompt": "P X", "max_tokens": 5, "top_k": 3, "ignore_eos": False, "stream": False}
    bare = {"model": "cloud", "prompt": "p"}
    assert upstream_request(parse_completion(bare, LIMITS), None) == {
        "model": "cloud",
        "prompt": "p",
        "stream": False,
    }  # the local defaults (max_tokens 16, top_k 40) stay here


def test_a_token_id_prompt_is_never_built_into_an_upstream_body():
    body = {"model": "box", "prompt": [1, 2, 3]}
    with pytest.raises(RoutingRefused) as info:
        upstream_request(parse_completion(body, LIMITS), None)
    assert (info.value.status, info.value.code, info.value.param) == (400, "token_prompt_not_forwarded", "prompt")


def _strings(value, path=()):
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _strings(v, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _strings(v, (*path, i))


_text = st.text(min_size=1, max_size=12)
_message = st.fixed_dictionaries(
    {
        "role": st.sampled_from(["system", "developer", "user", "assistant"]),
        "content": st.one_of(_text, st.lists(st.builds(lambda t: {"type": "text", "text": t}, _text), max_size=3)),
    },
    optional={"name": _text, "tool_calls": st.none(), "refusal": st.none()},
)
_chat_body = st.fixed_dictionaries(
    {"model": st.sampled_from(["box", "cloud"]), "messages": st.lists(_message, min_size=1, max_size=4)},
    optional={
        "stop": st.one_of(_text, st.lists(_text, min_size=1, max_size=4)),
        "user": _text,
        "metadata": st.just({}),
        "store": st.just(False),
        "temperature": st.floats(0, 2),
        "max_tokens": st.integers(1, 2048),
        "seed": st.integers(0, 2**31),
        "top_k": st.integers(0, 100),
    },
)


@settings(max_examples=300, deadline=None)
@given(_chat_body)
def test_every_string_that_leaves_was_classified_and_went_through_redaction(body):
    params = parse_chat(body, LIMITS)
    judged = request_texts(params, never)
    marked = upstream_request(params, lambda text: "\0" + text)
    for path, value in _strings(marked):
        if path in (("model",),) or path[-1] == "role":
            continue
        assert value.startswith("\0") and value[1:] in judged, (path, value)
    assert set(marked) <= {
        "model",
        "messages",
        "stop",
        "stream",
        "stream_options",
        "max_tokens",
        "max_completion_tokens",
        "temperature",
        "top_p",
        "seed",
        "top_k",
        "min_p",
        "ignore_eos",
    }


# -- the gateway's routes, on fakes -------------------------------------------------------------------


class FakeBackend:
    """Stands for the llama.cpp model: a vocabulary of 100 ids, each the letter it encodes."""

    vocab_size = 100

    def in_vocab(self, tokens):
        return all(0 <= t < self.vocab_size for t in tokens)

    def detokenize_one(self, token):
        return bytes([ord("a") + token % 26])


class FakeService:
    """Stands for InferenceService: answers locally, or is full (OverloadedError), or still warming up."""

    model_id = "box"
    request_timeout_s = 30.0

    def __init__(self, full=False, ready=True):
        self.backend = FakeBackend()
        self.full, self.ready = full, ready
        self.generated = []

    async def generate(self, request, cache_control, started, client_gone, tenant):
        if self.full:
            raise OverloadedError("the queue is full")
        self.generated.append(request)
        return Answer("miss", body=b"{}")


class FakePool:
    """Stands for UpstreamPool: every listed upstream is up; forward() records the bodies that would leave."""

    def __init__(self, listed):
        self.listed = listed  # upstream name -> the model names it lists
        self.sent = []

    def listed_models(self):
        models = {}
        for name, names in self.listed.items():
            for model in names:
                models.setdefault(model, []).append(name)
        return {m: tuple(n) for m, n in models.items()}

    def candidates(self, jurisdictions, listed_model=None):
        return [n for n, names in self.listed.items() if listed_model is None or listed_model in names]

    async def forward(self, names, path, body, stream, deadline, on_usage=None):
        self.sent.append((names, path, body))
        return UpstreamReply(names[0], 200, b"{}", None, "application/json")


POLICY = PolicyConfig(
    classes=(
        DataClassRule("public", ("*",)),
        DataClassRule("internal", ("*",), redact=True),
        DataClassRule("restricted", ()),
    )
)
CALLER = Caller("acme", "", "restricted")


def gateway(service, pool):
    metrics = AgentMetrics(model_info=dict, scheduler_stats=lambda: None, cache_stats=lambda: None)
    return Gateway(service, PromptClassifier(POLICY), metrics, pool)


def run(gw, endpoint, body):
    limits = Limits(2048, ("box",), gw.upstream_model_ids, vocab_size=100)
    params = (parse_chat if endpoint == "chat" else parse_completion)(body, limits)
    info = RouteInfo()
    try:
        asyncio.run(gw.generate(params, CALLER, "", 0.0, info))
    except RequestError as exc:
        return info, exc
    return info, None


def test_a_listed_model_goes_only_to_the_upstreams_that_list_it():
    pool = FakePool({"a": ("cloud",), "b": ("other",)})
    service = FakeService()
    info, error = run(
        gateway(service, pool), "chat", {"model": "cloud", "user": "x", "messages": [{"role": "user", "content": "hi"}]}
    )
    assert error is None and info.route == "upstream:a" and not service.generated
    ((names, path, body),) = pool.sent
    assert names == ("a",) and path == "/chat/completions" and "user" not in body


def test_a_model_no_upstream_lists_is_404_model_not_found():
    gw = gateway(FakeService(), FakePool({"a": ("cloud",)}))
    with pytest.raises(RequestError) as info:
        parse_chat(
            {"model": "gpt-5", "messages": [{"role": "user", "content": "hi"}]},
            Limits(2048, ("box",), gw.upstream_model_ids),
        )
    assert (info.value.status, info.value.code) == (404, "model_not_found")
    assert "box; through an upstream: cloud" in info.value.message


def test_restricted_data_naming_a_listed_model_is_refused_and_never_leaves():
    pool = FakePool({"a": ("cloud",)})
    info, error = run(
        gateway(FakeService(), pool),
        "chat",
        {"model": "cloud", "messages": [{"role": "user", "content": "card 4111 1111 1111 1111"}]},
    )
    assert (error.status, error.code, info.route, info.data_class) == (404, "unknown_model", "refused", "restricted")
    assert pool.sent == []


@pytest.mark.parametrize(
    "service, model, status, code",
    [
        (FakeService(), "cloud", 400, "token_prompt_not_forwarded"),  # a model only an upstream serves
        (FakeService(full=True), "box", 429, "token_prompt"),  # the box's queue is full
    ],
)
def test_token_id_prompts_never_leave(service, model, status, code):
    pool = FakePool({"a": ("cloud",), "b": ()})
    info, error = run(gateway(service, pool), "completions", {"model": model, "prompt": [1, 2, 3]})
    assert (error.status, error.code, info.route) == (status, code, "refused")
    assert pool.sent == []


def test_a_token_id_prompt_waits_for_the_warm_up_instead_of_leaving():
    pool = FakePool({"a": ()})
    service = FakeService(ready=False)
    info, error = run(gateway(service, pool), "completions", {"model": "box", "prompt": [1, 2, 3]})
    assert error is None and info.route == "local" and len(service.generated) == 1
    assert pool.sent == []
    text_info, _ = run(gateway(service, pool), "completions", {"model": "box", "prompt": "hi"})
    assert text_info.route == "upstream:a"  # a text prompt of a public class may go while the box warms up


def test_token_ids_outside_the_vocabulary_are_a_400_naming_the_bounds():
    with pytest.raises(RequestError) as info:
        parse_completion({"model": "box", "prompt": [1, 100]}, LIMITS)
    assert info.value.status == 400 and info.value.param == "prompt" and "(0..99)" in info.value.message
    # Past the schema (the model switched in between), the gateway refuses them too: never "" (public).
    gw = gateway(FakeService(), FakePool({}))
    params = dataclasses.replace(parse_completion({"model": "box", "prompt": [1, 2]}, LIMITS), prompt=(1, 100))
    with pytest.raises(RequestError, match=r"0\.\.99"):
        asyncio.run(gw.generate(params, CALLER, "", 0.0, RouteInfo()))


def test_text_that_cannot_be_redacted_is_refused_audited_and_never_leaves(monkeypatch):
    """Tried: redaction raising (a stand-in for a bug in it) on an internal prompt bound for an upstream."""
    pool = FakePool({"a": ("cloud",)})
    gw = gateway(FakeService(), pool)

    def broken(text):
        raise IndexError("a bug in redaction")

    monkeypatch.setattr(gw.classifier, "redact", broken)
    info, error = run(gw, "chat", {"model": "cloud", "messages": [{"role": "user", "content": "mail jo@example.com"}]})
    assert (error.status, error.code, info.route, info.data_class) == (503, "redaction_failed", "refused", "internal")
    assert pool.sent == []


# -- tools, tool results, structured outputs, n and logprobs (issue 19) ------------------------------

WEATHER = ToolFunction(
    "get_weather",
    "Weather for a city; ask jo@example.com about outages",
    {
        "type": "object",
        "properties": {
            "city": {"type": "string", "description": "the city"},
            "unit": {"type": "string", "enum": ["c", "f"]},
            "days": {"type": "integer", "default": 3},
        },
        "required": ["city"],
    },
)
CALL = ToolCall("call_1", "get_weather", '{"city": "Paris"}')
TOOL_TALK = (
    ChatMessage("user", "Weather in Paris?"),
    ChatMessage("assistant", "", tool_calls=(CALL,)),
    ChatMessage("tool", '{"temp": 21, "contact": "jo@example.com"}', tool_call_id="call_1"),
)


def tool_request(**changes):
    fields = {
        "model": "cloud",
        "messages": TOOL_TALK,
        "params": GenerationParams(max_tokens=16),
        "tools": (WEATHER,),
        "tool_choice": ToolChoice("auto"),
    }
    return ChatRequest(**{**fields, **changes})


def test_json_strings_walk_keys_strings_and_numbers_but_not_flags():
    value = {"a": ["x", 1, 2.5, True, None, {"b": "y"}], "c": False}
    assert list(json_strings(value)) == ["a", "x", "1", "2.5", "b", "y", "c"]


def test_request_texts_hold_tool_definitions_calls_results_and_schemas():
    schema = {"type": "object", "properties": {"who": {"const": "Jo Bloggs"}}}
    request = tool_request(
        params=GenerationParams(max_tokens=16, response_format=ResponseFormat("json_schema", "person", schema, "a man"))
    )
    texts = request_texts(request, never)
    for expected in (
        '{"temp": 21, "contact": "jo@example.com"}',  # the tool result
        "call_1",
        "get_weather",
        '{"city": "Paris"}',  # the call's arguments
        WEATHER.description,
        "the city",
        "unit",
        "f",
        "3",  # a number in the schema (a default)
        "person",
        "a man",
        "who",
        "Jo Bloggs",
    ):
        assert expected in texts, expected


def test_a_request_without_tools_is_judged_on_what_it_always_was():
    request = ChatRequest("box", (ChatMessage("user", "hi"),), GenerationParams(max_tokens=4, stop=("x",)))
    assert request_texts(request, never) == ["hi", "x"]


def test_the_upstream_body_carries_tools_calls_results_n_logprobs_and_response_format():
    rf = ResponseFormat("json_schema", "answer", {"type": "object"}, strict=True)
    request = tool_request(params=GenerationParams(max_tokens=16, n=2, logprobs=3, response_format=rf))
    out = upstream_request(request, None)
    assert out["messages"] == [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [CALL.as_dict()]},
        {"role": "tool", "content": TOOL_TALK[2].content, "tool_call_id": "call_1"},
    ]
    assert out["tools"] == [WEATHER.as_dict()]
    assert (out["tool_choice"], out["parallel_tool_calls"]) == ("auto", True)
    assert (out["n"], out["logprobs"], out["top_logprobs"]) == (2, True, 3)
    assert out["response_format"] == rf.as_value()
    named = upstream_request(tool_request(tool_choice=ToolChoice("function", "get_weather")), None)
    assert named["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert "n" not in named and "logprobs" not in named and "response_format" not in named
    completion = CompletionRequest("cloud", "p", GenerationParams(max_tokens=4, logprobs=2))
    assert upstream_request(completion, None)["logprobs"] == 2


def test_redaction_reaches_tool_descriptions_results_arguments_and_schema_prose():
    redact = PromptClassifier(POLICY).redact
    schema = {
        "type": "object",
        "description": "mail jo@example.com",
        "properties": {"description": {"type": "string", "title": "jo@example.com"}},
    }
    request = tool_request(
        messages=(
            *TOOL_TALK[:1],
            ChatMessage("assistant", "", tool_calls=(ToolCall("c", "get_weather", '{"city": "jo@example.com"}'),)),
            TOOL_TALK[2],
        ),
        params=GenerationParams(max_tokens=16, response_format=ResponseFormat("json_schema", "x", schema)),
    )
    out = upstream_request(request, redact)
    assert "jo@example.com" not in json.dumps(out)
    assert "jo@example.com" in json.dumps(request_texts(request, never))  # and every one was classified
    assert set(out["response_format"]["json_schema"]["schema"]["properties"]) == {"description"}  # keys stay


@pytest.mark.parametrize(
    "where, make",
    [
        ("an enum", lambda: tool_request(tools=(ToolFunction("f", None, {"enum": ["jo@example.com"]}),))),
        ("a key", lambda: tool_request(tools=(ToolFunction("f", None, {"properties": {"jo@example.com": {}}}),))),
        (
            "a const",
            lambda: tool_request(
                params=GenerationParams(
                    max_tokens=4, response_format=ResponseFormat("json_schema", "x", {"const": "jo@example.com"})
                )
            ),
        ),
        ("a call id", lambda: tool_request(messages=(ChatMessage("tool", "ok", tool_call_id="jo@example.com"),))),
    ],
)
def test_redaction_that_would_change_a_structured_part_is_refused_and_never_leaves(where, make):
    """Tried: an email (class internal, which redacts) as a schema enum value, a property name, a const, and a
    tool call id, on a request bound for an upstream."""
    pool = FakePool({"a": ("cloud",)})
    gw = gateway(FakeService(), pool)
    info = RouteInfo()
    with pytest.raises(RoutingRefused) as refused:
        asyncio.run(gw.generate(make(), CALLER, "", 0.0, info))
    assert (refused.value.status, refused.value.code, info.route) == (503, "redaction_failed", "refused")
    assert "a structured part cannot be redacted" in refused.value.message
    assert "jo@example.com" not in refused.value.message
    assert pool.sent == []


def test_a_pii_string_in_a_tool_description_or_result_raises_the_class():
    classify = PromptClassifier(POLICY).classify
    bare = ChatRequest("cloud", (ChatMessage("user", "Weather in Paris?"),), GenerationParams(max_tokens=4))
    assert classify(request_texts(bare, never)).data_class == "public"
    described = dataclasses.replace(bare, tools=(WEATHER,), tool_choice=ToolChoice("auto"))
    assert classify(request_texts(described, never)).data_class == "internal"
    result = dataclasses.replace(bare, messages=TOOL_TALK)
    assert classify(request_texts(result, never)).data_class == "internal"


_name = st.from_regex(r"[a-z][a-z_]{0,8}", fullmatch=True)
_schema = st.fixed_dictionaries(
    {
        "type": st.just("object"),
        "properties": st.dictionaries(
            _text,
            st.fixed_dictionaries(
                {"type": st.just("string")},
                optional={"description": _text, "enum": st.lists(_text, min_size=1, max_size=2)},
            ),
            max_size=3,
        ),
    },
    optional={"description": _text, "title": _text},
)
_tool_def = st.builds(
    lambda name, description, parameters: {
        "type": "function",
        "function": {"name": name, "description": description, "parameters": parameters},
    },
    _name,
    _text,
    _schema,
)
_tool_talk = st.builds(
    lambda call_id, name, arguments, result: [
        {"role": "user", "content": "go"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}],
        },
        {"role": "tool", "tool_call_id": call_id, "content": result},
    ],
    _name,
    _name,
    _text,
    _text,
)


@settings(max_examples=100, deadline=None)
@given(
    _tool_talk,
    st.lists(_tool_def, min_size=1, max_size=3, unique_by=lambda t: t["function"]["name"]),
    st.one_of(st.none(), _schema),
)
def test_every_string_of_tools_calls_results_and_schemas_that_leaves_was_classified(messages, tools, schema):
    """With tools, tool history and a response format, every string the upstream body holds (but the words of
    OpenAI's own format: roles, "function", the tool choice) is among the texts the request is classified on."""
    body = {"model": "cloud", "messages": messages, "tools": tools, "tool_choice": "auto"}
    if schema is not None:  # the parser takes a response format beside tools only when none may be called
        body["tool_choice"] = "none"
        body["response_format"] = {"type": "json_schema", "json_schema": {"name": "out", "schema": schema}}
    params = parse_chat(body, LIMITS)
    judged = set(request_texts(params, never))
    out = upstream_request(params, None)
    structural = {"role", "type", "model", "tool_choice"}
    for path, value in _strings(out):
        if path[-1] in structural:
            continue
        assert value in judged, (path, value)
    keys = [k for t in out["tools"] for k in json_strings(t["function"]["parameters"])]
    assert set(keys) <= judged
