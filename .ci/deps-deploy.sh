#!/usr/bin/env bash
# Installs what the deploy and dashboard tests need from outside PyPI and Go. Idempotent:
# what is already there is left alone. The tests call it themselves when it is missing.
# (Prometheus, the collector and Jaeger are built from their Go modules by
# .ci/build-stack.sh, at the versions deploy/compose pins.)
#
#   lezer       Grafana's LogQL and TraceQL parsers (npm) for tests/test_logql_traceql.py,
#               into .cache/lezer (git-ignored; node_modules is never committed).
#
# usage: .ci/deps-deploy.sh [lezer]     (no argument: all)
set -euo pipefail
cd "$(dirname "$0")/.."

LEZER_DIR=.cache/lezer
LEZER_PACKAGES=(@grafana/lezer-logql@0.4.2 @grafana/lezer-traceql@1.0.0 @lezer/lr@1.4.10)

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
  targets=(lezer)
fi
for target in "${targets[@]}"; do
  case "$target" in
    lezer) install_lezer ;;
    *) echo "deps-deploy: unknown target $target" >&2; exit 2 ;;
  esac
done
