"""A real Arize Phoenix trace backend for end-to-end tests, run on loopback.

Phoenix is large (about 850 MB installed), so it lives in its own virtualenv under the
git-ignored ``.cache/phoenix-venv``, installed on first use and reused while the pinned
version matches. A marker file, written only after a complete install, makes a
half-finished install (interrupted run, failed pip) detectable: it is removed and redone.
A test module uses the session fixture ``phoenix`` by importing :func:`phoenix_server`.
"""

from __future__ import annotations

import contextlib
import fcntl
import gc
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

__all__ = [
    "PHOENIX_SPEC",
    "PHOENIX_VERSION",
    "PhoenixServer",
    "fetch_spans",
    "flatten_attributes",
    "phoenix_server",
]

PHOENIX_VERSION = "20.26.1"
PHOENIX_SPEC = f"arize-phoenix=={PHOENIX_VERSION}"

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".cache"
VENV = CACHE / "phoenix-venv"
MARKER = VENV / ".stepstream-install-complete"
INSTALL_LOG = CACHE / "phoenix-install.log"
LOCK = CACHE / "phoenix-venv.lock"

INSTALL_TIMEOUT_S = 1800.0
STARTUP_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 20.0

# `phoenix serve` binds its OTLP/gRPC receiver to [::] with no setting to change that
# (phoenix/server/grpc_server.py); only loopback may listen here. This launcher runs the
# same entry point as the `phoenix` script, with grpc's bind rewritten to 127.0.0.1.
LAUNCHER = '''\
"""`phoenix serve`, with the OTLP/gRPC receiver bound to 127.0.0.1 instead of [::]."""
import sys

from grpc.aio import _server

_add_insecure_port = _server.Server.add_insecure_port


def _loopback_only(self, address):
    if address.startswith("[::]:"):
        address = "127.0.0.1:" + address[len("[::]:"):]
    return _add_insecure_port(self, address)


_server.Server.add_insecure_port = _loopback_only

from phoenix.server.main import main  # noqa: E402

sys.argv = ["phoenix", "serve"]
sys.exit(main())
'''


@dataclass(frozen=True)
class PhoenixServer:
    """A running Phoenix: where to send OTLP/HTTP and read spans back, and its log."""

    base_url: str
    grpc_port: int
    log_path: Path
    working_dir: Path

    @property
    def otlp_endpoint(self) -> str:
        """The value for OTEL_EXPORTER_OTLP_ENDPOINT (the exporter adds /v1/traces)."""
        return self.base_url

    def log_tail(self, chars: int = 4000) -> str:
        """The end of the server's combined stdout and stderr, for failure messages."""
        return _tail(self.log_path, chars)


def _tail(path: Path, chars: int) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        return f"(no log at {path}: {exc})"
    return text[-chars:]


def _marker_text() -> str:
    return f"{PHOENIX_SPEC} python{sys.version_info.major}.{sys.version_info.minor}\n"


def _installed() -> bool:
    try:
        marker = MARKER.read_text(encoding="utf-8")
    except OSError:
        return False
    return marker == _marker_text() and (VENV / "bin" / "phoenix").is_file()


def _run_logged(args: list[str], log: Path) -> tuple[bool, str]:
    """Run an install command, appending its output to ``log``; return (ok, output tail)."""
    with log.open("ab") as out:
        out.write(f"$ {' '.join(args)}\n".encode())
        out.flush()
        try:
            proc = subprocess.run(  # fixed commands: venv creation and pip
                args,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=INSTALL_TIMEOUT_S,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return False, f"timed out after {INSTALL_TIMEOUT_S:.0f} s\n" + _tail(log, 1500)
        except OSError as exc:
            return False, f"{type(exc).__name__}: {exc}"
    if proc.returncode != 0:
        return False, f"exit code {proc.returncode}\n" + _tail(log, 1500)
    return True, ""


def ensure_phoenix_installed() -> Path:
    """Install Phoenix into the cached venv unless a complete install of the pin is there.

    Returns the venv's Python. Skips the calling test, with pip's output tail as the
    reason, when the package cannot be installed.
    """
    CACHE.mkdir(parents=True, exist_ok=True)
    with LOCK.open("w") as lock:
        # Serialises concurrent sessions: the second waits, then finds the marker.
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _installed():
            return VENV / "bin" / "python"
        shutil.rmtree(VENV, ignore_errors=True)  # a partial or outdated install
        INSTALL_LOG.write_text(f"installing {PHOENIX_SPEC} into {VENV}\n", encoding="utf-8")
        python = VENV / "bin" / "python"
        for args in (
            [sys.executable, "-m", "venv", str(VENV)],
            [str(python), "-m", "pip", "install", "--disable-pip-version-check", PHOENIX_SPEC],
        ):
            ok, why = _run_logged(args, INSTALL_LOG)
            if not ok:
                pytest.skip(f"cannot install {PHOENIX_SPEC} (log: {INSTALL_LOG}): {why}")
        if not (VENV / "bin" / "phoenix").is_file():
            pytest.skip(f"{PHOENIX_SPEC} installed no `phoenix` command (log: {INSTALL_LOG})")
        partial = MARKER.with_suffix(".tmp")
        partial.write_text(_marker_text(), encoding="utf-8")
        partial.replace(MARKER)
        return python


def _free_loopback_ports(count: int) -> list[int]:
    """Ports the kernel just handed out on 127.0.0.1, all distinct."""
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _server_env(port: int, grpc_port: int, working_dir: Path) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("OTEL_", "PHOENIX_"))
        and key not in {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"}
    }
    env.update(
        PHOENIX_HOST="127.0.0.1",
        PHOENIX_PORT=str(port),
        PHOENIX_GRPC_PORT=str(grpc_port),
        PHOENIX_WORKING_DIR=str(working_dir),
        PHOENIX_TELEMETRY_ENABLED="false",
        PHOENIX_ALLOW_EXTERNAL_RESOURCES="false",
        PHOENIX_DISABLE_AGENT_ASSISTANT="true",
        PHOENIX_ENABLE_MCP_SERVER="false",
    )
    return env


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310 - loopback http
            return bool(resp.status == 200)
    except (OSError, urllib.error.URLError):
        return False


_V4_MAPPED = "0000000000000000FFFF0000"  # ::ffff:a.b.c.d in /proc/net/tcp6


def _listeners_off_loopback(port: int) -> list[str]:
    """Local addresses (hex, as in /proc/net/tcp*) of sockets listening on ``port``.

    Only those outside 127.0.0.0/8 and ::1 are returned.
    """
    found: list[str] = []
    for table in (Path("/proc/net/tcp"), Path("/proc/net/tcp6")):
        with contextlib.suppress(OSError):
            for line in table.read_text().splitlines()[1:]:
                fields = line.split()
                address, _, hex_port = fields[1].partition(":")
                if fields[3] != "0A" or int(hex_port, 16) != port:  # 0A: LISTEN
                    continue
                v4 = address[-8:] if address.startswith(_V4_MAPPED) else address
                loopback_v4 = len(v4) == 8 and v4.endswith("7F")  # 127.0.0.0/8
                loopback_v6 = address == "00000000000000000000000001000000"  # ::1
                if not (loopback_v4 or loopback_v6):
                    found.append(address)
    return found


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the server's process group, then SIGKILL it if it is still there.

    The group is signalled only while its leader is unreaped, so its id is still ours.
    """
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=STOP_TIMEOUT_S)


def flatten_attributes(attributes: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Return nested attribute dicts ({"a": {"b": 1}}) as dotted keys ({"a.b": 1})."""
    flat: dict[str, Any] = {}
    for key, value in attributes.items():
        name = f"{prefix}.{key}" if prefix else key
        if isinstance(value, Mapping):
            flat.update(flatten_attributes(value, name))
        else:
            flat[name] = value
    return flat


def fetch_spans(phoenix: PhoenixServer) -> list[dict[str, Any]]:
    """Every span of Phoenix's default project, following next_cursor; [] before any exist."""
    spans: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        query = {"limit": "1000", **({"cursor": cursor} if cursor else {})}
        url = f"{phoenix.base_url}/v1/projects/default/spans?{urllib.parse.urlencode(query)}"
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:  # noqa: S310 - loopback http
                page = json.load(resp)
        except urllib.error.HTTPError as exc:
            if exc.code == 404:  # the project appears with its first span
                exc.close()
                return []
            raise
        spans.extend(page["data"])
        cursor = page.get("next_cursor")
        if not cursor:
            return spans


@pytest.fixture(scope="session", name="phoenix")
def phoenix_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PhoenixServer]:
    """Start Phoenix on free loopback ports with a temporary working dir; stop it after."""
    python = ensure_phoenix_installed()
    base = tmp_path_factory.mktemp("phoenix")
    working_dir = base / "work"
    working_dir.mkdir()
    launcher = base / "serve_loopback.py"
    launcher.write_text(LAUNCHER, encoding="utf-8")
    log_path = base / "phoenix.log"
    port, grpc_port = _free_loopback_ports(2)
    server = PhoenixServer(f"http://127.0.0.1:{port}", grpc_port, log_path, working_dir)
    with log_path.open("wb") as log:
        proc = subprocess.Popen(  # the cached venv's Python and our launcher
            [str(python), str(launcher)],
            cwd=base,
            env=_server_env(port, grpc_port, working_dir),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not _answers(f"{server.base_url}/healthz"):
            if proc.poll() is not None:
                pytest.fail(
                    f"phoenix serve exited with {proc.returncode} before answering on "
                    f"{server.base_url}:\n{server.log_tail()}"
                )
            if time.monotonic() > deadline:
                pytest.fail(
                    f"phoenix serve did not answer on {server.base_url} within "
                    f"{STARTUP_TIMEOUT_S:.0f} s:\n{server.log_tail()}"
                )
            time.sleep(0.25)
        for listening_port in (port, grpc_port):
            exposed = _listeners_off_loopback(listening_port)
            assert not exposed, f"Phoenix listens off loopback on {listening_port}: {exposed}"
        yield server
    finally:
        _stop(proc)
        # This teardown runs after the session's last test. Collect the cyclic garbage
        # that tests leave behind (a failed run's Task nobody awaited logs "Task exception
        # was never retrieved" from its finaliser) now, not during the AST conversion of
        # pytest's late import of hypothesis in the terminal summary: on CPython 3.11 a
        # nested ast.parse from a finaliser there (traceback's caret anchors) corrupts the
        # shared depth counter and pytest dies with "AST constructor recursion depth
        # mismatch" after all tests passed.
        gc.collect()
