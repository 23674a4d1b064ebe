"""Rate-limit the OpenTelemetry SDK's own log messages (exporter failures, queue drops).

An unreachable collector makes the SDK log a failure for every batch, and a full span
queue a warning for every dropped span. ``configure_telemetry()`` puts this filter on
the SDK's loggers: the first message of each kind passes, repeats within the window are
counted instead, and the count is reported with the next message that passes and at
shutdown.
"""

from __future__ import annotations

import logging
import threading
import time

__all__ = ["OncePerWindow"]

_log = logging.getLogger("stepstream")


class OncePerWindow(logging.Filter):
    """Let one record per (logger, message template) through per ``window`` seconds."""

    def __init__(self, window: float = 60.0) -> None:
        super().__init__()
        self.window = window
        self._lock = threading.Lock()
        self._last: dict[tuple[str, str], float] = {}
        self.suppressed: dict[tuple[str, str], int] = {}
        self._loggers: list[logging.Logger] = []

    def filter(self, record: logging.LogRecord) -> bool:
        """Pass the first record of its kind in the window; count the others."""
        key = (record.name, str(record.msg))
        now = time.monotonic()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self.window:
                self.suppressed[key] = self.suppressed.get(key, 0) + 1
                return False
            self._last[key] = now
            skipped = self.suppressed.pop(key, 0)
        note = f" ({skipped} similar messages suppressed)" if skipped else ""
        note += f" [stepstream: repeats are suppressed for {self.window:.0f}s]"
        record.msg = f"{record.msg}{note}"
        return True

    def install(self, prefix: str = "opentelemetry") -> None:
        """Attach to every logger under ``prefix`` that exists now."""
        names = [n for n in logging.root.manager.loggerDict if n.startswith(prefix)]
        for name in names:
            logger = logging.getLogger(name)
            # First in line: the SDK puts its own duplicate filter on some loggers, and
            # what it drops would never be counted here.
            logger.filters.insert(0, self)
            self._loggers.append(logger)

    def uninstall(self, keep_attached: bool = False) -> None:
        """Detach (unless told to stay), and report what was suppressed so far."""
        if not keep_attached:
            for logger in self._loggers:
                logger.removeFilter(self)
            self._loggers.clear()
        with self._lock:
            pending = dict(self.suppressed)
            self.suppressed.clear()
        for (name, message), count in pending.items():
            _log.warning("stepstream: %s: %r was repeated %d more times", name, message, count)
