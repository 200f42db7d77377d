#!/usr/bin/env bash
# The test suite's wall time (what CI runs), with the slowest tests listed.
#   benchmarks/test_duration.sh            # the whole suite
#   benchmarks/test_duration.sh -k metrics # extra args go to pytest
#   ALLOW_BUSY=1 benchmarks/test_duration.sh   # on a busy machine (the time is then stamped busy)
# Refuses (exit 2) when the machine is not quiet (benchmarks/machine.py); prints its line with the time.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
MACHINE=$("$PY" benchmarks/machine.py ${ALLOW_BUSY:+--allow-busy} ${WAIT_QUIET:+--wait-quiet "$WAIT_QUIET"}) || exit 2
start=$(date +%s.%N)
"$PY" -m pytest -q --durations=15 "$@"
status=$?
end=$(date +%s.%N)
echo "test suite wall time: $("$PY" -c "print(round($end - $start, 1))") s (exit $status, one run," \
     "OMP_NUM_THREADS=${OMP_NUM_THREADS:-unset}); $MACHINE"
exit $status
