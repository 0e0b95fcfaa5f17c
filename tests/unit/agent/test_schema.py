import pytest

from edge_agent.api.schema import ALL_FEATURES, Limits, parse_chat, parse_completion, parse_embeddings
from edge_agent.client_request import ChatMessage, RequestError, ResponseFormat, ToolCall, ToolChoice

LIMITS = Limits(n_ctx=2048, model_ids=("m",))


def test_completion_defaults_follow_openai():
    p = parse_completion({"model": "m", "prompt": "hi"}, LIMITS)
    assert p.params.max_tokens == 16 and p.params.sampling.temperature == 1.0 and p.params.stop == ()
    assert p.params.stream is False


def test_chat_takes_max_completion_tokens_and_text_parts():
    p = parse_chat(
        {
            "model": "m",
            "max_completion_tokens": 5,
            "messages": [
                {"role": "developer", "content": [{"type": "text", "text": "be brief"}]},
                {"role": "user", "content": "hi"},
            ],
        },
        LIMITS,
    )
    assert p.params.max_tokens == 5
    assert p.messages == (ChatMessage("system", "be brief"), ChatMessage("user", "hi"))


@pytest.mark.parametrize(
    "body, param, status",
    [
        ([], None, 400),
        ("text", None, 400),
        ({"prompt": "x"}, "model", 400),
        ({"model": "other", "prompt": "x"}, "model", 404),
        ({"model": "m"}, "prompt", 400),
        ({"model": "m", "prompt": 5}, "prompt", 400),
        ({"model": "m", "prompt": ["a", "b"]}, "prompt", 400),
        ({"model": "m", "prompt": "x", "max_tokens": 0}, "max_tokens", 400),
        ({"model": "m", "prompt": "x", "max_tokens": 4096}, "max_tokens", 400),
        ({"model": "m", "prompt": "x", "max_tokens": "8"}, "max_tokens", 400),
        ({"model": "m", "prompt": "x", "max_tokens": True}, "max_tokens", 400),
        ({"model": "m", "prompt": "x", "temperature": 3}, "temperature", 400),
        ({"model": "m", "prompt": "x", "temperature": "hot"}, "temperature", 400),
        ({"model": "m", "prompt": "x", "top_p": -0.1}, "top_p", 400),
        ({"model": "m", "prompt": "x", "seed": 1.5}, "seed", 400),
        ({"model": "m", "prompt": "x", "stop": ["a", "b", "c", "d", "e"]}, "stop", 400),
        ({"model": "m", "prompt": "x", "stop": [""]}, "stop", 400),
        ({"model": "m", "prompt": "x", "n": 2}, "n", 400),
        ({"model": "m", "prompt": "x", "stream": "yes"}, "stream", 400),
        ({"model": "m", "prompt": "x", "stream_options": {"include_usage": True}}, "stream_options", 400),
        ({"model": "m", "prompt": "x", "presence_penalty": 1.0}, "presence_penalty", 400),
        ({"model": "m", "prompt": "x", "ignore_eos": "yes"}, "ignore_eos", 400),
        ({"model": "m", "prompt": "x", "top_k": 2**31}, "top_k", 400),
        ({"model": "m", "prompt": "x", "top_k": -1}, "top_k", 400),
        ({"model": "m", "prompt": "x", "frobnicate": 1}, "frobnicate", 400),
    ],
)
def test_bad_completion_input_names_the_parameter(body, param, status):
    with pytest.raises(RequestError) as info:
        parse_completion(body, LIMITS)
    assert info.value.param == param and info.value.status == status


@pytest.mark.parametrize(
    "messages, param",
    [
        (None, "messages"),
        ([], "messages"),
        (["hi"], "messages[0]"),
        ([{"role": "robot", "content": "x"}], "messages[0].role"),
        ([{"role": "user", "content": 3}], "messages[0].content"),
        ([{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}], "messages[0].content"),
    ],
)
def test_bad_messages_name_the_message(messages, param):
    with pytest.raises(RequestError) as info:
        parse_chat({"model": "m", "messages": messages}, LIMITS)
    assert info.value.param == param


def test_neutral_values_of_unsupported_parameters_are_accepted():
    p = parse_completion({"model": "m", "prompt": "x", "presence_penalty": 0, "logprobs": None, "echo": False}, LIMITS)
    assert p.prompt == "x"


def test_embeddings_input_forms():
    assert parse_embeddings({"model": "m", "input": "a"}, LIMITS).inputs == ("a",)
    assert parse_embeddings({"model": "m", "input": [1, 2]}, LIMITS).inputs == ((1, 2),)
    assert parse_embeddings({"model": "m", "input": [[1], [2, 3]]}, LIMITS).inputs == ((1,), (2, 3))
    for bad in ([], [1, "a"], {"x": 1}, None, [[]]):
        with pytest.raises(RequestError):
            parse_embeddings({"model": "m", "input": bad}, LIMITS)


UPSTREAM_LIMITS = Limits(n_ctx=2048, model_ids=("m",), upstream_model_ids=("gpt-4o-mini", "big"), vocab_size=50)


def test_a_model_an_upstream_lists_may_be_asked_for_generation_but_not_embeddings():
    assert parse_chat({"model": "big", "messages": [{"role": "user", "content": "hi"}]}, UPSTREAM_LIMITS).model == "big"
    assert parse_completion({"model": "gpt-4o-mini", "prompt": "x"}, UPSTREAM_LIMITS).model == "gpt-4o-mini"
    with pytest.raises(RequestError) as info:
        parse_completion({"model": "gpt-5", "prompt": "x"}, UPSTREAM_LIMITS)
    assert (info.value.status, info.value.code, info.value.param) == (404, "model_not_found", "model")
    assert info.value.message == (
        "the model 'gpt-5' does not exist here; available: m; through an upstream: gpt-4o-mini, big"
    )
    with pytest.raises(RequestError) as info:
        parse_embeddings({"model": "big", "input": "x"}, UPSTREAM_LIMITS)  # embeddings are always computed here
    assert info.value.status == 404 and "through an upstream" not in info.value.message


@pytest.mark.parametrize(
    "parse, body, param",
    [
        (parse_completion, {"model": "m", "prompt": [1, 50]}, "prompt"),
        (parse_completion, {"model": "m", "prompt": [-1]}, "prompt"),
        (parse_embeddings, {"model": "m", "input": [3, 99]}, "input"),
        (parse_embeddings, {"model": "m", "input": [[3], [7, 2**40]]}, "input"),
    ],
)
def test_token_ids_outside_the_vocabulary_are_a_400_naming_its_bounds(parse, body, param):
    with pytest.raises(RequestError) as info:
        parse(body, UPSTREAM_LIMITS)
    assert (info.value.status, info.value.param) == (400, param)
    assert "outside the vocabulary (0..49)" in info.value.message
    assert parse_completion({"model": "m", "prompt": [0, 49]}, UPSTREAM_LIMITS).prompt == (0, 49)


def test_a_message_name_is_kept_and_other_message_keys_only_when_empty():
    messages = [
        {"role": "user", "name": "jane", "content": "hi"},
        {"role": "assistant", "content": "ok", "tool_calls": None, "refusal": None, "annotations": []},
    ]
    assert parse_chat({"model": "m", "messages": messages}, LIMITS).messages == (
        ChatMessage("user", "hi", name="jane"),
        ChatMessage("assistant", "ok"),
    )
    for message, param in (
        ({"role": "user", "content": "hi", "name": 5}, "messages[0].name"),
        ({"role": "user", "content": "hi", "name": ""}, "messages[0].name"),
        ({"role": "user", "content": "hi", "tool_calls": [{"id": "x"}]}, "messages[0].tool_calls"),
        ({"role": "user", "content": "hi", "secret": "4111 1111 1111 1111"}, "messages[0].secret"),
        ({"role": "user", "content": "hi", "flag": False}, "messages[0].flag"),
    ):
        with pytest.raises(RequestError) as info:
            parse_chat({"model": "m", "messages": [message]}, LIMITS)
        assert (info.value.status, info.value.param) == (400, param)


# -- issue 19: n, logprobs, response_format, tools ------------------------------------------------------

SERVING = Limits(n_ctx=2048, model_ids=("m",), upstream_model_ids=("big",), n_max=4, features=ALL_FEATURES)
USER = [{"role": "user", "content": "hi"}]
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
TIME = {"type": "function", "function": {"name": "get_time"}}


def chat(**body):
    return parse_chat({"model": "m", "messages": USER, **body}, SERVING)


def refusal(parse, body, limits=SERVING):
    with pytest.raises(RequestError) as info:
        parse(body, limits)
    return info.value


def test_the_new_fields_parse_into_the_typed_request():
    p = chat(
        n=3,
        logprobs=True,
        top_logprobs=5,
        tools=[WEATHER, TIME],
        tool_choice={"type": "function", "function": {"name": "get_time"}},
        parallel_tool_calls=False,
    )
    assert (p.params.n, p.params.logprobs) == (3, 5)
    assert [t.name for t in p.tools] == ["get_weather", "get_time"]
    assert p.tools[1].parameters == {"type": "object", "properties": {}}  # absent: no arguments
    assert p.tool_choice == ToolChoice("function", "get_time") and p.parallel_tool_calls is False
    assert chat(logprobs=True).params.logprobs == 0 and chat(logprobs=False).params.logprobs is None
    assert chat(tools=[WEATHER]).tool_choice == ToolChoice("auto")  # OpenAI's default with tools
    assert chat().tool_choice == ToolChoice("none") and chat().tools == ()
    c = parse_completion({"model": "m", "prompt": "x", "logprobs": 2, "n": 2}, SERVING)
    assert (c.params.logprobs, c.params.n) == (2, 2)


def test_response_format_forms():
    assert chat(response_format={"type": "text"}).params.response_format is None
    assert chat(response_format={"type": "json_object"}).params.response_format == ResponseFormat("json_object")
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    spec = {"name": "thing", "schema": schema, "strict": True}
    rf = chat(response_format={"type": "json_schema", "json_schema": spec}).params.response_format
    assert rf == ResponseFormat("json_schema", "thing", schema, None, True)
    body = {"model": "m", "prompt": "x", "response_format": {"type": "json_object"}}  # completions too
    assert parse_completion(body, SERVING).params.response_format == ResponseFormat("json_object")


def test_tool_messages_and_assistant_tool_calls():
    call = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'}}
    messages = [
        *USER,
        {"role": "assistant", "content": None, "tool_calls": [call], "refusal": None},
        {"role": "tool", "tool_call_id": "call_1", "content": [{"type": "text", "text": "-3 C"}]},
    ]
    p = parse_chat({"model": "m", "messages": messages, "tools": [WEATHER]}, SERVING)
    assert p.messages[1] == ChatMessage(
        "assistant", "", tool_calls=(ToolCall("call_1", "get_weather", call["function"]["arguments"]),)
    )
    assert p.messages[2] == ChatMessage("tool", "-3 C", tool_call_id="call_1")
    assert p.uses_tools


@pytest.mark.parametrize(
    "body, param, code",
    [
        ({"n": 5}, "n", "invalid_value"),  # the box's n_max is 4
        ({"n": 0}, "n", "invalid_value"),
        ({"n": 2.0}, "n", "invalid_value"),
        ({"logprobs": "yes"}, "logprobs", "invalid_value"),
        ({"logprobs": True, "top_logprobs": 21}, "top_logprobs", "invalid_value"),
        ({"logprobs": True, "top_logprobs": -1}, "top_logprobs", "invalid_value"),
        ({"top_logprobs": 3}, "top_logprobs", "invalid_value"),  # without logprobs: true
        ({"response_format": {"type": "xml"}}, "response_format", "invalid_value"),
        ({"response_format": "json_object"}, "response_format", "invalid_value"),
        ({"response_format": {"type": "json_object", "schema": {}}}, "response_format.schema", "invalid_value"),
        ({"response_format": {"type": "json_schema"}}, "response_format.json_schema", "invalid_value"),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"schema": {}}}},
            "response_format.json_schema.name",
            "invalid_value",
        ),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"name": "a b"}}},
            "response_format.json_schema.name",
            "invalid_value",
        ),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"name": "a", "schema": []}}},
            "response_format.json_schema.schema",
            "invalid_value",
        ),
        (
            {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "a", "schema": {"type": "integer", "minimum": 0}},
                }
            },
            "response_format.json_schema.schema",
            "unsupported_schema",
        ),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"name": "a", "schema": {}, "extra": 1}}},
            "response_format.json_schema.extra",
            "unknown_parameter",
        ),
        ({"response_format": {"type": "json_object"}, "ignore_eos": True}, "ignore_eos", "invalid_value"),
        ({"tools": [WEATHER], "ignore_eos": True}, "ignore_eos", "invalid_value"),
        ({"tools": [WEATHER], "response_format": {"type": "json_object"}}, "response_format", "unsupported_parameter"),
        ({"tools": {"a": 1}}, "tools", "invalid_value"),
        ({"tools": [{"type": "retrieval"}]}, "tools[0]", "invalid_value"),
        (
            {"tools": [{"type": "function", "function": {"name": "bad name"}}]},
            "tools[0].function.name",
            "invalid_value",
        ),
        ({"tools": [WEATHER, WEATHER]}, "tools[1].function.name", "invalid_value"),
        (
            {"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "string"}}}]},
            "tools[0].function.parameters",
            "invalid_value",
        ),
        (
            {
                "tools": [
                    {
                        "type": "function",
                        "function": {
                            "name": "f",
                            "parameters": {
                                "type": "object",
                                "properties": {"x": {"type": "string", "format": "email"}},
                            },
                        },
                    }
                ]
            },
            "tools[0].function.parameters",
            "unsupported_schema",
        ),
        (
            {"tools": [{"type": "function", "function": {"name": "f", "parameters": {}, "x": 1}}]},
            "tools[0].function.x",
            "unknown_parameter",
        ),
        ({"tools": [WEATHER], "tool_choice": "sometimes"}, "tool_choice", "invalid_value"),
        (
            {"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}},
            "tool_choice",
            "invalid_value",
        ),
        ({"tool_choice": "required"}, "tool_choice", "invalid_value"),  # no tools
        ({"tools": [WEATHER], "parallel_tool_calls": "no"}, "parallel_tool_calls", "invalid_value"),
    ],
)
def test_bad_issue_19_input_is_a_400_naming_the_parameter(body, param, code):
    error = refusal(parse_chat, {"model": "m", "messages": USER, **body})
    assert (error.status, error.param, error.code) == (400, param, code)


def test_the_messages_name_what_is_wrong():
    error = refusal(parse_chat, {"model": "m", "messages": USER, "n": 9})
    assert error.message == "'n' must be an integer from 1 to 4 (the choices one request gets), got 9"
    body = {
        "model": "m",
        "messages": USER,
        "tools": [WEATHER, TIME],
        "tool_choice": {"type": "function", "function": {"name": "nope"}},
    }
    assert (
        "'nope'" in refusal(parse_chat, body).message
        and "known: get_weather, get_time" in refusal(parse_chat, body).message
    )
    schema = {"type": "object", "properties": {"age": {"type": "integer", "minimum": 0}}}
    body = {
        "model": "m",
        "messages": USER,
        "response_format": {"type": "json_schema", "json_schema": {"name": "p", "schema": schema}},
    }
    message = refusal(parse_chat, body).message
    assert message.startswith("'response_format.json_schema.schema' at /properties/age: uses 'minimum'"), message


@pytest.mark.parametrize(
    "messages, param",
    [
        ([{"role": "tool", "content": "x"}], "messages[0].tool_call_id"),
        ([{"role": "tool", "content": "x", "tool_call_id": "call_9"}], "messages[0].tool_call_id"),  # answers no call
        ([{"role": "assistant", "content": None}], "messages[0].content"),  # null content only with tool calls
        (
            [{"role": "assistant", "content": None, "tool_calls": [{"id": "c", "function": {"name": "f"}}]}],
            "messages[0].tool_calls",
        ),
        (
            [
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [{"id": "c", "type": "code", "function": {"name": "f", "arguments": "{}"}}],
                }
            ],
            "messages[0].tool_calls",
        ),
        (
            [{"role": "assistant", "content": "x", "function_call": {"name": "f", "arguments": "{}"}}],
            "messages[0].function_call",
        ),
        ([{"role": "user", "content": "x", "tool_call_id": "c"}], "messages[0].tool_call_id"),
    ],
)
def test_bad_tool_messages_name_the_message(messages, param):
    error = refusal(parse_chat, {"model": "m", "messages": messages})
    assert (error.status, error.param) == (400, param)


def test_what_the_local_engine_does_not_serve_is_refused_and_an_upstream_model_gets_it():
    """Limits.features and n_max: the default box serves none of it (a 400, never an answer without it)."""
    for body, param in (
        ({"n": 2}, "n"),
        ({"logprobs": True}, "logprobs"),
        ({"response_format": {"type": "json_object"}}, "response_format"),
        ({"tools": [WEATHER]}, "tools"),
    ):
        error = refusal(parse_chat, {"model": "m", "messages": USER, **body}, UPSTREAM_LIMITS)
        assert (error.status, error.param) == (400, param)
        assert parse_chat({"model": "big", "messages": USER, **body}, UPSTREAM_LIMITS).model == "big"
    history = [
        *USER,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
        },
        {"role": "tool", "tool_call_id": "c", "content": "ok"},
    ]
    assert refusal(parse_chat, {"model": "m", "messages": history}, UPSTREAM_LIMITS).param == "messages"
    # The neutral values stay accepted, as before.
    body = {
        "model": "m",
        "messages": USER,
        "tools": [],
        "tool_choice": "none",
        "logprobs": False,
        "top_logprobs": 0,
        "n": 1,
    }
    assert parse_chat(body, UPSTREAM_LIMITS).params.logprobs is None


def test_chat_only_parameters_keep_their_neutral_values_on_completions():
    assert parse_completion({"model": "m", "prompt": "x", "tools": [], "top_logprobs": 0}, SERVING).prompt == "x"
    error = refusal(parse_completion, {"model": "m", "prompt": "x", "tools": [WEATHER]})
    assert (error.param, error.code) == ("tools", "unsupported_parameter")
    error = refusal(parse_completion, {"model": "m", "prompt": "x", "logprobs": 6})
    assert error.param == "logprobs" and "from 0 to 5" in error.message


def test_canonical_of_a_request_without_the_new_fields_is_unchanged():
    """The response cache's keys made before issue 19 stay the same: the new fields appear only when set."""
    p = parse_chat(
        {"model": "m", "messages": [{"role": "user", "content": "hi", "name": "jo"}], "max_tokens": 4, "seed": 1},
        SERVING,
    )
    assert p.canonical() == {
        "model": "m",
        "max_tokens": 4,
        "temperature": 1.0,
        "top_p": 1.0,
        "min_p": 0.05,
        "top_k": 40,
        "seed": 1,
        "stop": [],
        "ignore_eos": False,
        "stream": False,
        "include_usage": False,
        "messages": [{"role": "user", "content": "hi", "name": "jo"}],
    }
    c = parse_completion({"model": "m", "prompt": "x"}, SERVING).canonical()
    assert not {"n", "logprobs", "response_format"} & set(c)


def test_canonical_carries_the_new_fields_when_set():
    call = {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
    messages = [
        *USER,
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "c1", "content": "sun"},
    ]
    spec = {"name": "t", "schema": {"type": "object", "properties": {"a": {"type": "string"}}}}
    p = parse_chat(
        {
            "model": "m",
            "messages": messages,
            "n": 2,
            "logprobs": True,
            "top_logprobs": 2,
            "tools": [WEATHER],
            "tool_choice": "required",
        },
        SERVING,
    ).canonical()
    assert (p["n"], p["logprobs"], p["tool_choice"], p["parallel_tool_calls"]) == (2, 2, "required", True)
    assert p["tools"] == [WEATHER]
    assert p["messages"][1] == {"role": "assistant", "content": "", "tool_calls": [call]}
    assert p["messages"][2] == {"role": "tool", "content": "sun", "tool_call_id": "c1"}
    rf = chat(response_format={"type": "json_schema", "json_schema": spec}).canonical()["response_format"]
    assert rf == {"type": "json_schema", "json_schema": spec}
