"""Training throughput (images/s) of one optimizer step, without data loading.

Usage: python bench/bench_train.py [--gpu 0] [--threads N] [--rounds 5] [--steps 3] [--json PATH]

Rows: SDNet @320 with batch 8 (weighted BCE, image parameter groups) and STDNet @256 with one 8-frame clip
(BCE + SSIM + IoU, video parameter groups with lr_reduce 0.05), both in training form, random weights, on a fixed
random batch with a random binary GT already on the device. A step is forward, loss, backward and Adam step,
as in ``engine.train.train_one_pass``. Each round times ``--steps`` steps; the median over rounds is reported, plus the
process CPU seconds per image (less sensitive to other load on a shared machine than wall time).
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

import utils  # noqa: E402
from data.atomic import write_json_atomic  # noqa: E402
from engine import speed, train  # noqa: E402
from models import build_model  # noqa: E402
from models.losses import bce_ssim_iou_loss, weighted_bce_loss  # noqa: E402

CASES = {
    # name: (model, size, batch of dataset items, frames per item)
    "sdnet": ("sdnet", 320, 8, 1),
    "stdnet": ("stdnet", 256, 1, 8),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Training images/s of SDNet @320 (batch 8) and STDNet @256 (clip 8).")
    parser.add_argument("--gpu", default="", help="CUDA device, e.g. 0 ('' = CPU)")
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds per model")
    parser.add_argument("--steps", type=int, default=3, help="optimizer steps per round")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps before the first round")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--json", default=None, metavar="PATH", help="also write the results to this JSON file")
    return parser


def make_step(name: str, device: torch.device):
    """A closure doing one training step of case ``name`` on a fixed batch; returns it and images per step."""
    model_name, size, batch, frames = CASES[name]
    torch.manual_seed(0)
    model = build_model(model_name).to(device).train()
    if frames == 1:
        groups = train.image_param_groups(model, 1e-4)
        loss_fn = functools.partial(weighted_bce_loss, divisor=batch)
    else:
        groups = train.video_param_groups(model, 1e-4, 0.05, preloaded=True)
        loss_fn = bce_ssim_iou_loss
    optimizer = torch.optim.Adam(groups, lr=1e-3, betas=(0.9, 0.99))
    inputs = torch.randn(batch, 3 * frames, size, size, device=device)
    target = (torch.rand(batch * frames, 1, size, size, device=device) > 0.7).float()

    def step() -> None:
        loss = loss_fn(model(inputs).float(), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    return step, batch * frames


def measure(name: str, device: torch.device, rounds: int, steps: int, warmup: int) -> dict:
    step, images = make_step(name, device)
    for _ in range(warmup):
        step()
    rates, cpu_per_image = [], []
    for _ in range(rounds):
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(steps):
            step()
        rates.append(images * steps / (time.perf_counter() - wall))
        cpu_per_image.append((time.process_time() - cpu) / (images * steps))
    return {"case": name, "images_per_step": images, "images_per_s_median": statistics.median(rates),
            "images_per_s_rounds": rates, "cpu_seconds_per_image": statistics.median(cpu_per_image)}


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    logger = utils.setup_logger()
    device = utils.select_device(args.gpu)
    if args.threads:
        torch.set_num_threads(args.threads)
    results = {"device": speed.device_name(device), "threads": torch.get_num_threads(), "rows": []}
    for name in args.cases:
        row = measure(name, device, args.rounds, args.steps, args.warmup)
        results["rows"].append(row)
        logger.info("%s: %.2f images/s (median of %d rounds: %s), %.3f CPU s/image", name,
                    row["images_per_s_median"], args.rounds, ", ".join(f"{r:.2f}" for r in row["images_per_s_rounds"]),
                    row["cpu_seconds_per_image"])
    # other jobs on a shared machine slow training down a lot (see BENCHMARKS.md): record how busy it was
    results["load_average_after"] = list(os.getloadavg())
    logger.info("%s, %d threads, load average %s", results["device"], results["threads"],
                " ".join(f"{v:.1f}" for v in results["load_average_after"]))
    if args.json:
        write_json_atomic(args.json, results)


if __name__ == "__main__":
    main()
