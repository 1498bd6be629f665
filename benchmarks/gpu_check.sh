#!/usr/bin/env bash
# One self-contained speed check for a CUDA machine, in under 8 minutes (issue 8):
#
#   benchmarks/gpu_check.sh OUTDIR [--smoke]
#   CIFARCTL_REAL_DATA=/path/to/cifar10-jpeg.tar.gz benchmarks/gpu_check.sh OUTDIR
#
# 1. environment: nvidia-smi, driver, torch, CUDA, the GPU, cifarctl's commit -> env.json
# 2. throughput table on CUDA, eager: (a) reference loop, (b) cifarctl engine, (c) fused
#    K = 1, 2, 4, 8, 16 (the fused scaling, with peak memory)     -> throughput_eager.json
# 3. the same compiled (torch.compile): (b) and fused K = 8        -> throughput_compiled.json
#    and the data pipeline alone: DeviceLoader vs torchvision DataLoader, crop-flip and
#    RandAugment -> loader.json
# 4. time permitting, one real long-tailed run: resnet32, LT-100, the published protocol
#    (experiments/resnet32-lt100-ce.yaml, 200 epochs) on the real JPEG CIFAR-10 named by
#    $CIFARCTL_REAL_DATA (or a second argument), stopped at the time budget -> lt100.json
# Every step's output also goes to OUTDIR/<step>.log; OUTDIR/summary.json lists the steps
# with their exit codes and seconds. A step that fails does not stop the others; the script
# exits 1 if any did (2 for bad arguments).
# --smoke runs the same steps on the CPU in seconds (tiny model, batch and windows, the
# synthetic set): the CI test of this script. $PYTHON picks the interpreter (default: the
# project's .venv if there is one, else python3); the repository is put on PYTHONPATH.
set -uo pipefail

usage() { echo "usage: $0 OUTDIR [--smoke] [REAL_DATA]" >&2; exit 2; }
[ $# -ge 1 ] || usage
OUT=$1; shift
SMOKE=0; DATA=${CIFARCTL_REAL_DATA:-}
for arg in "$@"; do
  case $arg in
    --smoke) SMOKE=1 ;;
    -*) usage ;;
    *) DATA=$arg ;;
  esac
done
ROOT=$(cd "$(dirname "$0")/.." && pwd)
if [ -z "${PYTHON:-}" ]; then
  if [ -x "$ROOT/.venv/bin/python" ]; then PYTHON=$ROOT/.venv/bin/python; else PYTHON=python3; fi
fi
mkdir -p "$OUT" || exit 2
OUT=$(cd "$OUT" && pwd)
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export CIFARCTL_DATA=${CIFARCTL_DATA:-$OUT/data-cache}
cd "$ROOT"

START=$(date +%s)
BUDGET_S=470          # the whole script: 8 minutes less a margin for the summary
STEPS=()
elapsed() { echo $(( $(date +%s) - START )); }

# run_step NAME LIMIT_S CMD...: run with a time limit, log to OUT/NAME.log, record the result
run_step() {
  local name=$1 limit=$2; shift 2
  local t0=$(date +%s)
  echo "== $name (limit ${limit}s, at $(elapsed)s)"
  timeout --signal=INT --kill-after=20 "$limit" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  tail -n 25 "$OUT/$name.log"
  STEPS+=("{\"step\": \"$name\", \"rc\": $rc, \"seconds\": $(( $(date +%s) - t0 ))}")
}

if [ $SMOKE = 1 ]; then
  DEVICE=cpu
  BENCH=(--model vanillacnn --batch-size 16 --warmup 1 --windows 2 --steps 1)
  KS=1,2; KC=2; COMPILE_LIMIT=300
  LOADER=(--epochs 1 --images 500 --workers 1 --policies crop-flip,randaugment)
  LT=(--config experiments/resnet32-lt100-ce.yaml --dataset synthetic --set model.name=vanillacnn
      --set optim.epochs=1 --set optim.batch_size=64 --set optim.warmup=0)
else
  DEVICE=cuda
  BENCH=(--warmup 5 --windows 5 --steps 20)
  KS=1,2,4,8,16; KC=8; COMPILE_LIMIT=150
  # crop-flip and RandAugment (issue 19) on 10,000 images: the PIL side of RandAugment is
  # what takes the time (about 4 s an epoch with 2 workers)
  LOADER=(--epochs 3 --images 10000 --policies crop-flip,randaugment)
  LT=(--config experiments/resnet32-lt100-ce.yaml --dataset "$DATA")
fi

# 1. environment
{
  echo "date: $(date -u +%FT%TZ)"
  echo "host: $(hostname)"
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>&1 \
    || echo "nvidia-smi: not available"
  nvidia-smi 2>&1 | head -n 20 || true
} > "$OUT/env.log"
run_step env_python 60 "$PYTHON" -c "
import json, platform, subprocess, torch
info = {'python': platform.python_version(), 'torch': torch.__version__,
        'cuda_available': torch.cuda.is_available(), 'cuda': torch.version.cuda,
        'cudnn': torch.backends.cudnn.version(), 'cpu_threads': torch.get_num_threads()}
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    info.update(gpu=p.name, gpu_memory_gib=round(p.total_memory / 2**30, 1),
                multiprocessors=p.multi_processor_count, capability=f'{p.major}.{p.minor}')
try:
    info['driver'] = subprocess.run(['nvidia-smi', '--query-gpu=driver_version',
        '--format=csv,noheader'], capture_output=True, text=True).stdout.strip() or None
except OSError:
    info['driver'] = None
try:
    info['cifarctl_commit'] = subprocess.run(['git', 'rev-parse', 'HEAD'], capture_output=True,
        text=True).stdout.strip() or None
except OSError:
    info['cifarctl_commit'] = None
print(json.dumps(info))
open('$OUT/env.json', 'w').write(json.dumps(info) + '\n')
"
cat "$OUT/env.log"

# 2. eager throughput and fused scaling
run_step throughput_eager 200 "$PYTHON" benchmarks/throughput.py --device $DEVICE "${BENCH[@]}" \
  --ks $KS --json "$OUT/throughput_eager.json"

# 3. compiled
run_step throughput_compiled $COMPILE_LIMIT "$PYTHON" benchmarks/throughput.py --device $DEVICE \
  "${BENCH[@]}" --compile --only b,c --ks $KC --json "$OUT/throughput_compiled.json"

# 3b. the data pipeline alone (issue 2): the synthetic set, on the device
run_step loader 90 "$PYTHON" benchmarks/loader.py --device $DEVICE "${LOADER[@]}" \
  --json "$OUT/loader.json"

# 4. the real long-tailed run, in what time is left
LEFT=$(( BUDGET_S - $(elapsed) - 15 ))
if [ $SMOKE = 0 ] && [ -z "$DATA" ]; then
  echo "== lt100: skipped (no real data: set CIFARCTL_REAL_DATA or pass its path)"
  STEPS+=("{\"step\": \"lt100\", \"rc\": null, \"seconds\": 0, \"skipped\": \"no data\"}")
elif [ $LEFT -lt 45 ]; then
  echo "== lt100: skipped (only ${LEFT}s left)"
  STEPS+=("{\"step\": \"lt100\", \"rc\": null, \"seconds\": 0, \"skipped\": \"no time\"}")
else
  run_step lt100 $LEFT "$PYTHON" benchmarks/lt_run.py "${LT[@]}" --device $DEVICE \
    --budget-s $(( LEFT - 25 )) --json "$OUT/lt100.json"
fi

( IFS=,; echo "{\"smoke\": $([ $SMOKE = 1 ] && echo true || echo false), \"device\": \"$DEVICE\", \"seconds\": $(elapsed), \"steps\": [${STEPS[*]}]}" ) \
  > "$OUT/summary.json"
echo "== done in $(elapsed)s: $OUT"
cat "$OUT/summary.json"
for step in "${STEPS[@]}"; do
  case $step in *'"rc": 0,'*|*'"rc": null,'*) ;; *) exit 1 ;; esac
done
