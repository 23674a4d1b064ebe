#!/usr/bin/env bash
# Builds, from the Go module proxy, the programs of deploy/compose at the versions its
# images pin, for the local stack (deploy/local/stack.sh) and tests/test_full_stack.py.
# Cached by version (and by a hash of this script and the manifest, which say how): a
# binary already built is not built again, so a warm run takes no
# time. Builds run one at a time, under `nice`. Measured on 2 cores: a fresh machine
# (empty Go caches) 22 min wall, 12 CPU-min, with other work on the machine; a fresh
# clone on a machine whose Go caches are warm (CI's case) 20 s.
#
#   otelcol     the OpenTelemetry Collector, built by the Collector Builder (ocb) from
#               deploy/collector/manifest.yaml (its versions must equal the compose pin)
#   jaeger      Jaeger v2 (its Go module tags Jaeger 2.N as v1.(N+63): 2.13.0 is v1.76.0)
#   prometheus  Prometheus 3 (its Go module tags 3.x.y as v0.3xx.y: 3.13.1 is v0.313.1),
#               without the service discoveries (build tag remove_all_sd: the stack's
#               prometheus.yaml uses static_configs only, and the cloud SDKs they pull in
#               are most of a full build)
#
# Not built: Grafana Tempo, Grafana Loki and Grafana, whose Go modules are under the AGPL,
# which this project's machines may not use (deploy/README.md says what that leaves out).
#
# Jaeger and Prometheus carry `replace` directives, which `go install pkg@version`
# refuses: their module is downloaded and built inside its own directory instead, with
# GOWORK=off (Prometheus's module ships a go.work naming directories its zip lacks).
#
# usage: .ci/build-stack.sh [otelcol] [jaeger] [prometheus]     (no argument: all)
#        .ci/build-stack.sh --print-dir NAME   the directory NAME's binary is cached in
# env:   STEPSTREAM_STACK_CACHE   where binaries are cached (default: <repo>/.cache/stack,
#                                 as <name>-<version>-<recipe hash>/)
#        GOMODCACHE, GOCACHE      Go's own caches (default: Go's, outside the repository)
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
SELF="$REPO/.ci/$(basename "$0")"
COMPOSE="$REPO/deploy/compose/docker-compose.yaml"
MANIFEST="$REPO/deploy/collector/manifest.yaml"
CACHE="${STEPSTREAM_STACK_CACHE:-$REPO/.cache/stack}"
NICE=(nice -n 19)

log() { echo "build-stack: $*" >&2; }
die() { log "$*"; exit 1; }

# The tag an image is pinned to in the compose file, e.g. `pin prom/prometheus` -> v3.13.1.
pin() {
  local tag
  tag="$(sed -n "s|^ *image: *$1:\([^ ]*\) *\$|\1|p" "$COMPOSE" | head -n 1)"
  [ -n "$tag" ] || die "no image $1 pinned in $COMPOSE"
  echo "$tag"
}

# version <name>: the version that names the cache directory (the compose pin, no "v").
version() {
  case "$1" in
    otelcol) pin otel/opentelemetry-collector-contrib ;;
    jaeger) pin jaegertracing/jaeger ;;
    prometheus) pin prom/prometheus | sed 's/^v//' ;;
    *) die "unknown program $1 (otelcol, jaeger, prometheus)" ;;
  esac
}

binary_name() {
  case "$1" in
    otelcol) echo otelcol-stepstream ;;
    *) echo "$1" ;;
  esac
}

# The cache directory: name, version, and a hash of how it is built (this script, and
# the collector's manifest), so that a changed flag or an added component is built.
dir_of() {
  local recipe=("$SELF")
  if [ "$1" = otelcol ]; then
    recipe+=("$MANIFEST")
  fi
  echo "$CACHE/$1-$(version "$1")-$(cat "${recipe[@]}" | sha256sum | cut -c1-12)"
}

command -v go >/dev/null 2>&1 || die "needs the Go toolchain (go) on PATH"

# download_module MODULE VERSION -> prints the module's (read-only) directory.
download_module() {
  local json dir
  json="$(go mod download -json "$1@$2")" || die "go mod download $1@$2 failed: $json"
  dir="$(printf '%s\n' "$json" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
  [ -d "$dir" ] || die "go mod download $1@$2 gave no directory: $json"
  echo "$dir"
}

build_otelcol() {
  local out="$1" version ocb_dir work
  version="$(version otelcol)"
  grep -q "^  version: $version\$" "$MANIFEST" \
    || die "$MANIFEST: dist.version is not the compose pin $version"
  if grep -E 'gomod: .* v0\.[0-9]+\.[0-9]+' "$MANIFEST" | grep -vq " v$version\$"; then
    die "$MANIFEST: a component's version is not v$version (the compose pin)"
  fi
  ocb_dir="$CACHE/ocb-$version"
  if [ ! -x "$ocb_dir/builder" ]; then
    GOBIN="$ocb_dir" "${NICE[@]}" go install "go.opentelemetry.io/collector/cmd/builder@v$version"
  fi
  work="$(mktemp -d "$CACHE/.otelcol-build.XXXXXX")"
  cp "$MANIFEST" "$work/manifest.yaml"
  (cd "$work" && "${NICE[@]}" "$ocb_dir/builder" --config manifest.yaml) \
    || { rm -rf "$work"; die "ocb failed (manifest $MANIFEST)"; }
  mv "$work/_build/otelcol-stepstream" "$out"
  rm -rf "$work"
}

build_jaeger() {
  local out="$1" version major minor patch module_version dir
  version="$(version jaeger)"
  IFS=. read -r major minor patch <<<"$version"
  [ "$major" = 2 ] || die "jaegertracing/jaeger:$version: only Jaeger 2.x is mapped to its module"
  module_version="v1.$((minor + 63)).$patch"
  dir="$(download_module github.com/jaegertracing/jaeger "$module_version")"
  grep -q "^$module_version / v$version " "$dir/CHANGELOG.md" \
    || die "Jaeger module $module_version is not Jaeger $version (see its CHANGELOG.md)"
  local ldflags="-s -w -X github.com/jaegertracing/jaeger/internal/version.latestVersion=v$version"
  (cd "$dir" && GOWORK=off "${NICE[@]}" go build -trimpath -ldflags="$ldflags" -o "$out" ./cmd/jaeger)
}

build_prometheus() {
  local out="$1" version major minor patch module_version dir
  version="$(version prometheus)"
  IFS=. read -r major minor patch <<<"$version"
  [ "$major" = 3 ] || die "prom/prometheus:v$version: only Prometheus 3.x is mapped to its module"
  module_version="v0.$((300 + minor)).$patch"
  dir="$(download_module github.com/prometheus/prometheus "$module_version")"
  local ldflags="-s -w -X github.com/prometheus/common/version.Version=$version"
  ldflags="$ldflags -X github.com/prometheus/common/version.Branch=module-$module_version"
  (cd "$dir" && GOWORK=off "${NICE[@]}" go build -trimpath -tags netgo,remove_all_sd -ldflags="$ldflags" -o "$out" \
    ./cmd/prometheus)
}

if [ "${1:-}" = "--print-dir" ]; then
  [ $# -eq 2 ] || die "usage: $0 --print-dir NAME"
  dir_of "$2"
  exit 0
fi

targets=("$@")
if [ "${#targets[@]}" -eq 0 ]; then
  targets=(otelcol jaeger prometheus)
fi
mkdir -p "$CACHE"
# One build at a time, also across concurrent callers (a test run and a shell, say).
exec 9>"$CACHE/.lock"
flock 9
for name in "${targets[@]}"; do
  dir="$(dir_of "$name")"
  bin="$dir/$(binary_name "$name")"
  if [ -x "$bin" ]; then
    echo "$bin"
    continue
  fi
  log "building $name $(version "$name") (minutes when Go's caches are cold) ..."
  start=$SECONDS
  mkdir -p "$dir"
  "build_$name" "$bin.partial"
  mv "$bin.partial" "$bin"
  log "built $bin in $((SECONDS - start)) s"
  echo "$bin"
done
