"""The live web view: ``GET /`` and its script and styles, static files shipped in the package.

The page (``stepstream/_assets/webview.*``, with the run page's style ``view.css`` that
``stepstream traces export --html`` inlines) holds no data: it reads everything from the
API with the caller's token, so it is served without one. A Content-Security-Policy
allows scripts, styles and requests from the server itself only: nothing from a CDN,
no inline script, nothing a payload could smuggle in.
"""

from __future__ import annotations

from importlib import resources

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from stepstream.server._envelope import BadRequest

__all__ = ["OPEN_PATHS", "web_routes"]

_TYPES = {
    "view.css": "text/css; charset=utf-8",
    "webview.css": "text/css; charset=utf-8",
    "webview.js": "text/javascript; charset=utf-8",
}
#: Paths served without a token: the page and its static files.
OPEN_PATHS = ("/", *(f"/ui/{name}" for name in _TYPES))
_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def _read(name: str) -> bytes:
    return (resources.files("stepstream") / "_assets" / name).read_bytes()


async def _page(request: Request) -> Response:  # noqa: ARG001 - a route handler
    """``GET /``: the web view."""
    return Response(_read("webview.html"), media_type="text/html; charset=utf-8", headers=_HEADERS)


async def _asset(request: Request) -> Response:
    """``GET /ui/{name}``: the page's script and styles."""
    name = request.path_params["name"]
    media = _TYPES.get(name)
    if media is None:
        msg = f"no file {name!r} in the web view (it has {', '.join(_TYPES)})"
        raise BadRequest(msg, status=404)
    return Response(_read(name), media_type=media, headers=_HEADERS)


def web_routes() -> list[BaseRoute]:
    """The web view's routes."""
    return [Route("/", _page, methods=["GET"]), Route("/ui/{name}", _asset, methods=["GET"])]
