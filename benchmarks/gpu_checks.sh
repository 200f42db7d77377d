#!/usr/bin/env bash
# The GPU checks of docs/BENCHMARKS.md in one pass (one GPU; at most about 9.5 minutes):
#   1. the Shapes data (written here, no download);
#   2. in parallel: three domain-CLIP variants (caption retrieval, top-1 among 100 on val) and
#      the default Shapes GAN at batch 32 with bf16 autocast;
#   3. the best CLIP becomes runs/clip_shapes; in parallel: the text-conditioned GAN
#      (configs/shapes_text_64.yaml, started from step 2's weights) and the colour-editing
#      benchmark on step 2's GAN (without and with feature modulation);
#   4. caption conditioning on the text GAN;
#   5. training / inference speed and memory (alone on the GPU, so its timings are clean).
# Every stage has its own time limit and log; one failing does not stop the others. Stages share
# the machine, so the scripts run with --allow-busy: their JSON carries the load they saw.
#
#   OUT=results bash benchmarks/gpu_checks.sh            # the real thing (a CUDA machine)
#   SMALL=1 OUT=/tmp/dry bash benchmarks/gpu_checks.sh   # a minutes-long CPU dry run of the same path
#
# $OUT receives results.tar.gz (JSON, logs, images) and checkpoints.tar.part-* (the two GANs and
# the CLIP, weights stored as float16 to fit the transfer; config.json unchanged).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:?set OUT to a results folder}
mkdir -p "$OUT" && R=$(mktemp -d) && export PYTHONUNBUFFERED=1
if [ "${SMALL:-0}" = 1 ]; then
  DATA=data/shapes_dry; NTRAIN=64; NVAL=64; DEV=cpu
  CLIP_STEPS=6; CLIP_MIN=0; CAND=16; GAN_STEPS=4; TEXT_STEPS=4; CASES=2; IMAGES=4; LIMIT=600; SPEED=(--configs shapes_64 --steps 1 --warmup 1 --runs 2 --throughput-batch 4 --batch 2)
  EDIT=(--steps 2 --restarts 1 --augment 1 --min-pixels 1)
else
  DATA=data/shapes; NTRAIN=10000; NVAL=1000; DEV=cuda
  CLIP_STEPS=4000; CLIP_MIN=2.3; CAND=100; GAN_STEPS=8000; TEXT_STEPS=6000; CASES=60; IMAGES=200; LIMIT=1; SPEED=(--configs shapes_64 coco_128 --batch 32 --throughput-batch 256)
  EDIT=()
fi
lim() { echo $(( $1 * LIMIT )); }  # stage time limits stretch for the slow dry run
D=(data.root=$DATA data.prepare.num_train=$NTRAIN data.prepare.num_val=$NVAL)
{ date; nvidia-smi 2>&1 | head -15; python3 -c "import torch; print('torch', torch.__version__, torch.cuda.is_available())"; } > "$R/env.txt" 2>&1

echo "== data" && timeout "$(lim 60)" python3 -m layout2img.cli prepare shapes --out $DATA --num-train $NTRAIN --num-val $NVAL > "$R/data.log" 2>&1
tail -2 "$R/data.log"

echo "== CLIP variants + base GAN"
clip() {  # name, extra overrides...
  local name=$1; shift
  timeout -k 10 -s INT "$(lim 190)" python3 benchmarks/clip_retrieval.py --train --allow-busy --device $DEV --data $DATA --candidates $CAND --out "$R/clip_$name.json" \
    "${D[@]}" out_dir=runs/clip_$name device=$DEV train.steps=$CLIP_STEPS train.num_candidates=$CAND train.eval_every=1000 train.max_minutes=$CLIP_MIN "$@" > "$R/clip_$name.log" 2>&1
}
clip A train.batch_size=256 train.warmup=200 &
clip B train.batch_size=256 train.warmup=200 train.hard_negatives=4 train.captions_per_image=2 &
clip C train.batch_size=256 train.warmup=200 train.hard_negatives=4 train.captions_per_image=2 \
  model.vision_cfg.width=32 model.text_cfg.width=256 model.text_cfg.layers=4 &
timeout -k 10 -s INT "$(lim 190)" python3 train.py --config configs/shapes_64.yaml "${D[@]}" device=$DEV batch_size=32 \
  max_steps=$GAN_STEPS checkpoint_every=500 sample_every=1000 log_every=100 data.num_workers=4 > "$R/gan_base.log" 2>&1 &
wait
python3 - "$R" > "$R/clip_best.txt" <<'EOF'
import json, sys, pathlib
scores = {}
for p in pathlib.Path(sys.argv[1]).glob("clip_*.json"):
    r = json.loads(p.read_text()); scores[p.stem[5:]] = r["top1"]
print(max(scores, key=scores.get) if scores else "", json.dumps(scores))
EOF
BEST=$(cut -d' ' -f1 "$R/clip_best.txt"); echo "best CLIP: $(cat "$R/clip_best.txt")"
rm -rf runs/clip_shapes && [ -n "$BEST" ] && cp -r runs/clip_$BEST runs/clip_shapes

echo "== text GAN + editing"
BASE=runs/shapes_64/checkpoints/latest
timeout -k 10 -s INT "$(lim 160)" python3 train.py --config configs/shapes_text_64.yaml "${D[@]}" device=$DEV batch_size=32 \
  max_steps=$TEXT_STEPS checkpoint_every=500 sample_every=1000 log_every=100 data.num_workers=4 \
  train.init_from=$BASE > "$R/gan_text.log" 2>&1 &
edit() {  # name, extra flags...
  local name=$1; shift
  timeout -k 10 -s INT "$(lim 150)" python3 benchmarks/editing.py --device $DEV --checkpoint $BASE --clip runs/clip_shapes \
    --data $DATA --num-cases $CASES --max-seconds $(lim 125) --out "$R/editing_$name.json" --examples "$R/editing_$name.png" "${EDIT[@]}" "$@" \
    > "$R/editing_$name.log" 2>&1
}
edit style &
edit modulation --modulation &
wait

echo "== caption conditioning"
timeout -k 10 -s INT "$(lim 45)" python3 benchmarks/caption_conditioning.py --allow-busy --device $DEV --data $DATA \
  --checkpoint runs/shapes_text_64/checkpoints/latest --num-images $IMAGES --out "$R/caption_conditioning.json" \
  > "$R/caption_conditioning.log" 2>&1

echo "== speed"
timeout -k 10 -s INT "$(lim 100)" python3 benchmarks/speed.py --allow-busy --device $DEV "${SPEED[@]}" --json "$R/speed.json" > "$R/speed.log" 2>&1

echo "== pack"
cp runs/shapes_64/samples.png "$R/samples_base.png" 2>/dev/null; cp runs/shapes_text_64/samples.png "$R/samples_text.png" 2>/dev/null
python3 - "$R/ckpt" <<'EOF'
# the checkpoints' weights as float16 (transfer size); config.json as it is
import shutil, sys, pathlib, torch
from safetensors.torch import load_file, save_file
out = pathlib.Path(sys.argv[1])
for name, src in [("shapes_64", "runs/shapes_64/checkpoints/latest"), ("shapes_text_64", "runs/shapes_text_64/checkpoints/latest"),
                  ("clip_shapes", "runs/clip_shapes")]:
    src = pathlib.Path(src).resolve()
    if not (src / "model.safetensors").is_file():
        continue
    (out / name).mkdir(parents=True)
    t = load_file(str(src / "model.safetensors"))
    save_file({k: v.half() if v.is_floating_point() else v for k, v in t.items()}, str(out / name / "model.safetensors"))
    for f in src.iterdir():
        if f.suffix == ".json":
            shutil.copy(f, out / name / f.name)
EOF
tar -C "$R" -cf - ckpt 2>/dev/null | split -b 15M - "$OUT/checkpoints.tar.part-"
rm -rf "$R/ckpt"
tar -C "$R" -czf "$OUT/results.tar.gz" .
for f in "$R"/*.json; do echo "-- $(basename $f)"; python3 -c "import json,sys; r=json.load(open(sys.argv[1])); print({k: r[k] for k in r if k in ('top1','top5','success_rate','mean_abs_change_outside_object','num_cases','results','configs')})" "$f" 2>&1 | cut -c1-400; done
grep -h "error\|Error" "$R"/*.log | head -20
ls -la "$OUT"
