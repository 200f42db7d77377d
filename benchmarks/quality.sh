#!/usr/bin/env bash
# The quality run of docs/BENCHMARKS.md: the default Shapes training, an object classifier on
# real crops, then `layout2img evaluate` with the ground-truth and with the predicted layout.
#
#   benchmarks/quality.sh                      # runs/shapes_64, device auto
#   OUT=runs/q1 DEVICE=cuda benchmarks/quality.sh max_steps=2400   # extra args go to train.py
#   ALLOW_BUSY=1 benchmarks/quality.sh         # run on a busy machine (the wall times are then stamped busy)
#
# Refuses (exit 2) when the machine is not quiet (benchmarks/machine.py). Prints the machine line,
# both reports' headline lines and the wall times; the full JSON reports are in $OUT/eval/.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
OUT=${OUT:-runs/shapes_64}
DEVICE=${DEVICE:-auto}
CLF_STEPS=${CLF_STEPS:-300}
MAX_IMAGES=${MAX_IMAGES:-1000}   # the whole Shapes val split
MACHINE=$("$PY" benchmarks/machine.py ${ALLOW_BUSY:+--allow-busy} ${WAIT_QUIET:+--wait-quiet "$WAIT_QUIET"}) || exit 2
echo "machine: $MACHINE"
echo "command: $0 $* (OMP_NUM_THREADS=${OMP_NUM_THREADS:-unset})"

start=$(date +%s)
"$PY" train.py "out_dir=$OUT" "device=$DEVICE" "$@"
trained=$(date +%s)
"$PY" -m layout2img.cli train-classifier --config "$OUT/config.yaml" --out "$OUT/classifier" \
    --steps "$CLF_STEPS" --device "$DEVICE"
for layout in gt pred; do
  "$PY" -m layout2img.cli evaluate --checkpoint "$OUT" --out "$OUT/eval/report_$layout.json" \
      --layout "$layout" --samples-per-layout 2 --max-images "$MAX_IMAGES" \
      --classifier "$OUT/classifier" --device "$DEVICE" --seed 0
done
end=$(date +%s)
echo "training: $((trained - start)) s; classifier + evaluation: $((end - trained)) s (one run; $MACHINE)"
for layout in gt pred; do
  "$PY" - "$OUT/eval/report_$layout.json" <<'PY'
import json, sys
from layout2img.evaluation import summary_line
print(summary_line(json.load(open(sys.argv[1]))))
PY
done
