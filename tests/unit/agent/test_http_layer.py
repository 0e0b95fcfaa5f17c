"""The HTTP layer's own decisions, without a socket: the one error map, the SSE framing of a streamed answer,
and the typed requests' canonical form, which the response cache's key is built from."""

import asyncio
import json

from edge_agent.access import AuthError
from edge_agent.api.app import _sse_events
from edge_agent.api.error_map import error_for, http_error_for
from edge_agent.api.schema import Limits, parse_chat, parse_completion
from edge_agent.cache_policy import cache_key
from edge_agent.client_request import RequestError
from edge_agent.scheduler import DeadlineExceededError, OverloadedError
from edge_agent.service import ClientGoneError

LIMITS = Limits(n_ctx=2048, model_ids=("m",))


def test_every_error_maps_to_one_status_and_openai_error_object():
    cases = [
        (RequestError("bad", "prompt"), 400, "invalid_value"),
        (RequestError("no such model", "model", code="model_not_found", status=404), 404, "model_not_found"),
        (OverloadedError("full"), 429, "queue_full"),
        (AuthError("no key", "missing_api_key"), 401, "missing_api_key"),
        (ClientGoneError("gone"), 499, "client_closed_request"),
        (DeadlineExceededError("late"), 504, "deadline_exceeded"),
        (RuntimeError("boom"), 500, "engine_error"),
    ]
    for exc, status, code in cases:
        got_status, body = error_for(exc)
        assert (got_status, body["error"]["code"]) == (status, code), exc
        assert set(body["error"]) == {"message", "type", "param", "code"}
    assert error_for(RequestError("bad", "prompt"))[1]["error"]["param"] == "prompt"
    assert http_error_for(405, "Method Not Allowed", "GET", "/v1/completions")["error"] == {
        "message": "GET /v1/completions: Method Not Allowed",
        "type": "invalid_request_error",
        "param": None,
        "code": "method_not_allowed",
    }


def _frames(chunks):
    async def collect():
        return [frame async for frame in _sse_events(chunks)]

    return asyncio.run(collect())


def test_chunks_are_framed_as_server_sent_events_ending_with_done():
    assert _frames([{"a": 1}, {"b": "é"}]) == [
        b'data: {"a":1}\n\n',
        'data: {"b":"é"}\n\n'.encode(),
        b"data: [DONE]\n\n",
    ]


def test_a_stream_that_fails_ends_with_the_error_event_then_done_and_is_closed():
    closed = []

    async def failing():
        try:
            yield {"n": 1}
            raise DeadlineExceededError("the request ran past its deadline")
        finally:
            closed.append(True)

    frames = _frames(failing())
    assert frames[0] == b'data: {"n":1}\n\n' and frames[-1] == b"data: [DONE]\n\n" and len(frames) == 3
    assert json.loads(frames[1][len(b"data: ") :])["error"]["code"] == "deadline_exceeded"
    assert closed == [True]


def test_closing_the_event_stream_closes_the_answers_stream_at_once():
    closed = []

    async def endless():
        try:
            while True:
                yield {"n": 1}
        finally:
            closed.append(True)

    async def scenario():
        events = _sse_events(endless())
        assert await events.__anext__() == b'data: {"n":1}\n\n'
        await events.aclose()  # what a client leaving does
        return closed

    assert asyncio.run(scenario()) == [True]


def test_the_canonical_form_holds_what_changes_an_answer():
    chat = parse_chat(
        {"model": "m", "messages": [{"role": "user", "content": "hi", "name": "jo"}], "seed": 3, "stop": "x"}, LIMITS
    )
    assert chat.canonical() == {
        "model": "m",
        "messages": [{"role": "user", "content": "hi", "name": "jo"}],
        "max_tokens": 2048,
        "temperature": 1.0,
        "top_p": 1.0,
        "min_p": 0.05,
        "top_k": 40,
        "seed": 3,
        "stop": ["x"],
        "ignore_eos": False,
        "stream": False,
        "include_usage": False,
    }
    ids = parse_completion({"model": "m", "prompt": [1, 2], "temperature": 0}, LIMITS)
    text = parse_completion({"model": "m", "prompt": "[1, 2]", "temperature": 0}, LIMITS)
    assert ids.canonical()["prompt"] == [1, 2]
    assert cache_key("sha", "completions", ids.canonical()) != cache_key("sha", "completions", text.canonical())
    streamed = parse_completion({"model": "m", "prompt": [1, 2], "temperature": 0, "stream": True}, LIMITS)
    assert cache_key("sha", "completions", ids.canonical()) == cache_key("sha", "completions", streamed.canonical())


def test_set_by_client_records_what_the_client_wrote_not_the_defaults():
    chat = parse_chat(
        {
            "model": "m",
            "messages": [{"role": "user", "content": "hi"}],
            "max_completion_tokens": 4,
            "temperature": None,
            "top_k": 5,
        },
        LIMITS,
    )
    assert chat.params.set_by_client == {"max_completion_tokens", "top_k"}
    assert chat.params.max_tokens == 4
