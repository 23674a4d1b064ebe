"""A loopback OTLP/HTTP pass-through that keeps a copy of the spans it forwards.

Phoenix stores no span links (its v1 REST span has ``links: None``, and its OTLP decoder
drops them), so a test that must see a link reads what the exporter sent on the wire:
:func:`otlp_tee` forwards every request to the backend unchanged, answers with the
backend's answer, and decodes each OTLP/protobuf trace export it passed on.
"""

from __future__ import annotations

import contextlib
import gzip
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from dataclasses import field
from http.server import BaseHTTPRequestHandler
from http.server import ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

__all__ = ["SentSpan", "Tee", "otlp_tee"]

_FORWARDED = ("Content-Type", "Content-Encoding")


@dataclass(frozen=True)
class SentSpan:
    """A span as the exporter sent it: ids in hex, attributes as plain values."""

    name: str
    trace_id: str
    span_id: str
    parent_id: str | None
    links: list[tuple[str, str]]  # (trace id, span id)
    attributes: dict[str, Any]


@dataclass
class Tee:
    """Where to send OTLP (``endpoint``) and the spans that went through."""

    endpoint: str
    spans: list[SentSpan] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def sent(self) -> list[SentSpan]:
        """A copy of the spans forwarded so far."""
        with self.lock:
            return list(self.spans)


def _value(any_value: Any) -> Any:
    kind = any_value.WhichOneof("value")
    return getattr(any_value, kind) if kind is not None else None


def _decode(body: bytes) -> list[SentSpan]:
    request = ExportTraceServiceRequest.FromString(body)
    return [
        SentSpan(
            name=span.name,
            trace_id=span.trace_id.hex(),
            span_id=span.span_id.hex(),
            parent_id=span.parent_span_id.hex() or None,
            links=[(link.trace_id.hex(), link.span_id.hex()) for link in span.links],
            attributes={kv.key: _value(kv.value) for kv in span.attributes},
        )
        for resource in request.resource_spans
        for scope in resource.scope_spans
        for span in scope.spans
    ]


@contextlib.contextmanager
def otlp_tee(backend: str) -> Iterator[Tee]:
    """Forward OTLP/HTTP on a free 127.0.0.1 port to ``backend``; stopped on exit."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    tee = Tee(f"http://127.0.0.1:{server.server_address[1]}")

    class Forward(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            headers = {k: v for k in _FORWARDED if (v := self.headers.get(k)) is not None}
            request = urllib.request.Request(  # noqa: S310 - the loopback backend
                backend + self.path, data=body, headers=headers, method="POST"
            )
            try:
                with urllib.request.urlopen(request, timeout=30) as answer:  # noqa: S310
                    status, reply = answer.status, answer.read()
            except urllib.error.HTTPError as exc:
                status, reply = exc.code, exc.read()
                exc.close()
            if self.path == "/v1/traces" and status == 200:
                raw = gzip.decompress(body) if headers.get("Content-Encoding") == "gzip" else body
                decoded = _decode(raw)
                with tee.lock:
                    tee.spans.extend(decoded)
            self.send_response(status)
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            """Quiet: the test reads what was sent, not an access log."""

    server.RequestHandlerClass = Forward
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield tee
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
