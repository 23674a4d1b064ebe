"""The deploy/ stack hangs together: compose file, collector, backends, Grafana, k8s, example.

No Docker needed: the compose file is validated against the compose-spec JSON schema
(vendored by check-jsonschema), and every name, port and URL that one file uses is looked
up in the file that defines it. The example loop is run for real, in-process and as the
container would run it (against a loopback OTLP/HTTP receiver).
"""

import asyncio
import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from http.server import ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any
from typing import ClassVar
from urllib.parse import urlsplit

import pytest
import yaml
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from _dashboard_queries import COMPOSE_DIR
from _dashboard_queries import DASHBOARDS
from _dashboard_queries import DATASOURCES_FILE
from _dashboard_queries import DEPLOY
from _dashboard_queries import load_yaml
from _helpers import ROOT
from _helpers import import_file
from _helpers import providers_of
from _helpers import run_command
from stepstream.telemetry import attributes as attrs
from stepstream.testing import CapturedTelemetry

COMPOSE_FILE = COMPOSE_DIR / "docker-compose.yaml"
COLLECTOR_FILE = COMPOSE_DIR / "otel-collector.yaml"
K8S = DEPLOY / "k8s"
K8S_COLLECTOR_FILE = K8S / "otel-collector-config.yaml"
#: The collector image is distroless: no shell and no HTTP client for a Compose probe.
NO_HEALTHCHECK = {"otel-collector"}
#: Processors that must open and close every pipeline (the collector's recommended order).
FIRST_PROCESSOR, LAST_PROCESSOR = "memory_limiter", "batch"
PIN = re.compile(r"^[\w./-]+:(v?\d+\.\d+\.\d+)([\w.-]*)(@sha256:[0-9a-f]{64})?$")
#: PostgreSQL numbers its releases major.minor: 15.18 is one fixed release (no x.y.z).
POSTGRES_PIN = re.compile(r"^postgres:1\d\.\d+(-[a-z]+)?(@sha256:[0-9a-f]{64})?$")
#: The stepstream replicas of the cluster, and the load balancer in front of them.
REPLICAS = ("replica-1", "replica-2", "replica-3")
NGINX_FILE = COMPOSE_DIR / "nginx.conf"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    """The parsed deploy/compose/docker-compose.yaml."""
    data: dict[str, Any] = load_yaml(COMPOSE_FILE)
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The compose services by name."""
    found: dict[str, dict[str, Any]] = compose["services"]
    return found


def _exposed(service: dict[str, Any]) -> set[int]:
    """Container ports a service listens on: its expose list and published ports."""
    ports = {int(p) for p in service.get("expose", [])}
    for spec in service.get("ports", []):
        ports.add(int(str(spec).rsplit(":", 1)[-1].split("/")[0]))
    return ports


def _host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url if "://" in url else f"//{url}")
    assert parts.hostname is not None
    assert parts.port is not None, url
    return parts.hostname, parts.port


def _collector_version(image: str) -> tuple[int, ...]:
    match = PIN.match(image)
    assert match, image
    return tuple(int(x) for x in match.group(1).lstrip("v").split("."))


# -- the compose file -------------------------------------------------------------------


def _schema_check(path: Path) -> subprocess.CompletedProcess[str]:
    pytest.importorskip("check_jsonschema", reason="check-jsonschema is in the test extra")
    schema = ("--builtin-schema", "vendor.compose-spec")
    return run_command(sys.executable, "-m", "check_jsonschema", *schema, path, timeout=120)


def test_compose_file_validates_against_the_compose_spec_schema() -> None:
    """check-jsonschema's vendored compose-spec schema accepts docker-compose.yaml."""
    done = _schema_check(COMPOSE_FILE)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_schema_check_rejects_a_broken_compose_file(tmp_path: Path) -> None:
    """The schema check has teeth: a service with a misspelt key is refused."""
    broken = tmp_path / "docker-compose.yaml"
    broken.write_text("services:\n  app:\n    image: busybox:1.36.1\n    restart_policy: always\n")
    assert _schema_check(broken).returncode != 0


def test_every_image_is_pinned_to_a_version(services: dict[str, dict[str, Any]]) -> None:
    """Each service's image has an explicit x.y.z tag: no latest, no floating major."""
    expected = {
        "otel-collector": "otel/opentelemetry-collector-contrib",
        "jaeger": "jaegertracing/jaeger",
        "tempo": "grafana/tempo",
        "loki": "grafana/loki",
        "prometheus": "prom/prometheus",
        "grafana": "grafana/grafana",
        "example": "stepstream-example",
        "postgres": "postgres",
        "lb": "nginx",
        **dict.fromkeys(REPLICAS, "stepstream-example"),
    }
    assert set(services) == set(expected)
    for name, service in services.items():
        image = service["image"]
        assert image.split(":")[0] == expected[name], name
        pinned = POSTGRES_PIN if name == "postgres" else PIN
        assert pinned.match(image), f"{name}: {image} is not pinned"
        assert "latest" not in image, name
    assert _collector_version(services["jaeger"]["image"])[0] == 2, "Jaeger v2"
    assert _collector_version(services["loki"]["image"])[0] == 3, "Loki 3.x"
    assert _collector_version(services["prometheus"]["image"])[0] == 3, "Prometheus 3.x"


def test_every_service_but_the_collector_has_a_healthcheck(
    services: dict[str, dict[str, Any]],
) -> None:
    """Healthchecks probe a port the service listens on; only the distroless collector lacks one."""
    for name, service in services.items():
        if name in NO_HEALTHCHECK:
            assert "healthcheck" not in service, name
            continue
        check = service.get("healthcheck")
        assert check, f"{name} has no healthcheck"
        test = check["test"]
        assert test[0] in {"CMD", "CMD-SHELL"}, name
        for key in ("interval", "timeout", "retries"):
            assert key in check, f"{name}: healthcheck {key}"
        urls = re.findall(r"http://[^\s'\"]+", " ".join(test))
        for url in urls:
            host, port = _host_port(url)
            assert host in {"127.0.0.1", "localhost"}, name
            assert port in _exposed(service), f"{name}: probes {port}"
    assert "distroless" in COMPOSE_FILE.read_text(), (
        "the missing collector healthcheck is explained"
    )


def test_dependencies_have_conditions_and_services_restart(
    services: dict[str, dict[str, Any]],
) -> None:
    """depends_on uses conditions a dependency can meet, and every service has a restart policy."""
    for name, service in services.items():
        assert service.get("restart") in {"unless-stopped", "always", "on-failure"}, name
        depends = service.get("depends_on", {})
        assert isinstance(depends, dict), f"{name}: depends_on needs the long form"
        for dep, spec in depends.items():
            assert dep in services, f"{name} depends on unknown {dep}"
            condition = spec["condition"]
            assert condition in {"service_healthy", "service_started"}, name
            if condition == "service_healthy":
                assert "healthcheck" in services[dep], f"{name} waits for {dep}'s health"
            else:
                assert dep in NO_HEALTHCHECK, f"{name} could wait for {dep} to be healthy"
    assert set(services["grafana"]["depends_on"]) == {"prometheus", "loki", "tempo", "jaeger"}
    assert set(services["example"]["depends_on"]) == {"otel-collector"}


def test_published_ports_bind_to_loopback_only(services: dict[str, dict[str, Any]]) -> None:
    """Every published port is 127.0.0.1:host:container with the same number on both sides."""
    published: set[int] = set()
    for name, service in services.items():
        for spec in service.get("ports", []):
            match = re.fullmatch(r"127\.0\.0\.1:(\d+):(\d+)", str(spec))
            assert match, f"{name}: port {spec} is not bound to 127.0.0.1"
            assert match.group(1) == match.group(2), f"{name}: {spec}"
            published.add(int(match.group(1)))
    assert {4317, 4318, 3000, 16686, 9090, 3100, 3200, 8080} <= published
    readme = (DEPLOY / "README.md").read_text()
    for port in published:
        assert f"| {port} |" in readme, f"deploy/README.md does not explain port {port}"


# -- the cluster: postgres, the replicas, the load balancer ------------------------------


def _flags(command: list[str]) -> dict[str, str]:
    """``--name=value`` arguments of a command, by name."""
    found = {}
    for arg in command:
        name, sep, value = str(arg).partition("=")
        if sep and name.startswith("--"):
            found[name] = value
    return found


def test_replicas_have_their_own_instance_ids_on_one_database(
    services: dict[str, dict[str, Any]],
) -> None:
    """Each replica serves the cluster app durably on the same Postgres, under its own id."""
    postgres = services["postgres"]
    env = postgres["environment"]
    ids, databases = [], set()
    for name in REPLICAS:
        command = services[name]["command"]
        assert command[:3] == ["stepstream", "serve", "deploy/cluster_app.py"], name
        flags = _flags(command)
        ids.append(flags["--instance-id"])
        assert flags["--instance-id"] == name, "the instance id is the service's name"
        databases.add(flags["--durable"])
        assert flags["--host"] == "0.0.0.0", name  # noqa: S104 - inside the container network
        assert int(flags["--port"]) in _exposed(services[name]), name
        assert float(flags["--failover-after"]) > 0, name
        assert services[name]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert len(set(ids)) == len(REPLICAS), f"instance ids repeat: {ids}"
    (database,) = databases
    parts = urlsplit(database)
    assert parts.scheme == "postgresql"
    assert (parts.hostname, parts.port) == ("postgres", 5432)
    assert parts.port in _exposed(postgres)
    assert (parts.username, parts.password) == (env["POSTGRES_USER"], env["POSTGRES_PASSWORD"])
    assert parts.path == f"/{env['POSTGRES_DB']}"
    assert (DEPLOY / "cluster_app.py").is_file()


def test_replicas_are_built_like_the_example_probed_ready_and_send_to_the_collector(
    services: dict[str, dict[str, Any]],
) -> None:
    """The replicas run the example's image, are healthy on /health/ready, export OTLP."""
    example = services["example"]
    collector = load_yaml(COLLECTOR_FILE)
    http = _host_port(collector["receivers"]["otlp"]["protocols"]["http"]["endpoint"])[1]
    for name in REPLICAS:
        replica = services[name]
        assert replica["build"] == example["build"], name
        assert replica["image"] == example["image"], name
        probe = " ".join(replica["healthcheck"]["test"])
        (url,) = re.findall(r"http://[^\s'\"]+", probe)
        assert urlsplit(url).path == "/health/ready", name
        assert _host_port(url)[1] == int(_flags(replica["command"])["--port"]), name
        endpoint = replica["environment"]["OTEL_EXPORTER_OTLP_ENDPOINT"]
        assert _host_port(endpoint) == ("otel-collector", http), name
        assert replica["environment"]["OTEL_SERVICE_NAME"] == "stepstream-cluster", name
        assert "ports" not in replica, f"{name} is reached through the load balancer only"
    text = (DEPLOY / "Dockerfile").read_text()
    assert "COPY deploy/example_loop.py deploy/cluster_app.py ./deploy/" in text
    assert '".[server,durable]"' in text, "the replicas need the server and durable extras"
    assert "psycopg[binary]" in text, "the slim image has no libpq"
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
    assert "!deploy/cluster_app.py" in ignore


def test_postgres_keeps_its_data_in_a_volume_and_is_probed_by_pg_isready(
    services: dict[str, dict[str, Any]], compose: dict[str, Any]
) -> None:
    """Postgres: a named volume on its data directory, pg_isready on its user and database."""
    postgres = services["postgres"]
    (volume,) = postgres["volumes"]
    source, target = str(volume).split(":")[:2]
    assert target == "/var/lib/postgresql/data"
    assert source in compose["volumes"], "a named volume, declared at the top level"
    test = postgres["healthcheck"]["test"]
    assert test[:2] == ["CMD", "pg_isready"]
    env = postgres["environment"]
    assert test[test.index("-U") + 1] == env["POSTGRES_USER"]
    assert test[test.index("-d") + 1] == env["POSTGRES_DB"]
    assert "ports" not in postgres, "the database is reached inside the network only"


def _nginx_directives(block: str) -> list[list[str]]:
    """The directives of nginx.conf's text ``block`` (comments dropped), split in words."""
    text = re.sub(r"#[^\n]*", "", block)
    return [d.split() for d in re.split(r"[;{}]", text) if d.strip()]


def _nginx_block(name: str) -> str:
    """The text of the first ``name ... { ... }`` block of nginx.conf (no nested blocks)."""
    text = re.sub(r"#[^\n]*", "", NGINX_FILE.read_text())
    match = re.search(rf"\b{name}\b[^{{]*\{{([^{{}}]*)\}}", text)
    assert match, f"nginx.conf has no {name} block"
    return match.group(1)


def test_the_load_balancer_fronts_exactly_the_replicas(
    services: dict[str, dict[str, Any]],
) -> None:
    """nginx's upstream servers are the replicas, each at the port it serves on."""
    lb = services["lb"]
    mounts = dict(str(v).split(":")[:2] for v in lb["volumes"])
    assert (COMPOSE_DIR / next(iter(mounts))).resolve() == NGINX_FILE
    assert next(iter(mounts.values())) == "/etc/nginx/nginx.conf"
    upstream = [d for d in _nginx_directives(_nginx_block("upstream")) if d[0] == "server"]
    targets = {_host_port(d[1]) for d in upstream}
    wanted = {(name, int(_flags(services[name]["command"])["--port"])) for name in REPLICAS}
    assert targets == wanted
    assert set(lb["depends_on"]) == set(REPLICAS)
    listen = [d for d in _nginx_directives(NGINX_FILE.read_text()) if d[0] == "listen"]
    assert [int(d[1]) for d in listen] == [8080]
    assert "127.0.0.1:8080:8080" in lb["ports"]


def test_the_load_balancer_passes_event_streams_through_unbuffered() -> None:
    """SSE through nginx: no response buffering, HTTP/1.1 upstream, an hour's read timeout."""
    directives = _nginx_directives(_nginx_block("location"))
    location = {d[0]: d[1:] for d in directives}
    assert location["proxy_pass"] == ["http://stepstream"]
    assert location["proxy_buffering"] == ["off"]
    assert location["proxy_cache"] == ["off"]
    assert location["proxy_http_version"] == ["1.1"]
    headers = {d[1]: d[2:] for d in directives if d[0] == "proxy_set_header"}
    assert headers["Connection"] == ['""'], "keep-alive to the replicas, no Connection: close"
    timeout = location["proxy_read_timeout"][0]
    assert timeout.endswith("s")
    assert int(timeout[:-1]) >= 3600
    assert "non_idempotent" not in location["proxy_next_upstream"], "a POST is never sent twice"


def test_nginx_accepts_the_config(tmp_path: Path) -> None:
    """`nginx -t` accepts nginx.conf, the replicas' names made loopback (where nginx exists)."""
    nginx = shutil.which("nginx") or (
        "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None
    )
    if nginx is None:
        pytest.skip("nginx is not installed; the other tests read the config")
    text = NGINX_FILE.read_text()
    for name in REPLICAS:
        text = text.replace(f"{name}:", "127.0.0.1:")
    text = text.replace("pid /tmp/nginx.pid;", f"pid {tmp_path}/nginx.pid;")
    text = text.replace("http {", f"http {{\n    client_body_temp_path {tmp_path}/body;", 1)
    config = tmp_path / "nginx.conf"
    config.write_text(text)
    done = run_command(nginx, "-t", "-p", tmp_path, "-c", config, "-e", tmp_path / "error.log")
    assert done.returncode == 0, done.stderr


# -- the collector ----------------------------------------------------------------------


def _pipeline_usage(config: dict[str, Any]) -> dict[str, set[str]]:
    used: dict[str, set[str]] = {"receivers": set(), "processors": set(), "exporters": set()}
    for pipeline in config["service"]["pipelines"].values():
        for kind, ids in used.items():
            ids.update(pipeline.get(kind, []))
    used["extensions"] = set(config["service"].get("extensions", []))
    return used


@pytest.mark.parametrize("path", [COLLECTOR_FILE, K8S_COLLECTOR_FILE], ids=["compose", "k8s"])
def test_collector_components_are_defined_if_and_only_if_used(path: Path) -> None:
    """Each receiver, processor, exporter and extension used in a pipeline is defined; no others."""
    config = load_yaml(path)
    used = _pipeline_usage(config)
    for kind, ids in used.items():
        defined = set(config.get(kind) or {})
        assert ids - defined == set(), f"{path.name}: {kind} used but not defined"
        assert defined - ids == set(), f"{path.name}: {kind} defined but not used"
    assert set(config["service"]["pipelines"]) == {"traces", "metrics", "logs"}
    for name, pipeline in config["service"]["pipelines"].items():
        assert pipeline["receivers"] == ["otlp"], name
        assert pipeline["processors"][0] == FIRST_PROCESSOR, name
        assert pipeline["processors"][-1] == LAST_PROCESSOR, name


@pytest.mark.parametrize("path", [COLLECTOR_FILE, K8S_COLLECTOR_FILE], ids=["compose", "k8s"])
def test_collector_component_types_exist_in_the_pinned_version(
    path: Path, services: dict[str, dict[str, Any]]
) -> None:
    """Exporter ids use the pinned collector's names: otlp_grpc/otlp_http from 0.144 on."""
    version = _collector_version(services["otel-collector"]["image"])
    otlp_grpc, otlp_http = (
        ("otlp_grpc", "otlp_http") if version >= (0, 144) else ("otlp", "otlphttp")
    )
    known = {
        "receivers": {"otlp"},
        "processors": {"memory_limiter", "batch", "attributes"},
        "exporters": {otlp_grpc, otlp_http, "debug"},
        "extensions": {"health_check"},
    }
    config = load_yaml(path)
    for kind, types in known.items():
        for component in config[kind]:
            assert component.split("/")[0] in types, f"{path.name}: {kind} {component}"
    assert f"contrib {'.'.join(map(str, version))}" in path.read_text(), "version named in comment"


def test_collector_exporters_point_at_compose_services(services: dict[str, dict[str, Any]]) -> None:
    """Each exporter endpoint is a compose service, on a port it exposes, at the right path."""
    config = load_yaml(COLLECTOR_FILE)
    targets: dict[str, tuple[str, int, str]] = {}
    for component, spec in config["exporters"].items():
        endpoint = spec["endpoint"]
        host, port = _host_port(endpoint)
        assert host in services, f"{component}: {host} is not a compose service"
        assert port in _exposed(services[host]), f"{component}: {host} does not expose {port}"
        path = urlsplit(endpoint).path if "://" in endpoint else ""
        targets[host] = (component.split("/")[0], port, path)
    assert targets == {
        "jaeger": ("otlp_grpc", 4317, ""),
        "tempo": ("otlp_grpc", 4317, ""),
        "prometheus": ("otlp_http", 9090, "/api/v1/otlp"),
        "loki": ("otlp_http", 3100, "/otlp"),
    }
    depends = set(services["otel-collector"]["depends_on"])
    assert depends == set(targets), "the collector starts after the backends it writes to"
    pipelines = config["service"]["pipelines"]
    assert set(pipelines["traces"]["exporters"]) == {"otlp_grpc/jaeger", "otlp_grpc/tempo"}
    assert pipelines["metrics"]["exporters"] == ["otlp_http/prometheus"]
    assert pipelines["logs"]["exporters"] == ["otlp_http/loki"]


def test_collector_receivers_and_health_port_are_published(
    services: dict[str, dict[str, Any]],
) -> None:
    """The OTLP receivers listen on all interfaces at ports compose publishes, as does health."""
    config = load_yaml(COLLECTOR_FILE)
    collector = services["otel-collector"]
    ports = [
        config["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"],
        config["receivers"]["otlp"]["protocols"]["http"]["endpoint"],
        config["extensions"]["health_check"]["endpoint"],
    ]
    for endpoint in ports:
        host, port = _host_port(endpoint)
        assert host == "0.0.0.0", endpoint  # noqa: S104 - inside the container network
        assert f"127.0.0.1:{port}:{port}" in collector["ports"], endpoint
    readers = config["service"]["telemetry"]["metrics"]["readers"]
    assert readers[0]["pull"]["exporter"]["prometheus"]["port"] in _exposed(collector)


def test_collector_drops_the_duplicate_trace_ids_of_log_records() -> None:
    """The logs pipeline deletes the trace_id/span_id attributes the record already carries."""
    config = load_yaml(COLLECTOR_FILE)
    actions = config["processors"]["attributes/drop_log_trace_copies"]["actions"]
    assert {(a["key"], a["action"]) for a in actions} == {
        (attrs.KEY_TRACE_ID, "delete"),
        (attrs.KEY_SPAN_ID, "delete"),
    }
    logs = config["service"]["pipelines"]["logs"]["processors"]
    assert "attributes/drop_log_trace_copies" in logs
    for name in ("traces", "metrics"):
        assert "attributes/drop_log_trace_copies" not in config["service"]["pipelines"][name]


# -- the backends -----------------------------------------------------------------------


def test_tempo_receives_otlp_and_feeds_prometheus(services: dict[str, dict[str, Any]]) -> None:
    """Tempo listens where the collector sends, and remote-writes span metrics to Prometheus."""
    tempo = load_yaml(COMPOSE_DIR / "tempo.yaml")
    grpc = tempo["distributor"]["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"]
    assert _host_port(grpc)[1] == 4317
    assert tempo["server"]["http_listen_port"] in _exposed(services["tempo"])
    (remote,) = tempo["metrics_generator"]["storage"]["remote_write"]
    host, port = _host_port(remote["url"])
    assert (host, urlsplit(remote["url"]).path) == ("prometheus", "/api/v1/write")
    assert port in _exposed(services["prometheus"])
    assert remote["send_exemplars"] is True
    assert "--web.enable-remote-write-receiver" in services["prometheus"]["command"]
    processors = tempo["overrides"]["defaults"]["metrics_generator"]["processors"]
    assert {"span-metrics", "service-graphs"} <= set(processors)
    assert "-config.file=/etc/tempo/tempo.yaml" in services["tempo"]["command"]


def test_loki_keeps_ids_in_structured_metadata(services: dict[str, dict[str, Any]]) -> None:
    """Loki 3 runs the v13 tsdb schema with structured metadata allowed, on its exposed port."""
    loki = load_yaml(COMPOSE_DIR / "loki.yaml")
    assert loki["limits_config"]["allow_structured_metadata"] is True
    (schema,) = loki["schema_config"]["configs"]
    assert (schema["store"], schema["schema"]) == ("tsdb", "v13")
    assert loki["server"]["http_listen_port"] in _exposed(services["loki"])
    assert "otlp_config" not in loki["limits_config"], "the default keeps attributes as metadata"


def test_prometheus_takes_otlp_with_exemplars_and_scrapes_compose_services(
    services: dict[str, dict[str, Any]],
) -> None:
    """Prometheus 3 has its OTLP receiver and exemplar storage on; scrape targets exist."""
    command = services["prometheus"]["command"]
    assert "--web.enable-otlp-receiver" in command
    assert "--enable-feature=exemplar-storage" in command
    assert "--config.file=/etc/prometheus/prometheus.yaml" in command
    config = load_yaml(COMPOSE_DIR / "prometheus.yaml")
    assert "service.name" in config["otlp"]["promote_resource_attributes"]
    for job in config["scrape_configs"]:
        for static in job["static_configs"]:
            for target in static["targets"]:
                host, port = _host_port(target)
                if host == "localhost":
                    host = "prometheus"
                assert host in services, f"{job['job_name']}: {host}"
                assert port in _exposed(services[host]), f"{job['job_name']}: {target}"


# -- Grafana ----------------------------------------------------------------------------


def test_grafana_datasources_point_at_compose_services(services: dict[str, dict[str, Any]]) -> None:
    """Each datasource URL is a compose service port, and every link targets a defined uid."""
    datasources = load_yaml(DATASOURCES_FILE)["datasources"]
    by_uid = {d["uid"]: d for d in datasources}
    assert {d["type"] for d in datasources} == {"prometheus", "tempo", "loki", "jaeger"}
    for ds in datasources:
        host, port = _host_port(ds["url"])
        assert host == ds["type"], ds["name"]
        assert port in _exposed(services[host]), f"{ds['name']}: {ds['url']}"
    prometheus = by_uid["prometheus"]["jsonData"]
    (exemplar,) = prometheus["exemplarTraceIdDestinations"]
    assert exemplar["name"] == "trace_id"
    assert by_uid[exemplar["datasourceUid"]]["type"] == "tempo"
    for uid in ("tempo", "jaeger"):
        logs = by_uid[uid]["jsonData"]["tracesToLogsV2"]
        assert by_uid[logs["datasourceUid"]]["type"] == "loki", uid
        assert 'trace_id="$${__trace.traceId}"' in logs["query"], uid
    (derived,) = by_uid["loki"]["jsonData"]["derivedFields"]
    assert by_uid[derived["datasourceUid"]]["type"] == "tempo"
    assert derived["url"] == "$${__value.raw}", "escaped from the provisioning's env expansion"
    tempo = by_uid["tempo"]["jsonData"]
    assert by_uid[tempo["serviceMap"]["datasourceUid"]]["type"] == "prometheus"
    assert by_uid[tempo["tracesToMetrics"]["datasourceUid"]]["type"] == "prometheus"


def test_grafana_loads_the_repository_dashboards_for_anonymous_viewers(
    services: dict[str, dict[str, Any]],
) -> None:
    """../../dashboards is mounted where the provider looks; anonymous users are viewers."""
    grafana = services["grafana"]
    mounts: dict[str, str] = {}
    for volume in grafana["volumes"]:
        source, target = str(volume).split(":")[:2]
        mounts[source] = target
    source = next(s for s, target in mounts.items() if target.startswith("/var/lib/grafana/dash"))
    assert (COMPOSE_DIR / source).resolve() == DASHBOARDS
    providers = load_yaml(COMPOSE_DIR / "grafana/provisioning/dashboards/dashboards.yaml")
    (provider,) = providers["providers"]
    assert provider["options"]["path"] == mounts[source]
    for kind in ("datasources", "dashboards"):
        provisioned = next(s for s, t in mounts.items() if t == f"/etc/grafana/provisioning/{kind}")
        assert (COMPOSE_DIR / provisioned).resolve() == COMPOSE_DIR / "grafana/provisioning" / kind
    env = grafana["environment"]
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "true"
    assert env["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"
    home = env["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home.startswith(mounts[source] + "/")
    assert (DASHBOARDS / Path(home).name).is_file()


# -- the example service ----------------------------------------------------------------


def test_example_service_builds_the_dockerfile_and_sends_to_the_collector(
    services: dict[str, dict[str, Any]],
) -> None:
    """The example is built from deploy/Dockerfile and exports to the collector's HTTP port."""
    example = services["example"]
    assert (COMPOSE_DIR / example["build"]["context"]).resolve() == ROOT
    dockerfile = ROOT / example["build"]["dockerfile"]
    assert dockerfile == DEPLOY / "Dockerfile"
    host, port = _host_port(example["environment"]["OTEL_EXPORTER_OTLP_ENDPOINT"])
    collector = load_yaml(COLLECTOR_FILE)
    http = collector["receivers"]["otlp"]["protocols"]["http"]["endpoint"]
    assert (host, port) == ("otel-collector", _host_port(http)[1])
    text = dockerfile.read_text()
    (base,) = re.findall(r"^FROM (\S+)", text, flags=re.MULTILINE)
    assert PIN.match(base), base
    assert "COPY deploy/example_loop.py" in text
    assert 'CMD ["python", "deploy/example_loop.py"]' in text
    assert re.search(r"^USER \d+", text, flags=re.MULTILINE), "runs as a non-root user"
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text()
    assert ignore.splitlines()[1] == "**", "the build context is an allow-list"


def test_example_healthcheck_reads_the_loops_heartbeat(services: dict[str, dict[str, Any]]) -> None:
    """The example's healthcheck file is the heartbeat the loop touches after every round."""
    loop = _load_example_loop()
    probe = " ".join(services["example"]["healthcheck"]["test"])
    assert str(loop.HEARTBEAT) in probe
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert f"STEPSTREAM_EXAMPLE_HEARTBEAT={loop.HEARTBEAT}" in dockerfile


def _load_example_loop() -> ModuleType:
    return import_file(DEPLOY / "example_loop.py", "_deploy_example_loop")


def test_one_round_runs_every_example_and_every_outcome(sdk: CapturedTelemetry) -> None:
    """A round runs each example workflow and ends runs ok, in error and by timeout."""
    loop = _load_example_loop()
    result = asyncio.run(loop.run_round(**providers_of(sdk)))
    examples = set(loop.load_examples())
    assert {"streaming", "retries", "fan_out"} <= examples
    assert result.total("ok") >= len(examples)
    assert result.total("error") >= 1, "ToolCallWorkflow(failures=3) fails"
    assert result.total("timeout") >= 1, "DeadlineWorkflow times out"
    names = {span.name for span in sdk.spans}
    for workflow in ("MyWorkflow", "FlakyWorkflow", "ToolCallWorkflow", "DeadlineWorkflow"):
        assert f"invoke_workflow {workflow}" in names
        assert f"example_loop {workflow}" in names
    runs = [s for s in sdk.spans if s.name.startswith("invoke_workflow")]
    parents = {s.context.span_id: s for s in sdk.spans if s.context}
    for run in runs:
        assert run.parent is not None
        assert parents[run.parent.span_id].name.split()[0] in {"example_loop", "run_step"}


class _OtlpSink(BaseHTTPRequestHandler):
    """Accepts OTLP/HTTP protobuf posts and keeps them by path."""

    received: ClassVar[dict[str, list[bytes]]] = {}
    lock: ClassVar[threading.Lock] = threading.Lock()

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        assert self.headers.get("Content-Type") == "application/x-protobuf"
        with self.lock:
            self.received.setdefault(self.path, []).append(body)
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - base signature
        del format, args


@pytest.fixture
def otlp_receiver() -> Iterator[tuple[str, dict[str, list[bytes]]]]:
    """An OTLP/HTTP receiver on 127.0.0.1 standing in for the collector."""
    _OtlpSink.received = {}
    server = ThreadingHTTPServer(("127.0.0.1", 0), _OtlpSink)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", _OtlpSink.received
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_the_loop_sends_traces_metrics_and_logs_over_otlp_http(
    otlp_receiver: tuple[str, dict[str, list[bytes]]], tmp_path: Path
) -> None:
    """Run as the container runs it, the loop posts traces, metrics and logs over OTLP/HTTP."""
    endpoint, received = otlp_receiver
    env = {
        **os.environ,
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_SERVICE_NAME": "stepstream-example",
        "STEPSTREAM_EXAMPLE_HEARTBEAT": str(tmp_path / "heartbeat"),
    }
    for variable in ("OTEL_SDK_DISABLED", "OTEL_TRACES_EXPORTER", "OTEL_METRICS_EXPORTER"):
        env.pop(variable, None)
    env.pop("OTEL_LOGS_EXPORTER", None)
    loop = (DEPLOY / "example_loop.py", "--rounds", "1", "--interval", "0")
    done = run_command(sys.executable, *loop, cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "heartbeat").is_file()
    assert not (tmp_path / ".stepstream").exists(), "with an endpoint nothing goes to files"
    assert set(received) == {"/v1/traces", "/v1/metrics", "/v1/logs"}

    spans = set()
    for body in received["/v1/traces"]:
        traces = ExportTraceServiceRequest.FromString(body)
        for resource_spans in traces.resource_spans:
            service = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            assert service["service.name"] == "stepstream-example"
            spans |= {s.name for ss in resource_spans.scope_spans for s in ss.spans}
    assert {"invoke_workflow ToolCallWorkflow", "run_step call_tool"} <= spans

    metric_names = set()
    for body in received["/v1/metrics"]:
        for rm in ExportMetricsServiceRequest.FromString(body).resource_metrics:
            metric_names |= {m.name for sm in rm.scope_metrics for m in sm.metrics}
    assert {
        attrs.METRIC_RUN_DURATION,
        attrs.METRIC_STEP_DURATION,
        attrs.METRIC_EVENTS_STREAMED,
        attrs.METRIC_RUNS_ACTIVE,
        attrs.METRIC_STEP_RETRIES,
    } <= metric_names

    bodies, keys, traced = set(), set(), 0
    for body in received["/v1/logs"]:
        for rl in ExportLogsServiceRequest.FromString(body).resource_logs:
            for sl in rl.scope_logs:
                for record in sl.log_records:
                    bodies.add(record.body.string_value)
                    keys |= {a.key for a in record.attributes}
                    traced += len(record.trace_id) == 16
    assert {attrs.LOG_RUN_STARTED, attrs.LOG_STREAM_EVENT, attrs.LOG_STEP_FAILED} <= bodies
    assert {attrs.KEY_RUN_ID, attrs.KEY_WORKFLOW, attrs.KEY_EVENT_TYPE} <= keys
    assert traced > 0, "log records carry the trace context Loki stores as trace_id"


# -- Kubernetes -------------------------------------------------------------------------


def test_kustomization_resources_and_generators_exist() -> None:
    """Every resource and generator file the kustomization names exists."""
    kustomization = load_yaml(K8S / "kustomization.yaml")
    for resource in kustomization["resources"]:
        assert (K8S / resource).is_file(), resource
    for generator in kustomization["configMapGenerator"]:
        for spec in generator["files"]:
            assert (K8S / spec.split("=")[-1]).is_file(), spec


def test_dashboards_configmap_carries_the_sidecar_label_and_current_copies() -> None:
    """The dashboards ConfigMap has the label grafana_dashboard "1"; its files match dashboards/."""
    kustomization = load_yaml(K8S / "kustomization.yaml")
    (generator,) = [g for g in kustomization["configMapGenerator"] if "dashboard" in g["name"]]
    assert generator["options"]["labels"] == {"grafana_dashboard": "1"}
    files = {Path(f).name: K8S / f for f in generator["files"]}
    assert set(files) == {p.name for p in DASHBOARDS.glob("*.json")}
    for name, copy in files.items():
        assert copy.read_bytes() == (DASHBOARDS / name).read_bytes(), (
            f"deploy/k8s/dashboards/{name} is stale: cp dashboards/*.json deploy/k8s/dashboards/"
        )


def _k8s_documents() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name in {"kustomization.yaml", K8S_COLLECTOR_FILE.name}:
            continue
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def test_k8s_workloads_are_pinned_probed_and_wired_to_the_collector(
    services: dict[str, dict[str, Any]],
) -> None:
    """The k8s Deployments use the compose images, have probes, and the app targets the Service."""
    deployments = {d["metadata"]["name"]: d for d in _k8s_documents() if d["kind"] == "Deployment"}
    assert set(deployments) == {"otel-collector", "stepstream-example"}
    images = {}
    for name, deployment in deployments.items():
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        images[name] = container["image"]
        assert PIN.match(container["image"]), name
        assert container.get("livenessProbe"), name
        assert container["resources"]["limits"]["memory"], name
    assert images["otel-collector"] == services["otel-collector"]["image"]
    assert images["stepstream-example"] == services["example"]["image"]
    service = next(d for d in _k8s_documents() if d["kind"] == "Service")
    app = deployments["stepstream-example"]["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in app["env"]}
    host, port = _host_port(env["OTEL_EXPORTER_OTLP_ENDPOINT"])
    assert host == service["metadata"]["name"]
    assert port in {p["port"] for p in service["spec"]["ports"]}
    collector = deployments["otel-collector"]["spec"]["template"]["spec"]["containers"][0]
    health = load_yaml(K8S_COLLECTOR_FILE)["extensions"]["health_check"]["endpoint"]
    named = {p["name"]: p["containerPort"] for p in collector["ports"]}
    assert named[collector["readinessProbe"]["httpGet"]["port"]] == _host_port(health)[1]


def test_k8s_collector_config_matches_the_compose_one_but_for_comments() -> None:
    """The k8s collector config has the compose pipelines and backend names."""
    assert load_yaml(K8S_COLLECTOR_FILE) == load_yaml(COLLECTOR_FILE)


def test_kustomize_builds_the_manifests() -> None:
    """kubectl kustomize renders the dashboards ConfigMap with its label (where kubectl exists)."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed; the other k8s tests check the files")
    done = run_command(kubectl, "kustomize", K8S)
    assert done.returncode == 0, done.stderr
    docs = [d for d in yaml.safe_load_all(done.stdout) if d]
    maps = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ConfigMap"}
    dashboards = maps["stepstream-dashboards"]
    assert dashboards["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert dashboards["metadata"]["namespace"] == "stepstream"
    assert set(dashboards["data"]) == {"overview.json", "run-explorer.json", "cluster.json"}
    collector_maps = [n for n in maps if n.startswith("otel-collector-config")]
    assert len(collector_maps) == 1
    sets = {d["metadata"]["name"]: d for d in docs if d["kind"] == "StatefulSet"}
    assert set(sets) == {"postgres", "stepstream"}
    assert all(d["metadata"]["namespace"] == "stepstream" for d in sets.values())
    (replica,) = sets["stepstream"]["spec"]["template"]["spec"]["containers"]
    assert replica["image"] == "stepstream-example:0.1.0"
    assert {d["metadata"]["name"] for d in docs if d["kind"] == "Service"} >= {
        "postgres",
        "stepstream",
        "stepstream-replicas",
    }


def _statefulsets() -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in _k8s_documents() if d["kind"] == "StatefulSet"}


def _k8s_service(name: str) -> dict[str, Any]:
    return next(
        d for d in _k8s_documents() if d["kind"] == "Service" and d["metadata"]["name"] == name
    )


def test_k8s_postgres_is_a_pinned_statefulset_probed_by_pg_isready(
    services: dict[str, dict[str, Any]],
) -> None:
    """Postgres: the compose image, pg_isready as readiness, a volume claim, a Service."""
    postgres = _statefulsets()["postgres"]
    (container,) = postgres["spec"]["template"]["spec"]["containers"]
    assert container["image"] == services["postgres"]["image"]
    assert container["readinessProbe"]["exec"]["command"][0] == "pg_isready"
    assert container["livenessProbe"], "probed for liveness too"
    (claim,) = postgres["spec"]["volumeClaimTemplates"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts[claim["metadata"]["name"]] == "/var/lib/postgresql/data"
    service = _k8s_service("postgres")
    assert service["spec"]["selector"] == postgres["spec"]["selector"]["matchLabels"]
    assert [p["port"] for p in service["spec"]["ports"]] == [5432]


def test_k8s_replicas_keep_their_names_as_instance_ids_and_are_probed(
    services: dict[str, dict[str, Any]],
) -> None:
    """Three replicas in a StatefulSet: the pod's name is the instance id (stable across
    restarts), ready on /health/ready, live on /health, one database, behind a Service."""
    replicas = _statefulsets()["stepstream"]
    spec = replicas["spec"]
    assert spec["replicas"] == 3
    (container,) = spec["template"]["spec"]["containers"]
    assert container["image"] == services["replica-1"]["image"]
    env = {e["name"]: e for e in container["env"]}
    instance = env["STEPSTREAM_INSTANCE_ID"]["valueFrom"]["fieldRef"]["fieldPath"]
    assert instance == "metadata.name", "the pod's stable name is its instance id"
    named = {p["name"]: p["containerPort"] for p in container["ports"]}
    ready, live = container["readinessProbe"]["httpGet"], container["livenessProbe"]["httpGet"]
    assert (ready["path"], named[ready["port"]]) == ("/health/ready", 8000)
    assert (live["path"], named[live["port"]]) == ("/health", 8000)
    # The compose replicas' command, the instance id from the environment instead.
    compose = [a for a in services["replica-1"]["command"] if not a.startswith("--instance-id")]
    flags = _flags(container["command"])
    assert flags["--durable"] == "$(DATABASE_URL)"
    assert "--instance-id" not in flags
    assert {k: v for k, v in flags.items() if k != "--durable"} == {
        k: v for k, v in _flags(compose).items() if k != "--durable"
    }
    secret = env["DATABASE_URL"]["valueFrom"]["secretKeyRef"]
    (stored,) = [
        d
        for d in _k8s_documents()
        if d["kind"] == "Secret" and d["metadata"]["name"] == secret["name"]
    ]
    database = urlsplit(stored["stringData"][secret["key"]])
    assert (database.hostname, database.port) == ("postgres", 5432)
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"]["value"] == "http://otel-collector:4318"
    labels = spec["template"]["metadata"]["labels"]
    for name in ("stepstream", spec["serviceName"]):
        service = _k8s_service(name)
        assert service["spec"]["selector"].items() <= labels.items(), name
        assert {p["targetPort"] for p in service["spec"]["ports"]} == {"http"}
    assert _k8s_service(spec["serviceName"])["spec"]["clusterIP"] == "None"
