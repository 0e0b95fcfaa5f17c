"""edge_agent.tools: the generic tool format, its grammar (run through llama.cpp's grammar engine on SmolLM2's
vocabulary) and the parser of replies, whole and streamed in pieces of any size."""

import itertools
import json

import llama_grammar
import pytest

from edge_agent.client_request import ChatMessage, ToolCall, ToolChoice, ToolFunction
from edge_agent.tools import Delta, ToolOutputParser, parse_tool_output, render_messages, tool_grammar

WEATHER = ToolFunction(
    "get_weather",
    "Weather in a city",
    {"type": "object", "properties": {"city": {"type": "string"}, "unit": {"enum": ["C", "F"]}}, "required": ["city"]},
)
TIME = ToolFunction("get_time")
TOOLS = (WEATHER, TIME)
AUTO = ToolChoice("auto")


@pytest.fixture(scope="module")
def vocab_model(tmp_path_factory):
    return llama_grammar.vocab_model(tmp_path_factory.mktemp("m"))


def ids():
    counter = itertools.count()
    return lambda: f"call_{next(counter)}"


def test_the_tool_list_and_reply_rules_go_into_the_system_message():
    rendered = render_messages(
        (ChatMessage("system", "Be brief."), ChatMessage("user", "Weather in Oslo?")), TOOLS, AUTO
    )
    assert [m["role"] for m in rendered] == ["system", "user"]
    system = rendered[0]["content"]
    assert system.startswith("Be brief.\n\nYou can call these functions:\nfunctions.get_weather: Weather in a city\n")
    assert json.dumps(WEATHER.parameters) in system and "functions.get_time:\n" in system
    rules = "Reply either with\nmessage:\n<your reply>\nor with one or more calls, each as\n"
    assert system.endswith(rules + "functions.<name>:\n<JSON arguments>")
    without_system = render_messages((ChatMessage("user", "hi"),), TOOLS, ToolChoice("required"))
    assert without_system[0]["role"] == "system" and without_system[0]["content"].endswith(
        "Reply with one or more calls, each as\nfunctions.<name>:\n<JSON arguments>"
    )
    named = render_messages((ChatMessage("user", "hi"),), TOOLS, ToolChoice("function", "get_time"))
    assert named[0]["content"].endswith(
        "Reply with a call of functions.get_time, as\nfunctions.get_time:\n<JSON arguments>"
    )


def test_tool_choice_none_leaves_the_prompt_as_it_was():
    messages = (ChatMessage("user", "hi", name="jo"), ChatMessage("assistant", "hello"))
    assert render_messages(messages, TOOLS, ToolChoice("none")) == [m.as_dict() for m in messages]
    assert render_messages(messages, (), AUTO) == [m.as_dict() for m in messages]


def test_calls_and_results_in_the_history_are_written_in_the_format_and_roles_alternate():
    calls = (ToolCall("c1", "get_weather", '{"city": "Oslo"}'), ToolCall("c2", "get_time", "{}"))
    messages = (
        ChatMessage("user", "Weather and time?"),
        ChatMessage("assistant", "", tool_calls=calls),
        ChatMessage("tool", "-3 C", tool_call_id="c1"),
        ChatMessage("tool", "12:00", tool_call_id="c2"),
        ChatMessage("assistant", "Cold, noon."),
        ChatMessage("user", "Thanks"),
    )
    rendered = render_messages(messages, TOOLS, AUTO)
    assert [m["role"] for m in rendered] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert rendered[2]["content"] == 'functions.get_weather:\n{"city": "Oslo"}\nfunctions.get_time:\n{}'
    assert (
        rendered[3]["content"]
        == "functions.get_weather returned (c1):\n-3 C\n\nfunctions.get_time returned (c2):\n12:00"
    )
    assert rendered[4]["content"] == "message:\nCold, noon."  # the format the model is asked to reply in
    # Without tools offered (choice none) the history keeps the format for calls, plain text otherwise.
    # A user turn straight after the results joins them.
    followed = render_messages((*messages[:4], ChatMessage("user", "And tomorrow?")), TOOLS, AUTO)
    assert [m["role"] for m in followed] == ["system", "user", "assistant", "user"]
    assert followed[3]["content"].endswith("12:00\n\nAnd tomorrow?")
    plain = render_messages(messages, TOOLS, ToolChoice("none"))
    assert plain[1]["content"].startswith("functions.get_weather:") and plain[3]["content"] == "Cold, noon."


def test_no_grammar_without_tools_or_with_choice_none():
    assert tool_grammar(TOOLS, ToolChoice("none"), True) is None
    assert tool_grammar((), AUTO, True) is None


def test_auto_lets_the_model_answer_or_call(vocab_model):
    gbnf = tool_grammar(TOOLS, AUTO, True)
    assert llama_grammar.accepts(vocab_model, gbnf, "message:\nIt is cold.\nVery.")
    assert llama_grammar.accepts(vocab_model, gbnf, 'functions.get_weather:\n{"city": "Oslo"}')
    assert llama_grammar.accepts(
        vocab_model, gbnf, 'functions.get_weather:\n{"city": "Oslo", "unit": "C"}\nfunctions.get_time:\n{}'
    )
    assert not llama_grammar.accepts(vocab_model, gbnf, "It is cold.")  # neither form
    assert not llama_grammar.accepts(vocab_model, gbnf, 'functions.get_weather:\n{"town": "Oslo"}')  # not the schema
    assert not llama_grammar.accepts(vocab_model, gbnf, 'functions.get_weather:\n{"city": "Oslo", "unit": "K"}')
    assert not llama_grammar.accepts(vocab_model, gbnf, "functions.launch:\n{}")  # no such function
    assert not llama_grammar.accepts(vocab_model, gbnf, 'functions.get_weather:\n{"city": "Os\nlo"}')


def test_required_named_and_single_call(vocab_model):
    required = tool_grammar(TOOLS, ToolChoice("required"), True)
    assert not llama_grammar.accepts(vocab_model, required, "message:\nNo.")
    assert llama_grammar.accepts(vocab_model, required, "functions.get_time:\n{}")
    named = tool_grammar(TOOLS, ToolChoice("function", "get_weather"), True)
    assert llama_grammar.accepts(vocab_model, named, 'functions.get_weather:\n{"city": "Rome"}')
    assert not llama_grammar.accepts(vocab_model, named, "functions.get_time:\n{}")
    assert not llama_grammar.accepts(
        vocab_model, named, 'functions.get_weather:\n{"city": "Rome"}\nfunctions.get_time:\n{}'
    )
    single = tool_grammar(TOOLS, ToolChoice("required"), False)
    assert llama_grammar.accepts(vocab_model, single, "functions.get_time:\n{}")
    assert not llama_grammar.accepts(vocab_model, single, "functions.get_time:\n{}\nfunctions.get_time:\n{}")


def test_tools_with_the_same_defs_names_get_their_own_rules(vocab_model):
    def with_defs(kind):
        return {
            "type": "object",
            "properties": {"x": {"$ref": "#/$defs/X"}},
            "required": ["x"],
            "$defs": {"X": {"type": kind}},
        }

    tools = (ToolFunction("a", None, with_defs("integer")), ToolFunction("b", None, with_defs("boolean")))
    gbnf = tool_grammar(tools, ToolChoice("required"), True)
    assert llama_grammar.accepts(vocab_model, gbnf, 'functions.a:\n{"x": 1}\nfunctions.b:\n{"x": true}')
    assert not llama_grammar.accepts(vocab_model, gbnf, 'functions.a:\n{"x": true}')


CALLS_TEXT = 'functions.get_weather:\n{"city": "Oslo"}\nfunctions.get_time:\n{}'


def reassemble(deltas: list[Delta]) -> tuple[str, list[dict]]:
    """What an OpenAI client builds from stream deltas: content joined, tool calls merged by index."""
    content, calls = "", []
    for delta in deltas:
        if delta.content is not None:
            content += delta.content
            continue
        entry = delta.tool_call
        if "id" in entry:
            assert entry["index"] == len(calls) and entry["type"] == "function"
            calls.append(
                {"id": entry["id"], "name": entry["function"]["name"], "arguments": entry["function"]["arguments"]}
            )
        else:
            calls[entry["index"]]["arguments"] += entry["function"]["arguments"]
    return content, calls


@pytest.mark.parametrize(
    "text",
    [
        CALLS_TEXT,
        "message:\nIt is -3 C.\nfunctions.x is not a call here",
        "Plain text, no format",
        "",
        "messag",
        "functions.get_time:\n{}\n",
    ],
)
@pytest.mark.parametrize("piece", [1, 2, 3, 7, 1000])
def test_streamed_pieces_of_any_size_give_what_the_whole_reply_gives(text, piece):
    parser = ToolOutputParser(ids())
    deltas = []
    for start in range(0, len(text), piece):
        deltas += parser.feed(text[start : start + piece])
    deltas += parser.finish()
    content, calls = reassemble(deltas)
    whole_content, whole_calls = parse_tool_output(text, ids())
    assert content == (whole_content or "")
    assert calls == [{"id": c.id, "name": c.name, "arguments": c.arguments} for c in whole_calls]


def test_whole_replies():
    content, calls = parse_tool_output(CALLS_TEXT, ids())
    assert content is None
    assert calls == [ToolCall("call_0", "get_weather", '{"city": "Oslo"}'), ToolCall("call_1", "get_time", "{}")]
    assert parse_tool_output("message:\nHello\nthere", ids()) == ("Hello\nthere", [])
    assert parse_tool_output("Hi without the format", ids()) == ("Hi without the format", [])
    assert parse_tool_output("", ids()) == ("", [])
    default_ids = parse_tool_output("functions.get_time:\n{}")[1]
    assert default_ids[0].id.startswith("call_") and len(default_ids[0].id) == 5 + 24


def test_held_back_text_waits_for_the_marker_to_be_decided():
    parser = ToolOutputParser(ids())
    assert parser.feed("mess") == []  # could still be "message:\n"
    assert parser.feed("age:\nHi") == [Delta(content="Hi")]
    parser = ToolOutputParser(ids())
    assert parser.feed("functions.get_ti") == []
    assert parser.feed("me:\n{") == [
        Delta(
            tool_call={
                "index": 0,
                "id": "call_0",
                "type": "function",
                "function": {"name": "get_time", "arguments": ""},
            }
        ),
        Delta(tool_call={"index": 0, "function": {"arguments": "{"}}),
    ]
    assert parser.feed("}\n") == [Delta(tool_call={"index": 0, "function": {"arguments": "}"}})]  # the newline waits
    assert parser.feed("funct") == []
    assert parser.feed("ions.get_time:\n")[0].tool_call["index"] == 1
