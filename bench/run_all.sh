#!/usr/bin/env bash
# Run every bench once, bounded: the whole run stays under 9 minutes.
#
#   bash bench/run_all.sh            # from the repository root (or anywhere)
#   PYTHON=python3 bash bench/run_all.sh
#
# Benches print figures and ratios; they never fail on timings. The exit code
# is non-zero only when a bench crashed, hit its time limit, or failed a
# correctness check (the refresh storm must make exactly one token request).
# The run ends with issue 24's table (bench.summary): every figure of it, from
# this run, beside the figure before.
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
BUDGET=${BENCH_BUDGET:-540}   # seconds for everything
started=$(date +%s)
status=0
BENCH_RESULTS=$(mktemp -t jwtedge-bench-XXXXXX.jsonl)
export BENCH_RESULTS
trap 'rm -f "$BENCH_RESULTS"' EXIT

run() {
    local limit=$1
    shift
    local left=$((BUDGET - ($(date +%s) - started)))
    if ((left < 10)); then
        echo "### SKIPPED (time budget spent): $*"
        status=1
        return
    fi
    ((limit > left)) && limit=$left
    echo
    echo "### python -m $*   (limit ${limit}s)"
    local rc=0
    timeout --kill-after=10 "$limit" "$PY" -m "$@" || rc=$?
    if ((rc != 0)); then
        echo "!!! $* exited with $rc$( ((rc == 124)) && echo ' (time limit)')"
        status=1
    fi
}

run 45 bench.verify
run 60 bench.middleware --rounds 9
run 150 bench.http --duration 3 --rounds 5
run 30 bench.refresh_storm
run 150 bench.memory
run 90 bench.hostile --n 30 --rounds 7
run 60 bench.middleware --profile
run 30 bench.verify --profile
run 10 bench.summary "$BENCH_RESULTS"

echo
echo "### total: $(($(date +%s) - started)) s, status $status"
exit $status
