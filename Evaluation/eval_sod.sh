#!/usr/bin/env bash
# Evaluate image saliency maps (run from Evaluation/):
#   bash eval_sod.sh TESTDATA EXP DATADIR [options of python -m Evaluation sod, e.g. --gpu 0]
# TESTDATA: one dataset or several joined by '+'; predictions from ../results/EXP/<DATASET>/<stem>.png;
# GT from DATADIR/<DATASET>/GT/<stem>.png (DATADIR is ROOTDIR/sod). Writes ../results/EXP/metrics_sod.{json,md}.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python_bin="$repo/.venv/bin/python"
[ -x "$python_bin" ] || python_bin=python3
PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}" exec "$python_bin" -m Evaluation sod --results-dir "$repo/results" "$@"
