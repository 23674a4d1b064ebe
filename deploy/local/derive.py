"""How deploy/compose's services run as local processes: ports, configs, commands, order.

What has to differ outside Compose is derived from the compose file, never written by hand:

- addresses: a port the compose file publishes keeps its number (OTLP 4317/4318, Jaeger
  16686, Prometheus 9090, ...); a port only the Compose network sees keeps its number
  unless another service of the stack already has it, then moves by 10000 (Jaeger's own
  OTLP 4317 becomes 14317). ``service:port`` and ``0.0.0.0:port`` in the configs become
  ``127.0.0.1:<that port>``;
- files: a config mounted into a container is rewritten into the state directory; any
  other absolute path in a command (a data directory) moves under the state directory;
- services not run here (Tempo, Loki, Grafana: see deploy/README.md): the collector's
  exporters to them become `nop` exporters (the pipelines stay, what they would send is
  dropped), and Prometheus's scrape targets on them are dropped.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

try:
    import yaml
except ImportError:  # pragma: no cover - depends on the interpreter
    sys.exit("deploy/local needs PyYAML: pip install pyyaml (or use the project's .venv)")

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_DIR = ROOT / "deploy" / "compose"
COMPOSE_FILE = COMPOSE_DIR / "docker-compose.yaml"
LOOPBACK = "127.0.0.1"
#: A port only the Compose network sees moves by this much when it is taken.
PORT_SHIFT = 10000


@dataclass(frozen=True)
class Program:
    """How one compose service runs as a local process."""

    build: str  # .ci/build-stack.sh target
    listen_args: tuple[str, ...] = ()  # extra arguments; {port:N} is the local port of N
    health: str = ""  # path and port when compose has no healthcheck: "13133/"


#: The compose services that run here, by compose service name.
PROGRAMS = {
    "otel-collector": Program("otelcol", health="13133/"),
    "jaeger": Program("jaeger"),
    "prometheus": Program(
        "prometheus", listen_args=("--web.listen-address=127.0.0.1:{port:9090}",)
    ),
}
#: The compose services that do not run here, and why.
ABSENT = {
    "tempo": "Grafana Tempo's Go module is under the AGPL, which this project may not use",
    "loki": "Grafana Loki's Go module is under the AGPL, which this project may not use",
    "grafana": "Grafana's Go module is under the AGPL, which this project may not use",
    "example": "the example app: run deploy/example_loop.py yourself",
    "lb": "the load balancer (nginx): each local replica answers on its own port",
}
#: The compose services deploy/local/cluster.py runs on request (`up --replicas N`).
CLUSTER = ("postgres", "replica-1", "replica-2", "replica-3")


class StackError(Exception):
    """The local stack cannot do what was asked; the message says why."""


def load_compose() -> dict[str, Any]:
    """The services of deploy/compose/docker-compose.yaml."""
    services: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))["services"]
    unknown = set(services) - set(PROGRAMS) - set(ABSENT) - set(CLUSTER)
    if unknown:
        msg = f"{COMPOSE_FILE}: services {sorted(unknown)} have no local program"
        raise StackError(msg)
    return services


def _container_ports(service: dict[str, Any]) -> list[tuple[int, int | None]]:
    """(container port, published host port or None) for each port a service has."""
    ports: dict[int, int | None] = {}
    for spec in service.get("ports", []):
        host, container = str(spec).rsplit(":", 2)[-2:]
        ports[int(container)] = int(host)
    for port in service.get("expose", []):
        ports.setdefault(int(port), None)
    return list(ports.items())


def port_map(services: dict[str, Any]) -> dict[tuple[str, int], int]:
    """(service, container port) -> the port it listens on here (see the module doc)."""
    taken: set[int] = set()
    result: dict[tuple[str, int], int] = {}
    for name in PROGRAMS:
        for container, host in _container_ports(services[name]):
            if host is not None:
                result[name, container] = host
                taken.add(host)
    for name in PROGRAMS:
        for container, host in _container_ports(services[name]):
            if host is None:
                port = container
                while port in taken:
                    port += PORT_SHIFT
                result[name, container] = port
                taken.add(port)
    return result


#: What rewrite() returns for an entry that points at a service not run here.
DROP = object()

_ADDRESS = re.compile(r"^(?P<scheme>https?://)?(?P<host>[\w.-]+):(?P<port>\d+)(?P<rest>/.*)?$")


class Deriver:
    """Rewrites one service's compose configuration for the local stack."""

    def __init__(self, services: dict[str, Any], state: Path) -> None:
        self.services = services
        self.ports = port_map(services)
        self.state = state

    def local_port(self, service: str, port: int) -> int:
        """The port here of a service's container port."""
        try:
            return self.ports[service, port]
        except KeyError:
            msg = (
                f"{COMPOSE_FILE}: {service} uses port {port}, which its `ports` or "
                "`expose` do not list: add it to `expose`"
            )
            raise StackError(msg) from None

    def address(self, service: str, text: str) -> object:
        """``text`` with its host:port made local; DROP if it points at an absent service."""
        match = _ADDRESS.match(text)
        if match is None:
            return text
        host, port = match["host"], int(match["port"])
        if host in ABSENT:
            return DROP
        if host in PROGRAMS:
            target = host
        elif host in ("0.0.0.0", "localhost", LOOPBACK):  # noqa: S104 - rewritten here
            target = service
        else:
            return text
        local = self.local_port(target, port)
        return f"{match['scheme'] or ''}{LOOPBACK}:{local}{match['rest'] or ''}"

    def rewrite(self, service: str, node: Any) -> Any:
        """Every address in a config tree made local; absent services' entries dropped."""
        if isinstance(node, dict):
            if node.get("host") == "0.0.0.0" and isinstance(node.get("port"), int):  # noqa: S104
                node = {**node, "host": LOOPBACK, "port": self.local_port(service, node["port"])}
            out = {}
            for key, value in node.items():
                new = self.rewrite(service, value)
                if new is not DROP:
                    out[key] = new
            return out
        if isinstance(node, list):
            items = [self.rewrite(service, item) for item in node]
            return [item for item in items if item is not DROP]
        if isinstance(node, str):
            return self.address(service, node)
        return node

    def config(self, service: str, source: Path) -> dict[str, Any]:
        """The derived configuration of one mounted config file."""
        tree: dict[str, Any] = yaml.safe_load(source.read_text(encoding="utf-8"))
        gone = _components_pointing_at_absent(tree)
        derived: dict[str, Any] = self.rewrite(service, tree)
        # An exporter to a backend not run here becomes a `nop` exporter of the same name:
        # its pipeline (receivers, processors) stays as it is, and what it sends is dropped.
        stand_ins = {old: f"nop/{old.partition('/')[2] or old}" for old in gone}
        for old, new in stand_ins.items():
            derived["exporters"].pop(old, None)
            derived["exporters"][new] = None
        for pipeline in derived.get("service", {}).get("pipelines", {}).values():
            exporters = [stand_ins.get(e, e) for e in pipeline.get("exporters", [])]
            pipeline["exporters"] = list(dict.fromkeys(exporters))
        for job in derived.get("scrape_configs", []):
            job["static_configs"] = [c for c in job.get("static_configs", []) if c.get("targets")]
        if "scrape_configs" in derived:
            derived["scrape_configs"] = [
                j for j in derived["scrape_configs"] if j["static_configs"]
            ]
        return derived

    def command(self, service: str) -> list[str]:
        """The compose command with configs derived and data directories moved."""
        spec = self.services[service]
        mounts = {}
        for volume in spec.get("volumes", []):
            source, target = str(volume).split(":")[:2]
            mounts[target] = (COMPOSE_DIR / source).resolve()
        args = [self._argument(service, str(arg), mounts) for arg in spec.get("command", [])]
        args.extend(
            re.sub(r"\{port:(\d+)\}", lambda m: str(self.local_port(service, int(m[1]))), extra)
            for extra in PROGRAMS[service].listen_args
        )
        return args

    def _argument(self, service: str, arg: str, mounts: dict[str, Path]) -> str:
        """One ``--flag=value`` of a compose command, its mounted file or data path moved."""
        flag, sep, value = arg.partition("=")
        if sep and value in mounts:
            derived = self.state / service / Path(value).name
            derived.parent.mkdir(parents=True, exist_ok=True)
            tree = self.config(service, mounts[value])
            derived.write_text(yaml.safe_dump(tree, sort_keys=False), encoding="utf-8")
            return f"{flag}={derived}"
        if sep and value.startswith("/"):
            data = self.state / service / "data" / value.lstrip("/")
            data.mkdir(parents=True, exist_ok=True)
            return f"{flag}={data}"
        return arg

    def health_url(self, service: str) -> str:
        """The health endpoint: the compose healthcheck's URL, or the program's default."""
        test = " ".join(self.services[service].get("healthcheck", {}).get("test", []))
        match = re.search(r"http://[\w.]+:(\d+)(/\S*)", test)
        if match:
            port, path = int(match[1]), match[2]
        else:
            port_text, _, rest = PROGRAMS[service].health.partition("/")
            port, path = int(port_text), "/" + rest
        return f"http://{LOOPBACK}:{self.local_port(service, port)}{path}"


def _components_pointing_at_absent(tree: dict[str, Any]) -> set[str]:
    """Collector exporter ids whose settings name a service that does not run here."""
    gone = set()
    for kind in ("exporters",):
        for component, settings in (tree.get(kind) or {}).items():
            text = json.dumps(settings)
            if any(re.search(rf"(//|\"){re.escape(h)}:\d", text) for h in ABSENT):
                gone.add(component)
    return gone


def start_order(services: dict[str, Any]) -> list[str]:
    """The local services, each after those it depends on (compose's depends_on)."""
    order: list[str] = []

    def visit(name: str, path: tuple[str, ...]) -> None:
        if name in order or name not in PROGRAMS:
            return
        if name in path:
            msg = f"{COMPOSE_FILE}: depends_on has a cycle through {name}"
            raise StackError(msg)
        for dependency in services[name].get("depends_on", {}):
            visit(dependency, (*path, name))
        order.append(name)

    for name in PROGRAMS:
        visit(name, ())
    return order
