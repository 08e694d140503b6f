"""Evaluation as whole commands: ``eval_sod.sh`` against a PySODMetrics script, on the same PNG files, alternated.

    .venv/bin/python bench/bench_eval_command.py --maps 1500 --rounds 3 [--metrics all] [--ours-only]

Writes ``--maps`` synthetic pairs of 400x300 PNG maps (blurred, noisy ellipses, as bench/bench_metrics.py makes
them; with ``--metrics`` naming ccm also an RGB image each) into a temporary folder, then times, as separate
processes and alternating, (a) ``bash Evaluation/eval_sod.sh BENCH bench ROOT [--metrics ...]`` (startup, decoding,
both protocols, the JSON, Markdown and curve figure included) and (b) a Python script that reads every pair with
OpenCV and steps the PySODMetrics classes computing the same measures (the five summary classes, and for
``--metrics`` FmeasureV2 with the chosen handlers, MSIoU, the size-invariant classes, HCE, the context measures),
the way its examples do. Reports the median wall time of each, their ratio, and the evaluation's peak resident
memory (its process and workers, from ``/usr/bin/time``-like rusage of the children). ``--ours-only`` times (a)
alone, for memory runs on many maps.
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
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench_metrics import make_pair  # noqa: E402

PYSODMETRICS = """
import sys, warnings
from pathlib import Path
import cv2
import py_sod_metrics as psm
sys.path.insert(0, sys.argv[4])
from Evaluation.measures import _HANDLERS, parse_metrics
warnings.simplefilter("ignore")
names = parse_metrics(sys.argv[3])
metrics = [getattr(psm, name)() for name in ("MAE", "Fmeasure", "Emeasure", "Smeasure", "WeightedFmeasure")]
gray = dict(with_dynamic=True, with_adaptive=True)
binary = dict(with_dynamic=False, with_adaptive=False, with_binary=True, sample_based=False)
handlers, si = {}, {}
for name in names:
    base = name[2:] if name.startswith(("bi", "si")) and name[2:] in _HANDLERS else name
    if base in _HANDLERS:
        cls, options, _ = _HANDLERS[base]
        kind = binary if name.startswith("bi") and base != name else gray
        target = si if name.startswith("si") and base != name else handlers
        target[name] = getattr(psm, cls.__name__)(**kind, **options)
if handlers:
    metrics.append(psm.FmeasureV2(handlers))
if si:
    metrics.append(psm.SizeInvarianceFmeasureV2(si))
others = {"msiou": lambda: psm.MSIoU(True, True), "simae": psm.SizeInvarianceMAE,
          "hce": psm.HumanCorrectionEffortMeasure, "cm": psm.ContextMeasure}
metrics += [make() for name, make in others.items() if name in names]
ccm = psm.CamouflageContextMeasure() if "ccm" in names else None
gt_dir, pred_dir = Path(sys.argv[1]), Path(sys.argv[2])
for gt_path in sorted(gt_dir.iterdir()):
    gt = cv2.imread(str(gt_path), cv2.IMREAD_GRAYSCALE)
    pred = cv2.imread(str(pred_dir / gt_path.name), cv2.IMREAD_GRAYSCALE)
    for metric in metrics:
        metric.step(pred, gt)
    if ccm is not None:
        image = cv2.cvtColor(cv2.imread(str(gt_dir.parent / "images" / gt_path.name)), cv2.COLOR_BGR2RGB)
        ccm.step(pred, gt, img=image)
print(metrics[0].get_results())
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--maps", type=int, default=1500, help="number of map pairs")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each command, alternated")
    parser.add_argument("--metrics", default="", help="--metrics of both commands (default: the summary five)")
    parser.add_argument("--ours-only", action="store_true", help="time eval_sod.sh only")
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    return parser


def timed(command: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall seconds of ``command`` and the peak resident memory (MiB) of its largest process."""
    start = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, err = process.communicate()
    seconds = time.perf_counter() - start
    if process.returncode:
        raise SystemExit(f"{command[:3]} failed:\n{err[-2000:]}")
    import resource

    return seconds, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        root, results = Path(folder) / "root", Path(folder) / "results"
        (root / "BENCH" / "GT").mkdir(parents=True)
        (results / "bench" / "BENCH").mkdir(parents=True)
        with_images = "ccm" in args.metrics or args.metrics.strip() == "all"
        if with_images:
            (root / "BENCH" / "images").mkdir(parents=True)
        for index in range(args.maps):
            pred, gt = make_pair(index, 300, 400)
            cv2.imwrite(str(root / "BENCH" / "GT" / f"{index:05d}.png"), gt)
            cv2.imwrite(str(results / "bench" / "BENCH" / f"{index:05d}.png"), pred)
            if with_images:
                rng = np.random.default_rng(index)
                image = cv2.GaussianBlur(rng.integers(0, 256, (300, 400, 3)).astype(np.uint8), (0, 0), 2)
                cv2.imwrite(str(root / "BENCH" / "images" / f"{index:05d}.png"), image)
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        metrics = ["--metrics", args.metrics] if args.metrics else []
        ours = ["bash", str(REPO / "Evaluation" / "eval_sod.sh"), "BENCH", "bench", str(root), "--results-dir",
                str(results), *metrics]
        theirs = [sys.executable, "-c", PYSODMETRICS, str(root / "BENCH" / "GT"), str(results / "bench" / "BENCH"),
                  args.metrics, str(REPO)]
        commands = [("eval_sod.sh", ours)] + ([] if args.ours_only else [("pysodmetrics", theirs)])
        times = {name: [] for name, _ in commands}
        peak = 0.0
        for round_ in range(args.rounds):
            for name, command in commands if round_ % 2 == 0 else commands[::-1]:
                seconds, memory = timed(command, env)
                times[name].append(seconds)
                if name == "eval_sod.sh":
                    peak = max(peak, memory)
                print(f"round {round_}: {name} {seconds:.2f} s", flush=True)
    median = {name: statistics.median(values) for name, values in times.items()}
    result = {"maps": args.maps, "size": "400x300", "metrics": args.metrics or "the summary five",
              "times_s": times, "median_s": median, "cpu_count": os.cpu_count(), "peak_rss_mib": peak}
    if not args.ours_only:
        result["speedup"] = median["pysodmetrics"] / median["eval_sod.sh"]
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
