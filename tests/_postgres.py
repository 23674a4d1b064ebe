"""A throwaway PostgreSQL server from Debian's packages, on loopback, for the tests.

``PostgresServer`` makes a cluster in a temporary directory with ``initdb`` (as the
``postgres`` user when the tests run as root: PostgreSQL refuses to run as root),
starts it on a free 127.0.0.1 port with trust authentication, and stops exactly the
server it started (by its pid). ``.ci/run`` installs the ``postgresql`` package.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Self

__all__ = ["PostgresServer", "postgres_bin"]


def postgres_bin() -> Path | None:
    """The newest installed PostgreSQL's bin directory, or None when there is none."""
    root = Path("/usr/lib/postgresql")
    versions = sorted(
        (p for p in root.glob("*/bin") if (p / "initdb").exists()),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    return versions[-1] if versions else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PostgresServer:
    """One PostgreSQL server: ``url`` once started; a context manager."""

    def __init__(self, directory: Path | None = None) -> None:
        bindir = postgres_bin()
        if bindir is None:
            msg = "PostgreSQL is not installed: apt-get install postgresql (.ci/run does it)"
            raise RuntimeError(msg)
        self.bindir = bindir
        # Its own directory under /tmp by default: pytest's are private to root, and the
        # server runs as the postgres user.
        self._owned = directory is None
        self.directory = directory or Path(tempfile.mkdtemp(prefix="stepstream-pg-"))
        self.data = self.directory / "data"
        self.port = _free_port()
        self.pid: int | None = None
        self._databases = 0
        self._as_root = os.geteuid() == 0

    @property
    def url(self) -> str:
        """A SQLAlchemy/psycopg URL of the ``postgres`` database."""
        return self.database_url("postgres")

    def database_url(self, name: str) -> str:
        """The URL of database ``name`` on this server (DBOS creates it if missing)."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"

    def new_database_url(self) -> str:
        """The URL of a database no one has used yet (a fresh one per test)."""
        self._databases += 1
        return self.database_url(f"test_{os.getpid()}_{self._databases}")

    def _run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        command = [str(self.bindir / args[0]), *args[1:]]
        if self._as_root:
            command = ["runuser", "-u", "postgres", "--", *command]
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)

    def start(self) -> None:
        """initdb (the first time), then start the server; wait until it takes connections."""
        self.directory.mkdir(parents=True, exist_ok=True)
        if self._as_root:
            shutil.chown(self.directory, "postgres", "postgres")
        if not self.data.exists():  # else: started again after stop(), same data and port
            done = self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust")
            if done.returncode != 0:
                msg = f"initdb failed: {done.stderr.strip()}"
                raise RuntimeError(msg)
        options = f"-h 127.0.0.1 -p {self.port} -k {self.directory} -c fsync=on"
        done = self._run(
            "pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.directory / "log"),
            "-w", "-t", "60", "start",
        )  # fmt: skip
        if done.returncode != 0:
            log = (self.directory / "log").read_text(errors="replace")[-2000:]
            msg = f"pg_ctl start failed: {done.stderr.strip()}\n{log}"
            raise RuntimeError(msg)
        self.pid = int((self.data / "postmaster.pid").read_text().split()[0])

    def stop(self) -> None:
        """Stop the server this object started (fast shutdown, then SIGKILL if stuck)."""
        pid, self.pid = self.pid, None
        if pid is None:
            return
        try:
            os.kill(pid, signal.SIGINT)  # PostgreSQL's "fast" shutdown
        except ProcessLookupError:
            return
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)
        os.kill(pid, signal.SIGKILL)

    def remove(self) -> None:
        """Stop, then delete the directory it made for itself."""
        self.stop()
        if self._owned:
            shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.remove()
