"""Read the store's JSON Lines files safely: regular files only, lines of bounded size.

A store file is opened without following a symbolic link and without blocking (a FIFO
would block the open), and refused unless it is a regular file (a device never ends).
Lines are read in chunks by byte offset: a line longer than the limit is skipped as it
streams by, never held in memory, and bytes that are not UTF-8 are replaced without
losing the offset (``--follow`` goes on from exactly where it was). Rotated files are
read oldest first; a file rotated while it is read is read once, to its end.
"""

from __future__ import annotations

import json
import os
import stat
import time
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from stepstream.telemetry.setup import store_paths

__all__ = [
    "MAX_LINE_BYTES_ENV",
    "StoreError",
    "Warn",
    "json_lines",
    "max_line_bytes",
]

MAX_LINE_BYTES_ENV = "STEPSTREAM_MAX_LINE_BYTES"
DEFAULT_MAX_LINE_BYTES = 64 << 20
_CHUNK = 1 << 16
_FOLLOW_POLL = 0.2
_ANOTHER = "remove it, or pass another --telemetry-dir"
_KINDS = {
    stat.S_IFIFO: "a FIFO",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
}

Warn = Callable[[str], None]


class StoreError(Exception):
    """The telemetry directory or a requested run cannot be read (message says why)."""


def max_line_bytes() -> int:
    """The longest line read (STEPSTREAM_MAX_LINE_BYTES, default 64 MiB)."""
    raw = os.environ.get(MAX_LINE_BYTES_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_LINE_BYTES
    if not raw.isdecimal() or int(raw) <= 0:
        msg = f"{MAX_LINE_BYTES_ENV} must be a positive number of bytes, got {raw!r}"
        raise StoreError(msg)
    return int(raw)


def _refused(path: Path, error: OSError | None) -> StoreError:
    try:
        mode = path.lstat().st_mode
    except OSError:
        mode = 0
    if stat.S_ISLNK(mode):
        reason = f"it is a symbolic link, which stepstream does not follow; {_ANOTHER}"
    elif stat.S_ISDIR(mode):
        reason = f"it is a directory; {_ANOTHER}"
    elif mode and not stat.S_ISREG(mode):
        kind = _KINDS.get(stat.S_IFMT(mode), "an unknown kind")
        reason = f"it is not a regular file ({kind}); {_ANOTHER}"
    elif error is not None:
        reason = error.strerror or str(error)
    else:
        reason = "it cannot be read"
    return StoreError(f"cannot read {path}: {reason}")


def _open(path: Path) -> BinaryIO | None:
    """Open a store file for reading; None if there is none; StoreError if it is unusable."""
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise _refused(path, exc) from exc
    regular = stat.S_ISREG(os.fstat(fd).st_mode)
    if not regular:
        os.close(fd)
        raise _refused(path, None)
    os.set_blocking(fd, True)
    return open(fd, "rb", buffering=0)  # noqa: PTH123 - a descriptor, closed by _Lines


class _Lines:
    """The lines of one open store file, read by byte offset, numbered from 1."""

    def __init__(self, path: Path, handle: BinaryIO, warn: Warn, limit: int) -> None:
        self.path = path
        self._handle = handle
        self._warn = warn
        self._limit = limit
        self._pending = bytearray()
        self._too_long = False
        self._number = 0
        self._offset = 0
        info = os.fstat(handle.fileno())
        self.identity = (info.st_dev, info.st_ino)

    def read(self, *, final: bool) -> Iterator[tuple[int, bytes]]:
        """Yield (number, line) for the complete lines written so far.

        With ``final``, a last line without its newline is yielded too (a process killed
        while writing leaves one); otherwise it waits for the rest of the line.
        """
        while chunk := self._handle.read(_CHUNK):
            self._offset += len(chunk)
            start = 0
            while (newline := chunk.find(b"\n", start)) >= 0:
                self._add(chunk, start, newline)
                yield from self._end_line()
                start = newline + 1
            self._add(chunk, start, len(chunk))
        if final and (self._pending or self._too_long):
            yield from self._end_line()

    def _add(self, chunk: bytes, start: int, end: int) -> None:
        if self._too_long or start == end:
            return
        if len(self._pending) + end - start > self._limit:
            self._too_long = True
            self._pending = bytearray()
        else:
            self._pending += chunk[start:end]

    def _end_line(self) -> Iterator[tuple[int, bytes]]:
        self._number += 1
        line, self._pending = self._pending, bytearray()
        if self._too_long:
            self._too_long = False
            self._warn(
                f"{self.path}:{self._number}: damaged line skipped (longer than {self._limit} "
                f"bytes; set {MAX_LINE_BYTES_ENV} to read longer lines)"
            )
        elif line.strip():
            yield self._number, bytes(line)

    def truncated(self) -> bool:
        """Whether the file is now shorter than what was read (it was truncated)."""
        return os.fstat(self._handle.fileno()).st_size < self._offset

    def restart(self) -> None:
        """Read the (truncated) file again from its start."""
        self._handle.seek(0)
        self._offset = self._number = 0
        self._pending = bytearray()
        self._too_long = False

    def close(self) -> None:
        """Close the file."""
        self._handle.close()


def _parsed(lines: _Lines, warn: Warn, *, final: bool) -> Iterator[tuple[str, Any]]:
    """Yield ("path:line", parsed JSON) for each line; warn about the damaged ones."""
    for number, raw in lines.read(final=final):
        text = raw.decode("utf-8", "replace")
        try:
            # orjson bounds nesting (1,024 levels) where the json module would recurse.
            value = orjson.loads(text)
        except orjson.JSONDecodeError:
            value = _lenient(text)
            if value is _DAMAGED:
                warn(f"{lines.path}:{number}: damaged line skipped (not valid JSON)")
                continue
        yield f"{lines.path}:{number}", value


_DAMAGED: Any = object()


def _lenient(text: str) -> Any:
    r"""Parse what orjson refuses but JSON allows: a lone surrogate escape (``"\ud800"``).

    Only lines orjson refused get here; the json module's recursion limit is then
    the bound on nesting.
    """
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return _DAMAGED


def _open_lines(path: Path, warn: Warn, limit: int) -> _Lines | None:
    handle = _open(path)
    return None if handle is None else _Lines(path, handle, warn, limit)


def json_lines(
    directory: Path, name: str, warn: Warn, *, follow: bool = False
) -> Iterator[tuple[str, Any]]:
    """Yield ("path:line", parsed JSON) for every line of ``name`` and its rotated files.

    Oldest first: ``<stem>.<n>.jsonl`` ... ``<stem>.1.jsonl``, then ``name``. With
    ``follow``, keep yielding the lines appended to ``name`` afterwards, going on in the
    new file when it is rotated or replaced; the caller stops iterating to end.
    """
    limit = max_line_bytes()
    path = directory / name
    # The current file is opened first: if it is rotated meanwhile, the rotated copy
    # (the same file) is skipped below and read once, through this handle.
    current = _open_lines(path, warn, limit)
    try:
        for older in store_paths(directory, name)[:-1]:
            lines = _open_lines(older, warn, limit)
            if lines is None:
                continue
            try:
                if current is None or lines.identity != current.identity:
                    yield from _parsed(lines, warn, final=True)
            finally:
                lines.close()
        if current is not None:
            yield from _parsed(current, warn, final=not follow)
        while follow:
            time.sleep(_FOLLOW_POLL)
            current = yield from _follow_step(path, current, warn, limit)
    finally:
        if current is not None:
            current.close()


def _follow_step(
    path: Path, current: _Lines | None, warn: Warn, limit: int
) -> Generator[tuple[str, Any], None, _Lines | None]:
    """Yield what was appended since the last step; return the file to follow next."""
    if current is not None:
        yield from _parsed(current, warn, final=False)
    try:
        info = path.lstat()
    except FileNotFoundError:
        return current  # being rotated: the new file appears in a moment
    if current is not None and (info.st_dev, info.st_ino) == current.identity:
        if current.truncated():
            current.restart()
        return current
    if current is not None:  # rotated or replaced: the rest of the old file, then the new
        yield from _parsed(current, warn, final=True)
        current.close()
    return _open_lines(path, warn, limit)
