#!/usr/bin/env bash
# Run every test, on a fresh Debian/Ubuntu machine too: installs what is missing (apt; pip: gpstage with
# every extra, test and bench), runs the static checks (ruff, import-linter; any finding fails), starts the
# local services the tests use (on 127.0.0.1 only), runs pytest, stops the services it started.
# Extra arguments go to pytest, e.g.  bash scripts/test.sh -k conformance
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
. scripts/lib/venv.sh
ensure_venv "$ROOT" all,test,bench
PY="$ROOT/.venv/bin/python"

echo "== static check: ruff check ."
"$ROOT/.venv/bin/ruff" check .
echo "== static check: lint-imports (the import-linter contracts in pyproject.toml)"
"$ROOT/.venv/bin/lint-imports"

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
