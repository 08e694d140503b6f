"""The inference backends side by side on the CPU: time to the first map, steady FPS and the largest difference
from eager float32, for the four models, idle and with one busy loop per core beside them.

    .venv/bin/python bench/bench_backends.py [--models sdnet sdneta stdnet stdneta] [--json PATH] [--md PATH]

Every measurement runs in a fresh process (this script with ``--one``), as a user's command would: the model of
the speed scripts (random weights, DCR-converted, design §8) at its size (SDNet 320, SDNet-A 384, video models one
8-frame clip at 256), batch 1, torch's default threads, `utils.tune_process` called as the inference scripts call
it. In that process:

- *first map*: seconds from `engine.inference.prepare_for_inference` (weights already loaded) to the first output,
  export and compilation included;
- *FPS*: frames over the median of ``--passes`` timed passes after ``--warmup`` more;
- *max diff*: the largest absolute difference of the output from the eager NCHW float32 one on the same input;
- *jobs FPS* (openvino only; the other backends run a job's inputs one at a time): frames over the time of
  `InferenceRunner.stream` through ``--passes`` inputs, as the map generators and predict.py run, several inputs in
  flight on one thread each.

Each (model, backend) runs three times: idle with the on-disk caches it uses empty (TorchInductor's, OpenVINO's
compiled networks, `engine.inference.network_cache`; in a fresh folder), idle again (later run: caches warm), then
with one busy loop (``while True: pass``) per core beside it. ``onnxruntime`` is measured from the same ONNX export as
``openvino`` (CPU execution provider, torch's thread count) but is not a backend of the project: the table says why.
``openvino_bf16`` is the openvino backend with ``--precision bf16`` (CPUs with AVX512-BF16 or AMX only).
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

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

BACKENDS = ("eager", "channels_last", "inductor", "openvino", "onnxruntime", "openvino_bf16")
MODELS = {"sdnet": 320, "sdneta": 384, "stdnet": 256, "stdneta": 256}
LOADS = ("idle, first run", "idle, later run", "busy")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=list(BACKENDS))
    parser.add_argument("--passes", type=int, default=None, help="timed passes (default: 60 images, 10 clips)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed passes after the first (default: 5, 2)")
    parser.add_argument("--json", default=None, metavar="PATH", help="also write the results to this JSON file")
    parser.add_argument("--md", default=None, metavar="PATH", help="also write the Markdown table to this file")
    parser.add_argument("--one", nargs=2, metavar=("MODEL", "BACKEND"), help=argparse.SUPPRESS)
    return parser


def onnxruntime_runner(model: torch.nn.Module, x: torch.Tensor):
    """The exported network of ``model`` for ``x``'s shape in an onnxruntime CPU session, as a tensor function."""
    import onnxruntime

    from engine.inference.export import export_onnx

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "network.onnx"
        export_onnx(model, x, path)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return lambda batch: torch.from_numpy(session.run(None, {"image": batch.numpy()})[0])


def measure_one(name: str, backend: str, passes: int, warmup: int) -> dict:
    """The figures of one (model, backend) in this process (see the module's docstring)."""
    import utils
    from engine import inference
    from engine.inference import speed
    from engine.inference.network_cache import default_cache_dir
    from models import build_model

    video = name.startswith("st")
    size = MODELS[name]
    torch.manual_seed(0)
    model = build_model(name, None, deploy=True, nframes=8).eval()
    x = torch.randn(1, 24 if video else 3, size, size, generator=torch.Generator().manual_seed(1))
    utils.tune_process(torch.device("cpu"))  # as the inference scripts do
    start = time.perf_counter()
    if backend == "onnxruntime":
        runner = onnxruntime_runner(model, x)
        path = "onnxruntime+fp32"
    else:
        runner = inference.prepare_for_inference(model, "cpu", backend=backend.removesuffix("_bf16"),
                                                 precision="bf16" if backend.endswith("_bf16") else "fp32",
                                                 cache=default_cache_dir())
    out = runner(x)
    first_map = time.perf_counter() - start
    if backend != "onnxruntime":
        path = runner.path
    times = speed.time_passes(runner, x, passes=passes, warmup=warmup)
    reference = inference.prepare_for_inference(model, "cpu", backend="eager")(x)
    frames = 8 if video else 1
    stream_fps = None
    if backend.startswith("openvino"):
        list(runner.stream((index, x) for index in range(2)))  # compiles the streams
        start = time.perf_counter()
        list(runner.stream((index, x) for index in range(passes)))
        stream_fps = frames * passes / (time.perf_counter() - start)
    return {"model": name, "backend": backend, "path": path, "input": list(x.shape),
            "threads": torch.get_num_threads(), "first_map_s": first_map, "fps": frames / statistics.median(times),
            "passes": passes, "warmup": warmup, "stream_fps": stream_fps,
            "max_abs_diff": (out.float() - reference).abs().max().item()}


def run_child(name: str, backend: str, args: argparse.Namespace, cache: Path, busy: bool) -> dict:
    """`measure_one` in a fresh process, with one busy loop per core beside it when ``busy``."""
    video = name.startswith("st")
    passes = args.passes or (10 if video else 60)
    warmup = args.warmup if args.warmup is not None else (2 if video else 5)
    command = [sys.executable, str(Path(__file__).resolve()), "--one", name, backend, "--passes", str(passes),
               "--warmup", str(warmup)]
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(cache / "inductor"), "SDNET_CACHE_DIR": str(cache / "sdnet")}
    loops = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(os.cpu_count() if busy
                                                                                         else 0)]
    try:
        done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    finally:
        for loop in loops:
            loop.kill()
            loop.wait()
    if done.returncode:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def markdown(results: list[dict]) -> str:
    """The table: one row per (model, backend), the three loads side by side, and the ratio to eager."""
    rows = {}
    for record in results:
        rows.setdefault((record["model"], record["backend"]), {})[record["load"]] = record
    lines = ["| model, input | backend | first map s (first run / later) | idle FPS | busy FPS | busy / idle | "
             "idle / eager | busy / eager | jobs FPS idle / busy | max diff |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for (name, backend), loads in rows.items():
        first, later, busy = (loads[load] for load in LOADS)
        eager = rows.get((name, "eager"))
        ratios = [f"{loads[load]['fps'] / eager[load]['fps']:.2f}x" if eager else "" for load in LOADS[1:]]
        jobs = f"{later['stream_fps']:.1f} / {busy['stream_fps']:.1f}" if later["stream_fps"] else ""
        lines.append(f"| {name} {'x'.join(map(str, first['input']))} | {backend} | {first['first_map_s']:.1f} / "
                     f"{later['first_map_s']:.1f} | {later['fps']:.1f} | {busy['fps']:.1f} | "
                     f"{busy['fps'] / later['fps']:.2f} | {ratios[0]} | {ratios[1]} | {jobs} | "
                     f"{later['max_abs_diff']:.1e} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict]:
    args = build_parser().parse_args(argv)
    if args.one:
        print(json.dumps(measure_one(*args.one, args.passes, args.warmup)))
        return []
    results = []
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    for name in args.models:
        for backend in args.backends:
            with tempfile.TemporaryDirectory(prefix="inductor-cache-") as cache:
                for load in LOADS:
                    record = run_child(name, backend, args, Path(cache), busy=load == "busy")
                    record["load"] = load
                    results.append(record)
                    print(f"{name} {backend} {load}: first map {record['first_map_s']:.2f} s, "
                          f"{record['fps']:.1f} FPS, max diff {record['max_abs_diff']:.1e}", file=sys.stderr)
    table = markdown(results)
    from engine.inference.speed import device_name

    header = (f"{started} to {time.strftime('%H:%M UTC', time.gmtime())}, {device_name(torch.device('cpu'))}, "
              f"torch {torch.__version__}, {results[0]['threads']} threads")
    print(header + "\n\n" + table)
    if args.md:
        Path(args.md).write_text(header + "\n\n" + table + "\n")
    if args.json:
        Path(args.json).write_text(json.dumps({"header": header, "results": results}, indent=1))
    return results


if __name__ == "__main__":
    main()
