# Sourced by gpu_check.sh and gpu_study.sh once they have set DIR, their output folder:
# ROOT (the repository), PYTHON (unless set: the project's .venv if there is one, else
# python3), DIR created and made absolute (exit 2 if it cannot be), the repository on
# PYTHONPATH, unbuffered output, the decoded-data cache in DIR/data-cache unless
# $CIFARCTL_DATA names one, the working directory ROOT, START and `elapsed` (seconds since).
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [ -z "${PYTHON:-}" ]; then
  if [ -x "$ROOT/.venv/bin/python" ]; then PYTHON=$ROOT/.venv/bin/python; else PYTHON=python3; fi
fi
mkdir -p "$DIR" || exit 2
DIR=$(cd "$DIR" && pwd)
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export CIFARCTL_DATA=${CIFARCTL_DATA:-$DIR/data-cache}
cd "$ROOT" || exit 2
START=$(date +%s)
elapsed() { echo $(( $(date +%s) - START )); }
