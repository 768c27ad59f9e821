#!/usr/bin/env bash
# The demo, on a fresh Debian/Ubuntu machine too: installs what is missing into ./.venv (gpstage without
# extras), lays out the sample GenePattern-style module (examples/sample_module) as a job under ./demo with
# file storage, and runs it end to end on the embedded default (local launcher + process runner): stage
# in, run exec.sh through gpstage-entry, record the exit code, push the outputs, collect them back.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
. scripts/lib/venv.sh
ensure_venv "$ROOT"  # gpstage alone: the local launcher, the process runner and file storage need no extra
export GPSTAGE_STATE_DIR="${GPSTAGE_STATE_DIR:-$ROOT/demo/state}"
SPEC=$("$ROOT/.venv/bin/python" examples/demo.py "$ROOT/demo")
echo "== job spec: $SPEC"
echo "== gpstage run $SPEC"
set +e
"$ROOT/.venv/bin/gpstage" run "$SPEC"
rc=$?
set -e
echo "== the module's summary (results/summary.txt):"
cat "$ROOT/demo/server/gp/jobResults/1/results/summary.txt"
echo "== exit code $rc; the job's record: GPSTAGE_STATE_DIR=$GPSTAGE_STATE_DIR .venv/bin/gpstage status gpstage-demo"
exit "$rc"
