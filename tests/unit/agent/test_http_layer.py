"""The HTTP layer's own decisions, without a socket: the one error map, the SSE framing of a streamed answer,
the typed requests' canonical form, which the response cache's key is built from, and OpenAI's response objects
(n choices, tool calls, logprobs, cached tokens) as built, streamed and replayed, checked with the openai client's
own models."""

import asyncio
import json

from openai.types import Completion as OpenAICompletion
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from edge_agent.access import AuthError
from edge_agent.api.app import _sse_events
from edge_agent.api.error_map import error_for, http_error_for
from edge_agent.api.schema import Limits, parse_chat, parse_completion
from edge_agent.cache_policy import cache_key
from edge_agent.client_request import RequestError, ToolCall
from edge_agent.generation import DoneEvent, TokenEvent, TokenLogprob, TopLogprob
from edge_agent.openai_objects import (
    ChoiceOutcome,
    Completion,
    EncodedChunk,
    completion_logprobs,
    dumps,
    replay_chunks,
)
from edge_agent.scheduler import DeadlineExceededError, OverloadedError
from edge_agent.service import ClientGoneError, StepEvents, _AnswerParts

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


# -- OpenAI's response objects: n choices, tool calls, logprobs, cached tokens, and their replay -----


def _lp(piece, logprob, *top):
    return TokenLogprob(0, piece, logprob, tuple(TopLogprob(p, lp) for p, lp in top))


ENTRIES = [
    _lp(b"Hi", -0.1, (b"Hi", -0.1), (b"Hello", -2.5)),
    _lp(b" \xc3\xa9", -0.7, (b" \xc3\xa9", -0.7), (b"!", -1.0)),
]


def _chat_body():
    completion = Completion("chat", "chatcmpl-1", 1, "m")
    call = ToolCall("call_a", "get_weather", '{"city":"Paris"}').as_dict()
    return completion.body(
        [
            ChoiceOutcome(1, None, "tool_calls", [call], []),
            ChoiceOutcome(0, "Hi é", "stop", [], ENTRIES),
        ],
        prompt_tokens=9,
        completion_tokens=7,
        cached_tokens=4,
    )


def test_a_chat_body_of_n_choices_has_openai_shape_calls_logprobs_and_cached_tokens():
    body = _chat_body()
    parsed = ChatCompletion.model_validate(body)  # the openai client's own model of a response
    assert [c.index for c in parsed.choices] == [0, 1]
    first, second = parsed.choices
    assert first.message.content == "Hi é" and first.finish_reason == "stop"
    assert [t.token for t in first.logprobs.content] == ["Hi", " é"]
    assert first.logprobs.content[1].bytes == [32, 195, 169]
    assert [t.token for t in first.logprobs.content[0].top_logprobs] == ["Hi", "Hello"]
    assert second.message.content is None and second.finish_reason == "tool_calls"
    assert second.message.tool_calls[0].function.arguments == '{"city":"Paris"}'
    assert parsed.usage.prompt_tokens_details.cached_tokens == 4
    assert (parsed.usage.prompt_tokens, parsed.usage.completion_tokens, parsed.usage.total_tokens) == (9, 7, 16)


def test_completions_logprobs_use_the_legacy_shape_with_text_offsets():
    lp = completion_logprobs(ENTRIES, 5)
    assert lp == {
        "tokens": ["Hi", " é"],
        "token_logprobs": [-0.1, -0.7],
        "top_logprobs": [{"Hi": -0.1, "Hello": -2.5}, {" é": -0.7, "!": -1.0}],
        "text_offset": [5, 7],
    }
    body = Completion("completions", "cmpl-1", 1, "m").body([ChoiceOutcome(0, "Hi é", "length", [], ENTRIES)], 3, 2)
    assert OpenAICompletion.model_validate(body).choices[0].logprobs.text_offset == [0, 2]


def test_a_replayed_answer_reassembles_to_the_stored_body_choice_by_choice():
    body = _chat_body()
    chunks = list(replay_chunks("chat", body, include_usage=True))
    for chunk in chunks:
        ChatCompletionChunk.model_validate(chunk)
    got: dict = {}
    for chunk in chunks[:-1]:
        (choice,) = chunk["choices"]
        mine = got.setdefault(choice["index"], {"content": "", "calls": [], "logprobs": [], "finish": None})
        delta = choice["delta"]
        mine["content"] += delta.get("content") or ""
        for call in delta.get("tool_calls", []):
            mine["calls"].append({k: v for k, v in call.items() if k != "index"})
        if choice["logprobs"]:
            mine["logprobs"] += choice["logprobs"]["content"]
        mine["finish"] = choice["finish_reason"] or mine["finish"]
    for stored in body["choices"]:
        mine = got[stored["index"]]
        assert mine["content"] == (stored["message"]["content"] or "")
        assert mine["calls"] == stored["message"].get("tool_calls", [])
        assert mine["logprobs"] == (stored["logprobs"] or {"content": []})["content"]
        assert mine["finish"] == stored["finish_reason"]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == body["usage"]


def test_a_body_stored_before_cached_tokens_replays_with_zero():
    old = {
        "id": "cmpl-1",
        "created": 1,
        "model": "m",
        "choices": [{"index": 0, "text": "x", "logprobs": None, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }
    *_, last = replay_chunks("completions", old, include_usage=True)
    assert last["usage"]["prompt_tokens_details"] == {"cached_tokens": 0}


def _streamed(answer, completion, events):
    chunks = []
    for ev in events:
        chunks += answer.add(ev, completion) if isinstance(ev, TokenEvent) else answer.finish(ev, completion)
    return [json.loads(c) if isinstance(c, EncodedChunk) else c for c in chunks]


def test_an_encoded_text_chunk_is_byte_for_byte_the_object_encoded():
    for endpoint in ("chat", "completions"):
        completion = Completion(endpoint, "id-1", 1, 'a "model"')
        for index, text in enumerate(["", "plain", 'quote " and \\ back', "é 中 \n \u2028 \x00 \U0001f600"]):
            assert completion.text_chunk_encoded(text, index) == dumps(completion.text_chunk(text, index))
    frames = _frames([Completion("chat", "id-1", 1, "m").text_chunk_encoded("hi")])
    assert json.loads(frames[0][len(b"data: ") :])["choices"][0]["delta"] == {"content": "hi"}


def test_n_choices_stream_interleaved_and_the_body_matches_what_was_streamed():
    completion = Completion("chat", "chatcmpl-2", 1, "m")
    answer = _AnswerParts("chat", 2, with_logprobs=True, tools_on=False)
    events = [
        TokenEvent("Hi", 1, (ENTRIES[0],)),
        TokenEvent("Hi", 0, (ENTRIES[0],)),
        TokenEvent(" é", 0, (ENTRIES[1],)),
        DoneEvent("stop", 5, 2, 0, cached_tokens=3),
        DoneEvent("length", 5, 1, 1, cached_tokens=3),
    ]
    chunks = _streamed(answer, completion, events)
    assert answer.complete and answer.usage == (5, 3, 3)
    for chunk in chunks:
        ChatCompletionChunk.model_validate(chunk)
    finishes = [(c["choices"][0]["index"], c["choices"][0]["finish_reason"]) for c in chunks]
    assert [f for f in finishes if f[1]] == [(0, "stop"), (1, "length")]
    body = ChatCompletion.model_validate(answer.body(completion))
    assert [(c.message.content, c.finish_reason) for c in body.choices] == [("Hi é", "stop"), ("Hi", "length")]
    assert [len(c.logprobs.content) for c in body.choices] == [2, 1]


def test_a_tool_reply_streams_call_deltas_and_ends_with_finish_reason_tool_calls():
    completion = Completion("chat", "chatcmpl-3", 1, "m")
    answer = _AnswerParts("chat", 1, with_logprobs=False, tools_on=True)
    pieces = ["functions.", "get_weather:\n", '{"city": ', '"Paris"}']
    chunks = _streamed(answer, completion, [*(TokenEvent(p) for p in pieces), DoneEvent("stop", 5, 4)])
    deltas = [d for c in chunks for d in c["choices"][0]["delta"].get("tool_calls", [])]
    assert deltas[0]["function"] == {"name": "get_weather", "arguments": ""} and deltas[0]["id"].startswith("call_")
    assert "".join(d["function"]["arguments"] for d in deltas) == '{"city": "Paris"}'
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
    message = ChatCompletion.model_validate(answer.body(completion)).choices[0].message
    assert message.content is None and message.tool_calls[0].id == deltas[0]["id"]  # the stored body keeps the id


def test_completion_chunks_continue_text_offsets_across_a_stream():
    completion = Completion("completions", "cmpl-2", 1, "m")
    answer = _AnswerParts("completions", 1, with_logprobs=True, tools_on=False)
    chunks = _streamed(
        answer,
        completion,
        [TokenEvent("Hi", 0, (ENTRIES[0],)), TokenEvent(" é", 0, (ENTRIES[1],)), DoneEvent("stop", 1, 2)],
    )
    offsets = [c["choices"][0]["logprobs"]["text_offset"] for c in chunks if c["choices"][0]["logprobs"]]
    assert offsets == [[0], [2]]
    OpenAICompletion.model_validate(chunks[-1])  # (the client takes the others unvalidated: finish_reason null)


def test_step_events_reach_the_loop_once_per_step_in_order():
    async def main():
        loop = asyncio.get_running_loop()
        events = StepEvents()
        a, b = asyncio.Queue(), asyncio.Queue()
        deliver_a, deliver_b = events.sink(loop, a), events.sink(loop, b)
        deliver_a(TokenEvent("1"))
        deliver_b(TokenEvent("x"))
        deliver_a(TokenEvent("2"))
        await asyncio.sleep(0)
        assert a.empty() and b.empty()  # nothing before the step ends
        await asyncio.to_thread(events.flush)  # the scheduler thread ends its step
        got = [await a.get(), await a.get(), await b.get()]
        assert [e.text for e in got] == ["1", "2", "x"]
        events.flush()  # an empty step wakes nobody

    asyncio.run(main())
