"""``stepstream watch`` and ``stepstream run --server``: the live view of a run on a server.

The same view as ``stepstream run`` (step rows, streamed text; plain lines when stdout is
not a terminal), fed by the server's event stream (``GET /events/{id}``) and step frames
(``GET /handlers/{id}/steps``), both read from the run's start and resumed with
``Last-Event-ID`` after a dropped connection. An ``InputRequiredEvent`` still waiting for
its answer is asked on the terminal and answered with ``POST /events/{id}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import httpx
from rich.console import Console
from rich.live import Live
from rich.text import Text

from stepstream._visible import visible
from stepstream.cli._common import ServerError, labelled, shown
from stepstream.cli._live import LiveView, compact_line, result_text

__all__ = ["ServerError", "run_remote", "watch_remote"]

EXIT_FAILED, EXIT_INTERRUPTED = 1, 130
_RETRIES = 6  # reconnections in a row before giving up on a stream (about 4 s)
_SETTLE = 0.15  # seconds a prompt must stay due before it is asked (replays settle first)


@dataclass(frozen=True)
class Frame:
    """One SSE frame: its id (None for a closing frame), type and decoded data."""

    id: int | None
    type: str
    data: dict[str, Any]


def _fields(envelope: dict[str, Any]) -> dict[str, Any]:
    """An envelope's fields, declared and dynamic (``_data``) alike."""
    value = envelope.get("value")
    if not isinstance(value, dict):
        return {}
    fields = {k: v for k, v in value.items() if k != "_data"}
    dynamic = value.get("_data")
    fields.update(dynamic if isinstance(dynamic, dict) else {})
    return fields


class RemoteView(LiveView):
    """The live view fed by a server's frames; ``printer`` gets plain lines (no terminal)."""

    def __init__(self, handler: dict[str, Any], steps: list[str]) -> None:
        super().__init__(str(handler.get("workflow_name", "")), steps)
        self.run_id = str(handler.get("run_id") or "")
        self.trace_id = str(handler.get("trace_id") or "")
        self.ended = handler.get("status") != "running"
        self.prompt: str | None = None
        self.printer: Callable[[str], None] | None = None

    def on_event(self, frame: Frame) -> None:
        """A streamed event: a text block or line; a prompt when it asks for input."""
        fields = _fields(frame.data)
        types = [frame.type, *(frame.data.get("types") or [])]
        line = compact_line(frame.type, " ".join(f"{k}={v!r}" for k, v in fields.items()), 400)
        if self.printer is not None:
            self.printer(f"{time.monotonic() - self.started:8.3f}s {'-':<16} {line}")
        if "StopEvent" in types:
            return
        if "InputRequiredEvent" in types:
            found = [fields[k] for k in ("prefix", "prompt", "question") if k in fields]
            self.prompt = str(found[0]) if found else ""
        (only,) = fields.values() if len(fields) == 1 else (None,)
        text = only if isinstance(only, str) else None
        self.add_event(("", 0, frame.type), text, line[:160])

    def on_step(self, frame: Frame) -> None:
        """A step frame: the step's row changes state."""
        value = frame.data.get("value") or {}
        step, state = value.get("step"), str(value.get("state", ""))
        if step is None:
            self.ended = True
            return
        step = str(step)
        took = float(value.get("at_ms") or 0) - float(value.get("start_ms") or 0)
        if state == "running" and value.get("resumed_by"):
            self._row(step).state = "running"
        elif state == "running":
            self.mark_running(step)
        elif state == "ok":
            self.mark_done(step, took)
        elif state == "waiting":
            self.mark_waiting(step, str(value.get("waiting_for", "")))
        else:
            self.mark_failed(step, state, str(value.get("error") or ""), took)
            if state == "retrying":
                self.mark_retry(step)

    def prompt_due(self) -> bool:
        """An InputRequiredEvent came and a step still waits for its answer."""
        waiting = any(row.state == "awaiting" for row in self.rows.values())
        return self.prompt is not None and waiting and not self.ended


class Server:
    """A stepstream server at ``url`` (with ``token`` when it needs one)."""

    def __init__(self, url: str, token: str | None) -> None:
        if not url.startswith(("http://", "https://")):
            msg = f"URL must be an http:// or https:// URL, got {url!r}"
            raise ServerError(msg)
        self.url = url.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        timeout = httpx.Timeout(10.0, read=None)  # streams idle between frames (heartbeats)
        try:
            httpx.URL(self.url).copy_with(path="/")  # a bad port or host fails here
        except (httpx.InvalidURL, ValueError) as exc:
            msg = f"URL {url!r} is not valid: {exc}"
            raise ServerError(msg) from None
        self.http = httpx.AsyncClient(base_url=self.url, headers=headers, timeout=timeout)

    async def _checked(self, response: httpx.Response, also: int = 0) -> httpx.Response:
        if response.status_code < 400 or response.status_code == also:  # noqa: PLR2004
            return response
        await response.aread()
        try:
            detail = str(response.json()["detail"])
        except (ValueError, KeyError, TypeError):
            detail = response.text[:300] or response.reason_phrase
        if response.status_code == 401:  # noqa: PLR2004
            msg = (
                f"the server at {self.url} refused the token: {detail}; pass --token or set "
                "STEPSTREAM_SERVER_TOKEN"
            )
        else:
            msg = f"the server at {self.url} answered {response.status_code}: {detail}"
        raise ServerError(msg)

    async def request(self, method: str, path: str, also: int = 0, **options: Any) -> Any:
        """The JSON answer to one request; an error status (but ``also``) is a ServerError."""
        try:
            response = await self.http.request(method, path, **options)
        except httpx.TransportError as exc:
            msg = (
                f"cannot reach a stepstream server at {self.url}: {exc or type(exc).__name__}; "
                "start one with `stepstream serve` or check the URL"
            )
            raise ServerError(msg) from None
        return (await self._checked(response, also)).json()

    async def follow(self, path: str, on_frame: Callable[[Frame], None]) -> None:
        """Read an SSE stream of the server from the run's start to its end, resuming."""
        last: int | None = None
        failures = 0
        while True:
            headers = {"Accept": "text/event-stream"}
            if last is not None:
                headers["Last-Event-ID"] = str(last)
            try:
                async with self.http.stream(
                    "GET", path, params={"after_sequence": -1}, headers=headers
                ) as response:
                    if response.status_code == 204:  # noqa: PLR2004 - nothing left to read
                        return
                    await self._checked(response)
                    async for frame in _frames(response.aiter_lines()):
                        failures = 0
                        if frame.type == "StreamClosedEvent":
                            last = self._closed(frame, last)
                            continue
                        last = frame.id if frame.id is not None else last
                        on_frame(frame)
            except httpx.TransportError as exc:
                failures += 1
                if failures > _RETRIES:
                    msg = f"lost the connection to the server at {self.url}: {exc}"
                    raise ServerError(msg) from None
                await asyncio.sleep(min(0.1 * 2**failures, 1.0))
            else:
                return  # the stream ends with the run

    def _closed(self, frame: Frame, last: int | None) -> int | None:
        value = frame.data.get("value") or {}
        if value.get("reason") != "events_dropped":
            msg = f"the server at {self.url} closed the stream: {value.get('detail', '')}"
            raise ServerError(msg)
        resume = value.get("resume_after_sequence")
        return int(resume) if isinstance(resume, int) else last


async def _frames(lines: AsyncIterator[str]) -> AsyncIterator[Frame]:
    """SSE frames from a stream's lines (comments skipped)."""
    fields: dict[str, str] = {}
    async for line in lines:
        if line:
            name, _, value = line.partition(":")
            if name:
                fields[name] = value.removeprefix(" ")
            continue
        if "data" in fields:
            ident = fields.get("id")
            data = json.loads(fields["data"])
            yield Frame(int(ident) if ident else None, fields.get("event", "message"), data)
        fields = {}


async def _ask(server: Server, view: RemoteView, handler_id: str, console: Console) -> bool:
    """Ask the pending prompt on the terminal and send the answer; False on end of input."""
    prompt = visible(view.prompt or "", multiline=True).rstrip()
    console.print(Text(prompt or "input required"), end=" ")
    line = await asyncio.to_thread(sys.stdin.readline)
    view.prompt = None
    if not line:
        return False
    if not sys.stdin.isatty():
        console.print(markup=False, highlight=False)
    answer = {"type": "HumanResponseEvent", "value": {"response": line.rstrip("\n")}}
    await server.request("POST", f"/events/{handler_id}", json={"event": answer})
    return True


async def _prompts(
    server: Server, view: RemoteView, handler_id: str, console: Console, live: Live | None
) -> None:
    """Ask each prompt that stays due; on end of input, cancel (``run``) or stop asking."""
    due_since: float | None = None
    while True:
        await asyncio.sleep(0.05)
        if not view.prompt_due():
            due_since = None
            continue
        due_since = due_since or time.monotonic()
        if time.monotonic() - due_since < _SETTLE:
            continue
        if live is not None:
            live.stop()
        answered = await _ask(server, view, handler_id, console)
        if live is not None:
            live.start()
        if not answered:
            console.print("\nno answer on standard input; the run waits for one", markup=False)
            return


async def _watch(server: Server, handler_id: str, console: Console, err: Console) -> int:
    # GET /handlers/{id} answers a failed or cancelled run with 500 and its handler.
    handler = await server.request("GET", f"/handlers/{handler_id}", also=500)
    name = str(handler.get("workflow_name", ""))
    graph = await server.request("GET", f"/workflows/{name}/representation")
    steps = [str(n["id"]) for n in graph["graph"]["nodes"] if n.get("node_type") == "step"]
    view = RemoteView(handler, steps)
    live = Live(view, console=console, refresh_per_second=12) if console.is_terminal else None
    if live is None:
        view.printer = lambda line: console.print(Text(line), soft_wrap=True)
    try:
        with live or contextlib.nullcontext():
            async with asyncio.TaskGroup() as group:
                asker = group.create_task(_prompts(server, view, handler_id, console, live))
                events = group.create_task(server.follow(f"/events/{handler_id}", view.on_event))
                frames = group.create_task(
                    server.follow(f"/handlers/{handler_id}/steps", view.on_step)
                )
                await events
                await frames
                asker.cancel()
    except* ServerError as failed:
        raise failed.exceptions[0] from None
    final = await server.request("GET", f"/handlers/{handler_id}", also=500)
    return _report(final, console, err)


def _report(handler: dict[str, Any], console: Console, err: Console) -> int:
    ids = shown(
        f"handler {handler.get('handler_id')}  run_id {handler.get('run_id')}  "
        f"trace_id {handler.get('trace_id') or '-'}"
    )
    status = handler.get("status")
    if status == "completed":
        result = handler.get("result") or {}
        value = result.get("value")
        if result.get("type") == "StopEvent" and isinstance(value, dict):
            value = value.get("result")
        console.print(Text.assemble("Result: ", shown(result_text(value), multiline=True)))
        console.print(ids, soft_wrap=True)
        return 0
    err.print(labelled(str(status), "red", handler.get("error") or "the run did not complete"))
    err.print(ids, soft_wrap=True)
    return EXIT_INTERRUPTED if status == "cancelled" else EXIT_FAILED


def watch_remote(
    url: str, handler_id: str, token: str | None, console: Console, err: Console
) -> int:
    """Watch the run ``handler_id`` on the server at ``url``; the exit code."""

    async def main() -> int:
        server = Server(url, token)
        async with server.http:
            return await _watch(server, handler_id, console, err)

    return _run(main, err)


def run_remote(  # noqa: PLR0917 - the command's options, passed through
    url: str, name: str, inputs: dict[str, Any], token: str | None, console: Console, err: Console
) -> int:
    """Start workflow ``name`` on the server at ``url`` and watch it; the exit code."""

    async def main() -> int:
        server = Server(url, token)
        async with server.http:
            started = await server.request(
                "POST", f"/workflows/{name}/run-nowait", json={"start_event": inputs}
            )
            handler_id = str(started["handler_id"])
            err.print(Text.assemble("handler: ", shown(handler_id)), soft_wrap=True)
            try:
                return await _watch(server, handler_id, console, err)
            except asyncio.CancelledError:
                with contextlib.suppress(ServerError):
                    await server.request("POST", f"/handlers/{handler_id}/cancel")
                raise

    return _run(main, err)


def _run(main: Callable[[], Coroutine[Any, Any, int]], err: Console) -> int:
    try:
        return asyncio.run(main())
    except KeyboardInterrupt:
        err.print(labelled("interrupted", "red", "stopped watching"))
        return EXIT_INTERRUPTED
