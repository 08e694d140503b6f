"""Evaluation as whole commands: ``eval_sod.sh`` against a PySODMetrics script, on the same PNG files, alternated.

    .venv/bin/python bench/bench_eval_command.py --maps 1500 --rounds 3

Writes ``--maps`` synthetic pairs of 400x300 PNG maps (blurred, noisy ellipses, as bench/bench_metrics.py makes
them) into a temporary folder, then times, as separate processes and alternating, (a) ``bash Evaluation/eval_sod.sh
BENCH bench ROOT`` (startup, decoding, both protocols, the JSON, Markdown and curve figure included) and (b) a Python
script that reads every pair with OpenCV and steps all five PySODMetrics classes (MAE, Fmeasure, Emeasure, Smeasure,
WeightedFmeasure), the way its examples do. Reports the median wall time of each and their ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench_metrics import make_pair  # noqa: E402

PYSODMETRICS = """
import sys, warnings
from pathlib import Path
import cv2
import py_sod_metrics
warnings.simplefilter("ignore")
metrics = [getattr(py_sod_metrics, name)() for name in ("MAE", "Fmeasure", "Emeasure", "Smeasure", "WeightedFmeasure")]
gt_dir, pred_dir = Path(sys.argv[1]), Path(sys.argv[2])
for gt_path in sorted(gt_dir.iterdir()):
    gt = cv2.imread(str(gt_path), cv2.IMREAD_GRAYSCALE)
    pred = cv2.imread(str(pred_dir / gt_path.name), cv2.IMREAD_GRAYSCALE)
    for metric in metrics:
        metric.step(pred, gt)
print({type(m).__name__: m.get_results() for m in metrics}["MAE"])
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--maps", type=int, default=1500, help="number of map pairs")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each command, alternated")
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    return parser


def timed(command: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"{command[:3]} failed:\n{done.stderr[-2000:]}")
    return seconds


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        root, results = Path(folder) / "root", Path(folder) / "results"
        (root / "BENCH" / "GT").mkdir(parents=True)
        (results / "bench" / "BENCH").mkdir(parents=True)
        for index in range(args.maps):
            pred, gt = make_pair(index, 300, 400)
            cv2.imwrite(str(root / "BENCH" / "GT" / f"{index:05d}.png"), gt)
            cv2.imwrite(str(results / "bench" / "BENCH" / f"{index:05d}.png"), pred)
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        ours = ["bash", str(REPO / "Evaluation" / "eval_sod.sh"), "BENCH", "bench", str(root), "--results-dir",
                str(results)]
        theirs = [sys.executable, "-c", PYSODMETRICS, str(root / "BENCH" / "GT"), str(results / "bench" / "BENCH")]
        times = {"eval_sod.sh": [], "pysodmetrics": []}
        for round_ in range(args.rounds):
            order = [("eval_sod.sh", ours), ("pysodmetrics", theirs)]
            for name, command in order if round_ % 2 == 0 else order[::-1]:
                times[name].append(timed(command, env))
                print(f"round {round_}: {name} {times[name][-1]:.2f} s", flush=True)
    median = {name: statistics.median(values) for name, values in times.items()}
    result = {"maps": args.maps, "size": "400x300", "times_s": times, "median_s": median,
              "speedup": median["pysodmetrics"] / median["eval_sod.sh"], "cpu_count": os.cpu_count()}
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
