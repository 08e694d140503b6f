"""Memory of a training step per input pixel: the figures behind ``configs.TRAIN_BYTES_PER_PIXEL``, which the training
scripts use to refuse, before anything is written, a size and batch that cannot fit in the machine's memory.

Usage: python bench/bench_train_memory.py [--models sdnet sdneta stdnet stdneta] [--gpu 0]

For each model (BatchNorm as its training script's default), in a fresh process per point: one training step
(forward in the default step settings: fused form, channels_last, fp32; loss; backward; Adam) on random data at two
input sizes, and the growth of the process's peak memory (CPU: peak RSS; CUDA: the allocator's peak) over the model
and batch. The slope between the two points is the bytes per input pixel (per frame for video models); the third
point checks the linear estimate against a measurement at a larger size.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

import configs  # noqa: E402
import utils  # noqa: E402
from engine.training import loop  # noqa: E402
from engine.training.step import StepSettings, prepare_model, step_autocast, to_step_input  # noqa: E402
from models import build_model  # noqa: E402
from models.losses import bce_ssim_iou_loss, weighted_bce_loss  # noqa: E402

# (size, batch) of the two fitted points and the checked one; video models take one 8-frame clip per item.
POINTS = {"image": ((96, 2), (192, 2), (320, 2)), "video": ((64, 1), (128, 1), (192, 1))}


def one_step(model_name: str, size: int, batch: int, device: torch.device) -> int:
    """Peak memory growth in bytes of one training step of ``model_name`` at ``size`` with ``batch`` items."""
    kind = configs.MODELS[model_name]["kind"]
    frames = 8 if kind == "video" else 1
    settings = StepSettings("fused", "fp32", True, False)
    torch.manual_seed(0)
    model = prepare_model(build_model(model_name, bn=configs.TRAIN_DEFAULTS[kind]["bn"]).to(device).train(),
                          settings)
    groups = (loop.image_param_groups(model, 1e-4) if kind == "image"
              else loop.video_param_groups(model, 1e-4, 0.05, preloaded=True))
    optimizer = torch.optim.Adam(groups, lr=1e-3)
    inputs = to_step_input(torch.randn(batch, 3 * frames, size, size), settings, device)
    target = (torch.rand(batch * frames, 1, size, size, device=device) > 0.7).float()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    else:
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    with step_autocast(settings, device):
        pred = model(inputs)
    loss = weighted_bce_loss(pred.float(), target, divisor=batch) if kind == "image" else bce_ssim_iou_loss(
        pred.float(), target)
    loss.backward()
    optimizer.step()
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) - base
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Bytes per input pixel of a training step, per model.")
    parser.add_argument("--models", nargs="+", default=list(configs.MODELS), choices=list(configs.MODELS))
    parser.add_argument("--gpu", default="", help="CUDA device, e.g. 0 ('' = CPU)")
    parser.add_argument("--point", nargs=3, default=None, metavar=("MODEL", "SIZE", "BATCH"),
                        help=argparse.SUPPRESS)  # one measurement, in the child process
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    device = utils.select_device(args.gpu)
    torch.set_num_threads(1)
    if args.point:
        print(json.dumps(one_step(args.point[0], int(args.point[1]), int(args.point[2]), device)))
        return
    logger = utils.setup_logger()
    for name in args.models:
        kind = configs.MODELS[name]["kind"]
        frames = 8 if kind == "video" else 1
        measured = []
        for size, batch in POINTS[kind]:
            out = subprocess.run([sys.executable, __file__, "--gpu", args.gpu, "--point", name, str(size),
                                  str(batch)], check=True, capture_output=True, text=True).stdout
            measured.append((size * size * batch * frames, json.loads(out.splitlines()[-1])))
        (p1, m1), (p2, m2), (p3, m3) = measured
        slope = (m2 - m1) / (p2 - p1)
        estimate = configs.TRAIN_BYTES_PER_PIXEL[name] * p3
        logger.info("%s: %.0f bytes per input pixel (configs: %d); at %d px x %d: measured %.0f MiB, configs' "
                    "estimate %.0f MiB", name, slope, configs.TRAIN_BYTES_PER_PIXEL[name], POINTS[kind][2][0],
                    POINTS[kind][2][1], m3 / 2**20, estimate / 2**20)


if __name__ == "__main__":
    main()
