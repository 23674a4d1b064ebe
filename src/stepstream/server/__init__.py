"""Serve workflows over HTTP: ``stepstream serve app.py``, or mount ``WorkflowServer`` in your app.

The API is llama-agents-server's (paths, bodies, responses, event envelopes, status
codes), so its published client ``llama-agents-client`` works unchanged; every SSE frame
also carries ``id:`` (the run-wide seq) and ``event:`` (the event type), and streams
resume with ``Last-Event-ID`` or ``after_sequence`` with no gap and no duplicate.

Needs the ``server`` extra (``pip install 'stepstream[server]'``): Starlette, uvicorn and
OpenTelemetry's ASGI instrumentation are imported when a name below is first used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from stepstream.server._handlers import HandlerRecord, HandlerStore, MemoryHandlerStore
    from stepstream.server._load import ServeLoadError, load_workflows
    from stepstream.server._server import WorkflowServer
    from stepstream.server._settings import ServerSettings
    from stepstream.server._streaming import StreamClosedEvent

__all__ = [
    "HandlerRecord",
    "HandlerStore",
    "MemoryHandlerStore",
    "ServeLoadError",
    "ServerSettings",
    "StreamClosedEvent",
    "WorkflowServer",
    "load_workflows",
]

_LAZY = {
    "HandlerRecord": "stepstream.server._handlers",
    "HandlerStore": "stepstream.server._handlers",
    "MemoryHandlerStore": "stepstream.server._handlers",
    "ServeLoadError": "stepstream.server._load",
    "load_workflows": "stepstream.server._load",
    "WorkflowServer": "stepstream.server._server",
    "ServerSettings": "stepstream.server._settings",
    "StreamClosedEvent": "stepstream.server._streaming",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        msg = f"module {__name__!r} has no attribute {name!r}"
        raise AttributeError(msg)
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
