"""Benchmark `stepstream serve` against llama-agents-server 0.8.x, side by side, in one run.

    python benchmarks/server.py            # the full comparison (about 10 minutes)
    python benchmarks/server.py --quick    # smoke mode: tiny sizes, stepstream only
    python benchmarks/server.py --render   # redo server.md from server.json

Both servers are real uvicorn processes on 127.0.0.1 serving the same workflows
(benchmarks/server_app.py): stepstream through `stepstream serve` with its default
telemetry (the embedded store, in a temporary directory), the peer through uvicorn with
no telemetry and no access log. The peer is installed by this script into its own
virtualenv (.cache/bench-server-peer). The load generator (benchmarks/server_load.py)
runs in a process of its own, one phase at a time, the same against both servers;
stepstream and the peer alternate A B A B and each figure is the median of the
repetitions. Both servers sample their event loop's lag (how late a 5 ms timer fires)
during every phase. Results: benchmarks/results/server.json and server.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
LOAD = HERE / "server_load.py"
PEER = ["llama-agents-server==0.8.0"]
PEER_VENV = ROOT / ".cache" / "bench-server-peer"
OURS, THEIRS = "stepstream", "peer"

# Phase sizes: (full, quick).
SIZES: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "runs": ({"n": 4000, "concurrency": 16, "warmup": 320}, {"n": 64, "warmup": 16}),
    "stream1": ({"subs": 1, "n": 30_000}, {"subs": 1, "n": 300}),
    "stream100": ({"subs": 100, "n": 2_000}, {"subs": 10, "n": 50}),
    "latency": ({"n": 5_000, "rate": 1000}, {"n": 200, "rate": 1000}),
}
IDLE_STREAMS = (900, 20)
BURST = (500, 20)
LAG_MAX_MS = 20.0
RATIO_TARGET = 3.0


def peer_python(venv: Path = PEER_VENV, packages: tuple[str, ...] = tuple(PEER)) -> Path:
    """The python of a virtualenv holding exactly ``packages`` (made or remade if needed)."""
    python = venv / "bin" / "python"
    marker = venv / ".installed"
    if python.exists() and marker.exists() and marker.read_text() == " ".join(packages):
        return python
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", *packages], check=True)
    marker.write_text(" ".join(packages))
    return python


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _get(url: str, timeout: float = 5.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as answer:  # noqa: S310 - 127.0.0.1 only
        return json.loads(answer.read())


class Server:
    """One server process we started; stopped (and only it) by :meth:`stop`."""

    def __init__(self, name: str, cmd: list[str], env: dict[str, str], log: Path) -> None:
        self.name = name
        self.port = int(cmd[cmd.index("--port") + 1])
        self.base = f"http://127.0.0.1:{self.port}"
        self._log = log.open("wb")
        self.proc = subprocess.Popen(
            cmd, env=env, stdout=self._log, stderr=subprocess.STDOUT, cwd=HERE
        )
        for _ in range(300):  # up to 30 s to come up
            if self.proc.poll() is not None:
                msg = f"{name} exited with {self.proc.returncode}; see {log}"
                raise RuntimeError(msg)
            try:
                _get(self.base + "/health", timeout=1.0)
                break
            except OSError:
                time.sleep(0.1)
        else:
            self.stop()
            msg = f"{name} did not answer /health within 30 s; see {log}"
            raise RuntimeError(msg)

    def lag(self, reset: bool = True) -> dict[str, Any]:
        """The loop-lag summary since the last reset (and reset it)."""
        lag: dict[str, Any] = _get(self.base + "/debug/loop-lag" + ("?reset=true" if reset else ""))
        return lag

    def rss(self) -> int:
        """The process's resident set, bytes."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0

    def cpu(self) -> float:
        """CPU seconds the process has used (user + system)."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        """SIGINT, then SIGKILL if it has not exited within 15 s."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self._log.close()


def _start_ours(tmp: Path, env: dict[str, str], tag: str = "") -> Server:
    port = _free_port()
    cmd = [
        sys.executable, "-m", "stepstream", "serve", "server_app.py:WORKFLOWS",
        "--port", str(port), "--telemetry-dir", str(tmp / f"telemetry{tag}"),
    ]  # fmt: skip
    env = {**env, "STEPSTREAM_LOOP_LAG": "1", "PYTHONPATH": _pythonpath()}
    return Server(OURS + tag, cmd, env, tmp / f"stepstream{tag}.log")


def _pythonpath() -> str:
    """Our venv's stepstream: the source tree this script belongs to, ahead of the rest."""
    parts = [str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]
    return os.pathsep.join(p for p in parts if p)


def _start_peer(python: Path, tmp: Path, env: dict[str, str]) -> Server:
    port = _free_port()
    cmd = [
        str(python), "-m", "uvicorn", "server_app:app", "--host", "127.0.0.1",
        "--port", str(port), "--no-access-log", "--log-level", "warning",
    ]  # fmt: skip
    return Server(THEIRS, cmd, {**env, "BENCH_SERVER_LIB": "llama"}, tmp / "peer.log")


def _load(server: Server, phase: str, **options: Any) -> dict[str, Any]:
    """Run one load phase against ``server``; its figures, the server's lag and CPU."""
    cmd = [sys.executable, str(LOAD), "--base", server.base, phase]
    for key, value in options.items():
        cmd += [f"--{key}", str(value)]
    server.lag(reset=True)
    cpu = server.cpu()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False)
    if done.returncode != 0:
        msg = f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}"
        raise RuntimeError(msg)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    result["server_cpu_s"] = server.cpu() - cpu
    result["lag"] = server.lag(reset=True)
    return result


def _idle_memory(server: Server, streams: int) -> dict[str, Any]:
    """Resident memory per idle open stream: RSS with ``streams`` streams open, less without."""
    cmd = [sys.executable, str(LOAD), "--base", server.base, "idle", "--streams", str(streams)]
    samples = []
    for _ in range(2):  # the first pass warms the allocator; the second is measured
        before = server.rss()
        with subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        ) as client:
            assert client.stdin is not None  # noqa: S101 - PIPE
            assert client.stdout is not None  # noqa: S101 - PIPE
            line = client.stdout.readline()
            if line.strip() != "OPEN":
                client.kill()
                msg = f"idle streams did not open against {server.name}: {line!r}"
                raise RuntimeError(msg)
            time.sleep(0.5)
            during = server.rss()
            client.stdin.write("\n")
            client.stdin.flush()
            client.communicate(timeout=60)
        samples.append((during - before) / streams)
    return {"streams": streams, "bytes_per_stream": samples[-1], "warm_pass": samples[0]}


class _Sink(BaseHTTPRequestHandler):
    """Accepts any OTLP/HTTP export and answers 200 with an empty (valid) response."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", "0")))
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        """Quiet."""


def _sink(port: int) -> None:
    """Serve the OTLP sink until killed (``--sink PORT``)."""
    ThreadingHTTPServer(("127.0.0.1", port), _Sink).serve_forever()


def _otlp_burst(tmp: Path, env: dict[str, str], n: int) -> dict[str, Any]:
    """A burst of ``n`` concurrent runs against stepstream exporting everything over OTLP."""
    port = _free_port()
    sink = subprocess.Popen(
        [sys.executable, __file__, "--sink", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        otlp = {**env, "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}"}
        server = _start_ours(tmp, otlp, tag="-otlp")
        try:
            _load(server, "burst", n=min(n, 50))  # warm up the code paths
            samples = [_load(server, "burst", n=n) for _ in range(3)]
        finally:
            server.stop()
    finally:
        sink.kill()
        sink.wait(timeout=5)
    return {"runs": n, "lag_max_ms": statistics.median(s["lag"]["max_ms"] for s in samples)}


PHASES = ("runs", "stream1", "stream100", "latency")


def _phase(server: Server, phase: str, quick: bool) -> dict[str, Any]:
    size = dict(SIZES[phase][1 if quick else 0])
    name = "stream" if phase.startswith("stream") else phase
    return _load(server, name, **size)


def run(quick: bool, reps: int, out: Path) -> dict[str, Any]:
    """Measure every phase on both servers (stepstream only with ``quick``); write results."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    peer_py = None if quick else peer_python()
    samples: dict[str, dict[str, list[dict[str, Any]]]] = {OURS: {}, THEIRS: {}}
    memory: dict[str, dict[str, Any]] = {}
    bursts: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="stepstream-serve-bench-") as folder:
        tmp = Path(folder)
        servers = [_start_ours(tmp, env)]
        try:
            if peer_py is not None:
                servers.append(_start_peer(peer_py, tmp, env))
            for server in servers:  # warm both up: imports, first runs, first streams
                _load(server, "runs", n=64, warmup=16)
                _load(server, "stream", subs=2, n=100)
            for phase in PHASES:
                for _ in range(reps):
                    for server in servers:
                        result = _phase(server, phase, quick)
                        key = OURS if server.name == OURS else THEIRS
                        samples[key].setdefault(phase, []).append(result)
                        print(server.name, phase, json.dumps(result), flush=True)
            for server in servers:
                key = OURS if server.name == OURS else THEIRS
                memory[key] = _idle_memory(server, IDLE_STREAMS[1 if quick else 0])
                n = BURST[1 if quick else 0]
                lags = [_load(server, "burst", n=n)["lag"]["max_ms"] for _ in range(reps)]
                bursts[key] = statistics.median(lags)
        finally:
            for server in servers:
                server.stop()
        otlp = _otlp_burst(tmp, env, BURST[1 if quick else 0])
    results = {
        "machine": _machine(),
        "date": time.strftime("%Y-%m-%d"),
        "repetitions": reps,
        "quick": quick,
        "peer": None if quick else PEER[0],
        "summary": {k: _summary(v) for k, v in samples.items() if v},
        "memory": memory,
        "burst_lag_max_ms": bursts,
        "otlp_burst": otlp,
        "samples": samples,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "server.json").write_text(json.dumps(results, indent=2))
    (out / "server.md").write_text(_markdown(results))
    return results


def _machine() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def _summary(phases: dict[str, list[dict[str, Any]]]) -> dict[str, float]:
    """Medians of each phase's figures across repetitions."""

    def med(phase: str, key: str) -> float:
        return statistics.median(float(s[key]) for s in phases[phase])

    def lag(phase: str) -> float:
        return statistics.median(float(s["lag"]["max_ms"]) for s in phases[phase])

    return {
        "runs_per_s": med("runs", "runs_per_s"),
        "cpu_ms_per_run": statistics.median(
            s["server_cpu_s"] * 1000 / (s["runs"] + s["warmup"]) for s in phases["runs"]
        ),
        "events_per_s_1": med("stream1", "events_per_s"),
        "events_per_s_100": med("stream100", "events_per_s"),
        "latency_p50_ms": med("latency", "p50_ms"),
        "latency_p99_ms": med("latency", "p99_ms"),
        "lag_max_ms_runs": lag("runs"),
        "lag_max_ms_stream1": lag("stream1"),
        "lag_max_ms_stream100": lag("stream100"),
        "lag_max_ms_latency": lag("latency"),
    }


def _check(results: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    """Rows of (measure, stepstream, peer, ratio, target verdict)."""
    ours = results["summary"][OURS]
    peer = results["summary"].get(THEIRS)
    rows: list[tuple[str, str, str, str, str]] = []

    def verdict(ok: bool, target: str) -> str:
        return f"{target}: {'met' if ok else '**MISSED**'}"

    for key, label, fmt in (
        ("runs_per_s", "short runs per second through /run, 16 in flight", "{:,.0f}/s"),
        ("events_per_s_1", "events per second to 1 SSE subscriber", "{:,.0f}/s"),
        ("events_per_s_100", "events per second summed over 100 subscribers", "{:,.0f}/s"),
    ):
        if peer is None:
            rows.append((label, fmt.format(ours[key]), "-", "-", "-"))
            continue
        ratio = ours[key] / peer[key]
        target = verdict(ratio >= RATIO_TARGET, f">= {RATIO_TARGET:g}x")
        rows.append((label, fmt.format(ours[key]), fmt.format(peer[key]), f"{ratio:.1f}x", target))
    for key, label in (("latency_p50_ms", "p50"), ("latency_p99_ms", "p99")):
        text = f"write_event_to_stream to SSE client at 1,000 events/s, {label}"
        theirs = f"{peer[key]:.2f} ms" if peer else "-"
        target = verdict(ours[key] <= peer[key], "<= peer") if peer and label == "p99" else "-"
        ratio = f"{peer[key] / ours[key]:.1f}x" if peer else "-"
        rows.append((text, f"{ours[key]:.2f} ms", theirs, ratio, target))
    memory = results["memory"]
    theirs_mem = f"{memory[THEIRS]['bytes_per_stream'] / 1024:.1f} KB" if THEIRS in memory else "-"
    rows.append(
        (
            f"memory per idle open SSE stream ({memory[OURS]['streams']} open)",
            f"{memory[OURS]['bytes_per_stream'] / 1024:.1f} KB",
            theirs_mem,
            "-",
            "measured",
        )
    )
    for key, label in (
        ("lag_max_ms_runs", "loop lag, max, during the /run phase"),
        ("lag_max_ms_stream1", "loop lag, max, streaming to 1 subscriber"),
        ("lag_max_ms_stream100", "loop lag, max, streaming to 100 subscribers"),
        ("lag_max_ms_latency", "loop lag, max, at 1,000 events/s"),
    ):
        theirs = f"{peer[key]:.1f} ms" if peer else "-"
        rows.append(
            (
                label,
                f"{ours[key]:.1f} ms",
                theirs,
                "-",
                verdict(ours[key] <= LAG_MAX_MS, "<= 20 ms"),
            )
        )
    burst = results["burst_lag_max_ms"]
    n = results["otlp_burst"]["runs"]
    rows.append(
        (
            f"loop lag, max, burst of {n} concurrent /run",
            f"{burst[OURS]:.1f} ms",
            f"{burst[THEIRS]:.1f} ms" if THEIRS in burst else "-",
            "-",
            verdict(burst[OURS] <= LAG_MAX_MS, "<= 20 ms"),
        )
    )
    otlp = results["otlp_burst"]["lag_max_ms"]
    rows.append(
        (
            f"loop lag, max, burst of {n} concurrent /run, OTLP export (logs too)",
            f"{otlp:.1f} ms",
            "-",
            "-",
            verdict(otlp <= LAG_MAX_MS, "<= 20 ms"),
        )
    )
    return rows


def _markdown(results: dict[str, Any]) -> str:
    machine = results["machine"]
    load = ", ".join(f"{x:g}" for x in machine["load_average"])
    peer = results["peer"] or "not measured (--quick)"
    lines = [
        (
            f"Machine: {machine['cpus']} CPUs (servers and load generator share them), "
            f"{machine['platform']}, Python {machine['python']}; load average at the end "
            f"{load}; {results['date']}; median of {results['repetitions']} repetitions, "
            f"stepstream and the peer alternating. Peer: {peer}, no telemetry."
        ),
        "",
        (
            "| measure | stepstream serve (telemetry on: embedded store) | peer (no telemetry) "
            "| ratio | target |"
        ),
        "|---|---|---|---|---|",
    ]
    lines += [f"| {' | '.join(row)} |" for row in _check(results)]
    ours = results["summary"][OURS]
    peer_cpu = results["summary"].get(THEIRS, {}).get("cpu_ms_per_run")
    lines += [
        "",
        f"Server CPU per /run: stepstream {ours['cpu_ms_per_run']:.2f} ms"
        + (f", peer {peer_cpu:.2f} ms." if peer_cpu else "."),
    ]
    return "\n".join(lines) + "\n"


def render(out: Path) -> None:
    """Rewrite server.md from server.json."""
    results = json.loads((out / "server.json").read_text())
    (out / "server.md").write_text(_markdown(results))


def main() -> None:
    """Parse arguments and run."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes, stepstream only")
    parser.add_argument("--reps", type=int, default=None, help="repetitions (default 3)")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--render", action="store_true", help="only rewrite server.md")
    parser.add_argument("--sink", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.sink is not None:
        _sink(args.sink)
        return
    if args.render:
        render(args.out)
        return
    reps = args.reps if args.reps is not None else (1 if args.quick else 3)
    run(args.quick, reps, args.out)


if __name__ == "__main__":
    main()
