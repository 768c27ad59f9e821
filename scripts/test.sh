#!/usr/bin/env bash
# Run every test, on a fresh Debian/Ubuntu machine too: installs what is missing (apt, pip), starts
# the local services the tests use (on 127.0.0.1 only), runs pytest, stops the services it started.
# Extra arguments go to pytest, e.g.  bash scripts/test.sh -k conformance
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
. scripts/lib/venv.sh
ensure_venv "$ROOT"
PY="$ROOT/.venv/bin/python"

echo "== starting services"
"$PY" scripts/services.py start
trap '"$PY" scripts/services.py stop' EXIT

echo "== running tests"
set +e
"$PY" -m pytest -q -p no:cacheprovider --durations=10 "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "pytest collected no tests: that is a failure" >&2
  exit 1
fi
exit "$rc"
