#!/usr/bin/env bash
# Installs what the deploy and dashboard tests need from outside PyPI. Idempotent: what
# is already there is left alone. The tests call it themselves when something is missing.
#
#   prometheus  the Debian package: the real Prometheus (and promtool) that
#               tests/test_prometheus_queries.py starts on 127.0.0.1. Installed without
#               starting its system service, which is then disabled: the tests run
#               their own instance with a temporary data directory.
#   lezer       Grafana's LogQL and TraceQL parsers (npm) for tests/test_logql_traceql.py,
#               into .cache/lezer (git-ignored; node_modules is never committed).
#
# usage: .ci/deps-deploy.sh [prometheus] [lezer]     (no argument: both)
set -euo pipefail
cd "$(dirname "$0")/.."

LEZER_DIR=.cache/lezer
LEZER_PACKAGES=(@grafana/lezer-logql@0.4.2 @grafana/lezer-traceql@1.0.0 @lezer/lr@1.4.10)

install_prometheus() {
  if command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1; then
    return 0
  fi
  if [ "$(id -u)" -ne 0 ]; then
    echo "deps-deploy: installing prometheus needs root (apt-get)" >&2
    return 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  # A policy-rc.d that answers 101 keeps apt from starting the service it installs.
  local own_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    own_policy=1
  fi
  local rc=0
  { apt-get update -qq && apt-get install -y -qq --no-install-recommends prometheus; } || rc=$?
  if [ "$own_policy" -eq 1 ]; then
    rm -f /usr/sbin/policy-rc.d
  fi
  if [ "$rc" -ne 0 ]; then
    echo "deps-deploy: apt-get install prometheus failed ($rc)" >&2
    return "$rc"
  fi
  # Never leave it enabled as a system service.
  if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    systemctl disable --now prometheus >/dev/null 2>&1 || true
  elif command -v update-rc.d >/dev/null 2>&1; then
    update-rc.d prometheus disable >/dev/null 2>&1 || true
  fi
  prometheus --version | head -n 1
}

install_lezer() {
  local ok=1 spec name version
  for spec in "${LEZER_PACKAGES[@]}"; do
    name="${spec%@*}"
    version="${spec##*@}"
    if ! grep -q "\"version\": \"$version\"" "$LEZER_DIR/node_modules/$name/package.json" 2>/dev/null; then
      ok=0
    fi
  done
  if [ "$ok" -eq 1 ]; then
    return 0
  fi
  if ! command -v npm >/dev/null 2>&1; then
    echo "deps-deploy: npm is missing" >&2
    return 1
  fi
  mkdir -p "$LEZER_DIR"
  npm install --prefix "$LEZER_DIR" --no-save --no-package-lock --no-audit --no-fund \
    --loglevel=error "${LEZER_PACKAGES[@]}"
}

targets=("$@")
if [ "${#targets[@]}" -eq 0 ]; then
  targets=(prometheus lezer)
fi
for target in "${targets[@]}"; do
  case "$target" in
    prometheus) install_prometheus ;;
    lezer) install_lezer ;;
    *) echo "deps-deploy: unknown target $target" >&2; exit 2 ;;
  esac
done
