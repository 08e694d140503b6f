#!/usr/bin/env bash
# Evaluate video saliency maps (run from Evaluation/):
#   bash eval_vsod.sh TESTDATA EXP ROOTDIR [options of python -m Evaluation vsod, e.g. --test-lst my_list.txt --gpu 0]
# TESTDATA: DAVSOD, DAVIS, VOS (or several joined by '+'); the videos of --test-lst (default
# dataset/test_video_lst.txt) whose path contains /<DATASET>; predictions from
# ../results/EXP/<DATASET>/<video>/<frame>.png. Writes ../results/EXP/metrics_vsod.{json,md}.
set -euo pipefail
# shellcheck source=find_python.sh
source "$(dirname "${BASH_SOURCE[0]}")/find_python.sh"  # sets repo and python_bin
PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}" exec "$python_bin" -m Evaluation vsod \
    --results-dir "$repo/results" --test-lst "$repo/dataset/test_video_lst.txt" "$@"
