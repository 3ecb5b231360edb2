#!/usr/bin/env bash
# The GPU measurements of this project in one command: at most 20 minutes on one H100.
#
# On a GPU machine whose image has torch and jax but not keras / TFDS / albumentations / simplejpeg,
# from the project root:
#   here:   bash ../shared/tools/device-wheels.sh simplejpeg   # wheels into .whl/ (ignored)
#           (then swap pydantic-core 2.50.4 for 2.50.5 if pydantic 2.14.4 came along: docs/guide/recipes.md, "On a GPU")
#           mkdir -p .barnarp && cp ../shared/data/barnarp/* .barnarp/ && echo /.barnarp/ >> .git/info/exclude
#   there:  bash experiments/gpu_run.sh                          # carry .whl and .barnarp
# Everything measured goes to $OUT/gpu_run.md (one file; $OUT defaults to ./gpu-run-out), the raw
# logs and run summaries to $OUT/logs.tgz; the dataset and checkpoints stay in $WORK (default
# /tmp/gpu-run-work). STAGES="train bench reference" (the default) runs all three parts; a machine
# that limits one command to 10 minutes runs them one per command (each under 9 minutes on an H100).
# A step that fails is reported in the table with the tail of its log, and the run goes on. SMOKE=1 runs every step with tiny settings on any machine (the test suite does,
# on the CPU, so that this script cannot rot); BARNARP=DIR points at another contest download.
#
# Steps: build barnarp -> train attunet (filters 64) and deeplabv3plus (ResNet50, from scratch) at
# 512² in bf16 for a fixed schedule and score test_a with `buildings score` -> `buildings bench` at
# 512² bf16 for torch (patches on and off) and jax -> plain-PyTorch reference of the same U-Net
# (AMP, channels_last; eager and torch.compile) -> Keras jit_compile on and off -> inference
# images/s -> model FLOPs and MFU against the bf16 dense peak -> peak GPU memory (Keras vs PyTorch)
# -> the step's input-bound share with 1..8 loader workers -> with two or more GPUs, data-parallel
# scaling over 1, 2, 4.. GPUs (torch.distributed; it says so when there is one).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-run-out}
WORK=${WORK:-/tmp/gpu-run-work}
SMOKE=${SMOKE:-0}
STAGES=${STAGES:-train bench reference multigpu}
BARNARP=${BARNARP:-.barnarp}
PEAK_TFLOPS=${PEAK_TFLOPS:-989}   # H100 SXM bf16 dense
mkdir -p "$OUT" "$WORK/logs"
REPORT="$OUT/gpu_run.md"
LOGS="$WORK/logs"
FAILED=0

if ! python3 -c "import keras, tensorflow_datasets, albumentations, simplejpeg" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/site .whl/*.whl 2>/dev/null || exit 1
  export PYTHONPATH="/tmp/site:${PYTHONPATH:-}"
  if ! python3 -c "import keras, tensorflow_datasets, albumentations, simplejpeg"; then
    echo "gpu_run.sh: the carried wheels do not import (above); see docs/guide/recipes.md, "On a GPU"" >&2; exit 1
  fi
fi
export PYTHONPATH="$PWD:${PYTHONPATH:-}" KERAS_BACKEND=torch PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=3
PY=python3
B="$PY -m buildings.cli"

if [ "$SMOKE" = 1 ]; then
  SIZE=64; BATCH=2; EPOCHS=1; STEPS=2; FILTERS=4; BENCH_STEPS=2; NATIVE="--steps 2 --repeats 1"; JIT=false
  ATT_OPTS="--encoder none --model-option filters=4 --model-option depth=2"; DLV_OPTS="--model-option aspp_filters=8"
  WORKERS=1,2; IMAGES=4; FIT_STEPS=3; BACKENDS=${BACKENDS:-torch,torch-plain}; MEM_FILTERS=4; LIMIT=900
else
  SIZE=512; BATCH=16; EPOCHS=${EPOCHS:-40}; STEPS=20; FILTERS=64; BENCH_STEPS=20
  NATIVE="--steps 20 --repeats 3 --compile"; JIT=true  # auto = false on torch: the main rows
  ATT_OPTS="--encoder none --model-option filters=64"; DLV_OPTS=""
  WORKERS=1,2,4,8; IMAGES=64; FIT_STEPS=20; BACKENDS=${BACKENDS:-torch,torch-plain,jax}; MEM_FILTERS=32; LIMIT=240
fi
PRECISION=${PRECISION:-bf16}
[ "$SMOKE" = 1 ] && PRECISION=fp32

section() { printf '\n## %s\n\n' "$1" >> "$REPORT"; echo "== $1" >&2; }
# step LOG SECONDS CMD...: run CMD with a time limit, its stderr to LOG; on failure note it in the
# report with the tail of LOG and go on with the next step.
step() {
  local log=$1 limit=$2; shift 2
  local t0=$SECONDS rc=0
  timeout -k 10 "$limit" "$@" 2>> "$LOGS/$log" || rc=$?
  echo "   $log: rc=$rc, $((SECONDS - t0)) s" >&2
  if [ "$rc" != 0 ]; then
    FAILED=1
    { echo; echo "**FAILED** (rc=$rc after $((SECONDS - t0)) s): \`$*\`"; echo '```'; tail -n 25 "$LOGS/$log"; echo '```'; } >> "$REPORT"
  fi
  return "$rc"
}
has_stage() { case " $STAGES " in *" $1 "*) return 0;; esac; return 1; }
started=$SECONDS
{
  echo "# gpu_run.sh — $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo
  echo "SMOKE=$SMOKE, STAGES=$STAGES, size $SIZE, precision $PRECISION"
  echo '```'
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
  $PY -c "import platform, torch, keras; print('python', platform.python_version(), '| torch', torch.__version__, '| cuda', torch.version.cuda, '| keras', keras.__version__)"
  $PY -c "import jax; print('jax', jax.__version__, jax.devices())" 2>/dev/null || echo "jax: not available"
  echo "CPUs: $(nproc)"
  echo '```'
} > "$REPORT"

DATA="$WORK/tfds/tianchi_buildings/val10"
if [ ! -f "$DATA/dataset_info.json" ]; then
  section "Dataset"
  step build.log 300 $B data build --manual-dir "$BARNARP" --data-dir "$WORK/tfds" --config val10 > /dev/null
  $B data stats --data "$DATA" 2>/dev/null >> "$REPORT"
fi

if has_stage train; then
section "Training at ${SIZE}² ($PRECISION), scored on test_a"
echo "| model | epochs | wall s | images/s (mean) | best val contest Dice | test_a contest Dice |" >> "$REPORT"
echo "|---|---:|---:|---:|---:|---:|" >> "$REPORT"
for spec in "attunet:$ATT_OPTS" "deeplabv3plus:--encoder resnet50 $DLV_OPTS"; do
  name=${spec%%:*}; opts=${spec#*:}
  run="$WORK/runs/$name"
  rm -rf "$run"
  # shellcheck disable=SC2086
  step "fit-$name.log" "$LIMIT" $B fit --model "$name" $opts --data "$DATA" --epochs "$EPOCHS" --batch-size "$BATCH" \
    --image-size "$SIZE" --precision "$PRECISION" --aug strong --cutmix 0 --augment-on device --lr 1e-3 --workers 8 \
    --run-dir "$run" > "$LOGS/fit-$name.out" || continue
  step "predict-$name.log" 300 $B predict --checkpoint "$run/best.keras" --data "$DATA" --out "$run/submission.csv" \
    > /dev/null || continue
  step "score-$name.log" 60 $B score "$run/submission.csv" "$BARNARP/test_a_mask.csv" --json > "$run/score.json" || continue
  $PY - "$run" "$name" >> "$REPORT" <<'PYEOF'
import json, sys
run, name = sys.argv[1], sys.argv[2]
s = json.load(open(f"{run}/summary.json")); score = json.load(open(f"{run}/score.json"))
print(f"| {name} | {s.get('epochs_total')} | {s['wall_seconds']:.0f} | {s.get('mean_images_per_s', 0):.1f} | "
      f"{s.get('best_val_contest_dice', float('nan')):.4f} | {score['dice']:.4f} |")
PYEOF
  cp "$run/summary.json" "$LOGS/summary-$name.json" 2>/dev/null
done
fi

if has_stage bench; then
section "buildings bench: backends at ${SIZE}², batch $BATCH, $PRECISION"
step bench.log "$LIMIT" $B bench --model unet --model-option filters=$FILTERS --image-size "$SIZE" --batch-size "$BATCH" \
  --steps "$BENCH_STEPS" --precision "$PRECISION" --backends "$BACKENDS" --json > "$WORK/bench.json" \
  || echo '[]' > "$WORK/bench.json"
for jit in $JIT; do  # the smoke run leaves torch.compile out: minutes of compiling on a CPU
  step "bench-jit-$jit.log" "$LIMIT" $B bench --model unet --model-option filters=$FILTERS --image-size "$SIZE" \
    --batch-size "$BATCH" --steps "$BENCH_STEPS" --precision "$PRECISION" --backends torch --jit-compile "$jit" --json \
    > "$WORK/bench-jit-$jit.json" || echo '[]' > "$WORK/bench-jit-$jit.json"
done
$PY - "$WORK" "$FILTERS" "$SIZE" "$PEAK_TFLOPS" >> "$REPORT" <<'PYEOF'
import json, os, sys
out, filters, size, peak = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
from buildings.benchmark import model_flops
flops = model_flops("unet", size, size, filters=filters)
rows = json.load(open(f"{out}/bench.json"))
for jit in ("false", "true"):
    if not os.path.exists(f"{out}/bench-jit-{jit}.json"):
        continue
    for r in json.load(open(f"{out}/bench-jit-{jit}.json")):
        r["backend"] = f"{r['backend']} (jit_compile={jit})"
        rows.append(r)
print(f"U-Net filters {filters}: {flops / 1e9:.1f} GFLOP per image forward, x3 for a training step; "
      f"MFU against {peak:.0f} TFLOP/s.\n")
print("| backend | device | train img/s | train MFU | infer img/s | infer MFU | step p50 s | first step s | peak MB | loss 1 | loss N |")
print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for r in rows:
    train_mfu = r["train_images_per_s"] * 3 * flops / (peak * 1e12)
    infer_mfu = r["infer_images_per_s"] * flops / (peak * 1e12)
    print(f"| {r['backend']} | {r['device']} | {r['train_images_per_s']:.1f} | {100 * train_mfu:.1f}% | "
          f"{r['infer_images_per_s']:.1f} | {100 * infer_mfu:.1f}% | {r['step_p50_s']:.4f} | {r['first_step_s']:.1f} | "
          f"{r['peak_memory_mb']:.0f} ({r['memory_kind']}) | {r['loss_first']:.4f} | {r['loss_last']:.4f} |")
PYEOF

fi

if has_stage reference; then
section "Plain PyTorch reference (same U-Net, AMP, channels_last; eager and torch.compile)"
# shellcheck disable=SC2086
step native.log "$LIMIT" $PY experiments/native_torch_unet.py --size "$SIZE" --batch "$BATCH" --filters "$FILTERS" $NATIVE \
  $([ "$PRECISION" = bf16 ] && echo --bf16) >> "$REPORT"

section "Inference through buildings.inference.Predictor"
step inference.log "$LIMIT" $PY experiments/bench_inference.py --model unet --model-option filters=$FILTERS \
  --images "$IMAGES" --batch "$BATCH" --size "$SIZE" --precision "$PRECISION" >> "$REPORT"

section "Peak memory: Keras vs plain PyTorch (fp32)"
step memory.log "$LIMIT" $PY experiments/bench_memory.py --filters "$MEM_FILTERS" --batch 4 --size "$SIZE" >> "$REPORT"

section "Is training input-bound? (device augmentation vs CPU workers)"
step input.log "$LIMIT" $PY experiments/bench_input_bound.py --data "$DATA" --model-option filters=$FILTERS \
  --image-size "$SIZE" --batch-size "$BATCH" --workers "$WORKERS" --steps "$STEPS" --fit-steps "$FIT_STEPS" \
  --precision "$PRECISION" >> "$REPORT"
fi

if has_stage multigpu; then
section "Several GPUs: torch.distributed data parallel (experiments/bench_distributed.py)"
GPUS=$($PY -c "import torch; print(torch.cuda.device_count())" 2>/dev/null || echo 0)
if [ "$SMOKE" = 1 ]; then  # on any machine: 1 and 2 gloo processes on the CPU, tiny, so the stage cannot rot
  step multigpu.log "$LIMIT" $PY experiments/bench_distributed.py --device cpu --processes 1,2 --image-size 64 \
    --batch-size 2 --steps 2 --warmup 1 --filters 4 >> "$REPORT"
elif [ "$GPUS" -gt 1 ]; then
  COUNTS=1; n=2; while [ "$n" -le "$GPUS" ]; do COUNTS="$COUNTS,$n"; n=$((n * 2)); done
  [ "$((n / 2))" -ne "$GPUS" ] && COUNTS="$COUNTS,$GPUS"
  step multigpu.log "$LIMIT" $PY experiments/bench_distributed.py --device cuda --processes "$COUNTS" \
    --image-size "$SIZE" --batch-size "$BATCH" --steps "$BENCH_STEPS" --filters "$FILTERS" >> "$REPORT"
  echo "Goal: scaling >= 0.9 x N (the scaling column)." >> "$REPORT"
else
  echo "One GPU visible ($GPUS): the multi-GPU stage needs two or more, so it did not run." >> "$REPORT"
fi
fi

echo -e "\nTotal wall time: $((SECONDS - started)) s" >> "$REPORT"
tar czf "$OUT/logs.tgz" -C "$WORK" logs 2>/dev/null
echo "wrote $REPORT (failed steps: $FAILED)" >&2
exit "$FAILED"
