#!/usr/bin/env bash
# One self-contained check for a CUDA machine, in under 8 minutes (issues 8 and 21):
#
#   benchmarks/gpu_check.sh OUTDIR [--smoke]
#   CIFARCTL_REAL_DATA=/path/to/cifar10-jpeg.tar.gz benchmarks/gpu_check.sh OUTDIR
#
# 1. environment: nvidia-smi, driver, torch, CUDA, the GPU, cifarctl's commit -> env.json
# 2. the test files that train, fuse, load or evaluate, on CUDA (`run.device` is `auto`, so
#    their runs take the GPU): any CUDA-only failure is a bug -> tests_cuda.xml (JUnit)
# 3. throughput table on CUDA, eager: (a) reference loop, (b) cifarctl engine, (c) fused
#    K = 1, 2, 4, 8, 16 (the fused scaling, with peak memory)     -> throughput_eager.json
#    a torch.profiler table of (b) and fused K = 8 (device-busy vs wall) -> profile.txt
#    and the data pipeline alone: DeviceLoader vs torchvision DataLoader, crop-flip and
#    RandAugment -> loader.json
# 4. the LT-100 study (experiments/lt100-study.yaml: CE, CB-focal, LDAM-DRW, 3 seeds) on the
#    real data as `cifarctl sweep` trains it (fused groups, MLflow store in OUTDIR/study),
#    cut to a few epochs; then `cifarctl report` on it and `cifarctl eval --corruptions` on
#    one run -> study.json (pace per run, the projected 200-epoch study),
#    study_eval.json, study/report/
# 5. (b) and fused K = 8 compiled in mode reduce-overhead (CUDA graphs)
#                                                                  -> throughput_cudagraphs.json
#    and in torch.compile's default mode                           -> throughput_compiled.json
#    (after the study: compiling is the slowest step and the most expendable)
# 6. time permitting, one real long-tailed run: resnet32, LT-100, the published protocol
#    (experiments/resnet32-lt100-ce.yaml, 200 epochs) on the real JPEG CIFAR-10 named by
#    $CIFARCTL_REAL_DATA (or a second argument), stopped at the time budget -> lt100.json
# Every step's output also goes to OUTDIR/<step>.log; OUTDIR/summary.json lists the steps
# with their exit codes and seconds. A step that fails does not stop the others; the script
# exits 1 if any did (2 for bad arguments). Steps 2 and 4 need the project's other
# dependencies (mlflow, typer, pandas, scipy; step 2 pytest-xdist too) besides torch;
# without real data step 4 runs on the synthetic set.
# --smoke runs the same steps on the CPU in seconds (tiny model, batch and windows, the
# synthetic set, one seed of the study, no tests): the CI test of this script. $PYTHON picks
# the interpreter (default: the project's .venv if there is one, else python3); the
# repository is put on PYTHONPATH.
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
DIR=$OUT
source "$(dirname "$0")/script_env.sh"
OUT=$DIR

# the whole script: 8 minutes less a margin for the summary (GPU_CHECK_BUDGET_S to change)
BUDGET_S=${GPU_CHECK_BUDGET_S:-470}
STEPS=()

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
# skip_step NAME WHY: record a step that did not run
skip_step() {
  echo "== $1: skipped ($2)"
  STEPS+=("{\"step\": \"$1\", \"rc\": null, \"seconds\": 0, \"skipped\": \"$2\"}")
}

if [ $SMOKE = 1 ]; then
  DEVICE=cpu
  BENCH=(--model vanillacnn --batch-size 16 --warmup 1 --windows 2 --steps 1)
  KS=1,2; KC=2; COMPILE_LIMIT=300
  LOADER=(--epochs 1 --images 500 --workers 1 --policies crop-flip,randaugment)
  LT=(--config experiments/resnet32-lt100-ce.yaml --dataset synthetic --set model.name=vanillacnn
      --set optim.epochs=1 --set optim.batch_size=64 --set optim.warmup=0)
  # one seed of the study (a copy of its spec), tiny
  STUDY_SPEC=$OUT/lt100-study-smoke.yaml
  sed -e 's/seed: \[0, 1, 2\]/seed: [0]/' -e "s|^base: |base: $ROOT/experiments/|" \
    experiments/lt100-study.yaml > "$STUDY_SPEC"
  STUDY=(--set data.dataset=synthetic --set model.name=vanillacnn --set optim.epochs=1
         --set optim.warmup=0 --set optim.batch_size=64)
  CORRUPTIONS=(--corruption jpeg)
else
  DEVICE=cuda
  BENCH=(--warmup 5 --windows 5 --steps 20)
  KS=1,2,4,8,16; KC=8; COMPILE_LIMIT=150
  # crop-flip and RandAugment (issue 19) on 10,000 images: the PIL side of RandAugment is
  # what takes the time (about 4 s an epoch with 2 workers)
  LOADER=(--epochs 3 --images 10000 --policies crop-flip,randaugment)
  LT=(--config experiments/resnet32-lt100-ce.yaml --dataset "$DATA")
  # 4 epochs of the 200: the sweep, report and eval paths on CUDA, and the pace per epoch
  STUDY_SPEC=experiments/lt100-study.yaml
  STUDY=(--set "data.dataset=${DATA:-synthetic}" --set optim.epochs=4 --workers 2)
  CORRUPTIONS=(--corruptions)
fi
# the test files whose runs train, fuse, load data or evaluate (on the GPU: on CUDA)
CUDA_TESTS=(tests/test_data_loader.py tests/test_augment.py tests/test_mix.py tests/test_fused.py
            tests/test_fused_train.py tests/test_train.py tests/test_eval.py tests/test_losses.py
            tests/test_losses_adjusted.py tests/test_sam.py tests/test_models.py
            tests/test_checkpoint.py tests/test_stages.py tests/test_posthoc.py
            tests/test_samplers.py tests/test_optim.py)

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

# 2. the training, fusing, data and eval tests, on CUDA
if [ $SMOKE = 1 ]; then
  skip_step tests_cuda "smoke: the suite runs them on the CPU"
else
  run_step tests_cuda 150 "$PYTHON" -m pytest -q -p no:cacheprovider -n 12 \
    --junitxml "$OUT/tests_cuda.xml" "${CUDA_TESTS[@]}"
fi

# 3. eager throughput and fused scaling
run_step throughput_eager 150 "$PYTHON" benchmarks/throughput.py --device $DEVICE "${BENCH[@]}" \
  --ks $KS --json "$OUT/throughput_eager.json"

# 3a. where (b)'s and fused K = 8's step time goes: torch.profiler's operator table, with the
#     device-busy total against the wall (on an H200 (b) kept the GPU busy ~26 % of a step)
run_step profile 90 "$PYTHON" benchmarks/throughput.py --device $DEVICE "${BENCH[@]}" \
  --only b,c --ks $KC --windows 1 --profile "$OUT/profile.txt"

# 3b. the data pipeline alone (issue 2): the synthetic set, on the device
run_step loader 60 "$PYTHON" benchmarks/loader.py --device $DEVICE "${LOADER[@]}" \
  --json "$OUT/loader.json"

# 4. the LT-100 study as users run it: sweep (fused groups), report, eval with corruptions
URI=sqlite:///$OUT/study/mlflow.db
mkdir -p "$OUT/study"
run_step study 150 "$PYTHON" -m cifarctl sweep "$STUDY_SPEC" "${STUDY[@]}" \
  --device $DEVICE --tracking-uri "$URI" --checkpoints "$OUT/study/checkpoints" --quiet
run_step study_summary 60 "$PYTHON" benchmarks/study_summary.py --tracking-uri "$URI" \
  --experiment lt100-study --json "$OUT/study.json"
run_step study_report 60 "$PYTHON" -m cifarctl report -e lt100-study --tracking-uri "$URI" \
  --out "$OUT/study/report" --no-log
# the first FINISHED run of the summary (none if the study or its summary failed)
RUN=$("$PYTHON" -c "import json; print(next(r['run_id'] for r in json.load(open(
  '$OUT/study.json'))['runs'] if r['status'] == 'FINISHED'))" 2>/dev/null)
if [ -z "$RUN" ]; then
  skip_step study_eval "no FINISHED run"
else
  run_step study_eval 60 bash -c "\"$PYTHON\" -m cifarctl eval $RUN --tracking-uri '$URI' \
    --checkpoints '$OUT/study/checkpoints' ${CORRUPTIONS[*]} --device $DEVICE --json \
    > '$OUT/study_eval.json'"
fi

# 5. compiled, in what time is left (keeping 60 s for the real run): torch.compile's default
#    reduce-overhead (CUDA graphs: the remedy a launch-bound step calls for), then the default
compiled_step() {  # NAME EXTRA_ARGS...
  local name=$1; shift
  local left=$(( BUDGET_S - $(elapsed) - 60 ))
  if [ $left -lt 45 ]; then
    skip_step "$name" "only ${left}s left"
  else
    run_step "$name" $(( left < COMPILE_LIMIT ? left : COMPILE_LIMIT )) "$PYTHON" \
      benchmarks/throughput.py --device $DEVICE "${BENCH[@]}" --only b,c --ks $KC "$@" \
      --json "$OUT/$name.json"
  fi
}
compiled_step throughput_cudagraphs --compile-mode reduce-overhead  # not yet measured on a GPU
compiled_step throughput_compiled --compile

# 6. the real long-tailed run, in what time is left
LEFT=$(( BUDGET_S - $(elapsed) - 15 ))
if [ $SMOKE = 0 ] && [ -z "$DATA" ]; then
  skip_step lt100 "no real data: set CIFARCTL_REAL_DATA or pass its path"
elif [ $LEFT -lt 45 ]; then
  skip_step lt100 "only ${LEFT}s left"
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
