"""deploy/compose's observability stack as local processes on 127.0.0.1, without Docker.

Runs the programs that .ci/build-stack.sh builds from their Go modules (the OpenTelemetry
Collector, Jaeger v2, Prometheus 3) with deploy/compose's own configuration files; what
has to differ outside Compose (ports, addresses, data directories) is derived from the
compose file by derive.py beside this file.

usage: stack.sh up [--replicas N] | down | status | logs SERVICE     [--state DIR]

``up`` builds what is missing (cached by version), then starts the services in the
compose file's dependency order, each waiting for its health endpoint (bounded).
``down`` stops exactly the processes ``up`` started: their pids and executables are
recorded in the state directory (default .cache/stack-run), and a pid whose process is
no longer that executable is left alone. The data lives in the state directory too:
``down`` keeps it, ``down --clean`` removes it.

``up --replicas N`` also starts the compose file's stepstream cluster (cluster.py beside
this file): Postgres and N ``stepstream serve --durable`` replicas sending OTLP to the
collector. Off by default; ``down`` stops them too.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from http import HTTPStatus
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cluster import NOT_STARTED, LocalCluster
from derive import (
    ABSENT,
    CLUSTER,
    LOOPBACK,
    PROGRAMS,
    ROOT,
    Deriver,
    StackError,
    load_compose,
    start_order,
)

BUILD_SCRIPT = ROOT / ".ci" / "build-stack.sh"
DEFAULT_STATE = Path(os.environ.get("STEPSTREAM_STACK_STATE", ROOT / ".cache" / "stack-run"))
#: Bound on the wait for one service's health endpoint.
HEALTH_TIMEOUT = 90.0
#: Bound on the wait for a stopped process to exit before it is killed.
STOP_TIMEOUT = 15.0
#: Bound on a cold build of every program (22 minutes measured on a loaded 2-core machine).
BUILD_TIMEOUT = 3600.0

__all__ = ["LocalStack", "StackError", "binaries"]


def binaries(names: list[str]) -> dict[str, Path]:
    """Each program's binary, built by .ci/build-stack.sh when not cached yet.

    The build's progress goes to this process's stderr: a cold build takes minutes.
    """
    targets = [PROGRAMS[name].build for name in names]
    done = subprocess.run(
        [str(BUILD_SCRIPT), *targets],
        stdout=subprocess.PIPE,
        text=True,
        timeout=BUILD_TIMEOUT,
        check=False,
    )
    if done.returncode != 0:
        msg = f"{BUILD_SCRIPT} {' '.join(targets)} failed ({done.returncode}): see its output above"
        raise StackError(msg)
    paths = [Path(line) for line in done.stdout.splitlines() if line.strip()]
    if len(paths) != len(names):
        msg = f"{BUILD_SCRIPT} printed {done.stdout!r}, not {len(names)} paths"
        raise StackError(msg)
    return dict(zip(names, paths, strict=True))


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=3) as response:  # noqa: S310 - loopback
            return bool(response.status == HTTPStatus.OK)
    except (OSError, urllib.error.URLError):
        return False


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


def _exe(pid: int) -> str | None:
    try:
        return str(Path(f"/proc/{pid}/exe").readlink())
    except OSError:
        return None


class LocalStack:
    """The stack's processes, recorded in one state directory."""

    def __init__(self, state: Path = DEFAULT_STATE) -> None:
        self.state = state.resolve()
        self.services = load_compose()
        self.deriver = Deriver(self.services, self.state)
        self.order = start_order(self.services)
        #: The processes this object started, kept so that they are waited for.
        self._children: dict[str, subprocess.Popen[bytes]] = {}
        #: Postgres and the stepstream replicas (started by ``up(replicas=N)`` only).
        self.cluster = LocalCluster(self.state, self.services)

    def _pidfile(self, name: str) -> Path:
        return self.state / f"{name}.pid.json"

    def log_file(self, name: str) -> Path:
        """Where a service's output goes."""
        return self.state / f"{name}.log"

    def pid(self, name: str) -> int | None:
        """The pid of a service this stack started and that still runs, else None."""
        try:
            record = json.loads(self._pidfile(name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        pid = int(record["pid"])
        # A binary replaced on disk while its process runs reads as "<path> (deleted)".
        exe = (_exe(pid) or "").removesuffix(" (deleted)")
        return pid if exe == record["exe"] else None

    def health_url(self, name: str) -> str:
        """The service's health endpoint here."""
        return self.deriver.health_url(name)

    def url(self, name: str, port: int) -> str:
        """``http://127.0.0.1:<local port>`` of a service's container port."""
        return f"http://{LOOPBACK}:{self.deriver.local_port(name, port)}"

    def up(
        self,
        names: list[str] | None = None,
        *,
        replicas: int = 0,
        env: dict[str, str] | None = None,
    ) -> None:
        """Start the services not running yet (all by default), in order, each healthy.

        ``replicas``: also Postgres and that many stepstream replicas (``env``: more
        environment for them), each ready.
        """
        wanted = [n for n in self.order if names is None or n in names]
        self.state.mkdir(parents=True, exist_ok=True)
        bins = binaries(wanted)
        for name in wanted:
            if self.pid(name) is None:
                self.start(name, bins[name])
        if replicas:
            self.cluster.up(replicas, env)

    def start(self, name: str, binary: Path | None = None) -> int:
        """Start one service and wait for its health endpoint; returns its pid."""
        if self.pid(name) is not None:
            msg = f"{name} already runs (pid {self.pid(name)})"
            raise StackError(msg)
        binary = binary or binaries([name])[name]
        busy = [
            port
            for (service, _), port in self.deriver.ports.items()
            if service == name and not _port_free(port)
        ]
        if busy:
            msg = (
                f"{name}: port(s) {sorted(busy)} of 127.0.0.1 are taken by another process; "
                "stop it (`stack.sh down`, or `docker compose down`) and try again"
            )
            raise StackError(msg)
        args = [str(binary), *self.deriver.command(name)]
        with self.log_file(name).open("ab") as log:
            process = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                cwd=self.state,
                start_new_session=True,
            )
        self._children[name] = process
        record = {"pid": process.pid, "exe": str(binary.resolve()), "args": args}
        self._pidfile(name).write_text(json.dumps(record), encoding="utf-8")
        url = self.health_url(name)
        end = time.monotonic() + HEALTH_TIMEOUT
        while time.monotonic() < end:
            if process.poll() is not None:
                tail = self.log_file(name).read_text(encoding="utf-8", errors="replace")[-3000:]
                msg = f"{name} exited ({process.returncode}) at start:\n{tail}"
                raise StackError(msg)
            if _healthy(url):
                return process.pid
            time.sleep(0.5)
        self.stop(name)
        msg = f"{name}: {url} not healthy within {HEALTH_TIMEOUT:.0f} s"
        raise StackError(msg)

    def stop(self, name: str, sig: int = signal.SIGTERM) -> bool:
        """Stop one service this stack started (SIGKILL after a bound); False if none ran."""
        pid = self.pid(name)
        self._pidfile(name).unlink(missing_ok=True)
        child = self._children.pop(name, None)
        if pid is None:
            if child is not None:
                child.wait(timeout=STOP_TIMEOUT)
            return False
        os.kill(pid, sig)
        end = time.monotonic() + STOP_TIMEOUT
        while time.monotonic() < end and _running(pid, child):
            time.sleep(0.1)
        if _running(pid, child):
            os.kill(pid, signal.SIGKILL)
            for _ in range(50):
                if not _running(pid, child):
                    break
                time.sleep(0.1)
        return True

    def down(self, *, clean: bool = False) -> list[str]:
        """Stop every service this stack started, in reverse order; the ones stopped."""
        stopped = self.cluster.down()
        stopped += [name for name in reversed(self.order) if self.stop(name)]
        if clean:
            for name in [*self.order, *CLUSTER]:
                shutil.rmtree(self.state / name, ignore_errors=True)
            self.cluster.remove_postgres_data()
        return stopped

    def status(self) -> dict[str, str]:
        """One line of state per compose service."""
        lines = {}
        for name in self.order:
            pid = self.pid(name)
            url = self.health_url(name)
            if pid is None:
                lines[name] = "stopped"
            else:
                lines[name] = f"pid {pid}, {url}: {'healthy' if _healthy(url) else 'NOT healthy'}"
        for name, why in ABSENT.items():
            lines[name] = f"not run here: {why}"
        lines.update(dict.fromkeys(CLUSTER, NOT_STARTED))
        lines.update(self.cluster.status())
        return lines


def _running(pid: int, child: subprocess.Popen[bytes] | None) -> bool:
    """Whether the process still runs (a child of ours is reaped once it has exited)."""
    if child is not None:
        return child.poll() is None
    return _exe(pid) is not None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="stack.sh", description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=["up", "down", "status", "logs"])
    parser.add_argument("service", nargs="?", help="for logs: the compose service")
    parser.add_argument("--state", type=Path, default=DEFAULT_STATE, help="state directory")
    parser.add_argument("--clean", action="store_true", help="down: remove the data too")
    parser.add_argument(
        "--replicas", type=int, default=0, help="up: also Postgres and N stepstream replicas"
    )
    args = parser.parse_args(argv)
    try:
        stack = LocalStack(args.state)
        if args.action == "up":
            stack.up(replicas=args.replicas)
        elif args.action == "down":
            stopped = stack.down(clean=args.clean)
            print("stopped: " + (", ".join(stopped) or "nothing was running"))
            return 0
        elif args.action == "logs":
            if args.service not in PROGRAMS:
                parser.error(f"logs needs one of {', '.join(PROGRAMS)}")
            print(stack.log_file(args.service).read_text(encoding="utf-8", errors="replace"))
            return 0
        for name, line in stack.status().items():
            print(f"{name:15} {line}")
        if args.action == "up":
            print(f"\nOTLP: {stack.url('otel-collector', 4318)} (HTTP), 127.0.0.1:4317 (gRPC)")
            print(f"Jaeger UI and API: {stack.url('jaeger', 16686)}")
            print(f"Prometheus: {stack.url('prometheus', 9090)}")
            for name in stack.cluster.replicas():
                print(f"{name}: {stack.cluster.url(name)}")
    except StackError as exc:
        print(f"stack.sh: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
