#!/usr/bin/env bash
# CI regression check: a small fixed CPU subset of the embedded world, compared with the committed baseline.
#   bash benchmarks/ci/regression.sh            # run + check (exit 1 on a regression)
#   bash benchmarks/ci/regression.sh --rebaseline   # run + rewrite benchmarks/ci/baseline.json
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${BIN:-.venv/bin}
RUN=runs/ci-regression
CMD="bench run --methods im2s,w,fwplus16 --transform rotate:20 --transform translate:6 --n 3 --steps 30 --seed 0 --device cpu --profile quick --run-dir $RUN --quiet"
rm -rf "$RUN"
$BIN/$CMD
if [ "${1:-}" = "--rebaseline" ]; then
  $BIN/bench check "$RUN" --baseline benchmarks/ci/baseline.json --write-baseline --how "$CMD"
else
  $BIN/bench check "$RUN" --baseline benchmarks/ci/baseline.json
fi
