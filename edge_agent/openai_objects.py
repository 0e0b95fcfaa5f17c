"""OpenAI's response objects for generated text: pure builders, nothing of HTTP.

A generation is described by :class:`Completion` (what was asked and what came
out); the same object gives the non-streamed body, the stream's chunk objects,
and the replay of a cached answer as chunks, so a cached answer for a streamed
request and a fresh stream carry the same fields. The service builds these and
the response cache stores :func:`dumps` of a body; turning them into a response
(status, headers, SSE framing) is ``edge_agent.api``'s business.

A request for n choices gets n of everything: each choice has its ``index``, and
in a stream each opens with its role chunk and ends with its finish chunk.
Log-probabilities come in OpenAI's two shapes: chat's ``{"content": [{token,
logprob, bytes, top_logprobs}], "refusal": null}`` and the legacy completions'
``{"tokens", "token_logprobs", "top_logprobs", "text_offset"}``.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from edge_agent.generation import TokenLogprob


@dataclass
class ChoiceOutcome:
    """One choice as it ended: its text (for a chat answer that called tools, the text besides the calls, None
    when there was none), its calls in OpenAI's shape, and its log-probabilities (None when not asked)."""

    index: int
    text: str | None
    finish_reason: str
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    logprobs: list[TokenLogprob] | None = None


class EncodedChunk(bytes):
    """A chunk object already encoded, byte for byte as :func:`dumps` encodes it (the stream's hot path)."""


# Stands for a text chunk's text while its constant bytes are rendered; json.dumps escapes NUL, so it is unique.
_TEXT_MARK = "\x00text\x00"


@dataclass(frozen=True)
class Completion:
    endpoint: str  # "completions" | "chat"
    id: str
    created: int
    model: str
    # index -> a text chunk's bytes before and after its text, rendered once per stream (text_chunk_encoded).
    _text_frames: dict[int, tuple[bytes, bytes]] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def new(cls, endpoint: str, model: str) -> Completion:
        prefix = "chatcmpl-" if endpoint == "chat" else "cmpl-"
        return cls(endpoint, prefix + uuid.uuid4().hex[:24], int(time.time()), model)

    def body(
        self, choices: Sequence[ChoiceOutcome], prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0
    ) -> dict[str, Any]:
        """The non-streamed answer; ``completion_tokens`` is the sum over the choices, the prompt counted once."""
        return {
            "id": self.id,
            "object": "chat.completion" if self.endpoint == "chat" else "text_completion",
            "created": self.created,
            "model": self.model,
            "choices": [self._body_choice(c) for c in sorted(choices, key=lambda c: c.index)],
            "usage": usage(prompt_tokens, completion_tokens, cached_tokens),
        }

    def _body_choice(self, c: ChoiceOutcome) -> dict[str, Any]:
        if self.endpoint == "chat":
            message: dict[str, Any] = {"role": "assistant", "content": c.text}
            if c.tool_calls:
                message["tool_calls"] = c.tool_calls
            logprobs = None if c.logprobs is None else chat_logprobs(c.logprobs)
            return {"index": c.index, "message": message, "logprobs": logprobs, "finish_reason": c.finish_reason}
        logprobs = None if c.logprobs is None else completion_logprobs(c.logprobs, 0)
        return {"index": c.index, "text": c.text or "", "logprobs": logprobs, "finish_reason": c.finish_reason}

    def first_chunk(self, index: int = 0) -> dict[str, Any] | None:
        """Chat streams open each choice with the assistant role, as OpenAI's do."""
        if self.endpoint != "chat":
            return None
        return self._chunk({"role": "assistant", "content": ""}, None, index)

    def text_chunk(self, text: str, index: int = 0, logprobs: Any = None) -> dict[str, Any]:
        """``logprobs``: this chunk's part, already in the endpoint's shape (:func:`chat_logprobs`,
        :func:`completion_logprobs`), or None."""
        return self._chunk({"content": text} if self.endpoint == "chat" else text, None, index, logprobs)

    def text_chunk_encoded(self, text: str, index: int = 0) -> EncodedChunk:
        """``dumps(text_chunk(text, index))`` without building and encoding the whole object per token: only the
        text is encoded, between bytes rendered once."""
        frame = self._text_frames.get(index)
        if frame is None:
            head, mark, tail = dumps(self.text_chunk(_TEXT_MARK, index)).partition(dumps(_TEXT_MARK))
            assert mark, "the text mark is rendered as dumps renders a string"
            frame = self._text_frames[index] = (head, tail)
        return EncodedChunk(frame[0] + dumps(text) + frame[1])

    def tool_calls_chunk(self, deltas: list[dict[str, Any]], index: int = 0) -> dict[str, Any]:
        """Chat only: ``delta.tool_calls`` entries (a call's header with its id and name, then its arguments' text)."""
        return self._chunk({"tool_calls": deltas}, None, index)

    def final_chunk(self, finish_reason: str, index: int = 0) -> dict[str, Any]:
        return self._chunk({} if self.endpoint == "chat" else "", finish_reason, index)

    def usage_chunk(self, prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": self._chunk_object(),
            "created": self.created,
            "model": self.model,
            "choices": [],
            "usage": usage(prompt_tokens, completion_tokens, cached_tokens),
        }

    def _chunk_object(self) -> str:
        return "chat.completion.chunk" if self.endpoint == "chat" else "text_completion"

    def _chunk(self, delta: Any, finish_reason: str | None, index: int, logprobs: Any = None) -> dict[str, Any]:
        if self.endpoint == "chat":
            choice = {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish_reason}
        else:
            choice = {"index": index, "text": delta, "logprobs": logprobs, "finish_reason": finish_reason}
        return {
            "id": self.id,
            "object": self._chunk_object(),
            "created": self.created,
            "model": self.model,
            "choices": [choice],
        }


def token_text(piece: bytes) -> str:
    """A token's text as OpenAI shows it; a piece that splits a character shows U+FFFD (``bytes`` has it exactly)."""
    return piece.decode("utf-8", "replace")


def chat_logprobs(entries: Sequence[TokenLogprob]) -> dict[str, Any]:
    """Chat's ``logprobs`` object for these tokens."""
    return {
        "content": [
            {
                "token": token_text(e.piece),
                "logprob": e.logprob,
                "bytes": list(e.piece),
                "top_logprobs": [
                    {"token": token_text(t.piece), "logprob": t.logprob, "bytes": list(t.piece)} for t in e.top
                ],
            }
            for e in entries
        ],
        "refusal": None,
    }


def completion_logprobs(entries: Sequence[TokenLogprob], offset: int) -> dict[str, Any]:
    """The completions endpoint's ``logprobs`` object for these tokens; ``offset`` is where the first one starts in
    the choice's text (a stream's chunk continues its choice's count)."""
    tokens = [token_text(e.piece) for e in entries]
    offsets = []
    for text in tokens:
        offsets.append(offset)
        offset += len(text)
    return {
        "tokens": tokens,
        "token_logprobs": [e.logprob for e in entries],
        "top_logprobs": [{token_text(t.piece): t.logprob for t in e.top} for e in entries],
        "text_offset": offsets,
    }


def replay_chunks(endpoint: str, body: dict[str, Any], include_usage: bool) -> Iterator[dict[str, Any]]:
    """A stored non-streamed answer, as the chunks a fresh streamed request would give: per choice its role chunk,
    its text with all its log-probabilities, each tool call whole (header and arguments in one delta), its finish
    chunk; then the usage, cached tokens included, when asked."""
    completion = Completion(endpoint, body["id"], body["created"], body["model"])
    for choice in body["choices"]:
        index = choice["index"]
        first = completion.first_chunk(index)
        if first:
            yield first
        text = choice["message"]["content"] if endpoint == "chat" else choice["text"]
        if text or choice["logprobs"]:
            yield completion.text_chunk(text or "", index, choice["logprobs"])
        calls = choice["message"].get("tool_calls") if endpoint == "chat" else None
        if calls:
            yield completion.tool_calls_chunk([{"index": k, **call} for k, call in enumerate(calls)], index)
        yield completion.final_chunk(choice["finish_reason"], index)
    if include_usage:
        u = body["usage"]
        cached = u.get("prompt_tokens_details", {}).get("cached_tokens", 0)
        yield completion.usage_chunk(u["prompt_tokens"], u["completion_tokens"], cached)


def usage(prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0) -> dict[str, Any]:
    """``cached_tokens``: the prompt's tokens whose KV cells were reused from an earlier request, not computed."""
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": cached_tokens},
    }


def dumps(obj: Any) -> bytes:
    """Compact UTF-8 JSON: a response body as sent, and as the response cache stores it."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()
