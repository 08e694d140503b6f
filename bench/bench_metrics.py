"""Throughput of our torch metrics (all of them together) against PySODMetrics 1.6.2 on the same maps, in one run.

    .venv/bin/python bench/bench_metrics.py                  # 500 maps 400x300, CPU, float32, then 5,000 streamed
    .venv/bin/python bench/bench_metrics.py --device cuda    # GPU (PySODMetrics still runs on the CPU)

Maps are synthetic (blurred, noisy ellipses: realistic object sizes and boundaries), generated before timing and
held in memory, so no file decoding is timed. The two implementations are timed on alternating chunks of maps
(PySODMetrics: MAE, Fmeasure, Emeasure, Smeasure, WeightedFmeasure, one ``step`` each per map; ours: `SODMetrics`,
batches of ``--batch-size``), so a machine shared with other jobs slows both alike. The two results are checked to
agree. The streaming run (first, so that its peak memory is not masked by the maps held for the timing) feeds
``--stream-maps`` maps generated on the fly, ``--batch-size`` at a time, and reports the peak resident memory after
the first ``--maps`` and after all of them: bounded memory means the two are about equal.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import resource
import sys
import time
import warnings
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from Evaluation.metrics import SODMetrics  # noqa: E402


def make_pair(seed: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """A synthetic (prediction, GT) pair of uint8 maps: 1-3 filled ellipses; prediction = blurred GT + noise."""
    rng = np.random.default_rng(seed)
    gt = np.zeros((height, width), np.uint8)
    for _ in range(int(rng.integers(1, 4))):
        centre = (int(rng.integers(width // 8, width - width // 8)),
                  int(rng.integers(height // 8, height - height // 8)))
        axes = (int(rng.integers(width // 40 + 1, width // 4)), int(rng.integers(height // 40 + 1, height // 4)))
        cv2.ellipse(gt, centre, axes, float(rng.uniform(0, 180)), 0, 360, 255, -1)
    noisy = cv2.GaussianBlur(gt.astype(np.float32), (0, 0), 4) + rng.normal(0, 25, gt.shape)
    return np.clip(noisy, 0, 255).astype(np.uint8), gt


def reference_results(pairs: list[tuple[np.ndarray, np.ndarray]], metrics: dict) -> None:
    for pred, gt in pairs:
        for metric in metrics.values():
            metric.step(pred, gt)


def ours_results(pairs: list[tuple[np.ndarray, np.ndarray]], metrics: SODMetrics, batch_size: int) -> None:
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start:start + batch_size]
        metrics.step(np.stack([p for p, _ in chunk]), np.stack([g for _, g in chunk]))
    if metrics.device.type == "cuda":
        torch.cuda.synchronize(metrics.device)


def side_by_side(args: argparse.Namespace, dtype: torch.dtype) -> dict:
    import py_sod_metrics

    pairs = [make_pair(seed, args.height, args.width) for seed in range(args.maps)]
    warnings.filterwarnings("ignore", module="py_sod_metrics")  # its Fmeasure warns that it is deprecated
    reference = {name: getattr(py_sod_metrics, name)() for name in
                 ("MAE", "Fmeasure", "Emeasure", "Smeasure", "WeightedFmeasure")}
    ours = SODMetrics(args.device, dtype)
    ours_results(pairs[:args.batch_size], SODMetrics(args.device, dtype), args.batch_size)  # warm-up
    times = {"pysodmetrics": 0.0, "ours": 0.0}
    for start in range(0, len(pairs), args.chunk):
        chunk = pairs[start:start + args.chunk]
        begin = time.perf_counter()
        reference_results(chunk, reference)
        times["pysodmetrics"] += time.perf_counter() - begin
        begin = time.perf_counter()
        ours_results(chunk, ours, args.batch_size)
        times["ours"] += time.perf_counter() - begin
    fm, em = reference["Fmeasure"].get_results()["fm"], reference["Emeasure"].get_results()["em"]
    ref_summary = {
        "MAE": reference["MAE"].get_results()["mae"], "maxF": fm["curve"].max(), "meanF": fm["curve"].mean(),
        "adpF": fm["adp"], "wF": reference["WeightedFmeasure"].get_results()["wfm"],
        "Sm": reference["Smeasure"].get_results()["sm"], "maxE": em["curve"].max(), "meanE": em["curve"].mean(),
        "adpE": em["adp"],
    }
    our_summary = ours.get_results()
    max_difference = max(abs(float(ref_summary[key]) - our_summary[key]) for key in ref_summary)
    return {
        "maps": len(pairs), "size": f"{args.width}x{args.height}", "dtype": str(dtype).replace("torch.", ""),
        "pysodmetrics_maps_per_s": len(pairs) / times["pysodmetrics"], "ours_maps_per_s": len(pairs) / times["ours"],
        "speedup": times["pysodmetrics"] / times["ours"], "max_abs_difference": max_difference,
    }


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def streaming(args: argparse.Namespace) -> dict:
    metrics = SODMetrics(args.device, torch.float32)
    peaks = {}
    begin = time.perf_counter()
    for start in range(0, args.stream_maps, args.batch_size):
        seeds = range(start, min(start + args.batch_size, args.stream_maps))
        chunk = [make_pair(10**6 + seed, args.height, args.width) for seed in seeds]
        metrics.step(np.stack([p for p, _ in chunk]), np.stack([g for _, g in chunk]))
        done = start + len(chunk)
        if done >= args.maps and "first" not in peaks:
            peaks["first"] = (done, peak_rss_mib())
    results = metrics.get_results()
    return {"maps": results["images"], "seconds_incl_generation": time.perf_counter() - begin,
            f"peak_rss_mib_after_{peaks['first'][0]}": peaks["first"][1],
            f"peak_rss_mib_after_{results['images']}": peak_rss_mib()}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--maps", type=int, default=500, help="maps timed side by side")
    parser.add_argument("--width", type=int, default=400)
    parser.add_argument("--height", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=16, help="maps per step() of ours")
    parser.add_argument("--chunk", type=int, default=50, help="maps per alternation between the two")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch and OpenCV threads (default 1: PySODMetrics uses one core too)")
    parser.add_argument("--float64", action="store_true", help="also time our float64 path")
    parser.add_argument("--stream-maps", type=int, default=5000, help="maps of the memory run (0: skip)")
    parser.add_argument("--json", default=None, help="also write the results to this file")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    report = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"), "command": " ".join(sys.argv),
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} thread(s), "
                   f"device {args.device}" + (f" ({torch.cuda.get_device_name()})" if args.device != "cpu" else ""),
        "torch": torch.__version__,
    }
    if args.stream_maps:
        report["streaming"] = streaming(args)
        print("streaming:", json.dumps(report["streaming"]))
    report["runs"] = [side_by_side(args, torch.float32)]
    if args.float64:
        report["runs"].append(side_by_side(args, torch.float64))
    for run in report["runs"]:
        print(f"{run['maps']} maps {run['size']} ({run['dtype']}): pysodmetrics {run['pysodmetrics_maps_per_s']:.1f} "
              f"maps/s, ours {run['ours_maps_per_s']:.1f} maps/s, speed-up {run['speedup']:.2f}x, "
              f"max |difference| {run['max_abs_difference']:.2e}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
