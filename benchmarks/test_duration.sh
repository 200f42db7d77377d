#!/usr/bin/env bash
# The test suite's wall time (what CI runs), with the slowest tests listed.
#   benchmarks/test_duration.sh            # the whole suite
#   benchmarks/test_duration.sh -k metrics # extra args go to pytest
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
start=$(date +%s.%N)
"$PY" -m pytest -q --durations=15 "$@"
status=$?
end=$(date +%s.%N)
echo "test suite wall time: $("$PY" -c "print(round($end - $start, 1))") s (exit $status) on $(getconf _NPROCESSORS_ONLN) CPUs (OMP_NUM_THREADS=${OMP_NUM_THREADS:-unset})," \
     "$(lscpu | sed -n 's/^Model name: *//p'), torch $("$PY" -c 'import torch; print(torch.__version__)')"
exit $status
