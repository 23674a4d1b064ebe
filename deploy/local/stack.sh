#!/usr/bin/env bash
# The observability stack of deploy/compose as local processes on 127.0.0.1, no Docker:
#   deploy/local/stack.sh up        build what is missing, start, wait until healthy
#   deploy/local/stack.sh status    pids and health
#   deploy/local/stack.sh down      stop exactly what `up` started (--clean: drop the data)
# Needs Go (the first `up` builds the programs: up to ~20 min on 2 cores; cached by version)
# and Python 3 with PyYAML (the project's .venv has it). See deploy/README.md.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
python="${STEPSTREAM_PYTHON:-}"
if [ -z "$python" ]; then
  if [ -x "$here/../../.venv/bin/python" ]; then python="$here/../../.venv/bin/python"; else python=python3; fi
fi
exec "$python" "$here/stack.py" "$@"
