"""``make gpu-check``: what only a GPU can check, in one command of at most 5 minutes on a one-GPU machine.

    python3 bench/gpu_check.py [--out results/gpu_check.md] [--budget 290]

Runs with whatever Python holds torch: the project's ``.venv``, or the GPU machine's own ``python3`` (no network
there, no openvino or pysodmetrics; docs/gpu_check.md gives the exact device command, which carries the
pure-Python wheels it can use). Each part says what it needs; one whose package, torch feature or time is missing
is reported as skipped with the reason, never as a failure. In order of value:

1. training rows (``bench/bench_train.py``'s step, in this process): SDNet @320 batch 8 and 32, STDNet @256 (one
   8-frame clip): separate vs fused, fp32 vs fp16 autocast (AMP) vs bf16, NCHW vs channels_last, torch.compile;
2. the CUDA-only tests (``pytest -k cuda``; needs pytest);
3. one short training command in fp16 (``--amp``) and bf16, and a one-process NCCL DistributedDataParallel step;
4. the inference speed table of the four models, batch 1: the default backend in float32 and float16 and
   ``--eager`` (``speed_*.py --gpu 0``, the release's pass counts);
5. every measure (``python -m Evaluation sod --metrics all``) on the GPU against the same command on the CPU, and
   evaluation throughput against PySODMetrics (``bench/bench_metrics.py --device cuda``; needs pysodmetrics);
6. the exported ONNX file (SDNet @320, batch 1) through ONNX Runtime's CUDA and TensorRT execution providers, each
   row skipped by name where this onnxruntime lacks the provider: FPS and the largest difference from PyTorch's
   CUDA float32 output.

Writes a Markdown report for BENCHMARKS.md (``--out``) and prints it. Without torch or CUDA it stops at once with
one line and exit status 2.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# Training rows: (case of bench_train.CASES, label, step flags). Timed in this order until the budget is spent.
TRAIN_ROWS = [
    ("sdnet", "separate fp32 NCHW", dict(train_form="separate", precision="fp32", channels_last=False)),
    ("sdnet", "fused fp32 NCHW", dict(train_form="fused", precision="fp32", channels_last=False)),
    ("sdnet", "fused fp32 channels_last", dict(train_form="fused", precision="fp32", channels_last=True)),
    ("sdnet", "fused fp16 (AMP) channels_last", dict(train_form="fused", precision="fp16", channels_last=True)),
    ("sdnet", "fused bf16 channels_last", dict(train_form="fused", precision="bf16", channels_last=True)),
    ("sdnet_b32", "separate fp32 NCHW", dict(train_form="separate", precision="fp32", channels_last=False)),
    ("sdnet_b32", "fused fp32 channels_last", dict(train_form="fused", precision="fp32", channels_last=True)),
    ("sdnet_b32", "fused fp16 (AMP) channels_last", dict(train_form="fused", precision="fp16", channels_last=True)),
    ("stdnet", "separate fp32 NCHW", dict(train_form="separate", precision="fp32", channels_last=False)),
    ("stdnet", "fused fp32 channels_last", dict(train_form="fused", precision="fp32", channels_last=True)),
    ("stdnet", "fused fp16 (AMP) channels_last", dict(train_form="fused", precision="fp16", channels_last=True)),
    ("sdnet", "fused fp16 channels_last + torch.compile",
     dict(train_form="fused", precision="fp16", channels_last=True, compile=True)),
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(REPO / "results" / "gpu_check.md"), help="the Markdown report to write")
    parser.add_argument("--budget", type=float, default=290.0,
                        help="seconds for the whole check; parts that would not fit are skipped (default 290)")
    parser.add_argument("--plan", action="store_true",
                        help="list the parts and what each would skip on this machine, run nothing (works on the CPU)")
    return parser


def missing(*modules: str) -> list[str]:
    """The modules of ``modules`` this Python cannot import."""
    return [name for name in modules if importlib.util.find_spec(name) is None]


class Report:
    """The report's lines and the time budget: a part runs only if its estimate fits in what is left."""

    def __init__(self, budget: float) -> None:
        self.start, self.budget, self.lines = time.perf_counter(), budget, []

    def left(self) -> float:
        return self.budget - (time.perf_counter() - self.start)

    def part(self, title: str, needs: tuple[str, ...], estimate: float, body: Callable[[], list[str]]) -> None:
        """Run ``body`` (its lines go to the report) unless a module of ``needs`` is missing or ``estimate``
        seconds do not fit; an exception is reported as FAILED with its message and the other parts still run."""
        absent = missing(*needs)
        if absent:
            self.lines += [f"- {title}: skipped: needs {', '.join(absent)}, not installed here"]
            return
        if estimate > self.left():
            self.lines += [f"- {title}: skipped: about {estimate:.0f} s needed, {max(self.left(), 0):.0f} s left"]
            return
        began = time.perf_counter()
        try:
            body_lines = body()
        except Exception as err:  # reported, not raised: the other parts still count
            body_lines = [f"FAILED: {type(err).__name__}: {str(err).strip().splitlines()[0] if str(err) else ''}"]
        self.lines += [f"- {title} ({time.perf_counter() - began:.0f} s):" if len(body_lines) > 1
                       else f"- {title} ({time.perf_counter() - began:.0f} s): {body_lines[0]}"]
        if len(body_lines) > 1:
            self.lines += ["", *body_lines, ""]


def run(command: list[str], env: dict | None = None, timeout: float = 240) -> tuple[bool, str]:
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, env={**os.environ, **(env or {})},
                          timeout=timeout)
    return done.returncode == 0, (done.stdout + done.stderr)[-1500:]


def training_rows(report: Report) -> list[str]:
    """The step table: images/s (median of 3 rounds of 5 steps) and the allocator's peak, row by row while the
    budget lasts (leaving room for the other parts)."""
    import torch

    from bench import bench_train
    from engine.training.step import StepError, resolve_step_settings

    device = torch.device("cuda", 0)
    rows = ["| case | step | images/s | vs separate fp32 | peak MiB |", "|---|---|---:|---:|---:|"]
    baseline: dict[str, float] = {}
    for case, label, flags in TRAIN_ROWS:
        if report.left() < 150:  # keep time for the tests, the commands and the speed table
            rows.append(f"| {case} | {label} | skipped: time | | |")
            continue
        try:
            settings = resolve_step_settings(device, **flags)
            row = bench_train.measure(case, device, settings, rounds=3, steps=5, warmup=3)
        except (StepError, SystemExit, RuntimeError) as err:
            rows.append(f"| {case} | {label} | skipped: {str(err).splitlines()[0][:120]} | | |")
            continue
        finally:
            torch.cuda.empty_cache()
        rate = row["images_per_s_median"]
        if label == "separate fp32 NCHW":
            baseline[case] = rate
        ratio = f"{rate / baseline[case]:.2f}x" if case in baseline else ""
        rows.append(f"| {case} | {label} | {rate:.1f} | {ratio} | {row['peak_step_memory_mib']:.0f} |")
    return rows


def cuda_tests() -> list[str]:
    ok, log = run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests", "-k", "cuda"])
    return [("passed: " if ok else "FAILED: ") + log.strip().splitlines()[-1]]


def training_commands(folder: Path) -> list[str]:
    ok, log = run([sys.executable, "-m", "data.synthetic", "--root", str(folder / "data")])
    if not ok:
        return [f"FAILED (synthetic data): {log}"]
    results = []
    for name, flags in (("fp16 (--amp)", ["--amp"]), ("bf16", ["--precision", "bf16"])):
        ok, log = run([sys.executable, "train_sod.py", "--datadir", str(folder / "data" / "sod"), "--train-data",
                       "SYN-TR", "--val-data", "SYN-TE", "--savedir", str(folder / name.split()[0]), "--gpu", "0",
                       *flags, "--epochs", "1", "--max-steps", "2", "--batch-size", "4", "--size", "64", "--seed",
                       "0", "-j", "2"])
        results.append(f"{name} {'ok' if ok else 'FAILED: ' + log.strip().splitlines()[-1]}")
    return ["; ".join(results)]


def nccl_step() -> list[str]:
    """One DistributedDataParallel step of SDNet in one NCCL process."""
    import torch
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
        return [f"ok (loss {loss.item():.4f})"]
    finally:
        dist.destroy_process_group()


def speed_rows(folder: Path) -> list[str]:
    rows = ["| model | float32 FPS | float16 FPS | --eager FPS | float32 / eager | float16 max diff |",
            "|---|---:|---:|---:|---:|---:|"]
    for model, script, size in (("sdnet", "speed_sod.py", 320), ("sdneta", "speed_sod.py", 320),
                                ("stdnet", "speed_vsod.py", 256), ("stdneta", "speed_vsod.py", 256)):
        figures = {}
        for variant, flags in (("fp32", []), ("fp16", ["--half"]), ("eager", ["--eager"])):
            out = folder / f"{model}_{variant}.json"
            ok, log = run([sys.executable, script, "--model", model, "--gpu", "0", "--size", str(size), "--json",
                           str(out), *flags], timeout=120)
            figures[variant] = json.loads(out.read_text()) if ok else {"fps": float("nan"), "error": log}
        fp32, fp16, eager = figures["fp32"]["fps"], figures["fp16"]["fps"], figures["eager"]["fps"]
        rows.append(f"| {model} @{size} | {fp32:.1f} | {fp16:.1f} | {eager:.1f} | {fp32 / eager:.2f}x | "
                    f"{figures['fp16'].get('max_abs_diff_vs_fp32', float('nan')):.1e} |")
    return rows


def evaluation_throughput(folder: Path) -> list[str]:
    """``bench/bench_metrics.py --device cuda``: evaluation on the GPU against PySODMetrics."""
    ok, log = run([sys.executable, "bench/bench_metrics.py", "--device", "cuda", "--stream-maps", "0", "--json",
                   str(folder / "metrics.json")])
    if not ok:
        return [f"FAILED: {log}"]
    metrics = json.loads((folder / "metrics.json").read_text())
    return [json.dumps(metrics.get("summary", metrics))[:300]]


def every_measure_on_the_gpu(folder: Path) -> list[str]:
    """``python -m Evaluation sod --metrics all`` on SYN-TE (predictions: its GT blurred) with ``--gpu 0`` and on
    the CPU: the largest difference over every reported key."""
    import cv2

    data = folder / "data" / "sod"
    if not data.is_dir():
        run([sys.executable, "-m", "data.synthetic", "--root", str(folder / "data")])
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
            return [f"FAILED ({where}): {log}"]
        entries[where] = json.loads((folder / where / "exp" / "metrics_sod.json").read_text())["SYN-TE"]
    keys = [key for key, value in entries["cpu"].items() if isinstance(value, float)]
    worst = max(keys, key=lambda key: abs(entries["gpu"][key] - entries["cpu"][key]))
    return [f"{len(keys)} keys, largest difference {abs(entries['gpu'][worst] - entries['cpu'][worst]):.1e} ({worst})"]


def onnxruntime_gpu_rows(folder: Path) -> list[str]:
    """SDNet @320 (the speed scripts' random-weight converted model) exported to ONNX and run by ONNX Runtime's
    CUDA and TensorRT execution providers: FPS (median of 50 passes after 10) and the largest difference from
    PyTorch's CUDA float32 output; a provider this onnxruntime lacks is a row saying so."""
    import statistics

    import numpy as np
    import onnxruntime
    import torch

    from engine.inference.export import export_onnx
    from models import build_model

    torch.manual_seed(0)
    model = build_model("sdnet", None, deploy=True).eval()
    x = torch.randn(1, 3, 320, 320, generator=torch.Generator().manual_seed(1))
    export_onnx(model, x, folder / "sdnet.onnx")
    with torch.no_grad():
        reference = model.cuda()(x.cuda()).cpu().numpy()
    rows = ["| provider | FPS | max diff vs PyTorch CUDA fp32 |", "|---|---:|---:|"]
    available = onnxruntime.get_available_providers()
    for provider in ("CUDAExecutionProvider", "TensorrtExecutionProvider"):
        if provider not in available:
            rows.append(f"| {provider} | skipped: not in this onnxruntime ({', '.join(available)}) | |")
            continue
        session = onnxruntime.InferenceSession(str(folder / "sdnet.onnx"), providers=[provider])
        feed = {"image": x.numpy()}
        for _ in range(10):
            out = session.run(None, feed)[0]
        times = []
        for _ in range(50):
            start = time.perf_counter()
            session.run(None, feed)
            times.append(time.perf_counter() - start)
        rows.append(f"| {provider} | {1 / statistics.median(times):.1f} | "
                    f"{float(np.abs(out - reference).max()):.1e} |")
    return rows


PARTS = [  # title, modules needed, estimated seconds
    ("training steps", ("torch",), 60),
    ("CUDA-only tests", ("pytest",), 40),
    ("training commands", ("cv2", "tqdm"), 30),
    ("one-process NCCL DDP step", ("torch",), 10),
    ("inference speed", ("cv2",), 90),
    ("every measure, GPU vs CPU", ("cv2", "scipy", "matplotlib"), 40),
    ("evaluation throughput vs PySODMetrics", ("py_sod_metrics",), 40),
    ("ONNX Runtime CUDA and TensorRT", ("onnxruntime", "onnx"), 30),
]


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.plan:
        for title, needs, estimate in PARTS:
            absent = missing(*needs)
            print(f"{title}: {'skipped: needs ' + ', '.join(absent) if absent else f'runs (about {estimate} s)'}")
        return
    if missing("torch"):
        print(f"gpu-check: {sys.executable} has no torch; run it with the Python that holds torch (the project's "
              ".venv, or the GPU machine's python3)", file=sys.stderr)
        raise SystemExit(2)
    import torch

    if not torch.cuda.is_available():
        print("gpu-check: no CUDA device", file=sys.stderr)
        raise SystemExit(2)
    sys.path.insert(0, str(REPO))
    report = Report(args.budget)
    header = [f"GPU check, {datetime.date.today()}, {torch.cuda.get_device_name(0)}, torch {torch.__version__}, "
              f"Python {platform.python_version()}", ""]
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        bodies = [lambda: training_rows(report), cuda_tests, lambda: training_commands(folder), nccl_step,
                  lambda: speed_rows(folder), lambda: every_measure_on_the_gpu(folder),
                  lambda: evaluation_throughput(folder), lambda: onnxruntime_gpu_rows(folder)]
        for (title, needs, estimate), body in zip(PARTS, bodies, strict=True):
            report.part(title, needs, estimate, body)
    text = "\n".join([*header, *report.lines, "", f"({time.perf_counter() - report.start:.0f} s)"]) + "\n"
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
