"""The embedded telemetry files: opened safely, rotated by size, flushed on a timer.

Store files hold event payloads, which can be private: the directory is created 0700 and
the files 0600. A store file is never opened through a symbolic link (something else
would be appended to) nor when it is not a regular file (opening a FIFO blocks, a device
never ends). Size-based rotation renames ``traces.jsonl`` to ``traces.1.jsonl`` (and each
``traces.<n>.jsonl`` to ``traces.<n+1>.jsonl``) at a line boundary, so that every file
holds whole lines and a reader can take them oldest first.
"""

from __future__ import annotations

import errno
import io
import logging
import math
import os
import stat
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from typing_extensions import Buffer

from stepstream.errors import WorkflowError, WorkflowValidationError

__all__ = [
    "Flusher",
    "Rotation",
    "StoreFile",
    "TelemetryFileError",
    "check_file_options",
    "check_store_file",
    "make_directory",
    "open_append",
    "open_log_file",
    "rotated_path",
]

LOG_BUFFER_BYTES = 1 << 20

_log = logging.getLogger("stepstream")

_IOV_MAX = 1024  # buffers per writev() call: the Linux limit
_OTHER_DIRECTORY = "pass another directory"
_KINDS = {
    stat.S_IFIFO: "a FIFO",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
    stat.S_IFDIR: "a directory",
}


class TelemetryFileError(WorkflowError, OSError):
    """A telemetry file or directory cannot be used; the message names it and says why."""


def rotated_path(path: Path, index: int) -> Path:
    """``traces.jsonl`` rotated ``index`` times: ``traces.<index>.jsonl``."""
    return path.with_name(f"{path.stem}.{index}{path.suffix}")


def make_directory(folder: Path) -> None:
    """Create ``folder`` (and its parents) for the store files; the folder itself 0700."""
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        if isinstance(exc, FileExistsError):
            reason, fix = "a file of that name exists", "remove it"
        elif exc.errno in {errno.EACCES, errno.EPERM}:
            reason, fix = str(exc.strerror), "give this user access to its parent"
        else:
            reason, fix = str(exc.strerror or exc), "fix the path"
        msg = f"cannot create telemetry directory {folder}: {reason}; {fix}, or {_OTHER_DIRECTORY}"
        raise TelemetryFileError(msg) from exc


def _what_is_wrong(path: Path, error: OSError | None) -> tuple[str, str]:
    """Why ``path`` cannot be a store file, and what to do."""
    try:
        mode = path.lstat().st_mode
    except OSError:
        mode = 0
    if stat.S_ISLNK(mode):
        return "it is a symbolic link, which stepstream does not follow", "remove it"
    if stat.S_ISDIR(mode):
        return "it is a directory", "remove it"
    if mode and not stat.S_ISREG(mode):
        kind = _KINDS.get(stat.S_IFMT(mode), "an unknown kind")
        return f"it is not a regular file ({kind})", "remove it"
    if error is not None and error.errno in {errno.EACCES, errno.EPERM}:
        return str(error.strerror), "give this user read and write access to it"
    return (str(error.strerror or error) if error else "it cannot be used"), "fix the path"


def _refused(path: Path, error: OSError | None) -> TelemetryFileError:
    reason, fix = _what_is_wrong(path, error)
    msg = f"cannot open telemetry file {path}: {reason}; {fix}, or {_OTHER_DIRECTORY}"
    return TelemetryFileError(msg)


def open_append(path: Path) -> int:
    """Open (or create, 0600) the store file ``path`` for appending; return its descriptor.

    Refuses a symbolic link, a directory, a FIFO, a device: anything but a regular file.
    A last line left unfinished (by a killed process) is ended first, so that the next
    line is whole.
    """
    flags = os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags, 0o600)
    except OSError as exc:
        raise _refused(path, exc) from exc
    try:
        _prepare(fd, path)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _prepare(fd: int, path: Path) -> None:
    """Check that ``fd`` is a regular file, make it blocking, end an unfinished line."""
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        raise _refused(path, None)
    os.set_blocking(fd, True)
    if info.st_size and os.pread(fd, 1, info.st_size - 1) != b"\n":
        os.write(fd, b"\n")


def check_store_file(path: Path) -> None:
    """Raise TelemetryFileError if ``path`` exists and cannot be used as a store file."""
    if os.path.lexists(path):
        os.close(open_append(path))


def _write_all(fd: int, buffers: list[bytes]) -> None:
    """writev() until every byte is written (a regular file rarely takes less)."""
    while buffers:
        written = os.writev(fd, buffers)
        while buffers and written >= len(buffers[0]):
            written -= len(buffers[0])
            buffers.pop(0)
        if buffers and written:
            buffers[0] = buffers[0][written:]


class StoreFile(io.RawIOBase):
    """An append-only store file, rotated by size at line boundaries when asked.

    The trace and metric exporters write one complete line per :meth:`write_line`; the
    log writer puts an :class:`io.BufferedWriter` over it, whose flushes :meth:`write`
    arbitrary chunks. Without ``max_bytes`` nothing is ever rotated. Not thread-safe:
    each user holds its own lock around it.
    """

    def __init__(self, path: Path, max_bytes: int | None = None, keep: int = 1) -> None:
        super().__init__()
        self.path = path
        self._fd = open_append(path)
        self._max = max_bytes
        self._keep = keep
        self._size = os.fstat(self._fd).st_size
        self._line_open = False  # the last byte written ended no line

    def writable(self) -> bool:
        """Always: the file is open for appending."""
        return True

    def fileno(self) -> int:
        """The file descriptor."""
        return self._fd

    def write_line(self, pieces: Sequence[bytes]) -> None:
        """Append one complete line (``pieces`` joined end with a newline)."""
        size = sum(len(piece) for piece in pieces)
        if self._max is not None and self._size and self._size + size > self._max:
            self._rotate()
        for start in range(0, len(pieces), _IOV_MAX):
            _write_all(self._fd, list(pieces[start : start + _IOV_MAX]))
        self._size += size

    def write(self, data: Buffer, /) -> int:
        """Append ``data`` (any chunk of lines); rotate between lines when the file is full."""
        rest = bytes(data)
        total = len(rest)
        while rest:
            limit = self._max
            if limit is None:  # no rotation (asked for, or since a rotation failed)
                self._put(rest)
                break
            rest = self._write_some(rest, limit)
        return total

    def _write_some(self, data: bytes, limit: int) -> bytes:
        """Write a part of ``data`` (or rotate), return what is left; progress each call."""
        if self._line_open:  # finish the line begun in this file
            newline = data.find(b"\n")
            end = len(data) if newline < 0 else newline + 1
            self._put(data[:end])
            return data[end:]
        room = limit - self._size
        if len(data) <= room:
            self._put(data)
            return b""
        cut = data.rfind(b"\n", 0, room) if room > 0 else -1
        if cut >= 0:  # the whole lines that fit, then a fresh file
            self._put(data[: cut + 1])
            self._rotate()
            return data[cut + 1 :]
        if self._size:
            self._rotate()
            return data
        # An empty file and a first line longer than the limit: it is written whole.
        newline = data.find(b"\n")
        end = len(data) if newline < 0 else newline + 1
        self._put(data[:end])
        return data[end:]

    def _put(self, chunk: bytes) -> None:
        _write_all(self._fd, [chunk])
        self._size += len(chunk)
        self._line_open = not chunk.endswith(b"\n")

    def _rotate(self) -> None:
        """Rename the file to <stem>.1<suffix> (shifting older ones) and start a new one."""
        try:
            for index in range(self._keep - 1, 0, -1):
                older = rotated_path(self.path, index)
                if os.path.lexists(older):
                    older.replace(rotated_path(self.path, index + 1))
            self.path.replace(rotated_path(self.path, 1))
            fd = open_append(self.path)
        except OSError as exc:
            _log.error(  # the reason is in the message; no traceback needed
                "stepstream: cannot rotate %s: %s; it grows on without rotation", self.path, exc
            )
            self._max = None
            return
        os.close(self._fd)
        self._fd = fd
        self._size = 0

    def close(self) -> None:
        """Close the file; idempotent."""
        if not self.closed:
            os.close(self._fd)
        super().close()


@dataclass(frozen=True)
class Rotation:
    """Size-based rotation: off when ``max_bytes`` is None; ``keep`` rotated files."""

    max_bytes: int | None
    keep: int


def check_file_options(interval: float, max_bytes: int | None, keep: int) -> None:
    """Raise WorkflowValidationError for a bad flush interval or rotation option."""
    if not (isinstance(interval, int | float) and interval > 0 and math.isfinite(interval)):
        msg = (
            f"configure_telemetry(log_flush_interval={interval!r}): give a positive number "
            "of seconds"
        )
        raise WorkflowValidationError(msg)
    if max_bytes is not None and not (isinstance(max_bytes, int) and max_bytes > 0):
        msg = (
            f"configure_telemetry(max_file_bytes={max_bytes!r}): give a positive number of "
            "bytes, or None (no rotation)"
        )
        raise WorkflowValidationError(msg)
    if not (isinstance(keep, int) and keep >= 1):
        msg = f"configure_telemetry(rotated_files={keep!r}): keep at least 1 rotated file"
        raise WorkflowValidationError(msg)


def open_log_file(path: Path, rotation: Rotation) -> IO[bytes]:
    """The log file as a buffered binary stream (over a rotating StoreFile if asked)."""
    # A large buffer: each flush is a write() that releases the GIL, and a busy export
    # thread may then hold it for a whole switch interval (5 ms).
    if rotation.max_bytes is None:
        return open(open_append(path), "ab", buffering=LOG_BUFFER_BYTES)
    raw = StoreFile(path, rotation.max_bytes, rotation.keep)
    return io.BufferedWriter(raw, buffer_size=LOG_BUFFER_BYTES)


class Flusher(threading.Thread):
    """Calls ``flush`` every ``interval`` seconds, on a thread of its own, until stopped.

    Not a daemon thread, so it is never frozen in the middle of a write at exit; and it
    never delays the exit either: while the main thread runs it waits by joining it, so
    it wakes as soon as the main thread ends, flushes once more and ends (if other
    non-daemon threads still run, and may still log, it goes on until they have ended).
    :meth:`stop` makes it end within one interval; the owner flushes when it closes.
    """

    def __init__(self, flush: Callable[[], None], interval: float, name: str) -> None:
        super().__init__(name=name, daemon=False)
        self._flush = flush
        self._interval = interval
        self._stopping = threading.Event()

    def run(self) -> None:
        """Flush every interval until stopped or the program's last thread ends."""
        main = threading.main_thread()
        while not self._stopping.is_set():
            if main.is_alive():
                main.join(self._interval)
            else:
                self._stopping.wait(self._interval)
            self._flush()
            if not main.is_alive() and not _others_running():
                return

    def stop(self) -> None:
        """Make the thread end (within one interval, at once if the main thread has ended)."""
        self._stopping.set()


def _others_running() -> bool:
    """Whether a non-daemon thread other than the main thread and the flushers runs."""
    return any(
        not t.daemon and t is not threading.main_thread() and not isinstance(t, Flusher)
        for t in threading.enumerate()
    )
