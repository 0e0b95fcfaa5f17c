"""OpenAI parity on the real models with the unmodified openai client: structured outputs (json_schema, json_object),
tools (named, auto, required, a round trip, streamed calls), n choices, logprobs and cached prompt tokens.

The agent's grammar keeps every answer valid, whatever the model would rather write: the proofs assert zero
failures, never a rate. Requests that must generate afresh (not be answered from the response cache) say
``Cache-Control: no-store``.
"""

from __future__ import annotations

import json
import math
from concurrent.futures import ThreadPoolExecutor
from enum import Enum
from typing import Annotated, Literal

import jsonschema
import openai
import pytest
from pydantic import BaseModel, Field

SMOL = "smollm2-135m-instruct"
FRESH = {"Cache-Control": "no-store"}


class Colour(str, Enum):
    red = "red"
    green = "green"
    blue = "blue"


class Address(BaseModel):
    city: str = Field(max_length=24)
    country: str = Field(max_length=24)


class Person(BaseModel):
    name: str = Field(max_length=24)
    age: int
    favourite_colour: Colour
    mood: Literal["happy", "sad", "calm"]
    address: Address
    hobbies: list[Annotated[str, Field(max_length=16)]] = Field(max_length=3)
    nickname: str | None = Field(max_length=16)


NAMES = ["Ada", "Bruno", "Chen", "Dalia", "Emeka", "Freya", "Goran", "Hana", "Ivo", "Jun"]
PLACES = ["Lisbon", "Osaka", "Lagos", "Quito", "Oslo"]
ASKS = [
    "Describe {name}, who lives in {place}, as a person record.",
    "Make up a short profile of {name} from {place}.",
    "{name} moved to {place} last year. Fill in their details.",
    "Invent a character called {name} living in {place}; give their hobbies.",
    "Tell me about {name} of {place} in one record.",
]
PROMPTS = [ask.format(name=n, place=PLACES[i % 5]) for i, (n, ask) in enumerate((n, a) for a in ASKS for n in NAMES)]


def test_fifty_varied_prompts_parse_into_the_pydantic_model_with_no_failure(smol_agent):
    """beta.chat.completions.parse sends the model's strict JSON schema; eight requests at a time, at a temperature
    that wanders, each one seeded (so a failure reproduces)."""
    assert len(set(PROMPTS)) == 50
    client = smol_agent.client(timeout=600)

    def ask(i: int):
        return client.beta.chat.completions.parse(
            model=SMOL,
            messages=[{"role": "user", "content": PROMPTS[i]}],
            response_format=Person,
            max_tokens=400,
            temperature=0.8,
            seed=i,
        )

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(ask, range(50)))
    for r in answers:
        choice = r.choices[0]
        assert choice.finish_reason == "stop", choice
        assert isinstance(choice.message.parsed, Person)
        assert Person.model_validate_json(choice.message.content) == choice.message.parsed


def test_a_streamed_structured_answer_parses_too(smol_agent):
    client = smol_agent.client(timeout=300)
    with client.beta.chat.completions.stream(
        model=SMOL,
        messages=[{"role": "user", "content": "Describe a baker from Paris."}],
        response_format=Person,
        max_tokens=400,
        temperature=0,
        extra_headers=FRESH,
    ) as stream:
        final = stream.get_final_completion()
    assert isinstance(final.choices[0].message.parsed, Person)


def test_json_object_mode_gives_a_json_object(smol_agent):
    r = smol_agent.client().chat.completions.create(
        model=SMOL,
        messages=[{"role": "user", "content": "Give me a JSON object about a cat."}],
        response_format={"type": "json_object"},
        max_tokens=200,
        temperature=0,
    )
    if r.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(r.choices[0].message.content), dict)
    else:  # a model that keeps adding keys runs out of tokens; what it wrote is still a JSON object's start
        assert r.choices[0].message.content.lstrip().startswith("{")


BOOK_SCHEMA = {
    "type": "object",
    "properties": {
        "title": {"type": "string", "maxLength": 30},
        "year": {"type": "integer"},
        "genre": {"enum": ["novel", "poetry", "essay"]},
    },
    "required": ["title", "year", "genre"],
    "additionalProperties": False,
}


def test_completions_take_a_response_format_on_gemma(gemma_agent):
    r = gemma_agent.client().completions.create(
        model="gemma-3-270m",
        prompt="A famous book, as JSON:",
        max_tokens=80,
        temperature=0,
        extra_body={"response_format": {"type": "json_schema", "json_schema": {"name": "book", "schema": BOOK_SCHEMA}}},
    )
    assert r.choices[0].finish_reason == "stop"
    jsonschema.validate(json.loads(r.choices[0].text), BOOK_SCHEMA)


def test_a_schema_the_agent_cannot_enforce_is_a_400_naming_the_keyword(smol_agent):
    with pytest.raises(openai.BadRequestError) as info:
        smol_agent.client().chat.completions.create(
            model=SMOL,
            messages=[{"role": "user", "content": "hi"}],
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "n", "schema": {"type": "integer", "minimum": 3}},
            },
        )
    assert "minimum" in info.value.message


# -- tools ------------------------------------------------------------------------------------------

WEATHER_PARAMETERS = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 30},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
    },
    "required": ["city", "unit"],
    "additionalProperties": False,
}
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city.",
        "parameters": WEATHER_PARAMETERS,
    },
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "The local time in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 30}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}
ASK_WEATHER = [{"role": "user", "content": "What is the weather like in Paris today?"}]
NAMED = {"type": "function", "function": {"name": "get_weather"}}


def test_a_named_tool_round_trip_call_result_answer(smol_agent):
    client = smol_agent.client(timeout=300)
    r = client.chat.completions.create(
        model=SMOL, messages=ASK_WEATHER, tools=[WEATHER, TIME], tool_choice=NAMED, max_tokens=100, temperature=0
    )
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    (call,) = choice.message.tool_calls
    assert call.type == "function" and call.function.name == "get_weather" and call.id.startswith("call_")
    jsonschema.validate(json.loads(call.function.arguments), WEATHER_PARAMETERS)
    history = [
        *ASK_WEATHER,
        choice.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": json.dumps({"temperature": 21, "sky": "sunny"})},
    ]
    answer = client.chat.completions.create(
        model=SMOL, messages=history, tools=[WEATHER, TIME], tool_choice="none", max_tokens=60, temperature=0
    )
    assert answer.choices[0].message.content and not answer.choices[0].message.tool_calls
    assert answer.choices[0].finish_reason in ("stop", "length")


def test_auto_answers_with_a_valid_call_or_with_text(smol_agent):
    r = smol_agent.client(timeout=300).chat.completions.create(
        model=SMOL, messages=ASK_WEATHER, tools=[WEATHER, TIME], tool_choice="auto", max_tokens=100, temperature=0
    )
    message = r.choices[0].message
    if message.tool_calls:
        # A small model may go on calling until max_tokens: then the last call's arguments are cut short, as
        # OpenAI's are at finish_reason "length"; every call before it is whole.
        finish = r.choices[0].finish_reason
        assert finish in ("tool_calls", "length")
        whole = message.tool_calls if finish == "tool_calls" else message.tool_calls[:-1]
        for call in message.tool_calls:
            assert call.function.name in ("get_weather", "get_time") and call.id.startswith("call_")
        for call in whole:
            json.loads(call.function.arguments)
    else:
        assert message.content and r.choices[0].finish_reason in ("stop", "length")


def test_streamed_tool_call_deltas_reassemble_to_the_plain_answer(smol_agent):
    client = smol_agent.client(timeout=300)
    kwargs = dict(model=SMOL, messages=ASK_WEATHER, tools=[WEATHER], tool_choice=NAMED, max_tokens=100, temperature=0)
    plain = client.chat.completions.create(**kwargs, extra_headers=FRESH).choices[0]
    calls: dict[int, dict] = {}
    finish = None
    for chunk in client.chat.completions.create(**kwargs, stream=True, extra_headers=FRESH):
        (choice,) = chunk.choices
        for delta in choice.delta.tool_calls or []:
            call = calls.setdefault(delta.index, {"id": None, "name": "", "arguments": ""})
            call["id"] = delta.id or call["id"]
            call["name"] += (delta.function.name or "") if delta.function else ""
            call["arguments"] += (delta.function.arguments or "") if delta.function else ""
        finish = choice.finish_reason or finish
    assert finish == plain.finish_reason == "tool_calls"
    assert [(c["name"], c["arguments"]) for c in calls.values()] == [
        (c.function.name, c.function.arguments) for c in plain.message.tool_calls
    ]
    assert all(c["id"] for c in calls.values())


def test_required_without_parallel_calls_makes_exactly_one_call(smol_agent):
    r = smol_agent.client(timeout=300).chat.completions.create(
        model=SMOL,
        messages=[{"role": "user", "content": "Weather and time in Rome and in Oslo, please."}],
        tools=[WEATHER, TIME],
        tool_choice="required",
        parallel_tool_calls=False,
        max_tokens=120,
        temperature=0,
    )
    assert len(r.choices[0].message.tool_calls) == 1 and r.choices[0].finish_reason == "tool_calls"


# -- n choices, logprobs, cached tokens --------------------------------------------------------------


def test_n_greedy_choices_are_identical_and_counted_once_for_the_prompt(smol_agent):
    client = smol_agent.client()
    one = client.chat.completions.create(
        model=SMOL, messages=[{"role": "user", "content": "Name a fruit."}], max_tokens=12, temperature=0
    )
    three = client.chat.completions.create(
        model=SMOL, messages=[{"role": "user", "content": "Name a fruit."}], max_tokens=12, temperature=0, n=3
    )
    assert [c.index for c in three.choices] == [0, 1, 2]
    assert {c.message.content for c in three.choices} == {one.choices[0].message.content}
    assert three.usage.prompt_tokens == one.usage.prompt_tokens
    assert three.usage.completion_tokens == 3 * one.usage.completion_tokens


def test_seeded_n_choices_repeat_and_stream_choice_by_choice(smol_agent):
    client = smol_agent.client()
    kwargs = dict(model=SMOL, prompt="My three favourite animals are", max_tokens=10, temperature=0.9, seed=7, n=3)
    first = client.completions.create(**kwargs, extra_headers=FRESH)
    again = client.completions.create(**kwargs, extra_headers=FRESH)
    assert [c.text for c in first.choices] == [c.text for c in again.choices]
    texts = {0: "", 1: "", 2: ""}
    finished = {}
    for chunk in client.completions.create(**kwargs, stream=True, extra_headers=FRESH):
        for c in chunk.choices:
            texts[c.index] += c.text
            if c.finish_reason:
                finished[c.index] = c.finish_reason
    assert [texts[i] for i in range(3)] == [c.text for c in first.choices]
    assert finished == {c.index: c.finish_reason for c in first.choices}


def _assert_sorted_finite(top):
    values = [t.logprob for t in top]
    assert all(math.isfinite(v) and v <= 0 for v in values) and values == sorted(values, reverse=True)


def test_chat_logprobs_are_finite_sorted_and_greedy_takes_the_top_one(smol_agent):
    r = smol_agent.client().chat.completions.create(
        model=SMOL,
        messages=[{"role": "user", "content": "Count from one to five."}],
        max_tokens=16,
        temperature=0,
        logprobs=True,
        top_logprobs=5,
    )
    entries = r.choices[0].logprobs.content
    assert len(entries) == r.usage.completion_tokens
    assert "".join(e.token for e in entries) == r.choices[0].message.content
    for e in entries:
        assert len(e.top_logprobs) == 5 and math.isfinite(e.logprob)
        _assert_sorted_finite(e.top_logprobs)
        assert e.top_logprobs[0].token == e.token and e.top_logprobs[0].logprob == pytest.approx(e.logprob)
        assert bytes(e.bytes).decode("utf-8", "replace") == e.token


def test_completion_logprobs_stream_with_their_tokens(smol_agent):
    client = smol_agent.client()
    kwargs = dict(model=SMOL, prompt="The colours of the rainbow are", max_tokens=12, temperature=0, logprobs=3)
    plain = client.completions.create(**kwargs, extra_headers=FRESH).choices[0]
    assert len(plain.logprobs.tokens) == len(plain.logprobs.token_logprobs) == 12
    assert plain.logprobs.text_offset[0] == 0 and "".join(plain.logprobs.tokens) == plain.text
    for token, lp, top in zip(
        plain.logprobs.tokens, plain.logprobs.token_logprobs, plain.logprobs.top_logprobs, strict=True
    ):
        assert max(top, key=top.get) == token and top[token] == pytest.approx(lp)
    streamed = []
    for chunk in client.completions.create(**kwargs, stream=True, extra_headers=FRESH):
        if chunk.choices[0].logprobs:
            streamed += chunk.choices[0].logprobs.tokens
    assert streamed == plain.logprobs.tokens


def test_a_repeated_prefix_reports_cached_prompt_tokens(smol_agent):
    client = smol_agent.client()
    system = {"role": "system", "content": "You are a terse assistant for a bakery in Lyon. " * 8}
    for question in ("What time do you open?", "Do you sell croissants?"):
        r = client.chat.completions.create(
            model=SMOL,
            messages=[system, {"role": "user", "content": question}],
            max_tokens=4,
            temperature=0,
            extra_headers=FRESH,
        )
    assert r.usage.prompt_tokens_details.cached_tokens > 0
    assert r.usage.prompt_tokens_details.cached_tokens < r.usage.prompt_tokens


def test_a_cached_answer_replays_calls_choices_and_logprobs_as_the_stream_would(smol_agent):
    """Stored from a plain request, asked again as a stream: the cache's replay carries every choice's tool calls
    (the same ids), its log-probabilities, its finish reason, and the usage with cached tokens."""
    client = smol_agent.client(timeout=300)
    kwargs = dict(
        model=SMOL,
        messages=ASK_WEATHER,
        tools=[WEATHER],
        tool_choice=NAMED,
        max_tokens=100,
        temperature=0,
        n=2,
        logprobs=True,
        top_logprobs=2,
    )
    plain = client.chat.completions.create(**kwargs, extra_headers={"Cache-Control": "no-cache"})
    raw = client.chat.completions.with_raw_response.create(
        **kwargs, stream=True, stream_options={"include_usage": True}
    )
    assert raw.headers["x-cache"] == "hit"
    got: dict[int, dict] = {}
    usage = None
    for chunk in raw.parse():
        usage = chunk.usage or usage
        for c in chunk.choices:
            mine = got.setdefault(c.index, {"calls": {}, "logprobs": 0, "finish": None})
            for d in c.delta.tool_calls or []:
                call = mine["calls"].setdefault(d.index, [None, "", ""])
                call[0] = d.id or call[0]
                call[1] += d.function.name or ""
                call[2] += d.function.arguments or ""
            mine["logprobs"] += len(c.logprobs.content) if c.logprobs and c.logprobs.content else 0
            mine["finish"] = c.finish_reason or mine["finish"]
    for choice in plain.choices:
        mine = got[choice.index]
        expected = [[t.id, t.function.name, t.function.arguments] for t in choice.message.tool_calls]
        assert list(mine["calls"].values()) == expected
        assert mine["logprobs"] == len(choice.logprobs.content) > 0
        assert mine["finish"] == choice.finish_reason == "tool_calls"
    assert usage.model_dump() == plain.usage.model_dump()


def test_gemma_n_choices_and_logprobs(gemma_agent):
    """gemma's sliding-window cache: the forked choices start from the same prompt cells."""
    r = gemma_agent.client().completions.create(
        model="gemma-3-270m", prompt="The capital of Italy is", max_tokens=6, temperature=0, n=2, logprobs=2
    )
    first, second = r.choices
    assert first.text == second.text and first.text
    assert first.logprobs.tokens == second.logprobs.tokens
    for token, top in zip(first.logprobs.tokens, first.logprobs.top_logprobs, strict=True):
        assert max(top, key=top.get) == token
    assert r.usage.completion_tokens == 2 * len(first.logprobs.tokens)
