"""OpenAI's error object and SSE framing: what only the HTTP layer sends.

The objects a generation answers with are built below it (:mod:`edge_agent.openai_objects`);
:func:`sse` and :data:`DONE` frame them as server-sent events.
"""

from __future__ import annotations

from typing import Any

from edge_agent.openai_objects import dumps

DONE = b"data: [DONE]\n\n"


def error_body(message: str, type: str, param: str | None, code: str | None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def sse(obj: Any) -> bytes:
    return b"data: " + dumps(obj) + b"\n\n"
