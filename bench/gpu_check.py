"""``make gpu-check``: what only a GPU can check, in one command of at most 10 minutes on a one-GPU machine.

    .venv/bin/python bench/gpu_check.py [--out results/gpu_check.md]

1. the CUDA-only tests (``pytest -k cuda``);
2. the speed table of the four models, batch 1: the default backend in float32 and float16 and ``--eager``, with
   the ratio to eager (``speed_sod.py`` / ``speed_vsod.py --gpu 0``, the release's pass counts);
3. evaluation throughput on the GPU against PySODMetrics (``bench/bench_metrics.py --device cuda``), and every
   measure (``python -m Evaluation sod --metrics all``) on the GPU against the same command on the CPU;
4. an AMP training step (``train_sod.py --amp --gpu 0`` on generated data);
5. a one-process NCCL DistributedDataParallel step.

Writes the results as a Markdown table for BENCHMARKS.md (``--out``) and prints it. Without CUDA it stops at once
with "no CUDA device" and exit status 2.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(REPO / "results" / "gpu_check.md"), help="the Markdown table to write")
    return parser


def run(command: list[str], env: dict | None = None) -> tuple[bool, str]:
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, env={**os.environ, **(env or {})})
    return done.returncode == 0, (done.stdout + done.stderr)[-1500:]


def speed_rows(folder: Path) -> list[str]:
    rows = ["| model | float32 FPS | float16 FPS | --eager FPS | float32 / eager | float16 max diff |",
            "|---|---:|---:|---:|---:|---:|"]
    for model, script, size in (("sdnet", "speed_sod.py", 320), ("sdneta", "speed_sod.py", 320),
                                ("stdnet", "speed_vsod.py", 256), ("stdneta", "speed_vsod.py", 256)):
        figures = {}
        for variant, flags in (("fp32", []), ("fp16", ["--half"]), ("eager", ["--eager"])):
            out = folder / f"{model}_{variant}.json"
            ok, log = run([sys.executable, script, "--model", model, "--gpu", "0", "--size", str(size), "--json",
                           str(out), *flags])
            figures[variant] = json.loads(out.read_text()) if ok else {"fps": float("nan"), "error": log}
        fp32, fp16, eager = figures["fp32"]["fps"], figures["fp16"]["fps"], figures["eager"]["fps"]
        rows.append(f"| {model} @{size} | {fp32:.1f} | {fp16:.1f} | {eager:.1f} | {fp32 / eager:.2f}x | "
                    f"{figures['fp16'].get('max_abs_diff_vs_fp32', float('nan')):.1e} |")
    return rows


def full_set_on_the_gpu(folder: Path) -> str:
    """``python -m Evaluation sod --metrics all`` on SYN-TE (predictions: its GT blurred) with ``--gpu 0`` and on the
    CPU: the largest difference over every reported key."""
    import cv2

    data = folder / "data" / "sod"
    for gt in sorted((data / "SYN-TE" / "GT").glob("*.png")):
        pred = cv2.GaussianBlur(cv2.imread(str(gt), cv2.IMREAD_GRAYSCALE), (0, 0), 3)
        for where in ("gpu", "cpu"):
            (folder / where / "exp" / "SYN-TE").mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(folder / where / "exp" / "SYN-TE" / gt.name), pred)
    entries = {}
    for where, flags in (("gpu", ["--gpu", "0"]), ("cpu", [])):
        ok, log = run([sys.executable, "-m", "Evaluation", "sod", "SYN-TE", "exp", str(data), "--results-dir",
                       str(folder / where), "--metrics", "all", "--float64", *flags])
        if not ok:
            return f"FAILED ({where}): {log}"
        entries[where] = json.loads((folder / where / "exp" / "metrics_sod.json").read_text())["SYN-TE"]
    keys = [key for key, value in entries["cpu"].items() if isinstance(value, float)]
    worst = max(keys, key=lambda key: abs(entries["gpu"][key] - entries["cpu"][key]))
    return (f"{len(keys)} keys, largest difference {abs(entries['gpu'][worst] - entries['cpu'][worst]):.1e} "
            f"({worst})")


def nccl_step() -> str:
    """One DistributedDataParallel step of SDNet in one NCCL process."""
    import torch.distributed as dist

    from models import build_model

    dist.init_process_group("nccl", init_method="tcp://127.0.0.1:29511", rank=0, world_size=1)
    try:
        model = torch.nn.parallel.DistributedDataParallel(build_model("sdnet").cuda(), device_ids=[0])
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        loss = model(torch.randn(2, 3, 64, 64, device="cuda")).mean()
        loss.backward()
        optimizer.step()
        torch.cuda.synchronize()
        return f"ok (loss {loss.item():.4f})"
    finally:
        dist.destroy_process_group()


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if not torch.cuda.is_available():
        print("gpu-check: no CUDA device", file=sys.stderr)
        raise SystemExit(2)
    start = time.perf_counter()
    lines = [f"GPU check, {datetime.date.today()}, {torch.cuda.get_device_name(0)}, torch {torch.__version__}", ""]
    ok, log = run([sys.executable, "-m", "pytest", "-q", "tests", "-k", "cuda"])
    lines += [f"- CUDA-only tests: {'passed' if ok else 'FAILED'}: {log.strip().splitlines()[-1]}"]
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        ok, log = run([sys.executable, "bench/bench_metrics.py", "--device", "cuda", "--stream-maps", "0",
                       "--json", str(folder / "metrics.json")])
        metrics = json.loads((folder / "metrics.json").read_text()) if ok else {}
        lines += [f"- evaluation on the GPU: {json.dumps(metrics.get('summary', metrics))[:300] if ok else log}"]
        ok, log = run([sys.executable, "-m", "data.synthetic", "--root", str(folder / "data")])
        lines += [f"- every measure (--metrics all) on the GPU vs the CPU: {full_set_on_the_gpu(folder)}"]
        ok, log = run([sys.executable, "train_sod.py", "--datadir", str(folder / "data" / "sod"), "--train-data",
                       "SYN-TR", "--val-data", "SYN-TE", "--savedir", str(folder / "amp"), "--gpu", "0", "--amp",
                       "--epochs", "1", "--max-steps", "2", "--batch-size", "4", "--size", "64", "--seed", "0"])
        lines += [f"- AMP training step: {'ok' if ok else 'FAILED: ' + log}"]
        try:
            lines += [f"- one-process NCCL DDP step: {nccl_step()}"]
        except Exception as err:  # reported in the table, not raised: the other checks still count
            lines += [f"- one-process NCCL DDP step: FAILED: {err}"]
        lines += ["", *speed_rows(folder)]
    lines += ["", f"({time.perf_counter() - start:.0f} s)"]
    text = "\n".join(lines) + "\n"
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
