"""The one place an error becomes an HTTP status and OpenAI's error object.

Below the HTTP layer errors are raised, never turned into statuses: a client's bad input is a
:class:`RequestError` (whose status it carries from where it was found), a full queue an
:class:`OverloadedError`, a missing key an :class:`AuthError`; the rest are mapped here. A streamed answer
that fails after its first byte carries the same error object as an event.
"""

from __future__ import annotations

import logging
from typing import Any

from edge_agent.access import AuthError
from edge_agent.api.responses import error_body
from edge_agent.client_request import RequestError
from edge_agent.scheduler import DeadlineExceededError, OverloadedError
from edge_agent.service import ClientGoneError

log = logging.getLogger(__name__)

# The client closed the connection (nginx's status); it is counted, though nobody reads it.
CLIENT_CLOSED_REQUEST = 499


def error_for(exc: BaseException) -> tuple[int, dict[str, Any]]:
    """The HTTP status and OpenAI error body for ``exc``; an error nobody foresaw is a 500 and is logged."""
    if isinstance(exc, RequestError):
        return exc.status, error_body(exc.message, exc.type, exc.param, exc.code)
    if isinstance(exc, OverloadedError):
        return 429, error_body(str(exc), "rate_limit_error", None, "queue_full")
    if isinstance(exc, AuthError):
        return exc.status, error_body(str(exc), "invalid_request_error", None, exc.code)
    if isinstance(exc, ClientGoneError):
        return CLIENT_CLOSED_REQUEST, error_body(str(exc), "invalid_request_error", None, "client_closed_request")
    if isinstance(exc, DeadlineExceededError):
        return 504, error_body(str(exc), "timeout_error", None, "deadline_exceeded")
    log.error("generation failed: %s", exc)
    return 500, error_body(f"generation failed: {exc}", "server_error", None, "engine_error")


def http_error_for(status: int, detail: str, method: str, path: str) -> dict[str, Any]:
    """OpenAI's error object for what routing refuses (no such path, a method it does not take)."""
    code = {404: "not_found", 405: "method_not_allowed"}.get(status, "http_error")
    return error_body(f"{method} {path}: {detail}", "invalid_request_error", None, code)
