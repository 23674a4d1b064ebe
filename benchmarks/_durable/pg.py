"""A throwaway Postgres cluster on 127.0.0.1, in a temporary directory, for one benchmark run.

Debian's server binaries (package ``postgresql-15``) are used in place; as root, the
cluster runs as the ``postgres`` user (initdb refuses root). Trust authentication, TCP on
127.0.0.1 only, a socket in the temporary directory. :meth:`PgCluster.stop` stops exactly
this cluster: ``pg_ctl stop`` on its data directory, then SIGKILL to its postmaster pid if
it is still there.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

BIN = Path(os.environ.get("BENCH_PG_BIN", "/usr/lib/postgresql/15/bin"))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class PgCluster:
    """One Postgres cluster we started; ``url(db)`` for a fresh database in it."""

    def __init__(self) -> None:
        if not (BIN / "initdb").exists():
            msg = (
                f"no Postgres server binaries in {BIN} (install Debian's postgresql-15, "
                "or set BENCH_PG_BIN to a folder holding initdb, pg_ctl and postgres)"
            )
            raise RuntimeError(msg)
        self.dir = Path(tempfile.mkdtemp(prefix="durable-bench-pg-"))
        self.data = self.dir / "data"
        self.port = _free_port()
        self.pid: int | None = None
        self._as: list[str] = []
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(self.dir, user.pw_uid, user.pw_gid)
            self._as = ["runuser", "-u", "postgres", "--"]
        self._run(
            BIN / "initdb", "-D", self.data, "-U", "postgres", "-A", "trust",
            "--no-sync", "-E", "UTF8",
        )  # fmt: skip
        options = (
            f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.dir} "
            "-c max_connections=200 -c shared_buffers=128MB"
        )
        self._run(
            BIN / "pg_ctl", "start", "-D", self.data, "-w", "-t", "60",
            "-l", self.dir / "log", "-o", options,
        )  # fmt: skip
        self.pid = int((self.data / "postmaster.pid").read_text().split()[0])

    def _run(self, *cmd: object) -> None:
        done = subprocess.run(
            [*self._as, *map(str, cmd)], capture_output=True, text=True, timeout=120, check=False
        )
        if done.returncode != 0:
            msg = f"{' '.join(map(str, cmd))} failed: {done.stdout[-2000:]}{done.stderr[-2000:]}"
            raise RuntimeError(msg)

    def url(self, database: str) -> str:
        """Create ``database`` (fresh) and return its URL."""
        self._run(BIN / "createdb", "-h", "127.0.0.1", "-p", self.port, "-U", "postgres", database)
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def stop(self) -> None:
        """Stop this cluster (fast shutdown; SIGKILL to its postmaster after 30 s)."""
        if self.pid is not None:
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                self._run(BIN / "pg_ctl", "stop", "-D", self.data, "-m", "fast", "-w", "-t", "30")
            for _ in range(50):
                try:
                    os.kill(self.pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.1)
            else:
                os.kill(self.pid, signal.SIGKILL)
            self.pid = None
        shutil.rmtree(self.dir, ignore_errors=True)
