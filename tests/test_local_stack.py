"""deploy/local and deploy/collector: the stack's programs accept the stack's configuration.

The programs are the ones .ci/build-stack.sh builds from their Go modules (called here
when one is missing). The collector and Jaeger each check a configuration with their
own `validate` command: the compose and Kubernetes configs as written, and the local
stack's derived ones. The rest checks deploy/local/derive.py's rules and that `down`
stops only processes the stack started.
"""

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from _dashboard_queries import COMPOSE_DIR
from _dashboard_queries import DEPLOY
from _full_stack import local_stack_module
from _helpers import ROOT
from _helpers import run_command

MANIFEST = DEPLOY / "collector" / "manifest.yaml"
BUILD_SCRIPT = ROOT / ".ci" / "build-stack.sh"


def _compose() -> dict[str, Any]:
    services: dict[str, Any] = yaml.safe_load(
        (COMPOSE_DIR / "docker-compose.yaml").read_text(encoding="utf-8")
    )["services"]
    return services


def _binary(target: str) -> Path:
    done = run_command("bash", BUILD_SCRIPT, target, timeout=3600)
    assert done.returncode == 0, done.stderr[-4000:]
    return Path(done.stdout.strip())


def test_the_manifest_builds_the_collector_version_compose_pins() -> None:
    """dist.version and every component of the manifest are the compose image's version."""
    pin = _compose()["otel-collector"]["image"].rpartition(":")[2]
    manifest = yaml.safe_load(MANIFEST.read_text(encoding="utf-8"))
    assert manifest["dist"]["version"] == pin
    for kind in ("receivers", "processors", "exporters", "extensions"):
        for component in manifest[kind]:
            assert component["gomod"].endswith(f" v{pin}"), component


def test_the_built_collector_has_exactly_the_components_the_configs_use() -> None:
    """The slim distribution holds every component type the configs name, and no other."""
    done = run_command(_binary("otelcol"), "components", timeout=60)
    assert done.returncode == 0, done.stderr
    built = {
        kind: {c["name"] for c in yaml.safe_load(done.stdout)[kind] or []}
        for kind in ("receivers", "processors", "exporters", "extensions")
    }
    used: dict[str, set[str]] = {kind: set() for kind in built}
    for path in (
        COMPOSE_DIR / "otel-collector.yaml",
        DEPLOY / "k8s" / "otel-collector-config.yaml",
    ):
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
        for kind in used:
            used[kind] |= {name.partition("/")[0] for name in config.get(kind) or {}}
    used["exporters"].add("nop")  # deploy/local's stand-in for the backends it does not run
    assert used == built


@pytest.mark.parametrize(
    ("target", "config"),
    [
        ("otelcol", COMPOSE_DIR / "otel-collector.yaml"),
        ("otelcol", DEPLOY / "k8s" / "otel-collector-config.yaml"),
        ("jaeger", COMPOSE_DIR / "jaeger.yaml"),
    ],
    ids=["collector-compose", "collector-k8s", "jaeger-compose"],
)
def test_the_real_program_accepts_the_config_as_written(target: str, config: Path) -> None:
    """`<program> validate` accepts the configuration file deploy/ ships."""
    done = run_command(_binary(target), "validate", f"--config={config}", timeout=60)
    assert done.returncode == 0, done.stderr[-3000:]


def test_the_real_programs_accept_the_derived_local_configs(tmp_path: Path) -> None:
    """The local stack's configs, derived from compose's, pass the programs' own checks."""
    derive = local_stack_module().Deriver(_compose(), tmp_path)
    for service, target in (("otel-collector", "otelcol"), ("jaeger", "jaeger")):
        [config_arg] = derive.command(service)
        done = run_command(_binary(target), "validate", config_arg, timeout=60)
        assert done.returncode == 0, (service, done.stderr[-3000:])
    collector = yaml.safe_load((tmp_path / "otel-collector" / "config.yaml").read_text())
    assert collector["exporters"]["otlp_grpc/jaeger"]["endpoint"] == "127.0.0.1:14317"
    assert collector["exporters"]["otlp_http/prometheus"]["endpoint"] == (
        "http://127.0.0.1:9090/api/v1/otlp"
    )
    pipelines = collector["service"]["pipelines"]
    assert pipelines["traces"]["exporters"] == ["otlp_grpc/jaeger", "nop/tempo"]
    assert pipelines["logs"]["exporters"] == ["nop/loki"]
    compose = yaml.safe_load((COMPOSE_DIR / "otel-collector.yaml").read_text())
    assert pipelines["logs"]["processors"] == compose["service"]["pipelines"]["logs"]["processors"]


def test_derived_ports_keep_the_published_ones_and_never_collide() -> None:
    """Published ports stay; a port only Compose's network sees moves when taken."""
    services = _compose()
    ports = local_stack_module().Deriver(services, Path("/nonexistent")).ports
    assert len(set(ports.values())) == len(ports), ports
    stack = local_stack_module()
    for name in stack.PROGRAMS:
        for spec in services[name].get("ports", []):
            host, container = (int(p) for p in str(spec).rsplit(":", 2)[-2:])
            assert ports[name, container] == host
    assert ports["jaeger", 4317] == 14317
    assert ports["otel-collector", 4317] == 4317


def test_down_leaves_alone_a_pid_that_is_no_longer_the_stacks(tmp_path: Path) -> None:
    """A recorded pid now running another program is not signalled."""
    stack = local_stack_module().LocalStack(tmp_path)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        record = {"pid": other.pid, "exe": str(_binary("jaeger")), "args": []}
        (tmp_path / "jaeger.pid.json").write_text(json.dumps(record), encoding="utf-8")
        assert stack.pid("jaeger") is None
        assert stack.down() == []
        assert other.poll() is None, "down signalled a process the stack did not start"
    finally:
        other.kill()
        other.wait(timeout=10)


def test_status_names_each_service_and_why_some_do_not_run(tmp_path: Path) -> None:
    """`stack.sh status` on a stack not started: stopped, and the reason for the absent."""
    env = {**os.environ, "STEPSTREAM_PYTHON": sys.executable}
    done = run_command(
        "bash", DEPLOY / "local" / "stack.sh", "status", "--state", tmp_path, env=env, timeout=60
    )
    assert done.returncode == 0, done.stderr
    lines = dict(line.split(maxsplit=1) for line in done.stdout.splitlines() if line.strip())
    assert {lines[n] for n in ("otel-collector", "jaeger", "prometheus")} == {"stopped"}
    assert "AGPL" in lines["tempo"]
    assert "AGPL" in lines["loki"]
    assert "AGPL" in lines["grafana"]
    assert "nginx" in lines["lb"]
    assert {lines[n] for n in ("replica-1", "replica-2", "replica-3")} == {
        "started by `stack.sh up --replicas N` only (see docker-compose.yaml)"
    }


def test_replica_commands_are_the_compose_ones_made_local(tmp_path: Path) -> None:
    """A local replica runs compose's command: loopback, its port, the local database."""
    cluster = local_stack_module().LocalStack(tmp_path).cluster
    compose = _compose()
    command = __import__("cluster").replica_command(
        compose, 2, 4242, "postgresql://postgres@127.0.0.1:5/db", tmp_path
    )
    assert command[1:4] == ["-m", "stepstream", "serve"]
    assert command[4] == str(DEPLOY / "cluster_app.py")
    flags = dict(a.split("=", 1) for a in command[5:])
    assert flags["--host"] == "127.0.0.1"
    assert flags["--port"] == "4242"
    assert flags["--instance-id"] == "replica-2"
    assert flags["--durable"] == "postgresql://postgres@127.0.0.1:5/db"
    assert flags["--failover-after"] == "15"
    assert cluster.replicas() == []
