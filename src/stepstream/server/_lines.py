"""``stepstream serve``'s own log lines: one JSON object per line on stderr, written in batches.

A request logs up to three lines (``run_started``, ``run_finished``, ``http_request``);
a write and a flush for each cost the event loop a system call per line. The handler
here encodes each line with orjson and only appends it to a list; a thread of its own
writes what has gathered every ``interval`` seconds (0.2 by default), and
:meth:`JsonLinesHandler.close` (at the end of ``stepstream serve``, and
``logging.shutdown()`` at exit) writes the rest: a clean shutdown loses no line.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import IO, Any

import orjson

__all__ = ["FLUSH_INTERVAL", "JsonLinesHandler", "json_line"]

#: Seconds between two writes of the gathered lines.
FLUSH_INTERVAL = 0.2

_STANDARD = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}
_FORMATTER = logging.Formatter()


class _Clock:
    """ISO 8601 UTC timestamps of records, the date and time formatted once per second."""

    __slots__ = ("_prefix", "_second")

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def stamp(self, created: float) -> str:
        second = int(created)
        if second != self._second:
            self._second = second
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._prefix}.{int((created - second) * 1_000_000):06d}Z"


def json_line(record: logging.LogRecord, clock: _Clock | None = None) -> bytes:
    """``record`` as one JSON line: timestamp, level, logger, event, then its extra keys.

    The line is ASCII: text from user data (names, errors) is escaped, never raw.
    """
    created = record.created
    line: dict[str, Any] = {
        "timestamp": (clock or _Clock()).stamp(created),
        "level": record.levelname.lower(),
        "logger": record.name,
        "event": record.getMessage(),
    }
    line.update({key: value for key, value in vars(record).items() if key not in _STANDARD})
    if record.exc_info:
        line["exception"] = _FORMATTER.formatException(record.exc_info)
    try:
        encoded = orjson.dumps(line, default=repr, option=orjson.OPT_APPEND_NEWLINE)
    except TypeError:  # what orjson refuses (a huge int, a lone surrogate): json takes it
        encoded = b""
    if not encoded or not encoded.isascii():
        encoded = json.dumps(line, default=repr).encode() + b"\n"
    return encoded


class JsonLinesHandler(logging.Handler):
    """Writes JSON lines to a binary stream, in batches (see the module's docstring)."""

    def __init__(self, stream: IO[bytes], interval: float = FLUSH_INTERVAL) -> None:
        super().__init__()
        self._stream = stream
        self._interval = interval
        self._clock = _Clock()
        self._pending: list[bytes] = []
        self._pending_lock = threading.Lock()  # held for an append or a swap, never a write
        self._write_lock = threading.Lock()
        self._stopping = threading.Event()
        self._writer: threading.Thread | None = None

    def handle(self, record: logging.LogRecord) -> logging.LogRecord | bool:  # type: ignore[override]
        """Filter and emit ``record``, with no lock: emitting only appends to a list."""
        passed = self.filter(record)
        if passed:
            self.emit(record if isinstance(passed, bool) else passed)
        return passed

    def emit(self, record: logging.LogRecord) -> None:
        """Encode ``record`` and keep the line for the next write."""
        try:
            line = json_line(record, self._clock)
        except Exception:  # noqa: BLE001 - logging reports it, as every handler does
            self.handleError(record)
            return
        with self._pending_lock:
            self._pending.append(line)
        if self._writer is None:
            self._start()

    def _start(self) -> None:
        with self._write_lock:
            if self._writer is None:
                self._stopping = threading.Event()
                self._writer = threading.Thread(
                    target=self._run,
                    args=(self._stopping,),
                    name="stepstream-serve-log",
                    daemon=True,
                )
                self._writer.start()

    def _run(self, stopping: threading.Event) -> None:
        while not stopping.wait(self._interval):
            self.flush()

    def flush(self) -> None:
        """Write the lines gathered so far."""
        with self._write_lock:
            with self._pending_lock:
                lines, self._pending = self._pending, []
            if not lines:
                return
            try:
                self._stream.write(b"".join(lines))
                self._stream.flush()
            except (OSError, ValueError):  # stderr closed under us: nowhere left to say so
                pass

    def close(self) -> None:
        """Stop the writer thread and write what is left.

        A line logged afterwards starts a new writer: ``logging.config.dictConfig()``
        (uvicorn calls it as it starts) closes every handler it finds, and goes on using
        those it keeps, as a stream handler would.
        """
        with self._write_lock:
            writer, self._writer = self._writer, None
            self._stopping.set()
        if writer is not None and writer is not threading.current_thread():
            writer.join(timeout=5)
        self.flush()
        super().close()
