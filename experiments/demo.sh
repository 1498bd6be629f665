#!/usr/bin/env bash
# The offline main job (`make demo`): a long-tailed CE vs class-balanced focal comparison on
# the synthetic set (no download), three seeds each, as one tracked sweep, then the report.
# Runs in the repository root: the MLflow store is ./mlflow.db with artifacts in ./mlruns,
# checkpoints in ./checkpoints, the report in ./reports/demo (all git-ignored).
# Running it again skips the finished trials and reports the same runs.
set -euo pipefail
cd "$(dirname "$0")/.."
cifarctl=".venv/bin/cifarctl"

echo "== 1/3 synthetic dataset (generated once, then cached)"
"$cifarctl" data info synthetic
echo "== 2/3 sweep: CE vs CB-focal (beta 0.999, gamma 2) on LT-20 synthetic, 3 seeds each"
"$cifarctl" sweep experiments/demo-sweep.yaml --workers 2
echo "== 3/3 report"
"$cifarctl" report --experiment demo-sweep --out reports/demo
echo
echo "Report: reports/demo/report.md   Browse the runs: $cifarctl ui"
