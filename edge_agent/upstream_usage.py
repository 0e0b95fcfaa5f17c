"""What an upstream's answer used, in tokens, and what that cost: pure decisions, no I/O.

An OpenAI-compatible upstream reports ``usage`` (prompt_tokens, completion_tokens) in a whole answer, and in a
stream when asked with ``stream_options: {"include_usage": true}`` (then a last chunk with empty ``choices``
carries it; some servers put it on the final content chunk instead). The agent asks for it on every streamed
request it counts, and when the client did not ask, :class:`StreamTap` leaves that usage-only chunk out of what
the client receives, so the client sees the stream it asked for.

When an answer carries no usage, the agent counts the tokens itself with the local model's tokenizer
(:func:`usage_entry` takes the counting as functions), and says so: ``locally_counted``. Another model's
tokenizer gives another count, so a locally counted figure is an estimate; the upstream's own usage is what it
bills.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from edge_agent.config import UpstreamConfig
from edge_agent.control.interval_stats import UpstreamUsage

# The most characters of an answer's text kept for counting locally (a stream is already capped by
# max_stream_bytes; this keeps the copy small whatever the caps are).
MAX_COUNTED_CHARS = 1 << 20


@dataclass(frozen=True)
class ReplyTokens:
    """What an upstream's answer said about its tokens; None where it said nothing."""

    prompt_tokens: int | None
    completion_tokens: int | None
    # The answer's text (every choice's, joined), to count locally when the usage is missing.
    completion_text: str = ""


def usage_of(obj: Any) -> tuple[int | None, int | None]:
    """(prompt_tokens, completion_tokens) of an OpenAI object's ``usage``; None for each absent or not a
    non-negative integer (a bool is not a count)."""
    usage = obj.get("usage") if isinstance(obj, dict) else None
    if not isinstance(usage, dict):
        return None, None
    return _count(usage.get("prompt_tokens")), _count(usage.get("completion_tokens"))


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _choice_text(choice: Any) -> str:
    """The text of one choice of an answer or of a stream chunk (chat message/delta content, or completion text)."""
    if not isinstance(choice, dict):
        return ""
    for holder in (choice.get("message"), choice.get("delta")):
        if isinstance(holder, dict) and isinstance(holder.get("content"), str):
            return holder["content"]
    text = choice.get("text")
    return text if isinstance(text, str) else ""


def _text_of(obj: Any) -> str:
    choices = obj.get("choices") if isinstance(obj, dict) else None
    return "".join(_choice_text(c) for c in choices) if isinstance(choices, list) else ""


def body_tokens(body: bytes) -> ReplyTokens:
    """What a whole (non-streamed) answer says: its usage, and its text for counting locally."""
    try:
        obj = json.loads(body)
    except ValueError:
        return ReplyTokens(None, None, "")
    prompt, completion = usage_of(obj)
    return ReplyTokens(prompt, completion, _text_of(obj)[:MAX_COUNTED_CHARS])


class StreamTap:
    """Reads a streamed answer's complete SSE lines as they are relayed: keeps the last usage seen and the text,
    and drops the usage-only chunk (empty ``choices``) when ``relay_usage`` is false (the client did not ask)."""

    def __init__(self, relay_usage: bool):
        self._relay_usage = relay_usage
        self._prompt: int | None = None
        self._completion: int | None = None
        self._text: list[str] = []
        self._chars = 0

    def lines(self, data: bytes) -> bytes:
        """``data`` (whole lines) as they should reach the client."""
        if b"usage" not in data and b"content" not in data and b"text" not in data:
            return data  # nothing this tap reads (role-only chunks, [DONE], keep-alives)
        kept = []
        for line in data.split(b"\n"):
            if self._read(line):
                kept.append(line)
        return b"\n".join(kept)

    def tokens(self) -> ReplyTokens:
        return ReplyTokens(self._prompt, self._completion, "".join(self._text))

    def _read(self, line: bytes) -> bool:
        """Take what the line says; False when it is the usage-only chunk the client does not get."""
        if not line.startswith(b"data:"):
            return True
        try:
            obj = json.loads(line[5:])
        except ValueError:
            return True  # [DONE], or not JSON: relayed as it is
        if not isinstance(obj, dict):
            return True
        prompt, completion = usage_of(obj)
        if prompt is not None or completion is not None:
            self._prompt, self._completion = prompt, completion
        text = _text_of(obj)
        if text and self._chars < MAX_COUNTED_CHARS:
            self._text.append(text[: MAX_COUNTED_CHARS - self._chars])
            self._chars += len(text)
        usage_only = obj.get("choices") == [] and isinstance(obj.get("usage"), dict)
        return self._relay_usage or not usage_only


def usage_entry(
    config: UpstreamConfig,
    tenant: str,
    data_class: str,
    tokens: ReplyTokens,
    count_prompt: Callable[[], int],
    count_text: Callable[[str], int],
) -> UpstreamUsage:
    """One answered request's usage and cost: the upstream's figures where it gave them, else counted locally
    (``count_prompt()`` the prompt sent, ``count_text(text)`` the answer), and then ``locally_counted`` is 1."""
    prompt, completion = tokens.prompt_tokens, tokens.completion_tokens
    local = prompt is None or completion is None
    if prompt is None:
        prompt = count_prompt()
    if completion is None:
        completion = count_text(tokens.completion_text) if tokens.completion_text else 0
    return UpstreamUsage(
        upstream=config.name,
        tenant=tenant,
        data_class=data_class,
        requests=1,
        prompt_tokens=prompt,
        completion_tokens=completion,
        cost=config.cost(prompt, completion),
        currency=config.cost_currency,
        locally_counted=1 if local else 0,
    )
