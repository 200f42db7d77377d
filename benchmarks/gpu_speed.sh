#!/usr/bin/env bash
# Issue 14's GPU table in one pass on one lent GPU (about 8 minutes; every stage has a time limit
# and its own log, one failing does not stop the others; nothing else runs meanwhile):
#   1. training img/s, s/step, GFLOP/step, MFU and peak memory for batch 32..512 on shapes_64 and
#      coco_128's *full* stage (train.global_steps=0: global net + enhancer at 128 px), bf16;
#   2. the same at batch 256 with torch.compile (inductor) of G and D;
#   3. inference: generate() latency of one graph and model(batch) throughput at batch 1024;
#   4. DDP scaling: torchrun with 2 processes vs 1 sharing this GPU, 60 steps of the default
#      Shapes config at a global batch of 64 (the real data path: Shapes written first).
#
#   OUT=results bash benchmarks/gpu_speed.sh           # a CUDA machine
#   SMALL=1 OUT=/tmp/dry bash benchmarks/gpu_speed.sh  # the same path on a CPU, tiny, in about a minute
#
# $OUT receives speed_*.json (benchmarks/speed.py's records, machine line included), ddp_*.log
# and env.txt; the markdown rows are printed at the end.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:?set OUT to a results folder}
mkdir -p "$OUT" && export PYTHONUNBUFFERED=1
if [ "${SMALL:-0}" = 1 ]; then
  DEV=cpu; BATCHES="2 4"; CBATCH=2; TBATCH=4; CONFIGS="shapes_64"; LIMIT=120; DDP_STEPS=2; DDP_BATCH=4
  EXTRA=(--dry-run --allow-busy)
else
  DEV=cuda; BATCHES="32 64 128 256 512"; CBATCH=256; TBATCH=1024; CONFIGS="shapes_64 coco_128"; LIMIT=75
  DDP_STEPS=60; DDP_BATCH=64; EXTRA=(--allow-busy)
fi
{ date; nvidia-smi 2>&1 | head -15; python3 -c "import torch; print('torch', torch.__version__, torch.cuda.is_available())"; } > "$OUT/env.txt" 2>&1
speed() {  # name, limit, speed.py flags...
  local name=$1 lim=$2; shift 2
  timeout -k 5 "$lim" python3 benchmarks/speed.py --device $DEV "${EXTRA[@]}" --set train.global_steps=0 \
    --json "$OUT/speed_$name.json" "$@" > "$OUT/speed_$name.log" 2>&1 || echo "   ($name: exit $?)"
}
for cfg in $CONFIGS; do
  for b in $BATCHES; do
    echo "== $cfg train, batch $b"; speed "${cfg}_b$b" $LIMIT --configs $cfg --modes train --batch $b --steps 10 --warmup 3
  done
  echo "== $cfg train, batch $CBATCH, compiled"
  speed "${cfg}_b${CBATCH}_compiled" $((LIMIT * 2)) --configs $cfg --modes train --batch $CBATCH --steps 10 --warmup 4 --compile
  echo "== $cfg inference"
  speed "${cfg}_infer" $LIMIT --configs $cfg --modes infer --runs 50 --throughput-batch $TBATCH --throughput-runs 5
done

echo "== DDP: 1 vs 2 processes"
ddp() {  # processes
  local n=$1
  timeout -k 5 $((LIMIT * 2)) torchrun --standalone --nproc_per_node=$n train.py --config configs/shapes_64.yaml \
    device=$DEV batch_size=$DDP_BATCH max_steps=$DDP_STEPS data.root=data/shapes_gpu data.num_workers=2 \
    train.fit_styles=0 log_every=10 sample_every=100000 checkpoint_every=100000 out_dir="$OUT/ddp_$n" resume=never \
    > "$OUT/ddp_$n.log" 2>&1 || echo "   (ddp $n: exit $?)"
  grep -o "img_s=[0-9.]*" "$OUT/ddp_$n.log" | tail -1
}
python3 -m layout2img.cli prepare shapes --out data/shapes_gpu --num-train 2000 --num-val 100 \
  > "$OUT/data.log" 2>&1 || tail -2 "$OUT/data.log"
ddp 1; ddp 2

echo "== rows"
for f in "$OUT"/speed_*.log; do grep "^|" "$f" | grep -v "^|---" | grep -v "^| figure"; done
ls -la "$OUT"
