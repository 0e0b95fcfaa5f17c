"""Function calling in a format of its own, for models whose chat template knows no tools (SmolLM2, gemma-3):
the prompt describes the functions and the reply format, a grammar holds the model to that format, and a parser
turns the reply back into OpenAI's message content and ``tool_calls``.

The format (after llama-cpp-python's chatml-function-calling), the same in the prompt's history and the reply::

    message:
    <free text>                    a reply in words (tool_choice "auto" only)

    functions.<name>:
    <JSON arguments>               one call; with parallel_tool_calls, more follow, each after a newline

A tool result goes back to the model as a user message, ``functions.<name> returned (<call id>):`` and the
content; consecutive results are one message, so roles keep alternating as strict templates require.
Pure: no model, no I/O.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from edge_agent import structured
from edge_agent.client_request import ChatMessage, RequestError, ToolCall, ToolChoice, ToolFunction

MESSAGE = "message:\n"
CALL = "functions."
CALL_END = ":\n"


def render_messages(
    messages: Sequence[ChatMessage], tools: Sequence[ToolFunction], choice: ToolChoice
) -> list[dict[str, str]]:
    """The conversation as role/content dicts a chat template reads: the tool list and reply rules in the
    system message (unless ``choice`` is none), calls and results written in the format above."""
    offered = bool(tools) and choice.mode != "none"
    names = {call.id: call.name for m in messages for call in m.tool_calls}
    out: list[dict[str, str]] = []
    results: list[str] = []

    def flush_results() -> None:
        if results:
            out.append({"role": "user", "content": "\n\n".join(results)})
            results.clear()

    for message in messages:
        if message.role == "tool":
            name = names.get(message.tool_call_id or "", "a function")
            results.append(f"{CALL}{name} returned ({message.tool_call_id}):\n{message.content}")
            continue
        merge_user = bool(results) and message.role == "user"
        flush_results()
        if merge_user:  # a user turn right after the results: one user message, roles still alternate
            out[-1] = {"role": "user", "content": f"{out[-1]['content']}\n\n{message.content}"}
        elif message.role == "assistant" and (message.tool_calls or offered):
            out.append({"role": "assistant", "content": _assistant_text(message)})
        else:
            out.append(message.as_dict())
    flush_results()
    if offered:
        instructions = tool_instructions(tools, choice)
        if out and out[0]["role"] == "system":
            out[0] = {**out[0], "content": f"{out[0]['content']}\n\n{instructions}"}
        else:
            out.insert(0, {"role": "system", "content": instructions})
    return out


def tool_instructions(tools: Sequence[ToolFunction], choice: ToolChoice) -> str:
    lines = ["You can call these functions:"]
    for tool in tools:
        header = f"{CALL}{tool.name}:"
        if tool.description:
            header += f" {tool.description}"
        lines += [header, json.dumps(tool.parameters, ensure_ascii=False)]
    call_format = f"{CALL}<name>:\n<JSON arguments>"
    if choice.mode == "function":
        rule = f"Reply with a call of {CALL}{choice.name}, as\n{CALL}{choice.name}:\n<JSON arguments>"
    elif choice.mode == "required":
        rule = f"Reply with one or more calls, each as\n{call_format}"
    else:
        rule = f"Reply either with\n{MESSAGE}<your reply>\nor with one or more calls, each as\n{call_format}"
    return "\n".join(lines) + "\n\n" + rule


def _assistant_text(message: ChatMessage) -> str:
    parts = []
    if message.content:
        parts.append(MESSAGE + message.content)
    parts += [f"{CALL}{call.name}{CALL_END}{call.arguments}" for call in message.tool_calls]
    return "\n".join(parts)


def tool_grammar(tools: Sequence[ToolFunction], choice: ToolChoice, parallel: bool) -> str | None:
    """The GBNF grammar of a reply in the format (root rule ``root``); None for tool_choice none (free text).
    Arguments are JSON without raw newlines (the grammar's strings exclude control characters, its spacing is
    one blank at most), so a newline after a call's arguments can only start the next call."""
    if not tools or choice.mode == "none":
        return None
    try:
        return structured.check_size(_tool_grammar(tools, choice, parallel), "tools")
    except (ValueError, RequestError):
        raise
    except Exception as exc:  # the converter asserts (python -O strips asserts): never a 500 for a schema
        raise RequestError(f"the tools' parameters could not be turned into a grammar: {exc}", "tools") from exc


def _tool_grammar(tools: Sequence[ToolFunction], choice: ToolChoice, parallel: bool) -> str:
    converter = structured.new_converter()
    call_rules: dict[str, str] = {}
    for i, tool in enumerate(tools):
        prefix = f"t{i}"
        arguments = converter.visit(structured.prepare(converter, tool.parameters, url=prefix), prefix)
        call_rules[tool.name] = converter._add_rule(f"call-{i}", f"{_literal(CALL + tool.name + CALL_END)} {arguments}")
    if choice.mode == "function":
        if choice.name not in call_rules:
            raise ValueError(f"tool_choice names {choice.name!r}, which is not among the tools")
        root = call_rules[choice.name]
    else:
        call = converter._add_rule("call", " | ".join(call_rules.values()))
        calls = converter._add_rule("calls", f'{call} ("\\n" {call})*' if parallel else call)
        if choice.mode == "required":
            root = calls
        else:
            text = converter._add_rule("message-text", r"[^\x00]*")
            root = f"{_literal(MESSAGE)} {text} | {calls}"
    converter._rules["root"] = root
    return structured.format_grammar(converter)


def _literal(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


# -- the reply, parsed ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Delta:
    """A piece of a parsed reply: message text (``content``), or a ``tool_call`` entry of an OpenAI stream
    chunk's ``delta.tool_calls``: first the call's header (index, id, type, name, empty arguments), then pieces
    of its arguments (index and arguments only)."""

    content: str | None = None
    tool_call: dict[str, Any] | None = None


def new_call_id() -> str:
    return "call_" + secrets.token_hex(12)


class ToolOutputParser:
    """Parses a reply in the format as its text arrives. Text that could still be the start of a marker
    (``message:``, ``functions.``, a newline before the next call) is held back until it is decided; text
    that does not follow the format (possible only without the grammar) is message content."""

    def __init__(self, new_id: Callable[[], str] = new_call_id):
        self._new_id = new_id
        self._state = "start"  # start | content | header | arguments
        self._held = ""
        self.calls: list[ToolCall] = []  # complete and in progress, in order
        self._arguments: list[str] = []
        self.content: list[str] = []

    def feed(self, text: str) -> list[Delta]:
        self._held += text
        out: list[Delta] = []
        while self._held:
            before = (self._state, self._held)
            self._step(out, final=False)
            if (self._state, self._held) == before:
                break  # waiting for more text
        return out

    def finish(self) -> list[Delta]:
        """The held-back text, decided now that the reply is over."""
        out: list[Delta] = []
        while self._held:
            self._step(out, final=True)
        self._close_call()
        return out

    def _step(self, out: list[Delta], final: bool) -> None:
        held = self._held
        if self._state == "start":
            if held.startswith(MESSAGE):
                self._state, self._held = "content", held[len(MESSAGE) :]
            elif held.startswith(CALL):
                self._state, self._held = "header", held[len(CALL) :]
            elif not final and (MESSAGE.startswith(held) or CALL.startswith(held)):
                return
            else:
                self._state = "content"
        elif self._state == "content":
            self._emit_content(out, held)
            self._held = ""
        elif self._state == "header":
            end = held.find(CALL_END)
            if end < 0:
                if not final and "\n" not in held:
                    return
                self._state = "content"  # not a call after all
                self._held = CALL + held
                return
            name = held[:end]
            call_id = self._new_id()
            self.calls.append(ToolCall(call_id, name, ""))
            self._arguments = []
            index = len(self.calls) - 1
            header = {"index": index, "id": call_id, "type": "function", "function": {"name": name, "arguments": ""}}
            out.append(Delta(tool_call=header))
            self._state, self._held = "arguments", held[end + len(CALL_END) :]
        else:  # arguments
            newline = held.find("\n")
            if newline < 0:
                self._emit_arguments(out, held)
                self._held = ""
                return
            if newline > 0:
                self._emit_arguments(out, held[:newline])
                held = self._held = held[newline:]
            rest = held[1:]
            if rest.startswith(CALL):
                self._close_call()
                self._state, self._held = "header", rest[len(CALL) :]
            elif not final and CALL.startswith(rest):
                return
            else:
                self._emit_arguments(out, held[:1])  # a newline inside the arguments (no grammar)
                self._held = held[1:]

    def _emit_content(self, out: list[Delta], text: str) -> None:
        if text:
            self.content.append(text)
            out.append(Delta(content=text))

    def _emit_arguments(self, out: list[Delta], text: str) -> None:
        if text:
            self._arguments.append(text)
            out.append(Delta(tool_call={"index": len(self.calls) - 1, "function": {"arguments": text}}))

    def _close_call(self) -> None:
        if self.calls and self._arguments:
            last = self.calls[-1]
            self.calls[-1] = ToolCall(last.id, last.name, last.arguments + "".join(self._arguments))
            self._arguments = []


def parse_tool_output(text: str, new_id: Callable[[], str] = new_call_id) -> tuple[str | None, list[ToolCall]]:
    """A whole reply: its message content (None when it made calls and said nothing) and its calls."""
    parser = ToolOutputParser(new_id)
    parser.feed(text)
    parser.finish()
    content = "".join(parser.content)
    if parser.calls and not content:
        return None, parser.calls
    return content, parser.calls
