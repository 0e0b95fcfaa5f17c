import pytest

from edge_agent.api.schema import Limits, parse_chat, parse_completion, parse_embeddings
from edge_agent.client_request import ChatMessage, RequestError

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
