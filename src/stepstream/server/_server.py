"""``WorkflowServer``: stepstream workflows behind llama-agents-server's HTTP API.

An ASGI application (Starlette routes, a SERVER span per request) that
``serve()`` runs with uvicorn, or that an application mounts in its own
Starlette/FastAPI app (then enter ``server.lifespan()`` in that app's lifespan so the
runs stop with it).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

from opentelemetry.metrics import MeterProvider
from opentelemetry.trace import TracerProvider
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from stepstream.errors import WorkflowError, WorkflowValidationError
from stepstream.events import Event
from stepstream.server._admission import Admission
from stepstream.server._api import Api, Served, json_response
from stepstream.server._durable import DurableRuns, server_runtime
from stepstream.server._envelope import BadRequest
from stepstream.server._handlers import HandlerStore, MemoryHandlerStore
from stepstream.server._lag import LoopLagProbe
from stepstream.server._middleware import BearerAuth, Correlation
from stepstream.server._ready import READY_PATH, Readiness
from stepstream.server._request_span import RequestSpan
from stepstream.server._runs import Runs, correlation, logger
from stepstream.server._settings import ServerSettings
from stepstream.server._web import OPEN_PATHS, web_routes
from stepstream.workflow import Workflow

__all__ = ["WorkflowServer"]

_NAME = re.compile(r"[A-Za-z0-9._~-]{1,128}")


async def _refused(request: Request, exc: Exception) -> Response:  # noqa: ARG001
    assert isinstance(exc, BadRequest)  # noqa: S101 - registered for BadRequest only
    headers = {"Retry-After": "1"} if exc.status == 503 else None  # noqa: PLR2004
    response = json_response({"detail": exc.detail}, exc.status)
    if headers:
        response.headers.update(headers)
    return response


async def _http_error(request: Request, exc: Exception) -> Response:  # noqa: ARG001
    assert isinstance(exc, HTTPException)  # noqa: S101 - registered for HTTPException only
    return json_response({"detail": exc.detail}, exc.status_code)


async def _internal_error(request: Request, exc: Exception) -> Response:
    logger.error(
        "internal_error",
        exc_info=exc,
        extra={"method": request.method, "path": request.url.path, **correlation()},
    )
    return json_response({"detail": f"internal server error: {type(exc).__name__}"}, 500)


class WorkflowServer:
    """Serves workflows over HTTP with llama-agents-server's API.

    Args:
        workflows: Workflow instances by the name they are served under
            (``/workflows/{name}/run``); more with :meth:`add_workflow`.
        settings: Limits and options (:class:`ServerSettings`); or pass its fields as
            keywords (``token=``, ``max_body_bytes=``, ...).
        store: Where handlers are kept (default: in memory).
        durable: Run every served workflow durably: True (the default database,
            ``.stepstream/durable.sqlite``), a database URL, or a ``DBOSRuntime``. The
            runs then survive a restart, and the runtime's database is the handler
            store (docs/server.md, "Durable runs").
        tracer_provider: For the request spans (default: the global provider); a
            workflow's run spans use the workflow's own provider.
        meter_provider: For the HTTP metrics of OpenTelemetry's ASGI middleware.
    """

    def __init__(
        self,
        workflows: Mapping[str, Workflow] | None = None,
        *,
        settings: ServerSettings | None = None,
        store: HandlerStore | None = None,
        durable: object = None,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
        **options: Any,
    ) -> None:
        if settings is not None and options:
            msg = f"WorkflowServer: pass settings= or its fields ({', '.join(options)}), not both"
            raise WorkflowValidationError(msg)
        if settings is None:
            try:
                settings = ServerSettings(**options)
            except TypeError as exc:
                msg = f"WorkflowServer: {exc}".replace("ServerSettings.__init__()", "")
                raise WorkflowValidationError(msg) from None
        self.settings = settings
        self.store: HandlerStore = store or MemoryHandlerStore(settings.keep_finished)
        self._served: dict[str, Served] = {}
        self._stop = asyncio.Event()
        self.runtime: Any = None  # the DBOSRuntime of a durable server
        if durable is None or durable is False:
            self.runs = Runs(self.store, settings.event_log_limit)
        else:
            self.runtime = server_runtime(durable, (), settings.idle_release_after)
            self.runs = DurableRuns(
                self.store, settings.event_log_limit, self.runtime, self._served
            )
        self._api = Api(self._served, self.store, self.runs, settings, self._stop)
        database = None if self.runtime is None else str(self.runtime.database_url)
        self._ready = Readiness(database, self._stop)
        self._tracer_provider = tracer_provider
        self._meter_provider = meter_provider
        self._app: ASGIApp | None = None
        self._lag = LoopLagProbe() if settings.loop_lag_probe else None
        #: Why the server could not start (its durable runtime's launch refused), if so.
        self.startup_error: WorkflowError | None = None
        for name, workflow in (workflows or {}).items():
            self.add_workflow(name, workflow)

    def add_workflow(
        self, name: str, workflow: Workflow, additional_events: Sequence[type[Event]] = ()
    ) -> None:
        """Serve ``workflow`` as ``name``; ``additional_events`` are more classes clients may send.

        (Events a step waits for with ``ctx.wait_for_event`` are not in its signature.)
        """
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            msg = (
                "WorkflowServer: a workflow name must be 1-128 letters, digits or '._~-', "
                f"got {name!r}"
            )
            raise WorkflowValidationError(msg)
        given: object = workflow  # checked at run time: callers are not all type-checked
        if not isinstance(given, Workflow):
            msg = (
                f"WorkflowServer: {name!r} must be a Workflow instance, got "
                f"{type(given).__name__}; instantiate it (e.g. MyWorkflow(timeout=60))"
            )
            raise WorkflowValidationError(msg)
        if name in self._served:
            msg = f"WorkflowServer: a workflow is already served as {name!r}; pick another name"
            raise WorkflowValidationError(msg)
        if self.runtime is not None:
            try:
                self.runtime.adopt(workflow)
            except WorkflowValidationError as exc:
                msg = f"WorkflowServer: {name!r}: {exc}"
                raise WorkflowValidationError(msg) from None
        self._served[name] = Served(name, workflow, list(additional_events))

    @property
    def workflows(self) -> dict[str, Workflow]:
        """The served workflows, by name."""
        return {name: s.workflow for name, s in self._served.items()}

    # -- the ASGI app -------------------------------------------------------------------

    @property
    def app(self) -> ASGIApp:
        """The ASGI application (built once)."""
        if self._app is None:
            self._app = self._build()
        return self._app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The server is itself an ASGI app: ``uvicorn.run(server)`` or ``Mount("/wf", server)``."""
        await self.app(scope, receive, send)

    def _build(self) -> ASGIApp:
        routes = [*self._api.routes(), *web_routes()]
        routes.append(Route(READY_PATH, self._ready.endpoint, methods=["GET"]))
        if self._lag is not None:
            routes.append(Route("/debug/loop-lag", self._lag.endpoint, methods=["GET"]))
        app: ASGIApp = Starlette(
            routes=routes,
            exception_handlers={
                BadRequest: _refused,
                HTTPException: _http_error,
                Exception: _internal_error,
            },
            lifespan=lambda _: self.lifespan(),
        )
        if self.settings.token is not None:
            app = BearerAuth(app, self.settings.token, ("/health", READY_PATH, *OPEN_PATHS))
        if self.settings.cors_origins:
            app = CORSMiddleware(
                app,
                allow_origins=list(self.settings.cors_origins),
                allow_methods=["GET", "POST"],
                allow_headers=["Authorization", "Content-Type", "Last-Event-ID", "traceparent"],
                expose_headers=["traceresponse"],
            )
        app = Correlation(app, routes)
        traced = RequestSpan(app, routes, self._tracer_provider, self._meter_provider)
        return Admission(traced, self.settings.max_active_requests)

    # -- lifecycle ----------------------------------------------------------------------

    async def aclose(self) -> None:
        """Stop: cancel the running runs (their streams end with them), close other streams."""
        self._stop.set()
        await self.runs.aclose()
        self._ready.close()

    @asynccontextmanager
    async def lifespan(self) -> AsyncIterator[None]:
        """Serve inside the block; on exit cancel the runs (use in a host app's lifespan)."""
        probe = None
        if self._lag is not None:
            probe = asyncio.get_running_loop().create_task(self._lag.run(), name="loop lag")
        try:
            try:
                await self.runs.open()
            except WorkflowError as exc:
                self.startup_error = exc
                raise
            yield
        finally:
            if probe is not None:
                probe.cancel()
            await self.aclose()

    def uvicorn_config(self, host: str = "127.0.0.1", port: int = 8000, **config: Any) -> Any:
        """A ``uvicorn.Config`` for this server, with its timeouts and slow-client guard."""
        import uvicorn  # noqa: PLC0415 - only serving needs it, not mounting

        from stepstream.server._protocol import guarded_protocol  # noqa: PLC0415

        config.setdefault("http", guarded_protocol(self.settings.header_timeout))
        config.setdefault("timeout_keep_alive", self.settings.keep_alive_timeout)
        config.setdefault("timeout_graceful_shutdown", 10)
        config.setdefault("access_log", False)  # the server logs http_request lines itself
        config.setdefault("lifespan", "on")
        return uvicorn.Config(self, host=host, port=port, **config)

    def uvicorn_server(
        self,
        host: str = "127.0.0.1",
        port: int = 8000,
        *,
        tune_process: bool = False,
        **config: Any,
    ) -> Any:
        """A ``uvicorn.Server`` for this server: on shutdown the runs end first.

        So their streams and the ``/run`` requests waiting for them complete, and
        uvicorn's wait for open connections is short. With ``tune_process``, once
        started it tunes the process for serving (``stepstream serve --tune``: garbage
        collector and GIL switch interval, see ``stepstream.server._tuning``); that is
        process-wide.
        """
        import uvicorn  # noqa: PLC0415

        server = self

        class _Uvicorn(uvicorn.Server):
            async def startup(self, sockets: Any = None) -> None:
                await super().startup(sockets)
                if tune_process and self.started:
                    from stepstream.server._tuning import tune_process as tune  # noqa: PLC0415

                    tune()

            async def shutdown(self, sockets: Any = None) -> None:
                await server.aclose()
                await super().shutdown(sockets)

        return _Uvicorn(self.uvicorn_config(host, port, **config))

    async def serve(
        self,
        host: str = "127.0.0.1",
        port: int = 8000,
        *,
        tune_process: bool = False,
        **config: Any,
    ) -> None:
        """Serve with uvicorn until stopped (Ctrl-C, SIGTERM); ``config``: ``uvicorn.Config``.

        ``tune_process``: see :meth:`uvicorn_server`.
        """
        await self.uvicorn_server(host, port, tune_process=tune_process, **config).serve()
