"""The stack that tests/test_full_stack.py talks to: deploy/compose, or deploy/local's processes.

Where a Docker daemon answers (with Compose v2), the compose stack runs under a project
name of its own. Everywhere else, deploy/local/stack.py runs the same services as local
processes on 127.0.0.1, from the programs .ci/build-stack.sh builds (it is called here
when a binary is missing: a cold build takes minutes, a warm one none), with a state
directory of the test's own. Either way the published ports are those of the compose
file, so they must be free; and either way the stack is torn down afterwards.

The local stack runs the collector, Jaeger and Prometheus. Tempo, Loki and Grafana are
not run there (their Go modules are under the AGPL, which this project may not use):
``Stack.require()`` names that reason for the tests that need them.
"""

import base64
import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from typing import Any
from typing import TypeVar

import pytest

from _dashboard_queries import COMPOSE_DIR
from _dashboard_queries import DEPLOY
from _helpers import command_problem
from _helpers import import_file
from _helpers import run_command

COMPOSE_FILE = COMPOSE_DIR / "docker-compose.yaml"
LOCAL_STACK = DEPLOY / "local" / "stack.py"
JAEGER = "http://127.0.0.1:16686"
TEMPO = "http://127.0.0.1:3200"
LOKI = "http://127.0.0.1:3100"
PROMETHEUS = "http://127.0.0.1:9090"
GRAFANA = "http://127.0.0.1:3000"
COLLECTOR = "http://127.0.0.1:4318"
#: Bound on each wait for data to arrive in a backend.
DEADLINE = 120.0
T = TypeVar("T")


def docker_problem() -> str | None:
    """Return why the compose stack cannot run here, or None when a Docker daemon answers."""
    docker = shutil.which("docker")
    if docker is None:
        return "no docker client on PATH"
    for args in (["info"], ["compose", "version"]):
        problem = command_problem(docker, *args, what=f"`docker {' '.join(args)}`", timeout=30)
        if problem is not None:
            return problem
    return None


def local_stack_module() -> Any:
    """deploy/local/stack.py, imported by its path."""
    return import_file(LOCAL_STACK, "stepstream_local_stack")


@dataclass
class Stack:
    """A running stack: which services it has, and how to stop and start one of them."""

    kind: str  # "compose" or "local"
    absent: dict[str, str]  # service -> why it does not run in this stack
    kill: Callable[[str], None]
    start: Callable[[str], None]
    logs: Callable[[], str] = field(default=lambda: "")

    def require(self, *services: str) -> None:
        """Skip the calling test, with the reason, when a service does not run here."""
        for service in services:
            if service in self.absent:
                pytest.skip(
                    f"{service} does not run in the {self.kind} stack: {self.absent[service]}"
                )


def compose_stack(project: str) -> tuple[Stack, Callable[[], None]]:
    """deploy/compose up with --wait (healthy); the second item tears it down."""
    docker = shutil.which("docker") or "docker"

    def compose(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
        return run_command(
            docker, "compose", "-f", COMPOSE_FILE, "-p", project, *args, timeout=timeout
        )

    def logs() -> str:
        return compose("logs", "--no-color", "--tail", "40", timeout=120).stdout[-8000:]

    up = compose("up", "-d", "--build", "--wait", "--wait-timeout", "600", timeout=900)
    if up.returncode != 0:
        text = logs()
        compose("down", "--volumes", "--remove-orphans", timeout=300)
        pytest.fail(f"compose up failed:\n{up.stderr[-4000:]}\n{text}")

    def kill(service: str) -> None:
        assert compose("kill", service, timeout=60).returncode == 0

    def start(service: str) -> None:
        done = compose("up", "-d", "--wait", "--no-deps", service, timeout=300)
        assert done.returncode == 0, done.stderr

    def down() -> None:
        compose("down", "--volumes", "--remove-orphans", timeout=300)

    return Stack("compose", {}, kill, start, logs), down


def local_stack(state: Path) -> tuple[Stack, Callable[[], None]]:
    """deploy/local's processes, healthy; the second item stops exactly those."""
    module = local_stack_module()
    local = module.LocalStack(state)

    def logs() -> str:
        return "\n".join(
            f"--- {name}\n{local.log_file(name).read_text(errors='replace')[-3000:]}"
            for name in local.order
            if local.log_file(name).exists()
        )

    try:
        local.up()
    except module.StackError as exc:
        text = logs()
        local.down()
        pytest.fail(f"the local stack did not come up: {exc}\n{text}")

    def kill(service: str) -> None:
        import signal  # noqa: PLC0415 - only here

        assert local.stop(service, signal.SIGKILL), f"{service} was not running"

    stack = Stack("local", dict(module.ABSENT), kill, local.start, logs)
    return stack, local.down


def request(url: str, params: dict[str, str] | None = None, *, auth: str | None = None) -> Any:
    """GET a JSON API of the stack (loopback only)."""
    if params:
        url = f"{url}?{urllib.parse.urlencode(params)}"
    req = urllib.request.Request(url)  # noqa: S310 - loopback only
    if auth:
        req.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    with urllib.request.urlopen(req, timeout=15) as response:  # noqa: S310 - loopback
        return json.loads(response.read() or b"null")


def poll(what: str, fetch: Callable[[], T | None], deadline: float = DEADLINE) -> T:
    """Call ``fetch`` until it returns something truthy, for at most ``deadline`` seconds."""
    end = time.monotonic() + deadline
    last: Exception | None = None
    while time.monotonic() < end:
        try:
            value = fetch()
        except (OSError, urllib.error.URLError, ValueError, KeyError, IndexError) as exc:
            last = exc
        else:
            if value:
                return value
        time.sleep(1)
    pytest.fail(f"{what}: nothing within {deadline:.0f} s (last error: {last})")


def jaeger_trace(trace_id: str) -> dict[str, Any] | None:
    """The trace from Jaeger's query API, or None while it has not arrived."""
    try:
        data = request(f"{JAEGER}/api/traces/{trace_id}")["data"]
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        raise
    return data[0] if data else None


def tags(item: dict[str, Any]) -> dict[str, Any]:
    """A Jaeger span's tags (or a span log's fields) as a dict."""
    return {t["key"]: t["value"] for t in item.get("tags", item.get("fields", []))}


def run_app(mode: str, *args: str, env: dict[str, str], cwd: Path, timeout: float) -> list[Any]:
    """Run tests/_stack_app.py; the JSON lines it printed (it must succeed)."""
    import sys  # noqa: PLC0415 - only here

    app = Path(__file__).resolve().parent / "_stack_app.py"
    done = run_command(sys.executable, app, mode, *args, cwd=cwd, env=env, timeout=timeout)
    assert done.returncode == 0, done.stderr[-4000:]
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


def app_env(service: str, endpoint: str | None = COLLECTOR) -> dict[str, str]:
    """The app's environment: its own service name, metrics every second, the collector."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update({"OTEL_SERVICE_NAME": service, "OTEL_METRIC_EXPORT_INTERVAL": "1000"})
    if endpoint:
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = endpoint
    return env
