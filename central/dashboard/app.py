"""The dashboard's web app: Starlette routes over :class:`~central.dashboard.pages.Pages`, Jinja2 templates.

A page answers whole HTML, or, when htmx asks (`HX-Request`), only its live part (the template's partial), which
the page re-fetches every few seconds. Every string a node or an operator chose is attacker text: Jinja2
autoescapes it, and control and bidi characters are shown as escapes before that (:func:`edgefleet.terminal.
printable`), so a hostname cannot restyle the page or read as another node's. Every response carries the headers
of :mod:`central.dashboard.security`; a request whose Host header is not the dashboard's own is refused.
"""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from central.dashboard import security
from central.dashboard.pages import BURST_HOURS_DEFAULT, NODE_PAGE_DEFAULT, Pages
from edgefleet import __version__
from edgefleet.terminal import printable

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
REFRESH_S = 5


def _shown(value: Any) -> Any:
    """Jinja2's finalize: every string printed is passed through printable() (then autoescaped)."""
    if isinstance(value, str) and not isinstance(value, Markup):
        return printable(value)
    return value


def _iso(unix_seconds: float | None) -> str:
    if not unix_seconds:
        return "-"
    return dt.datetime.fromtimestamp(unix_seconds, tz=dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")


def _clock(unix_seconds: float | None) -> str:
    """The time of day, UTC, to the second: a heartbeat's time in a table (the date is in its title)."""
    if not unix_seconds:
        return "-"
    return dt.datetime.fromtimestamp(unix_seconds, tz=dt.timezone.utc).strftime("%H:%M:%SZ")


def _ts(timestamp: Any) -> str:
    from central.dashboard.views import seconds

    return _iso(seconds(timestamp))


def _num(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _pct(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value * 100:.{digits}f}%"


def _bytes(value: int) -> str:
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"


def _int_param(request: Request, name: str, default: int) -> int:
    """A whole-number query parameter; `default` when absent or not a number (the page clamps the range)."""
    try:
        return int(request.query_params.get(name, "") or default)
    except ValueError:
        return default


def environment() -> jinja2.Environment:
    from central.dashboard import views
    from edgefleet.v1 import admin_pb2, common_pb2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
        finalize=_shown,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(iso=_iso, clock=_clock, ts=_ts, num=_num, pct=_pct, bytes=_bytes, age=views.age_text)
    env.globals.update(
        version=__version__,
        refresh_s=REFRESH_S,
        run_status=lambda v: views.enum_text(admin_pb2.FederatedRunStatus, v, "FEDERATED_RUN_STATUS_").lower(),
        audit_outcome=lambda v: views.enum_text(admin_pb2.AuditOutcome, v, "AUDIT_OUTCOME_").lower(),
        activation_state=lambda v: views.enum_text(common_pb2.ActivationState, v, "ACTIVATION_STATE_"),
        seconds=views.seconds,
        label_text=views.label_text,
        left_the_box=views.left_the_box,
    )
    return env


class SecurityMiddleware:
    """Refuses a request whose Host header is not one of `allowed` (DNS rebinding), and adds the security
    headers to every response."""

    def __init__(self, app: ASGIApp, allowed: frozenset[str]):
        self.app = app
        self.allowed = allowed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        host = headers.get(b"host", b"").decode("latin-1")
        if not security.host_allowed(host, self.allowed):
            log.warning("refused a request for Host %r (the dashboard answers %s)", host, sorted(self.allowed))
            response = PlainTextResponse(
                "this dashboard answers only requests addressed to its own listen address\n", status_code=421
            )
            await self._with_headers(response)(scope, receive, send)
            return
        await self.app(scope, receive, self._send_with_headers(send))

    @staticmethod
    def _send_with_headers(send: Send) -> Send:
        async def wrapped(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {k.lower() for k, _ in message.get("headers", [])}
                extra = [(k.encode(), v.encode()) for k, v in security.HEADERS.items() if k.encode() not in names]
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        return wrapped

    def _with_headers(self, response: Response) -> ASGIApp:
        for k, v in security.HEADERS.items():
            response.headers[k] = v
        return response


def create_app(pages: Pages, allowed_hosts: frozenset[str]) -> ASGIApp:
    env = environment()

    def render(request: Request, name: str, context: dict[str, Any]) -> HTMLResponse:
        """The whole page, or its live part when htmx asks for it."""
        partial = request.headers.get("hx-request") == "true"
        template = env.get_template(f"partials/{name}.html" if partial else f"{name}.html")
        html = template.render(
            request_path=request.url.path,
            request_query=request.url.query,
            page=name,
            **context,
        )
        return HTMLResponse(html, headers={"cache-control": "no-store", "vary": "HX-Request"})

    def overview(request: Request) -> Response:
        return render(request, "overview", pages.overview())

    def nodes(request: Request) -> Response:
        size = _int_param(request, "page_size", NODE_PAGE_DEFAULT)
        return render(request, "nodes", pages.nodes(request.query_params.get("page", ""), size))

    def residency(request: Request) -> Response:
        return render(request, "residency", pages.residency(_int_param(request, "page", 0)))

    def burst(request: Request) -> Response:
        return render(request, "burst", pages.burst(_int_param(request, "hours", BURST_HOURS_DEFAULT)))

    def node(request: Request) -> Response:
        # A node central does not know is said on the page (200), so htmx keeps polling it without an error.
        return render(request, "node", pages.node(request.path_params["node_id"]))

    def node_history(request: Request) -> Response:
        span = request.query_params.get("range", "hour")
        return JSONResponse(
            pages.node_history(request.path_params["node_id"], span), headers={"cache-control": "no-store"}
        )

    def burst_history(request: Request) -> Response:
        span = request.query_params.get("range", "hour")
        return JSONResponse(pages.burst_history(span), headers={"cache-control": "no-store"})

    def simple(name: str):
        def page(request: Request) -> Response:
            return render(request, name, getattr(pages, name)())

        return page

    routes = [
        Route("/", overview),
        Route("/nodes", nodes),
        Route("/nodes/{node_id}", node),
        Route("/nodes/{node_id}/history.json", node_history),
        Route("/residency", residency),
        Route("/burst", burst),
        Route("/burst/history.json", burst_history),
        *(Route(f"/{name}", simple(name)) for name in ("rollouts", "federated", "objectives", "audit")),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    app = Starlette(routes=routes)
    return SecurityMiddleware(app, allowed_hosts)
