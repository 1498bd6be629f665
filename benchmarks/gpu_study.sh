#!/usr/bin/env bash
# The LT-100 study (experiments/lt100-study.yaml: CE, CB-focal, LDAM-DRW, three seeds each)
# under the full published protocol (200 epochs) on one GPU, within a time budget, and
# resumable: run it again with the same STATE folder and `cifarctl sweep` skips the FINISHED
# trials and continues the KILLED ones from their checkpoints. Made for a lent GPU whose calls
# are capped at 10 minutes (the study takes about 12 on an H200, so two calls; see BENCHMARKS.md).
#
#   benchmarks/gpu_study.sh STATE REAL_DATA [BUDGET_S [SWEEP_ARGS...]]
#   DEVICE=cpu benchmarks/gpu_study.sh /tmp/s synthetic 300 --set optim.epochs=1 ...  # smoke
#
# $STUDY_SPEC names another spec of the experiment lt100-study (the CI test: one seed).
#
# STATE keeps the MLflow store (STATE/mlflow.db), the checkpoints and the decoded-data cache
# between calls. Each call writes STATE/sweep.log (appended), STATE/study.json
# (benchmarks/study_summary.py: status, epochs, pace and accuracy per run) and
# STATE/report.json (`cifarctl report --format json`: the rows with their confidence
# intervals); once every trial has FINISHED, with 90 s or more of the budget left, on a GPU
# it also measures resnet32's step compiled in mode reduce-overhead (CUDA graphs), which
# nobody has timed on a GPU yet -> STATE/throughput_cudagraphs.json. Exit code: the sweep's.
set -uo pipefail

[ $# -ge 2 ] || { echo "usage: $0 STATE REAL_DATA [BUDGET_S [SWEEP_ARGS...]]" >&2; exit 2; }
STATE=$1; DATA=$2; BUDGET_S=${3:-570}; shift $(( $# < 3 ? $# : 3 ))
DEVICE=${DEVICE:-cuda}
STUDY_SPEC=${STUDY_SPEC:-experiments/lt100-study.yaml}
DIR=$STATE
source "$(dirname "$0")/script_env.sh"
STATE=$DIR
URI=sqlite:///$STATE/mlflow.db

# the sweep, leaving 50 s for the summary and the report; SIGINT stops its trials cleanly
# (each checkpoints and is marked KILLED), so the next call resumes them
echo "== sweep at $(date -u +%FT%TZ), limit $(( BUDGET_S - 50 ))s" >> "$STATE/sweep.log"
timeout --signal=INT --kill-after=30 $(( BUDGET_S - 50 )) "$PYTHON" -m cifarctl sweep \
  "$STUDY_SPEC" --set "data.dataset=$DATA" "$@" --workers 2 --device "$DEVICE" \
  --tracking-uri "$URI" --checkpoints "$STATE/checkpoints" --quiet >> "$STATE/sweep.log" 2>&1
RC=$?
echo "== sweep rc $RC after $(elapsed)s"
tail -n 15 "$STATE/sweep.log"

"$PYTHON" benchmarks/study_summary.py --tracking-uri "$URI" --experiment lt100-study \
  --json "$STATE/study.json" > /dev/null
"$PYTHON" -m cifarctl report -e lt100-study --tracking-uri "$URI" --format json \
  > "$STATE/report.json"
"$PYTHON" -c "
import json
s = json.load(open('$STATE/study.json'))
print(f\"{s['finished']}/{len(s['runs'])} FINISHED; slowest epoch {s['slowest_epoch_s']} s\")
for r in s['runs']:
    print(r['run_name'], r['status'], r['epochs_done'], r['median_epoch_s'], r['test_acc_at_best'])
"

LEFT=$(( BUDGET_S - $(elapsed) ))
if [ $RC = 0 ] && [ $LEFT -ge 90 ] && [ "$DEVICE" != cpu ]; then  # CUDA graphs: a GPU's
  echo "== throughput, compiled reduce-overhead, limit $(( LEFT - 10 ))s"
  timeout --signal=INT --kill-after=10 $(( LEFT - 10 )) "$PYTHON" benchmarks/throughput.py \
    --device "$DEVICE" --warmup 5 --windows 5 --steps 20 --only b,c --ks 8 \
    --compile-mode reduce-overhead --json "$STATE/throughput_cudagraphs.json" 2>&1 | tail -n 12
fi
echo "== done in $(elapsed)s"
exit $RC
