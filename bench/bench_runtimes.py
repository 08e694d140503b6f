"""One table of every runtime: each backend x precision that runs here, for the released models, on real photos.

    .venv/bin/python bench/bench_runtimes.py [--models sdnet sdneta stdnet] [--rounds 15] [--md PATH] [--json PATH]

Models: the released SDNet at 320 and SDNet-A at 384 (../shared/reference/checkpoints), STDNet at 256 on one clip of
8 frames (the golden weights of ../shared/reference/golden: the authors released no STDNet checkpoint). Runtimes:
eager and channels_last (PyTorch), openvino fp32 / bf16 (CPUs with native bf16) / int8, onnxruntime fp32,
executorch fp32 / int8; int8 calibrated and gated on the project's fixed set (`engine.inference.quantization`).

Each (model, runtime) is prepared in a fresh process (this script with ``--one``), twice: with an empty
compiled-network cache (*first map, cold*: seconds from `engine.inference.prepare_for_inference`, weights loaded, to
the first output, export, quantization and gate included) and again with the cache it left (*first map, cached*).
That process also reports its peak resident memory, the size of what it cached (the compiled network, program or
graph a deployment ships; eager: none), and its maps of the real photos: their distance from eager float32's (mean
and max grey levels over scikit-image's chelsea, coffee, astronaut and rocket and imgaug's quokka, photos of PyPI
packages, built here and never committed) and the S-measure and MAE on the quokka's own mask (imgaug's polygon). Video
models see each photo as a still clip (its last map kept).

Then one process times every runtime of a model (cache warm): ``--rounds`` rounds, each running every runtime
``--passes`` times in turn, the FPS of a runtime the frames over its median pass: the runtimes share the machine's
state alike, whatever else runs on it (a runtime slower than 2 s a pass: 3 passes after the rounds).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
REFERENCE = REPO.parent / "shared" / "reference"

MODELS = {"sdnet": ("checkpoints/sdnet_from_scratch.pth", 320),
          "sdneta": ("checkpoints/sdneta_from_pretrained.pth", 384),
          "stdnet": ("golden/stdnet_golden_weights.pth", 256)}
RUNTIMES = ("eager/fp32", "channels_last/fp32", "openvino/fp32", "openvino/bf16", "openvino/int8",
            "onnxruntime/fp32", "executorch/fp32", "executorch/int8")
PHOTOS = ("chelsea", "coffee", "astronaut", "rocket")
SLOW_PASS_S = 2.0
IMGAUG = "imgaug==0.4.0"  # its wheel holds quokka.jpg and the polygon of the animal


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--runtimes", nargs="+", default=list(RUNTIMES), choices=list(RUNTIMES))
    parser.add_argument("--rounds", type=int, default=15, help="timing rounds (default: %(default)s)")
    parser.add_argument("--passes", type=int, default=4, help="passes of each runtime per round (default: 4)")
    parser.add_argument("--md", default=None, metavar="PATH", help="also write the Markdown table here")
    parser.add_argument("--json", default=None, metavar="PATH", help="also write the results here")
    parser.add_argument("--one", nargs=3, metavar=("MODEL", "RUNTIME", "CACHE"), help=argparse.SUPPRESS)
    parser.add_argument("--photos", default=None, help=argparse.SUPPRESS)
    return parser


def build_photos(folder: Path) -> None:
    """scikit-image's photos and imgaug's quokka with its mask, as PNG files in ``folder`` (quokka_mask.png)."""
    import cv2
    import skimage.data

    for name in PHOTOS:
        cv2.imwrite(str(folder / f"{name}.png"), cv2.cvtColor(getattr(skimage.data, name)()[..., :3],
                                                              cv2.COLOR_RGB2BGR))
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", IMGAUG, "-d", str(folder)],
                   check=True, capture_output=True)
    with zipfile.ZipFile(next(folder.glob("imgaug-*.whl"))) as wheel:
        photo = cv2.imdecode(np.frombuffer(wheel.read("imgaug/quokka.jpg"), np.uint8), cv2.IMREAD_COLOR)
        polygons = json.load(io.BytesIO(wheel.read("imgaug/quokka_annotations.json")))["polygons"]
    mask = np.zeros(photo.shape[:2], np.uint8)
    for polygon in polygons:
        cv2.fillPoly(mask, [np.array([[point["x"], point["y"]] for point in polygon["keypoints"]], np.int32)], 255)
    cv2.imwrite(str(folder / "quokka.png"), photo)
    cv2.imwrite(str(folder / "quokka_mask.png"), mask)


def load(name: str):
    from models import load_model

    path, size = MODELS[name]
    options = {"nframes": 8} if name == "stdnet" else {}
    model, _ = load_model(REFERENCE / path, **options)
    return model, size


def make_runner(model, runtime: str, cache: Path | None):
    from engine import inference

    backend, precision = runtime.split("/")
    return inference.prepare_for_inference(model, "cpu", backend=backend, precision=precision, cache=cache)


def measure_one(name: str, runtime: str, cache: Path, photos: Path) -> dict:
    """First maps cold and cached, peak memory, cached bytes and the maps' accuracy of one runtime."""
    import cv2
    import py_sod_metrics

    import utils
    from data.transforms import saliency_to_uint8
    from engine.inference.quantization import network_inputs

    utils.tune_process(torch.device("cpu"))
    model, size = load(name)
    frames = 8 if name == "stdnet" else 1
    shape = (1, 3 * frames, size, size)
    images = {path.stem: cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
              for path in sorted(photos.glob("*.png")) if path.stem != "quokka_mask"}
    inputs = dict(zip(images, network_inputs(list(images.values()), shape), strict=True))
    first = {}
    for state in ("cold", "cached"):
        start = time.perf_counter()
        runner = make_runner(model, runtime, cache)
        runner(inputs["quokka"])
        first[state] = time.perf_counter() - start
    reference = make_runner(model, "eager/fp32", None)
    distances, maps = [], {}
    for key, x in inputs.items():
        maps[key] = saliency_to_uint8(runner(x)[-1:], images[key].shape[:2])[0]
        ours = saliency_to_uint8(reference(x)[-1:], images[key].shape[:2])[0]
        distances.append(np.abs(maps[key].astype(int) - ours))
    smeasure, mae = py_sod_metrics.Smeasure(), py_sod_metrics.MAE()
    mask = cv2.imread(str(photos / "quokka_mask.png"), cv2.IMREAD_GRAYSCALE)
    smeasure.step(maps["quokka"], mask)
    mae.step(maps["quokka"], mask)
    return {"model": name, "runtime": runtime, "path": runner.path, "input": list(shape), "threads":
            torch.get_num_threads(), "first_cold_s": first["cold"], "first_cached_s": first["cached"],
            "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "cached_bytes": sum(p.stat().st_size for p in cache.rglob("*") if p.is_file()),
            "mean_grey": float(np.mean([d.mean() for d in distances])),
            "max_grey": int(max(d.max() for d in distances)),
            "sm": float(smeasure.get_results()["sm"]), "mae": float(mae.get_results()["mae"])}


def time_runtimes(name: str, runtimes: list[str], caches: dict[str, Path], rounds: int, passes: int) -> dict:
    """FPS of each runtime of ``name``: alternated rounds in this one process, the median pass of each. A runtime
    whose pass takes over `SLOW_PASS_S` (ExecuTorch's portable kernels) is timed on 3 passes after the rounds."""
    import utils

    utils.tune_process(torch.device("cpu"))  # as the inference scripts and `measure_one` run
    model, size = load(name)
    frames = 8 if name == "stdnet" else 1
    x = torch.randn(1, 3 * frames, size, size, generator=torch.Generator().manual_seed(0))
    runners = {runtime: make_runner(model, runtime, caches[runtime]) for runtime in runtimes}
    times = {runtime: [] for runtime in runtimes}
    slow = set()
    for runtime, runner in runners.items():
        runner(x)
        start = time.perf_counter()
        runner(x)
        if time.perf_counter() - start > SLOW_PASS_S:
            slow.add(runtime)
    for _ in range(rounds):
        for runtime, runner in runners.items():
            for _ in range(0 if runtime in slow else passes):
                start = time.perf_counter()
                runner(x)
                times[runtime].append(time.perf_counter() - start)
    for runtime in slow:
        for _ in range(3):
            start = time.perf_counter()
            runners[runtime](x)
            times[runtime].append(time.perf_counter() - start)
    return {runtime: frames / statistics.median(values) for runtime, values in times.items()}


def markdown(results: list[dict]) -> str:
    lines = ["| model, input | runtime | FPS | vs eager | first map s, cold / cached | cached file | peak memory | "
             "maps vs fp32, grey levels mean / max | quokka S / MAE |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    eager = {r["model"]: r["fps"] for r in results if r["runtime"] == "eager/fp32"}
    for r in results:
        ratio = f"{r['fps'] / eager[r['model']]:.2f}x" if r["model"] in eager else ""
        size = f"{r['cached_bytes'] / 2**20:.1f} MiB" if r["cached_bytes"] else "-"
        lines.append(f"| {r['model']} {'x'.join(map(str, r['input']))} | {r['path']} | {r['fps']:.1f} | {ratio} | "
                     f"{r['first_cold_s']:.1f} / {r['first_cached_s']:.2f} | {size} | {r['peak_mib']:.0f} MiB | "
                     f"{r['mean_grey']:.2f} / {r['max_grey']} | {r['sm']:.4f} / {r['mae']:.4f} |")
    return "\n".join(lines)


def runs_here(runtime: str) -> bool:
    from engine.hardware import cpu_has_native_bf16

    return runtime != "openvino/bf16" or cpu_has_native_bf16()


def main(argv: list[str] | None = None) -> list[dict]:
    args = build_parser().parse_args(argv)
    if args.one:
        name, runtime, cache = args.one
        print(json.dumps(measure_one(name, runtime, Path(cache), Path(args.photos))))
        return []
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    runtimes = [runtime for runtime in args.runtimes if runs_here(runtime)]
    results, failures = [], {}
    with tempfile.TemporaryDirectory(prefix="bench-runtimes-") as scratch:
        photos = Path(scratch) / "photos"
        photos.mkdir()
        build_photos(photos)
        for name in args.models:
            caches = {runtime: Path(scratch) / name / runtime.replace("/", "-") for runtime in runtimes}
            for runtime in runtimes:
                command = [sys.executable, str(Path(__file__).resolve()), "--one", name, runtime,
                           str(caches[runtime]), "--photos", str(photos)]
                done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, env=os.environ)
                if done.returncode:  # the row says so, and the table goes on
                    print(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}", file=sys.stderr)
                    failures[(name, runtime)] = done.stderr.strip().splitlines()[-1][:200]
                    continue
                results.append(json.loads(done.stdout.strip().splitlines()[-1]))
                print(f"{name} {runtime}: {results[-1]}", file=sys.stderr)
            ran = [runtime for runtime in runtimes if (name, runtime) not in failures]
            for runtime, fps in time_runtimes(name, ran, caches, args.rounds, args.passes).items():
                next(r for r in results if r["model"] == name and r["runtime"] == runtime)["fps"] = fps
                print(f"{name} {runtime}: {fps:.2f} FPS", file=sys.stderr)
    from engine.inference.speed import device_name

    header = (f"{started} to {time.strftime('%H:%M UTC', time.gmtime())}, {device_name(torch.device('cpu'))}, "
              f"torch {torch.__version__}, {results[0]['threads']} threads, batch 1")
    table = markdown(results) + "".join(f"\n\n{name} {runtime} failed: {why}" for (name, runtime), why in
                                        failures.items())
    print(header + "\n\n" + table)
    if args.md:
        Path(args.md).write_text(header + "\n\n" + table + "\n")
    if args.json:
        Path(args.json).write_text(json.dumps({"header": header, "results": results}, indent=1))
    return results


if __name__ == "__main__":
    main()
