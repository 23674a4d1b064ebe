"""deploy/compose's stepstream cluster as local processes: Postgres and N replicas.

Optional (``stack.sh up --replicas N``; off by default): Postgres from Debian's packages
(``initdb`` and ``pg_ctl`` of the newest /usr/lib/postgresql/*/bin; run as the
``postgres`` user when this runs as root, which PostgreSQL refuses to be), on a free
127.0.0.1 port with trust authentication, its data in the state directory; then
``stepstream serve`` replicas with the compose file's replica command, made local:
``--host`` 127.0.0.1, a free ``--port``, ``--durable`` this Postgres, ``--instance-id``
``replica-<i>``, the telemetry directory in the state directory, OTLP to the local
collector. The load balancer (nginx) does not run here: each replica answers on its own
port. Every process is recorded by pid and executable like the stack's, and stopped by
that pid only.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from http import HTTPStatus
from pathlib import Path
from typing import Any

from derive import COMPOSE_FILE, LOOPBACK, ROOT, StackError

__all__ = ["CLUSTER_SERVICES", "LocalCluster", "postgres_bin", "replica_command"]

#: The compose services this module stands in for (the load balancer is not run here).
CLUSTER_SERVICES = ("postgres", "replica-1", "replica-2", "replica-3")
DATABASE = "stepstream"
HEALTH_TIMEOUT = 60.0
STOP_TIMEOUT = 15.0


def postgres_bin() -> Path | None:
    """The newest installed PostgreSQL's bin directory (Debian's layout), or None."""
    versions = sorted(
        (p for p in Path("/usr/lib/postgresql").glob("*/bin") if (p / "initdb").exists()),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    return versions[-1] if versions else None


def free_port() -> int:
    """A free TCP port of 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def replica_command(  # noqa: PLR0917 - each is one part of the command
    services: dict[str, Any],
    index: int,
    port: int,
    database: str,
    state: Path,
    flags: dict[str, str] | None = None,
) -> list[str]:
    """The compose command of a replica (replica-1's for those past the file's), made local.

    ``flags``: more ``--flag: value`` of ``stepstream serve`` (replacing the file's).
    """
    name = f"replica-{index}"
    template = services.get(name) or services["replica-1"]
    local = {
        **(flags or {}),
        "--host": LOOPBACK,
        "--port": str(port),
        "--durable": database,
        "--instance-id": name,
        "--telemetry-dir": str(state / name / "telemetry"),
    }
    args = []
    for arg in template["command"][2:]:  # after "stepstream serve"
        flag, sep, _ = str(arg).partition("=")
        if sep and flag in local:
            args.append(f"{flag}={local.pop(flag)}")
        elif not sep and not flag.startswith("-"):
            args.append(str(ROOT / flag))  # the served file, from the repository
        else:
            args.append(str(arg))
    args += [f"{flag}={value}" for flag, value in local.items()]
    return [sys.executable, "-m", "stepstream", "serve", *args]


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=3) as response:  # noqa: S310 - loopback
            return bool(response.status == HTTPStatus.OK)
    except (OSError, urllib.error.URLError):
        return False


def _exe(pid: int) -> str | None:
    try:
        return str(Path(f"/proc/{pid}/exe").readlink()).removesuffix(" (deleted)")
    except OSError:
        return None


class LocalCluster:
    """Postgres and the replicas, recorded in the stack's state directory."""

    def __init__(self, state: Path, services: dict[str, Any]) -> None:
        self.state = state
        self.services = services
        self._children: dict[str, subprocess.Popen[bytes]] = {}

    # -- records ------------------------------------------------------------------------

    def _record(self, name: str) -> dict[str, Any] | None:
        try:
            record: dict[str, Any] = json.loads((self.state / f"{name}.pid.json").read_text())
        except (OSError, ValueError):
            return None
        return record

    def pid(self, name: str) -> int | None:
        """The pid of a cluster process this started and that still runs, else None."""
        record = self._record(name)
        if record is None:
            return None
        pid = int(record["pid"])
        return pid if _exe(pid) == record["exe"] else None

    def replicas(self) -> list[str]:
        """The names of the replicas recorded (running or not), in order."""
        found = [p.name.removesuffix(".pid.json") for p in self.state.glob("replica-*.pid.json")]
        return sorted(found, key=lambda n: int(n.rpartition("-")[2]))

    def url(self, name: str) -> str:
        """A replica's base URL (or Postgres's database URL)."""
        record = self._record(name)
        if record is None:
            msg = f"{name} was not started by this stack"
            raise StackError(msg)
        return str(record["url"])

    # -- Postgres -----------------------------------------------------------------------

    def postgres_home(self) -> Path:
        """Postgres's directory: in the state directory, or, as root, one of its own in /tmp.

        (As root the server runs as the ``postgres`` user, who may not enter the state
        directory; its path is then kept in ``postgres.home`` of the state directory.)
        """
        pointer = self.state / "postgres.home"
        if pointer.exists():
            home = Path(pointer.read_text().strip())
        elif os.geteuid() == 0:
            home = Path(tempfile.mkdtemp(prefix="stepstream-stack-pg-"))
        else:
            home = self.state / "postgres"
        home.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(home, "postgres", "postgres")
        pointer.write_text(str(home))
        return home

    def remove_postgres_data(self) -> None:
        """Delete Postgres's directory (it is stopped)."""
        pointer = self.state / "postgres.home"
        if pointer.exists():
            shutil.rmtree(pointer.read_text().strip(), ignore_errors=True)
            pointer.unlink()

    def _pg(self, bindir: Path, *args: str) -> subprocess.CompletedProcess[str]:
        command = [str(bindir / args[0]), *args[1:]]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        return subprocess.run(command, capture_output=True, text=True, timeout=90, check=False)

    def start_postgres(self) -> str:
        """Run initdb (the first time), start on a free port; return the database URL."""
        if self.pid("postgres") is not None:
            return self.url("postgres")
        bindir = postgres_bin()
        if bindir is None:
            msg = "PostgreSQL is not installed: apt-get install postgresql"
            raise StackError(msg)
        home = self.postgres_home()
        data = home / "data"
        if not data.exists():
            done = self._pg(bindir, "initdb", "-D", str(data), "-U", "postgres", "-A", "trust")
            if done.returncode != 0:
                msg = f"initdb failed: {done.stderr.strip()}"
                raise StackError(msg)
        port = free_port()
        options = f"-h {LOOPBACK} -p {port} -k {home}"
        log = str(home / "postgres.log")
        done = self._pg(
            bindir, "pg_ctl", "-D", str(data), "-o", options, "-l", log, "-w", "-t", "60", "start"
        )
        if done.returncode != 0:
            msg = f"pg_ctl start failed: {done.stderr.strip()}"
            raise StackError(msg)
        pid = int((data / "postmaster.pid").read_text().split()[0])
        url = f"postgresql://postgres@{LOOPBACK}:{port}/{DATABASE}"
        record = {"pid": pid, "exe": _exe(pid), "url": url, "port": port}
        (self.state / "postgres.pid.json").write_text(json.dumps(record))
        return url

    # -- replicas -------------------------------------------------------------------------

    def start_replica(
        self, index: int, env: dict[str, str] | None = None, flags: dict[str, str] | None = None
    ) -> str:
        """Start ``replica-<index>`` and wait until it is ready; its base URL."""
        name = f"replica-{index}"
        if self.pid(name) is not None:
            return self.url(name)
        database = self.start_postgres()
        port = free_port()
        command = replica_command(self.services, index, port, database, self.state, flags)
        compose_env = dict(self.services.get(name, self.services["replica-1"])["environment"])
        compose_env["OTEL_EXPORTER_OTLP_ENDPOINT"] = f"http://{LOOPBACK}:4318"
        child_env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
        child_env.update({**compose_env, **(env or {})})
        (self.state / name).mkdir(parents=True, exist_ok=True)
        with (self.state / f"{name}.log").open("ab") as log:
            process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                cwd=self.state / name,
                env=child_env,
                start_new_session=True,
            )
        self._children[name] = process
        url = f"http://{LOOPBACK}:{port}"
        record = {"pid": process.pid, "exe": _exe(process.pid), "url": url, "args": command}
        (self.state / f"{name}.pid.json").write_text(json.dumps(record))
        end = time.monotonic() + HEALTH_TIMEOUT
        while time.monotonic() < end:
            if process.poll() is not None:
                tail = (self.state / f"{name}.log").read_text(errors="replace")[-3000:]
                msg = f"{name} exited ({process.returncode}) at start:\n{tail}"
                raise StackError(msg)
            if _answers(f"{url}/health/ready"):
                return url
            time.sleep(0.3)
        self.stop(name)
        msg = f"{name}: {url}/health/ready not ready within {HEALTH_TIMEOUT:.0f} s"
        raise StackError(msg)

    def up(
        self, replicas: int, env: dict[str, str] | None = None, flags: dict[str, str] | None = None
    ) -> dict[str, str]:
        """Postgres and replicas 1..N, each ready; their URLs by name."""
        if replicas < 1:
            msg = f"--replicas {replicas}: give 1 or more"
            raise StackError(msg)
        self.state.mkdir(parents=True, exist_ok=True)
        urls = {"postgres": self.start_postgres()}
        for index in range(1, replicas + 1):
            urls[f"replica-{index}"] = self.start_replica(index, env, flags)
        return urls

    # -- stopping -----------------------------------------------------------------------

    def stop(self, name: str, sig: int = signal.SIGTERM) -> bool:
        """Stop one process this cluster started (SIGKILL after a bound); False if none ran."""
        pid = self.pid(name)
        child = self._children.pop(name, None)
        record = self.state / f"{name}.pid.json"
        if pid is None:
            record.unlink(missing_ok=True)
            return False
        if name == "postgres" and sig == signal.SIGTERM:
            sig = signal.SIGINT  # PostgreSQL's fast shutdown
        os.kill(pid, sig)
        end = time.monotonic() + STOP_TIMEOUT
        while time.monotonic() < end and self._running(pid, child):
            time.sleep(0.1)
        if self._running(pid, child):
            os.kill(pid, signal.SIGKILL)
            time.sleep(0.2)
        record.unlink(missing_ok=True)
        return True

    @staticmethod
    def _running(pid: int, child: subprocess.Popen[bytes] | None) -> bool:
        if child is not None:
            return child.poll() is None
        return _exe(pid) is not None

    def down(self) -> list[str]:
        """Stop the replicas, then Postgres; the ones stopped."""
        names = [*reversed(self.replicas()), "postgres"]
        return [name for name in names if self.stop(name)]

    def status(self) -> dict[str, str]:
        """One line per cluster process recorded (Postgres first)."""
        lines = {}
        for name in ["postgres", *self.replicas()]:
            pid = self.pid(name)
            if pid is None:
                lines[name] = "stopped"
                continue
            url = self.url(name)
            if name == "postgres":
                lines[name] = f"pid {pid}, {url}"
            else:
                ready = "ready" if _answers(f"{url}/health/ready") else "NOT ready"
                lines[name] = f"pid {pid}, {url}: {ready}"
        return lines


#: Why a cluster service is not running when `up` was not asked for replicas.
NOT_STARTED = f"started by `stack.sh up --replicas N` only (see {COMPOSE_FILE.name})"
