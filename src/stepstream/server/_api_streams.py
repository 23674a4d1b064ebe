"""The stream routes of the API: ``GET /events/{id}`` and ``GET /handlers/{id}/steps``.

Mixed into :class:`~stepstream.server._api.Api`. An in-memory run's events come from its
event log (:mod:`._streaming`); a durable run's from its journal and its log
(:mod:`._durable_stream`). ``Last-Event-ID`` (SSE) or ``after_sequence`` say where a
subscriber resumes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from stepstream.server._admission import parked
from stepstream.server._durable import DurableRuns
from stepstream.server._durable_stream import DurableStream, last_seq
from stepstream.server._envelope import BadRequest
from stepstream.server._handlers import HandlerRecord
from stepstream.server._log import RunLog
from stepstream.server._settings import ServerSettings
from stepstream.server._streaming import StreamLimiter, StreamOptions, Writer, event_stream

__all__ = ["StreamRoutes"]


class _Streaming(Response):
    """Hands the ASGI connection to the event stream (frames are written as they come)."""

    def __init__(self, run: Callable[[Scope, Receive, Send], Coroutine[Any, Any, None]]) -> None:
        super().__init__()
        self._run = run

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._run(scope, receive, send)


class StreamRoutes:
    """The stream routes (see the module docstring)."""

    durable: DurableRuns | None
    settings: ServerSettings
    streams: StreamLimiter
    stop: asyncio.Event

    async def _record(self, request: Request) -> HandlerRecord:  # pragma: no cover - Api's
        raise NotImplementedError

    async def stream_events(self, request: Request) -> Response:
        """``GET /events/{id}``: the run's events as SSE (default) or NDJSON (``sse=false``)."""
        record = await self._record(request)
        if self.durable is not None:
            return await self._durable_stream(request, record)
        return self._stream(request, record.log, default_after="now")

    async def _durable_stream(self, request: Request, record: HandlerRecord) -> Response:
        """A durable run's events after the requested seq, from its journal and live."""
        assert self.durable is not None  # noqa: S101 - a durable server's
        workflow = self.durable.workflow_of(record)
        text, source = _cursor(request, "now")
        if text.strip().lower() == "now":
            after = await last_seq(self.durable, record.run_id, workflow)
        else:
            after = _seq(text, source)
        ended = record.finished and self.durable.live(record.run_id) is None
        if ended and not await self.durable.runtime.events(record.run_id, workflow, after):
            return Response(status_code=204)  # the peer's answer: nothing left to read
        options = self._options(request)
        writer = DurableStream(self.durable, record.run_id, workflow, after, options, self.stop)
        return self._streaming(RunLog(), 0, options, writer)

    async def stream_steps(self, request: Request) -> Response:
        """``GET /handlers/{id}/steps``: the run's step lifecycle frames (from the start)."""
        record = await self._record(request)
        return self._stream(request, record.steps, default_after="-1")

    def _stream(self, request: Request, log: RunLog, default_after: str) -> Response:
        """Frames of ``log`` from the requested position on, as SSE or NDJSON."""
        after, source = _cursor(request, default_after)
        if after.strip().lower() == "now":
            position = log.end
        else:
            position = log.position_after(_seq(after, source))
        if log.closed and position >= log.end:
            return Response(status_code=204)  # the peer's answer: ended, nothing left to read
        return self._streaming(log, position, self._options(request), None)

    def _options(self, request: Request) -> StreamOptions:
        params = request.query_params
        sse = params.get("sse", "true").lower() == "true"
        return StreamOptions(
            sse=sse,
            qualified_name=params.get("include_qualified_name", "true").lower() == "true",
            heartbeat=self.settings.heartbeat if sse else None,
            send_timeout=self.settings.send_timeout,
        )

    def _streaming(
        self, log: RunLog, position: int, options: StreamOptions, writer: Writer | None
    ) -> Response:
        if not self.streams.try_acquire():
            msg = f"too many event streams open ({self.streams.limit}, max_streams); retry later"
            raise BadRequest(msg, status=503)

        async def run(scope: Scope, receive: Receive, send: Send) -> None:
            parked()  # a stream mostly waits for events: it does not hold a request slot
            try:
                await event_stream(
                    scope,
                    receive,
                    send,
                    log=log,
                    position=position,
                    options=options,
                    stop=self.stop,
                    writer=writer,
                )
            finally:
                self.streams.release()

        return _Streaming(run)


def _cursor(request: Request, default_after: str) -> tuple[str, str]:
    """Where a subscriber resumes (``Last-Event-ID`` or ``after_sequence``), and which said so."""
    params = request.query_params
    sse = params.get("sse", "true").lower() == "true"
    last_id = request.headers.get("last-event-id")
    if sse and last_id is not None:
        return last_id, "Last-Event-ID"
    return params.get("after_sequence", default_after), "after_sequence"


def _seq(text: str, source: str) -> int:
    try:
        return int(text)
    except ValueError:
        msg = f"{source}: must be an event seq (an integer) or 'now', got {text!r}"
        raise BadRequest(msg) from None
