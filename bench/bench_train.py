"""Training throughput (images/s) and peak memory of one optimizer step, without data loading.

Usage: python bench/bench_train.py [--cases sdnet sdneta stdnet] [--train-form fused|separate]
       [--precision fp32|bf16|fp16] [--channels-last | --no-channels-last] [--compile] [--variants]
       [--gpu 0] [--threads N] [--rounds 5] [--steps 3] [--json PATH]

Rows: SDNet (no BN) and SDNet-A (with per-branch BN) @320 with batch 8 (weighted BCE, image parameter groups) and
STDNet @256 with one 8-frame clip, without BN (``stdnet``, the row of earlier runs) and with it (``stdnet_bn``, as
train_vsod.py trains by default) (BCE + SSIM + IoU, video parameter groups with lr_reduce 0.05), in training form,
random weights, on a fixed random batch with a random binary GT already on the device. A step is forward (under
the step settings of ``engine.training.step``, as ``train_*.py`` runs them), loss in float32, backward and Adam step.
Each round times ``--steps`` steps; the median over rounds is reported, plus the process CPU seconds per image
(less sensitive to other load on a shared machine than wall time) and the peak memory of the steps (CUDA: the
allocator's peak; CPU: the growth of the process's peak RSS over the model and batch, from a fresh process per row
with ``--variants``).
``--variants`` times the issue's table for every case: separate / fused x fp32 / bf16 x NCHW / channels_last (bf16
rows only where the device has native bf16), one fresh process per row, rows alternated over ``--rounds``.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

import utils  # noqa: E402
from configs import TRAIN_FORMS  # noqa: E402
from data.atomic import write_json_atomic  # noqa: E402
from engine.hardware import PRECISIONS  # noqa: E402
from engine.inference import speed  # noqa: E402
from engine.training import loop  # noqa: E402
from engine.training.step import (  # noqa: E402
    StepError,
    StepSettings,
    compile_errors,
    prepare_model,
    resolve_step_settings,
    step_autocast,
    to_step_input,
)
from models import build_model  # noqa: E402
from models.losses import bce_ssim_iou_loss, weighted_bce_loss  # noqa: E402

CASES = {
    # name: (model, size, batch of dataset items, frames per item, BatchNorm in the backbone and STDC branches)
    "sdnet": ("sdnet", 320, 8, 1, False),
    "sdnet_b32": ("sdnet", 320, 32, 1, False),
    "sdneta": ("sdneta", 320, 8, 1, True),
    "stdnet": ("stdnet", 256, 1, 8, False),  # the row of earlier runs (BENCHMARKS.md)
    "stdnet_bn": ("stdnet", 256, 1, 8, True),  # as train_vsod.py trains it by default (--bn)
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Training images/s of SDNet @320 (batch 8) and STDNet @256 (clip 8).")
    parser.add_argument("--gpu", default="", help="CUDA device, e.g. 0 ('' = CPU)")
    parser.add_argument("--cases", nargs="+", default=["sdnet", "stdnet"], choices=list(CASES))
    parser.add_argument("--train-form", default="fused", choices=TRAIN_FORMS)
    parser.add_argument("--precision", default="fp32", choices=PRECISIONS)
    parser.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                        help="NHWC (default: as train_*.py, on unless bf16 fails its channels_last check here)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model, as train_*.py --compile")
    parser.add_argument("--variants", action="store_true",
                        help="every form x precision x layout, one fresh process per row (the BENCHMARKS table)")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds per model")
    parser.add_argument("--steps", type=int, default=3, help="optimizer steps per round")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps before the first round")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--json", default=None, metavar="PATH", help="also write the results to this JSON file")
    return parser


def make_step(name: str, device: torch.device, settings: StepSettings):
    """A closure doing one training step of case ``name`` on a fixed batch; returns it and images per step."""
    model_name, size, batch, frames, bn = CASES[name]
    torch.manual_seed(0)
    model = prepare_model(build_model(model_name, bn=bn).to(device).train(), settings)
    if frames == 1:
        groups = loop.image_param_groups(model, 1e-4)
        loss_fn = functools.partial(weighted_bce_loss, divisor=batch)
    else:
        groups = loop.video_param_groups(model, 1e-4, 0.05, preloaded=True)
        loss_fn = bce_ssim_iou_loss
    optimizer = torch.optim.Adam(groups, lr=1e-3, betas=(0.9, 0.99))
    inputs = to_step_input(torch.randn(batch, 3 * frames, size, size), settings, device)
    target = (torch.rand(batch * frames, 1, size, size, device=device) > 0.7).float()
    forward = torch.compile(model) if settings.compile else model
    scaler = torch.amp.GradScaler(device.type, enabled=settings.loss_scaling)

    def step() -> None:
        with step_autocast(settings, device):
            pred = forward(inputs)
        loss = loss_fn(pred.float(), target)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"{name}: loss {loss.item()} under {settings.describe()}")
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    return step, batch * frames


def _peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def measure(name: str, device: torch.device, settings: StepSettings, rounds: int, steps: int, warmup: int) -> dict:
    step, images = make_step(name, device, settings)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    else:
        base = _peak_rss_bytes()
    try:
        for _ in range(warmup):
            step()
    except compile_errors() as err:
        raise SystemExit(f"--compile: torch.compile failed: {str(err).splitlines()[0]}") from None
    peak = (torch.cuda.max_memory_allocated(device) if device.type == "cuda" else _peak_rss_bytes()) - base
    rates, cpu_per_image = [], []
    for _ in range(rounds):
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(steps):
            step()
        rates.append(images * steps / (time.perf_counter() - wall))
        cpu_per_image.append((time.process_time() - cpu) / (images * steps))
    return {"case": name, **settings.describe(), "images_per_step": images,
            "images_per_s_median": statistics.median(rates), "images_per_s_rounds": rates,
            "cpu_seconds_per_image": statistics.median(cpu_per_image), "peak_step_memory_mib": peak / 2**20}


def variant_flags(device: torch.device) -> list[list[str]]:
    """The rows of ``--variants``: separate / fused x fp32 / bf16 (where native) x NCHW / channels_last."""
    precisions = ["fp32"] + (["bf16"] if resolve_ok(device, "bf16") else [])
    return [["--train-form", form, "--precision", precision, "--channels-last" if nhwc else "--no-channels-last"]
            for form in ("separate", "fused") for precision in precisions for nhwc in (False, True)
            if not nhwc or resolve_ok(device, precision, channels_last=True)]


def resolve_ok(device: torch.device, precision: str, channels_last: bool | None = None) -> bool:
    try:
        resolve_step_settings(device, precision=precision, channels_last=channels_last)
    except StepError:
        return False
    return True


def run_variants(args: argparse.Namespace, device: torch.device, logger) -> list[dict]:
    """One fresh process per (case, row) and round, rows alternated, so that each row's peak memory is its own and
    a slower period of a shared machine hits every row alike; the median of each row's per-round medians."""
    rows: dict[tuple[str, int], list[dict]] = {}
    variants = variant_flags(device)
    for _ in range(args.rounds):
        for name in args.cases:
            for index, flags in enumerate(variants):
                out = Path(args.json or "results/bench_train.json").with_suffix(f".{name}.{index}.tmp.json")
                command = [sys.executable, __file__, "--cases", name, *flags, "--rounds", "1", "--steps",
                           str(args.steps), "--warmup", str(args.warmup), "--threads", str(args.threads),
                           "--gpu", args.gpu, "--json", str(out)]
                subprocess.run(command, check=True)
                rows.setdefault((name, index), []).append(json.loads(out.read_text())["rows"][0])
                out.unlink()
    merged = []
    for runs in rows.values():
        rates = [run["images_per_s_median"] for run in runs]
        merged.append({**runs[0], "images_per_s_median": statistics.median(rates), "images_per_s_rounds": rates,
                       "cpu_seconds_per_image": statistics.median(run["cpu_seconds_per_image"] for run in runs),
                       "peak_step_memory_mib": max(run["peak_step_memory_mib"] for run in runs)})
    for name in args.cases:
        baseline = next(row for row in merged if row["case"] == name and row["train_form"] == "separate"
                        and row["precision"] == "fp32" and not row["channels_last"])
        for row in merged:
            if row["case"] == name:
                row["vs_separate_fp32_nchw"] = row["images_per_s_median"] / baseline["images_per_s_median"]
                logger.info("%s %s %s %s: %.2f images/s (%.2fx), peak %.0f MiB", name, row["train_form"],
                            row["precision"], "channels_last" if row["channels_last"] else "NCHW",
                            row["images_per_s_median"], row["vs_separate_fp32_nchw"], row["peak_step_memory_mib"])
    return merged


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    logger = utils.setup_logger()
    device = utils.select_device(args.gpu)
    if args.threads:
        torch.set_num_threads(args.threads)
    results = {"device": speed.device_name(device), "threads": torch.get_num_threads(), "rows": []}
    if args.variants:
        results["rows"] = run_variants(args, device, logger)
    for name in [] if args.variants else args.cases:
        try:
            settings = resolve_step_settings(device, train_form=args.train_form, precision=args.precision,
                                             channels_last=args.channels_last, compile=args.compile)
        except StepError as err:
            utils.fail(str(err))
        row = measure(name, device, settings, args.rounds, args.steps, args.warmup)
        results["rows"].append(row)
        logger.info("%s (%s): %.2f images/s (median of %d rounds: %s), %.3f CPU s/image, peak %.0f MiB", name,
                    ", ".join(f"{k} {v}" for k, v in settings.describe().items()), row["images_per_s_median"],
                    args.rounds, ", ".join(f"{r:.2f}" for r in row["images_per_s_rounds"]),
                    row["cpu_seconds_per_image"], row["peak_step_memory_mib"])
    # other jobs on a shared machine slow training down a lot (see BENCHMARKS.md): record how busy it was
    results["load_average_after"] = list(os.getloadavg())
    logger.info("%s, %d threads, load average %s", results["device"], results["threads"],
                " ".join(f"{v:.1f}" for v in results["load_average_after"]))
    if args.json:
        write_json_atomic(args.json, results)


if __name__ == "__main__":
    main()
