"""The HTTP routes: llama-agents-server's API over stepstream runs.

Paths, request bodies, response shapes and status codes follow llama-agents-server,
so that its published client (``llama-agents-client``) works unchanged. Every refusal
is a JSON ``{"detail": "..."}`` naming the field, header or name at fault.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from stepstream._schema import event_schema
from stepstream.drawing import flow_graph
from stepstream.errors import WorkflowError
from stepstream.events import Event, HumanResponseEvent, InputRequiredEvent, StartEvent, StopEvent
from stepstream.server._admission import parked
from stepstream.server._api_streams import StreamRoutes
from stepstream.server._durable import DurableRuns
from stepstream.server._envelope import BadRequest, event_bases, parse_event
from stepstream.server._handlers import STATUSES, HandlerRecord, HandlerStore
from stepstream.server._runs import Runs, correlation, logger
from stepstream.server._settings import ServerSettings
from stepstream.server._streaming import StreamLimiter
from stepstream.workflow import Workflow

__all__ = ["Api", "Served", "json_response"]

#: Seconds a /run request keeps its admission slot while its run goes on.
SHORT_RUN = 0.05
_HANDLER_ID = re.compile(r"[A-Za-z0-9._~-]{1,128}")
# Framework events a client may send to any workflow (as the peer's client registry has).
_FRAMEWORK_EVENTS: tuple[type[Event], ...] = (
    StartEvent,
    StopEvent,
    InputRequiredEvent,
    HumanResponseEvent,
)


@dataclass
class Served:
    """A workflow served under ``name``, with the event classes clients may name."""

    name: str
    workflow: Workflow
    additional_events: list[type[Event]] = field(default_factory=list)

    def __post_init__(self) -> None:
        events: dict[str, type[Event]] = {e.__name__: e for e in _FRAMEWORK_EVENTS}
        events.update({e.__name__: e for e in self.workflow.events})
        events.update({e.__name__: e for e in self.additional_events})
        self.events = events
        start = self.workflow.start_event_class
        names = [start.__name__, *(event_bases(start) or [])]
        self.start_names = dict.fromkeys(names, start)


def json_response(data: Any, status: int = 200) -> Response:
    """A JSON response (orjson-encoded)."""
    return Response(orjson.dumps(data), status_code=status, media_type="application/json")


Endpoint = Callable[[Request], Coroutine[Any, Any, Response]]


class Api(StreamRoutes):
    """The route handlers of one server."""

    def __init__(
        self,
        served: Mapping[str, Served],
        store: HandlerStore,
        runs: Runs,
        settings: ServerSettings,
        stop: asyncio.Event,
    ) -> None:
        self.served = served
        self.store = store
        self.runs = runs
        #: The runs of a durable server (their records are in its database too), else None.
        self.durable = runs if isinstance(runs, DurableRuns) else None
        self.settings = settings
        self.streams = StreamLimiter(settings.max_streams)
        self.stop = stop

    def routes(self) -> list[BaseRoute]:
        """The peer's routes, and stepstream's step stream."""
        get, post = ["GET"], ["POST"]
        return [
            Route("/health", self.health, methods=get),
            Route("/workflows", self.list_workflows, methods=get),
            Route("/workflows/{name}/run", self.run, methods=post),
            Route("/workflows/{name}/run-nowait", self.run_nowait, methods=post),
            Route("/workflows/{name}/schema", self.schema, methods=get),
            Route("/workflows/{name}/events", self.workflow_events, methods=get),
            Route("/workflows/{name}/representation", self.representation, methods=get),
            Route("/events/{handler_id}", self.stream_events, methods=get),
            Route("/events/{handler_id}", self.send_event, methods=post),
            Route("/handlers", self.list_handlers, methods=get),
            Route("/handlers/{handler_id}", self.get_handler, methods=get),
            Route("/handlers/{handler_id}/cancel", self.cancel, methods=post),
            Route("/handlers/{handler_id}/steps", self.stream_steps, methods=get),
            Route("/results/{handler_id}", self.result, methods=get),
        ]

    # -- lookups ------------------------------------------------------------------------

    def _served(self, request: Request) -> Served:
        name = request.path_params["name"]
        served = self.served.get(name)
        if served is None:
            known = ", ".join(sorted(self.served)) or "none"
            msg = f"Workflow not found: no workflow is served as {name!r} (served: {known})"
            raise BadRequest(msg, status=404)
        return served

    async def _record(self, request: Request) -> HandlerRecord:
        handler_id = request.path_params["handler_id"]
        record = self.store.get(handler_id)
        if record is None and self.durable is not None:  # the database knows more runs
            record = await self.durable.lookup(handler_id)
        if record is None:
            msg = f"Handler not found: no handler {handler_id!r} on this server"
            raise BadRequest(msg, status=404)
        return record

    async def _body(self, request: Request) -> dict[str, Any]:
        """The request's JSON object, read within the size and time limits."""
        limit = self.settings.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            msg = (
                f"request body is {declared} bytes; this server accepts at most {limit} "
                "(max_body_bytes)"
            )
            raise BadRequest(msg, status=413)
        chunks: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(self.settings.body_timeout):
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > limit:
                        msg = (
                            f"request body exceeds {limit} bytes, the most this server "
                            "accepts (max_body_bytes)"
                        )
                        raise BadRequest(msg, status=413)
                    chunks.append(chunk)
        except TimeoutError:
            msg = f"request body not received within {self.settings.body_timeout} s (body_timeout)"
            raise BadRequest(msg, status=408) from None
        raw = b"".join(chunks)
        if not raw.strip():
            return {}
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            msg = f"request body is not valid JSON: {exc}"
            raise BadRequest(msg) from None
        if not isinstance(body, dict):
            msg = f"request body must be a JSON object, got {type(body).__name__}"
            raise BadRequest(msg)
        return body

    # -- workflows ----------------------------------------------------------------------

    async def health(self, request: Request) -> Response:
        """``GET /health``: healthy while serving (no token needed)."""
        return json_response({"status": "healthy"})

    async def list_workflows(self, request: Request) -> Response:
        """``GET /workflows``: the names served."""
        return json_response({"workflows": list(self.served)})

    async def schema(self, request: Request) -> Response:
        """``GET /workflows/{name}/schema``: JSON schemas of the start and stop events."""
        wf = self._served(request).workflow
        return json_response(
            {
                "start": event_schema(wf.start_event_class),
                "stop": event_schema(wf.stop_event_class),
            }
        )

    async def workflow_events(self, request: Request) -> Response:
        """``GET /workflows/{name}/events``: JSON schemas of the events a client may name."""
        served = self._served(request)
        return json_response({"events": [event_schema(e) for e in served.events.values()]})

    async def representation(self, request: Request) -> Response:
        """``GET /workflows/{name}/representation``: the workflow's graph."""
        served = self._served(request)
        return json_response({"graph": flow_graph(served.workflow)})

    # -- runs ---------------------------------------------------------------------------

    async def _start(self, request: Request) -> HandlerRecord:
        served = self._served(request)
        body = await self._body(request)
        context = body.get("context")
        if context:
            msg = (
                "context: this server does not accept a saved context in a run request; "
                "leave context out (or empty)"
            )
            raise BadRequest(msg)
        handler_id = body.get("handler_id")
        if handler_id is not None and (
            not isinstance(handler_id, str) or not _HANDLER_ID.fullmatch(handler_id)
        ):
            msg = f"handler_id: must be 1-128 letters, digits or '._~-', got {handler_id!r}"
            raise BadRequest(msg)
        if handler_id is not None and self.durable is not None:
            await self._check_free(handler_id)
        kwargs = body.get("kwargs", {})
        if not isinstance(kwargs, dict):
            msg = (
                f"kwargs: must be a JSON object of start event fields, got {type(kwargs).__name__}"
            )
            raise BadRequest(msg)
        data = body.get("start_event", kwargs)
        start = served.workflow.start_event_class
        event = parse_event(data, served.start_names, where="start_event", bare_as=start)
        assert isinstance(event, StartEvent)  # noqa: S101 - start_names maps to the start class
        try:
            if self.durable is not None and self.durable.queued(served.workflow):
                return await self.durable.submit(served.name, served.workflow, event, handler_id)
            record = self.runs.start(served.name, served.workflow, event, handler_id)
        except WorkflowError as exc:
            msg = f"start_event: {exc}"
            raise BadRequest(msg) from None
        if self.durable is not None and record.handler is not None:
            # Answered once the run is recorded: any replica then finds it.
            await self.durable.runtime.recorded(record.handler)
        return record

    async def _check_free(self, handler_id: str) -> None:
        """Refuse a handler id a durable run already has (in the database too)."""
        assert self.durable is not None  # noqa: S101 - called for a durable server only
        if await self.durable.taken(handler_id):
            msg = (
                f"handler_id {handler_id!r} is taken; leave handler_id out to get a new one "
                "(continuing a finished handler is not supported)"
            )
            raise BadRequest(msg, status=409)

    async def run(self, request: Request) -> Response:
        """``POST /workflows/{name}/run``: run, answer when it ends (200; 500 if it failed)."""
        record = await self._start(request)
        # A short run keeps the request's slot to its end, so that a burst of them is
        # worked through a slot at a time; a longer one gives it back and only waits.
        # (The timer runs parked() in a copy of this request's context: its slot.)
        timer = asyncio.get_running_loop().call_later(SHORT_RUN, parked)
        try:
            record = await self.runs.wait(record)
        finally:
            timer.cancel()
        return json_response(record.to_json(), 200 if record.status == "completed" else 500)

    async def run_nowait(self, request: Request) -> Response:
        """``POST /workflows/{name}/run-nowait``: start a run and answer at once."""
        record = await self._start(request)
        return json_response(record.to_json())

    # -- handlers -----------------------------------------------------------------------

    async def list_handlers(self, request: Request) -> Response:
        """``GET /handlers?status=...&workflow_name=...``: handlers in start order."""

        def values(name: str) -> list[str] | None:
            found = [v.strip() for v in request.query_params.getlist(name) if v.strip()]
            return found or None

        statuses = values("status")
        bad = sorted(set(statuses or ()) - set(STATUSES))
        if bad:
            msg = f"status: unknown status {', '.join(map(repr, bad))}; use {', '.join(STATUSES)}"
            raise BadRequest(msg)
        names = values("workflow_name")
        if self.durable is not None:
            keep = self.settings.keep_finished
            records = await self.durable.query(statuses, names, keep)
        else:
            records = self.store.query(statuses, names)
        return json_response({"handlers": [r.to_json() for r in records]})

    async def get_handler(self, request: Request) -> Response:
        """``GET /handlers/{id}``: 202 while running, 200 completed, 500 failed or cancelled."""
        record = await self._record(request)
        return json_response(record.to_json(), _handler_status(record))

    async def result(self, request: Request) -> Response:
        """``GET /results/{id}`` (the peer's deprecated form): the result value, unwrapped."""
        record = await self._record(request)
        data = record.to_json()
        result = record.result
        if result is None:
            data["result"] = None
        elif type(result) is StopEvent:
            data["result"] = data["result"]["value"].get("result")
        else:
            data["result"] = data["result"]["value"]
        return json_response(data, _handler_status(record))

    async def cancel(self, request: Request) -> Response:
        """``POST /handlers/{id}/cancel?purge=``: cancel a running handler (purge: forget it)."""
        record = await self._record(request)
        purge = request.query_params.get("purge", "false").lower() == "true"
        if record.finished and not purge:
            msg = (
                f"handler {record.handler_id!r} already ended ({record.status}); nothing to "
                "cancel (purge=true forgets it)"
            )
            raise BadRequest(msg, status=409)
        if not record.finished:
            try:
                await self.runs.cancel(record)
            except WorkflowError as exc:  # a durable run this process cannot take up
                msg = f"handler {record.handler_id!r} cannot be cancelled here: {exc}"
                raise BadRequest(msg, status=409) from None
            logger.info("run_cancelled", extra=correlation(record))
        if purge:
            self.store.remove(record.handler_id)
            if self.durable is not None:
                await self.durable.runtime.forget(record.run_id)
            return json_response({"status": "deleted"})
        return json_response({"status": "cancelled"})

    # -- events -------------------------------------------------------------------------

    async def send_event(self, request: Request) -> Response:
        """``POST /events/{id}``: send an event (a human's answer) into the run."""
        record = await self._record(request)
        body = await self._body(request)
        data, step = body.get("event"), body.get("step")
        if not data:
            msg = 'event: required, e.g. {"event": {"type": "HumanResponseEvent", "value": {...}}}'
            raise BadRequest(msg)
        if step is not None and not isinstance(step, str):
            msg = f"step: must be a step name (a string), got {type(step).__name__}"
            raise BadRequest(msg)
        served = self.served[record.workflow_name]
        event = parse_event(data, served.events, where="event")
        handler = record.handler
        if handler is None and self.durable is not None and not record.finished:
            # A durable run parked, or executing in another process: to its inbox.
            try:
                await self.durable.send(record, event, step)
            except WorkflowError as exc:
                msg = f"event: {exc}"
                raise BadRequest(msg, status=409) from None
            return json_response({"status": "sent"})
        if handler is None or handler.done():
            msg = (
                f"Workflow already completed: handler {record.handler_id!r} ended ({record.status})"
            )
            raise BadRequest(msg, status=409)
        try:
            await handler.send_event(event, step=step)
        except WorkflowError as exc:
            status = 409 if handler.done() else 400
            msg = f"event: {exc}"
            raise BadRequest(msg, status=status) from None
        return json_response({"status": "sent"})


def _handler_status(record: HandlerRecord) -> int:
    if record.status == "running":
        return 202
    return 200 if record.status == "completed" else 500
