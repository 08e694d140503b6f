"""`make demo`: the whole pipeline end to end on the bundled synthetic data, on a CPU, in under a quarter of an hour.

Steps: generate the synthetic dataset; train SDNet from scratch on SYN-TR; convert it with DCR; write its saliency
maps for SYN-TE; evaluate them; compare them with a centre prior (tables and curves of both methods); time the
converted model with the default and the eager inference path; train STDNet briefly on the synthetic videos
(backbone preloaded from the demo SDNet); write and evaluate its video maps; run the authors' released SDNet through
predict.py if ``checkpoints/sdnet_from_scratch.pth`` is present; draw a figure; print a summary. Every step runs
one of the project's own commands (the same ones the README shows) in a subprocess. A second run reuses the data
and the finished trainings.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np

import utils
from data.atomic import write_image_atomic, write_json_atomic
from data.synthetic import centre_prior
from engine.training.checkpoints import LATEST_CHECKPOINT, checkpoint_path

REPO = Path(__file__).resolve().parent


def build_parser() -> argparse.ArgumentParser:
    parser = utils.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default="demo_data", help="where the synthetic dataset is (or will be) written")
    parser.add_argument("--results", default="results", help="results folder (the evaluation reads results/<exp>)")
    parser.add_argument("--gpu", default="", help="CUDA device for every step ('' = CPU)")
    parser.add_argument("--image-epochs", type=utils.int_between(1, 1000), default=3,
                        help="SDNet training epochs (4 passes each)")
    parser.add_argument("--image-size", type=utils.input_size, default=96, help="SDNet training and test size")
    parser.add_argument("--video-steps", type=utils.int_between(1, utils.MAX_COUNT), default=30,
                        help="STDNet training steps (batch of 2 clips)")
    parser.add_argument("--video-size", type=utils.input_size, default=96, help="STDNet training and test size")
    parser.add_argument("-j", "--workers", type=utils.data_processes, default=1,
                        help="data loading processes of each step")
    return parser


class Pipeline:
    """Runs the steps as subprocesses from the repository root and remembers how long each took."""

    def __init__(self, logger: logging.Logger) -> None:
        self.logger, self.timings = logger, []

    def run(self, step: str, args: list[str], cwd: Path = REPO, threads: int | None = 1) -> None:
        """Run one step; ``threads``: torch CPU threads of the step (None: torch's default, one per core)."""
        self.logger.info("[%s] %s", step, " ".join(args))
        env = dict(os.environ)
        if threads is not None:
            # Training and generation run a data-loading process beside the model; with one compute thread per
            # core OpenMP's busy-waiting threads then fight over 2 cores and small-image steps got 10x slower.
            env.setdefault("OMP_NUM_THREADS", str(threads))
        start = time.perf_counter()
        completed = subprocess.run(args, cwd=cwd, env=env)
        seconds = time.perf_counter() - start
        if completed.returncode != 0:
            utils.fail(f"demo step '{step}' failed with exit status {completed.returncode} (command above)")
        self.timings.append((step, seconds))

    def skip(self, step: str, reason: str) -> None:
        self.logger.info("[%s] reusing %s", step, reason)
        self.timings.append((step, 0.0))


def python(*args: str) -> list[str]:
    return [sys.executable, *args]


def train_image_model(pipe: Pipeline, args, data: Path, results: Path) -> Path:
    """SDNet from scratch (with BN, as the stage-1 model of STDNet) on SYN-TR; returns its latest checkpoint."""
    savedir = results / "demo_train_sdnet"
    pipe.run("train SDNet", python(
        "train_sod.py", "--model", "sdnet", "--config", "sdnet", "--bn", "--resume", "--gpu", args.gpu,
        "--datadir", str(data / "sod"), "--train-data", "SYN-TR", "--val-data", "SYN-TE", "--savedir", str(savedir),
        "--epochs", str(args.image_epochs), "--batch-size", "8", "--size", str(args.image_size), "--warmup", "1",
        "--seed", "0", "-j", str(args.workers)))
    return checkpoint_path(savedir, LATEST_CHECKPOINT)


def image_steps(pipe: Pipeline, args, data: Path, results: Path) -> dict:
    """Train, convert, generate, evaluate and time SDNet; returns the paths the summary reports."""
    checkpoint = train_image_model(pipe, args, data, results)
    converted = results / "demo_train_sdnet" / "sdnet_converted.pth"
    pipe.run("convert (DCR)", python("convert.py", "--model", "sdnet", "--train-config", "sdnet", "--bn",
                                     "--checkpoint", str(checkpoint), "--out", str(converted)))
    pipe.run("maps SYN-TE", python(
        "generate_salmaps_sod.py", "--model", "sdnet", "--inference-config", "baseline", "--train-config", "sdnet",
        "-j", str(args.workers), "--gpu", args.gpu, "--datadir", str(data / "sod"), "--testdata", "SYN-TE",
        "--savedir", str(results / "demo_sdnet"), "--evaluate", str(converted), "--size", str(args.image_size)))
    pipe.run("evaluate SYN-TE", ["bash", "eval_sod.sh", "SYN-TE", "demo_sdnet", str(data / "sod")],
             cwd=REPO / "Evaluation")
    for gt in sorted((data / "sod" / "SYN-TE" / "GT").glob("*.png")):  # a second method: the centre prior
        write_image_atomic(results / "demo_centre" / "SYN-TE" / gt.name, centre_prior(*cv2.imread(str(gt), 0).shape))
    pipe.run("compare: centre prior", python(
        "-m", "Evaluation", "compare", "demo_sdnet", "demo_centre", "--testdata", "SYN-TE", "--datadir",
        str(data / "sod"), "--results-dir", str(results)))
    speed = {}
    for path in ("default", "eager"):
        speed[path] = results / "demo_sdnet" / f"speed_{path}.json"
        eager = ["--eager"] if path == "eager" else []
        pipe.run(f"speed ({path})", python(
            "speed_sod.py", "--model", "sdnet", "--config", "baseline", "-j", "1", "--gpu", args.gpu, "--size",
            "320", "--evaluate", str(converted), "-n", "20", "--warmup", "3", "--json", str(speed[path]), *eager),
            threads=None)
    return {"checkpoint": checkpoint, "converted": converted, "speed": speed, "compare": results / "compare"}


def video_steps(pipe: Pipeline, args, data: Path, results: Path, image_checkpoint: Path) -> Path:
    """Train STDNet briefly on the synthetic videos, generate and evaluate its maps; returns its checkpoint."""
    savedir = results / "demo_train_stdnet"
    lists = data / "lists"
    pipe.run("train STDNet", python(
        "train_vsod.py", "--model", "stdnet", "--config", "sdnet", "--resume", "--gpu", args.gpu,
        "--datadir", str(data), "--train-lst", str(lists / "train_video_lst.txt"),
        "--val-lst", str(lists / "val_video_lst.txt"), "--lr-reduce", "0.1", "--preload", str(image_checkpoint),
        "--savedir", str(savedir), "--epochs", "1", "--batch-size", "2", "--max-steps", str(args.video_steps),
        "--size", str(args.video_size), "--seed", "0", "-j", str(args.workers)))
    checkpoint = checkpoint_path(savedir, LATEST_CHECKPOINT)
    pipe.run("maps SYN-V-test", python(
        "generate_salmaps_vsod.py", "--model", "stdnet", "--inference-config", "baseline", "--train-config", "sdnet",
        "-j", str(args.workers), "--gpu", args.gpu, "--datadir", str(data), "--testdata", "SYN-V-test",
        "--test-lst", str(lists / "test_video_lst.txt"), "--savedir", str(results / "demo_stdnet"),
        "--size", str(args.video_size), "--evaluate", str(checkpoint), "--tid", "cv", "cd", "ad"))
    pipe.run("evaluate SYN-V-test", ["bash", "eval_vsod.sh", "SYN-V-test", "demo_stdnet", str(data),
                                     "--test-lst", str(lists / "test_video_lst.txt")], cwd=REPO / "Evaluation")
    return checkpoint


def draw_figure(pipe: Pipeline, args, data: Path, results: Path, converted: Path) -> Path:
    """Input | saliency map | overlay for three SYN-TE images, made with predict.py; returns the PNG path."""
    images = sorted((data / "sod" / "SYN-TE" / "images").iterdir())[:3]
    outdir = results / "demo_predict"
    pipe.run("predict.py", python("predict.py", "--model", "sdnet", "--checkpoint", str(converted), "--size",
                                  str(args.image_size), "--overlay", "--gpu", args.gpu, "--out", str(outdir),
                                  *map(str, images)))
    rows = []
    for image in images:
        panels = [cv2.imread(str(image)), cv2.imread(str(outdir / f"{image.stem}.png")),
                  cv2.imread(str(outdir / f"{image.stem}_overlay.jpg"))]
        height = 160
        panels = [cv2.resize(p, (round(p.shape[1] * height / p.shape[0]), height)) for p in panels]
        rows.append(np.concatenate(panels, axis=1))
    width = max(row.shape[1] for row in rows)
    figure = np.concatenate([np.pad(r, ((0, 4), (0, width - r.shape[1]), (0, 0)), constant_values=255)
                             for r in rows])
    path = results / "demo_figure.png"
    write_image_atomic(path, figure)
    return path


def read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def summarise(logger: logging.Logger, pipe: Pipeline, results: Path, artefacts: dict[str, Path]) -> None:
    """Print the step timings, the metrics and the speed figures, and where every artefact is."""
    sod = read_json(results / "demo_sdnet" / "metrics_sod.json").get("SYN-TE", {})
    vsod = read_json(results / "demo_stdnet" / "metrics_vsod.json").get("SYN-V-test", {})
    default, eager = (read_json(results / "demo_sdnet" / f"speed_{p}.json") for p in ("default", "eager"))
    lines = ["", "step                      seconds"] + [f"{s:<25} {t:7.1f}" for s, t in pipe.timings]
    lines += ["", "result                        MAE     Sm   maxF   images"]
    for label, metrics in (("SDNet on SYN-TE", sod), ("STDNet on SYN-V-test", vsod)):
        if metrics:
            cells = [f"{metrics[key]:.4f}" if metrics.get(key) is not None else "nan" for key in ("MAE", "Sm", "maxF")]
            lines.append(f"{label:<25} {cells[0]:>7} {cells[1]:>6} {cells[2]:>6} {metrics['images']:8d}")
    if default and eager:
        lines.append(f"\nSDNet @320 on {default.get('device', '?')}: {default['fps']:.1f} FPS default path, "
                     f"{eager['fps']:.1f} FPS eager ({default['fps'] / eager['fps']:.2f}x), "
                     f"{default['params']:,} parameters, {default['macs_per_frame'] / 1e9:.3f} GMACs")
    lines += ["", "artefacts"] + [f"  {name:<24} {path}" for name, path in artefacts.items()]
    logger.info("demo finished\n%s", "\n".join(lines))
    summary = {"timings": dict(pipe.timings), "sdnet": sod, "stdnet": vsod, "speed": {"default": default,
               "eager": eager}, "artefacts": {k: str(v) for k, v in artefacts.items()}}
    write_json_atomic(results / "demo_summary.json", summary)


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    logger = utils.setup_logger()
    data, results = (REPO / args.root).resolve(), (REPO / args.results).resolve()
    pipe = Pipeline(logger)
    if (data / "lists" / "test_video_lst.txt").is_file():
        pipe.skip("synthetic data", str(data))
    else:
        pipe.run("synthetic data", python("-m", "data.synthetic", "--root", str(data), "--seed", "0"))
    image = image_steps(pipe, args, data, results)
    video_checkpoint = video_steps(pipe, args, data, results, image["checkpoint"])
    artefacts = {
        "synthetic data": data, "SDNet checkpoint": image["checkpoint"], "SDNet converted": image["converted"],
        "SDNet maps": results / "demo_sdnet" / "SYN-TE", "SDNet metrics": results / "demo_sdnet" / "metrics_sod.json",
        "speed figures": image["speed"]["default"].parent, "comparison with a centre prior": image["compare"],
        "STDNet checkpoint": video_checkpoint,
        "STDNet maps": results / "demo_stdnet" / "SYN-V-test",
        "STDNet metrics": results / "demo_stdnet" / "metrics_vsod.json",
    }
    released = REPO / "checkpoints" / "sdnet_from_scratch.pth"
    if released.is_file():
        outdir = results / "demo_predict_released"
        pipe.run("predict.py (released)", python("predict.py", "--model", "sdnet", "--checkpoint", str(released),
                                                 "--gpu", args.gpu, "--out", str(outdir),
                                                 str(data / "sod" / "SYN-TE" / "images")))
        artefacts["released SDNet maps"] = outdir
    artefacts["figure"] = draw_figure(pipe, args, data, results, image["converted"])
    artefacts["summary"] = results / "demo_summary.json"
    summarise(logger, pipe, results, artefacts)


if __name__ == "__main__":
    main()
