"""ASGI layers around the routes: request spans, correlation and access lines, bearer auth.

From the outside in: OpenTelemetry's ASGI middleware (the request's SERVER span, a child
of its ``traceparent``), then :class:`Correlation` (a ``traceresponse`` header with the
request's trace id, and one ``http_request`` log line with the correlation keys), then
CORS when configured, then :class:`BearerAuth`, then the routes.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Iterable, Sequence
from typing import Any

import orjson
from opentelemetry import trace
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from stepstream.server._runs import correlation, logger

__all__ = ["BearerAuth", "Correlation", "span_details"]

# The scope key under which span_details leaves the request's route template.
_ROUTE_KEY = "stepstream.route"
_UNSEEN = object()


async def _refuse(
    send: Send, status: int, detail: str, headers: Iterable[tuple[bytes, bytes]]
) -> None:
    body = orjson.dumps({"detail": detail})
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), *headers],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _route_path(scope: Scope) -> str:
    """The request's path inside this app: without the prefix it is mounted under."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root):
        return path[len(root) :] or "/"
    return path


class BearerAuth:
    """Requires ``Authorization: Bearer <token>`` on every path but the open ones."""

    def __init__(self, app: ASGIApp, token: str, open_paths: Sequence[str] = ("/health",)) -> None:
        self.app = app
        self._token = token.encode()
        self._open = frozenset(open_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Refuse (401) a request without the right token."""
        if scope["type"] != "http" or _route_path(scope) in self._open:
            await self.app(scope, receive, send)
            return
        given = dict(scope["headers"]).get(b"authorization")
        challenge = [(b"www-authenticate", b'Bearer realm="stepstream"')]
        if given is None:
            detail = "missing bearer token: send the header 'Authorization: Bearer <token>'"
            await _refuse(send, 401, detail, challenge)
            return
        scheme, _, value = given.partition(b" ")
        if scheme.lower() != b"bearer" or not hmac.compare_digest(value.strip(), self._token):
            detail = "wrong bearer token: the Authorization header has not this server's token"
            await _refuse(send, 401, detail, challenge)
            return
        await self.app(scope, receive, send)


class Correlation:
    """Adds ``traceresponse`` to every response and logs one ``http_request`` line per request."""

    def __init__(self, app: ASGIApp, routes: Sequence[BaseRoute]) -> None:
        self.app = app
        self._routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on; note its status and duration."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 0
        ctx = trace.get_current_span().get_span_context()
        header = (
            [(b"traceresponse", f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-01".encode())]
            if ctx.is_valid
            else []
        )

        async def send_with_trace(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message = {**message, "headers": [*message.get("headers", ()), *header]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_trace)
        finally:
            route = scope.get(_ROUTE_KEY, _UNSEEN)
            fields: dict[str, Any] = {
                "method": scope["method"],
                "route": route_of(scope, self._routes) if route is _UNSEEN else route,
                "status": status,
                "duration_ms": round((time.perf_counter() - started) * 1000, 3),
                **correlation(),
            }
            logger.info("http_request", extra=fields)


def route_of(scope: Scope, routes: Sequence[BaseRoute]) -> str | None:
    """The route template a request matches (``/events/{handler_id}``), or None."""
    for route in routes:
        match, _ = route.matches(scope)
        if match is not Match.NONE:
            path: str | None = getattr(route, "path", None)
            return path
    return None


def span_details(routes: Sequence[BaseRoute]) -> Any:
    """The request span's name (``GET /events/{handler_id}``: low cardinality) and route.

    The route found is kept in the scope for :class:`Correlation`'s line: one lookup.
    """

    def details(scope: Scope) -> tuple[str, dict[str, str]]:
        method = scope.get("method", "HTTP")
        route = scope[_ROUTE_KEY] = route_of(scope, routes)
        if route is None:
            return method, {}
        return f"{method} {route}", {"http.route": route}

    return details
