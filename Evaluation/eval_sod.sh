#!/usr/bin/env bash
# Evaluate image saliency maps (run from Evaluation/):
#   bash eval_sod.sh TESTDATA EXP DATADIR [options of python -m Evaluation sod, e.g. --gpu 0]
# TESTDATA: one dataset or several joined by '+'; predictions from ../results/EXP/<DATASET>/<stem>.png;
# GT from DATADIR/<DATASET>/GT/<stem>.png (DATADIR is ROOTDIR/sod). Writes ../results/EXP/metrics_sod.{json,md}.
set -euo pipefail
# shellcheck source=find_python.sh
source "$(dirname "${BASH_SOURCE[0]}")/find_python.sh"  # sets repo and python_bin
PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}" exec "$python_bin" -m Evaluation sod --results-dir "$repo/results" "$@"
