#!/usr/bin/env bash
# Evaluate video saliency maps (run from Evaluation/):
#   bash eval_vsod.sh TESTDATA EXP ROOTDIR [options of python -m Evaluation vsod, e.g. --test-lst my_list.txt --gpu 0]
# TESTDATA: DAVSOD, DAVIS, VOS (or several joined by '+'); the videos of --test-lst (default
# dataset/test_video_lst.txt) whose path contains /<DATASET>; predictions from
# ../results/EXP/<DATASET>/<video>/<frame>.png. Writes ../results/EXP/metrics_vsod.{json,md}.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python_bin="$repo/.venv/bin/python"
[ -x "$python_bin" ] || python_bin=python3
PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}" exec "$python_bin" -m Evaluation vsod \
    --results-dir "$repo/results" --test-lst "$repo/dataset/test_video_lst.txt" "$@"
