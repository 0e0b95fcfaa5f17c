"""OpenAI's response objects for generated text: pure builders, nothing of HTTP.

A generation is described by :class:`Completion` (what was asked and what came
out); the same object gives the non-streamed body, the stream's chunk objects,
and the replay of a cached answer as chunks, so a cached answer for a streamed
request and a fresh stream carry the same fields. The service builds these and
the response cache stores :func:`dumps` of a body; turning them into a response
(status, headers, SSE framing) is ``edge_agent.api``'s business.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Completion:
    endpoint: str  # "completions" | "chat"
    id: str
    created: int
    model: str

    @classmethod
    def new(cls, endpoint: str, model: str) -> Completion:
        prefix = "chatcmpl-" if endpoint == "chat" else "cmpl-"
        return cls(endpoint, prefix + uuid.uuid4().hex[:24], int(time.time()), model)

    def body(self, text: str, finish_reason: str, prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
        if self.endpoint == "chat":
            choice = {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "logprobs": None,
                "finish_reason": finish_reason,
            }
            obj = "chat.completion"
        else:
            choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}
            obj = "text_completion"
        return {
            "id": self.id,
            "object": obj,
            "created": self.created,
            "model": self.model,
            "choices": [choice],
            "usage": usage(prompt_tokens, completion_tokens),
        }

    def first_chunk(self) -> dict[str, Any] | None:
        """Chat streams open with the assistant role, as OpenAI's do."""
        if self.endpoint != "chat":
            return None
        return self._chunk({"role": "assistant", "content": ""}, None)

    def text_chunk(self, text: str) -> dict[str, Any]:
        return self._chunk({"content": text} if self.endpoint == "chat" else text, None)

    def final_chunk(self, finish_reason: str) -> dict[str, Any]:
        return self._chunk({} if self.endpoint == "chat" else "", finish_reason)

    def usage_chunk(self, prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": self._chunk_object(),
            "created": self.created,
            "model": self.model,
            "choices": [],
            "usage": usage(prompt_tokens, completion_tokens),
        }

    def _chunk_object(self) -> str:
        return "chat.completion.chunk" if self.endpoint == "chat" else "text_completion"

    def _chunk(self, delta: Any, finish_reason: str | None) -> dict[str, Any]:
        if self.endpoint == "chat":
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        else:
            choice = {"index": 0, "text": delta, "logprobs": None, "finish_reason": finish_reason}
        return {
            "id": self.id,
            "object": self._chunk_object(),
            "created": self.created,
            "model": self.model,
            "choices": [choice],
        }


def replay_chunks(endpoint: str, body: dict[str, Any], include_usage: bool) -> Iterator[dict[str, Any]]:
    """A stored non-streamed answer, as the chunks a fresh streamed request would give."""
    completion = Completion(endpoint, body["id"], body["created"], body["model"])
    choice = body["choices"][0]
    text = choice["message"]["content"] if endpoint == "chat" else choice["text"]
    first = completion.first_chunk()
    if first:
        yield first
    if text:
        yield completion.text_chunk(text)
    yield completion.final_chunk(choice["finish_reason"])
    if include_usage:
        u = body["usage"]
        yield completion.usage_chunk(u["prompt_tokens"], u["completion_tokens"])


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def dumps(obj: Any) -> bytes:
    """Compact UTF-8 JSON: a response body as sent, and as the response cache stores it."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()
