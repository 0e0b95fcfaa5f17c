"""Every kind of bad input gets a specific 4xx in OpenAI's shape; the agent keeps serving.

Tried: malformed JSON, a non-object body, wrong types, an unknown model, an
unknown parameter, a prompt longer than the context, max_tokens out of range,
an oversized body (413), invalid UTF-8, token ids outside the vocabulary,
unknown paths and wrong methods; the issue-19 parameters (n and top_logprobs out of range, top_logprobs
without logprobs, a malformed response_format, a JSON schema keyword the grammar cannot enforce, a tool_choice
naming no tool, ignore_eos with a grammar, a tool message answering no call, duplicate tool names); then a
property-based fuzz of random bodies, the issue-19 fields among them.
"""

import json

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent_process import start_agent

SMOL = "smollm2-135m-instruct"
USER = [{"role": "user", "content": "hi"}]
WEATHER = {
    "type": "function",
    "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}},
}
AGE_MINIMUM = {"type": "object", "properties": {"age": {"type": "integer", "minimum": 0}}}
SCHEMA_PARAM = "response_format.json_schema.schema"


@pytest.fixture(scope="module")
def small_agent(tmp_path_factory):
    """A short context and body limit keep oversize cases cheap."""
    agent = start_agent(
        tmp_path_factory.mktemp("bad-input"), sections={"model": {"n_ctx": 128}, "server": {"max_body_bytes": 8192}}
    )
    yield agent
    agent.stop()


def assert_openai_error(response, status, param=None, code=None, contains=None):
    assert response.status_code == status, response.text
    err = response.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["message"] and "Traceback" not in err["message"]
    if param is not None:
        assert err["param"] == param
    if code is not None:
        assert err["code"] == code
    if contains is not None:
        assert contains in err["message"]


def raw(agent, path, content, method="POST", headers=None):
    return httpx.request(
        method,
        agent.base_url + path,
        content=content,
        timeout=60,
        headers={"Content-Type": "application/json", **(headers or {})},
    )


CASES = [
    ("/v1/completions", b"{not json", 400, None, "invalid_json"),
    ("/v1/completions", b"", 400, None, "invalid_json"),
    ("/v1/completions", b"\xff\xfe\x00", 400, None, "invalid_json"),
    ("/v1/completions", b"[1, 2]", 400, None, None),
    ("/v1/completions", b"[" * 3000 + b"]" * 3000, 400, None, "invalid_json"),
    (
        "/v1/completions",
        b'{"model": "smollm2-135m-instruct", "prompt": "x", "seed": ' + b"9" * 5000 + b"}",
        400,
        None,
        "invalid_json",
    ),
    ("/v1/completions", json.dumps({"model": SMOL, "prompt": 42}).encode(), 400, "prompt", None),
    (
        "/v1/completions",
        json.dumps({"model": SMOL, "prompt": "x", "max_tokens": "ten"}).encode(),
        400,
        "max_tokens",
        None,
    ),
    ("/v1/completions", json.dumps({"model": SMOL, "prompt": "x", "max_tokens": 0}).encode(), 400, "max_tokens", None),
    (
        "/v1/completions",
        json.dumps({"model": SMOL, "prompt": "x", "max_tokens": 10**9}).encode(),
        400,
        "max_tokens",
        None,
    ),
    (
        "/v1/completions",
        json.dumps({"model": SMOL, "prompt": "x", "temperature": -1}).encode(),
        400,
        "temperature",
        None,
    ),
    ("/v1/completions", json.dumps({"model": SMOL, "prompt": [10**9]}).encode(), 400, "prompt", None),
    (
        "/v1/completions",
        b'{"model": "smollm2-135m-instruct", "prompt": "x", "temperature": NaN}',
        400,
        "temperature",
        None,
    ),
    (
        "/v1/completions",
        b'{"model": "smollm2-135m-instruct", "prompt": "x", "max_tokens": Infinity}',
        400,
        "max_tokens",
        None,
    ),
    (
        "/v1/completions",
        json.dumps({"model": SMOL, "prompt": "x", "bogus": 1}).encode(),
        400,
        "bogus",
        "unknown_parameter",
    ),
    ("/v1/completions", json.dumps({"model": "gpt-4", "prompt": "x"}).encode(), 404, "model", "model_not_found"),
    (
        "/v1/completions",
        json.dumps({"model": SMOL, "prompt": "word " * 200}).encode(),
        400,
        "prompt",
        "context_length_exceeded",
    ),
    ("/v1/chat/completions", json.dumps({"model": SMOL, "messages": "hi"}).encode(), 400, "messages", None),
    (
        "/v1/chat/completions",
        json.dumps({"model": SMOL, "messages": [{"role": "user"}]}).encode(),
        400,
        "messages[0].content",
        None,
    ),
    (
        "/v1/chat/completions",
        json.dumps({"model": SMOL, "messages": [{"role": "user", "content": "w " * 300}]}).encode(),
        400,
        "messages",
        "context_length_exceeded",
    ),
    ("/v1/embeddings", json.dumps({"model": SMOL, "input": 5}).encode(), 400, "input", None),
    *[
        ("/v1/chat/completions", json.dumps({"model": SMOL, "messages": USER, **extra}).encode(), 400, param, code)
        for extra, param, code in [
            ({"n": 0}, "n", "invalid_value"),
            ({"n": 129}, "n", "invalid_value"),
            ({"logprobs": True, "top_logprobs": 21}, "top_logprobs", "invalid_value"),
            ({"top_logprobs": 2}, "top_logprobs", "invalid_value"),
            ({"response_format": {"type": "xml"}}, "response_format", "invalid_value"),
            (
                {"response_format": {"type": "json_schema", "json_schema": {"schema": {}}}},
                "response_format.json_schema.name",
                None,
            ),
            (
                {"response_format": {"type": "json_schema", "json_schema": {"name": "p", "schema": AGE_MINIMUM}}},
                SCHEMA_PARAM,
                "unsupported_schema",
            ),
            ({"response_format": {"type": "json_object"}, "ignore_eos": True}, "ignore_eos", "invalid_value"),
            (
                {"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}},
                "tool_choice",
                None,
            ),
            ({"tools": [WEATHER, WEATHER]}, "tools[1].function.name", None),
            ({"tool_choice": "required"}, "tool_choice", None),
            (
                {"messages": [{"role": "tool", "tool_call_id": "call_1", "content": "x"}]},
                "messages[0].tool_call_id",
                None,
            ),
        ]
    ],
    ("/v1/completions", json.dumps({"model": SMOL, "prompt": "x", "logprobs": 6}).encode(), 400, "logprobs", None),
    (
        "/v1/completions",
        json.dumps({"model": SMOL, "prompt": "x", "tools": [WEATHER]}).encode(),
        400,
        "tools",
        "unsupported_parameter",
    ),
    (
        "/v1/embeddings",
        json.dumps({"model": SMOL, "input": "w " * 300}).encode(),
        400,
        "input",
        "context_length_exceeded",
    ),
]


@pytest.mark.parametrize("path, content, status, param, code", CASES)
def test_bad_request_gets_a_specific_error(small_agent, path, content, status, param, code):
    assert_openai_error(raw(small_agent, path, content), status, param, code)


def test_issue_19_refusals_say_what_is_wrong(small_agent):
    """The message names the keyword and where it is, the range allowed, the functions known."""

    def chat(**extra):
        return httpx.post(
            small_agent.base_url + "/v1/chat/completions", json={"model": SMOL, "messages": USER, **extra}, timeout=60
        )

    spec = {"name": "p", "schema": AGE_MINIMUM}
    assert_openai_error(
        chat(response_format={"type": "json_schema", "json_schema": spec}),
        400,
        SCHEMA_PARAM,
        "unsupported_schema",
        contains="at /properties/age: uses 'minimum', which structured output does not support",
    )
    choice = {"type": "function", "function": {"name": "nope"}}
    assert_openai_error(chat(tools=[WEATHER], tool_choice=choice), 400, "tool_choice", contains="known: get_weather")
    assert_openai_error(chat(n=129), 400, "n", contains="'n' must be an integer from 1 to ")
    assert_openai_error(chat(logprobs=True, top_logprobs=21), 400, "top_logprobs", contains="from 0 to 20")


def test_oversized_body_gets_413_naming_the_limit(small_agent):
    big = json.dumps({"model": SMOL, "prompt": "x" * 10_000}).encode()
    assert_openai_error(raw(small_agent, "/v1/completions", big), 413, code="request_too_large", contains="8192")


def test_oversized_chunked_body_without_length_gets_413(small_agent):
    def chunks():
        yield b'{"model": "smollm2-135m-instruct", "prompt": "'
        for _ in range(20):
            yield b"x" * 1000
        yield b'"}'

    r = httpx.post(small_agent.base_url + "/v1/completions", content=chunks(), timeout=60)
    assert_openai_error(r, 413, code="request_too_large")


def test_unknown_path_and_wrong_method_are_openai_errors(small_agent):
    assert_openai_error(httpx.get(small_agent.base_url + "/v1/nothing"), 404, code="not_found")
    assert_openai_error(httpx.get(small_agent.base_url + "/v1/completions"), 405, code="method_not_allowed")


def test_agent_still_serves_after_all_of_it(small_agent):
    for path, content, *_ in CASES:
        raw(small_agent, path, content)
    r = httpx.post(
        small_agent.base_url + "/v1/completions",
        json={"model": SMOL, "prompt": "still here", "max_tokens": 3},
        timeout=60,
    )
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] > 0
    assert "Traceback" not in small_agent.log()


# -- property-based fuzz ----------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=10,
)
FIELDS = [
    "model",
    "prompt",
    "messages",
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
    "input",
    "encoding_format",
    "logprobs",
    "max_completion_tokens",
    "ignore_eos",
    "top_logprobs",
    "response_format",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
]
VALID = {
    "/v1/completions": {"model": SMOL, "prompt": "fuzz", "max_tokens": 2},
    "/v1/chat/completions": {"model": SMOL, "messages": [{"role": "user", "content": "fuzz"}], "max_tokens": 2},
    "/v1/embeddings": {"model": SMOL, "input": "fuzz"},
}


@st.composite
def mutated_bodies(draw):
    path = draw(st.sampled_from(sorted(VALID)))
    body = dict(VALID[path])
    for key in draw(st.lists(st.sampled_from(FIELDS) | st.text(max_size=6), max_size=3)):
        body[key] = draw(json_values)
    if draw(st.booleans()):
        body.pop(draw(st.sampled_from(sorted(body))), None)
    return path, body


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=mutated_bodies())
def test_fuzzed_bodies_never_cause_a_server_error(small_agent, case):
    path, body = case
    if isinstance(body.get("max_tokens"), int) and not isinstance(body.get("max_tokens"), bool):
        body["max_tokens"] = min(body["max_tokens"], 8) if body["max_tokens"] > 0 else body["max_tokens"]
    r = httpx.post(small_agent.base_url + path, json=body, timeout=120)
    assert r.status_code < 500, r.text
    if r.status_code >= 400:
        assert_openai_error(r, r.status_code)
