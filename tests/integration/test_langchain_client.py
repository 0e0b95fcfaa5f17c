"""LangChain's OpenAI chat model, unmodified, against a real agent on SmolLM2: structured output and bound tools.

langchain-openai drives the openai client with its own request shapes (a strict json_schema from a pydantic model,
tools converted from a Python function, tool_choice by name); nothing is downloaded while it runs.
"""

from __future__ import annotations

import jsonschema
from langchain_core.messages import HumanMessage, ToolMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from pydantic import BaseModel, Field

SMOL = "smollm2-135m-instruct"


class Recipe(BaseModel):
    """A short recipe."""

    title: str = Field(max_length=30, description="the dish")
    minutes: int = Field(description="how long it takes")
    vegetarian: bool
    ingredients: list[str] = Field(max_length=4)


@tool
def get_weather(city: str, unit: str) -> str:
    """The current weather in a city; unit is celsius or fahrenheit."""
    return f"21 degrees {unit} and sunny in {city}"


def _chat(agent, **kwargs) -> ChatOpenAI:
    return ChatOpenAI(
        model=SMOL,
        base_url=agent.base_url + "/v1",
        api_key="not-needed",
        temperature=0,
        max_tokens=300,
        max_retries=0,
        timeout=300,
        **kwargs,
    )


def test_with_structured_output_returns_the_pydantic_model(smol_agent):
    chain = _chat(smol_agent).with_structured_output(Recipe)
    for dish in ("a quick tomato soup", "pancakes for two", "a green salad"):
        recipe = chain.invoke(f"Give me a recipe for {dish}.")
        assert isinstance(recipe, Recipe), recipe


def test_with_structured_output_includes_the_raw_message(smol_agent):
    result = _chat(smol_agent).with_structured_output(Recipe, include_raw=True).invoke("A recipe for rice.")
    assert result["parsing_error"] is None and isinstance(result["parsed"], Recipe)
    assert result["raw"].response_metadata["finish_reason"] == "stop"


def test_bind_tools_round_trip(smol_agent):
    model = _chat(smol_agent).bind_tools([get_weather], tool_choice="get_weather")
    question = HumanMessage("What is the weather in Madrid?")
    reply = model.invoke([question])
    (call,) = reply.tool_calls
    assert call["name"] == "get_weather" and call["id"]
    jsonschema.validate(call["args"], get_weather.tool_call_schema.model_json_schema())
    result = ToolMessage(get_weather.invoke(call["args"]), tool_call_id=call["id"])
    final = _chat(smol_agent).bind_tools([get_weather], tool_choice="none").invoke([question, reply, result])
    assert final.content and not final.tool_calls


def test_bind_tools_streams_tool_call_chunks(smol_agent):
    model = _chat(smol_agent).bind_tools([get_weather], tool_choice="get_weather")
    merged = None
    for chunk in model.stream("Weather in Lima, in celsius?"):
        merged = chunk if merged is None else merged + chunk
    (call,) = merged.tool_calls
    assert call["name"] == "get_weather" and set(call["args"]) == {"city", "unit"}
