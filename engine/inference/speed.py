"""Model cost and the timing protocol of ``speed_sod.py`` / ``speed_vsod.py`` (design §8), and their flags.

Parameters and MACs (convolution multiply-accumulates, design §5), and FPS: batch 1 by default, a random input
already on the device, the median over timed passes after a warm-up, each pass synchronised on a GPU. The scripts'
flags (`add_speed_args`) are resolved once into `SpeedFlags`, which `run_speed` takes.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

import configs
from data.atomic import unwritable, write_json_atomic
from engine.inference.runner import (
    BackendError,
    RunnerFlags,
    add_device_args,
    prepare_for_inference,
    runner_from_flags,
)
from models import DEFAULT_NFRAMES, CheckpointError, build_model, count_macs, count_parameters, load_model
from utils import (
    LOGGER_NAME,
    MAX_COUNT,
    ArgumentParser,
    data_processes,
    fail,
    frames_per_clip,
    input_size,
    int_between,
    model_names,
)

__all__ = ["time_passes", "peak_memory_mb", "speed_parser", "add_speed_args",
           "SpeedFlags", "run_speed", "device_name"]


DESCRIPTIONS = {"image": "Time an image saliency model (SDNet, SDNet-A) on random input.",
                "video": "Time a video saliency model (STDNet, STDNet-A) on a random clip."}


def speed_parser(kind: str) -> argparse.ArgumentParser:
    """The parser of ``speed_sod.py`` (``kind='image'``) or ``speed_vsod.py`` (``'video'``)."""
    parser = ArgumentParser(description=DESCRIPTIONS[kind])
    add_speed_args(parser, kind)
    return parser


def add_speed_args(parser: argparse.ArgumentParser, kind: str) -> None:
    """The flags of ``speed_sod.py`` (``kind='image'``) and ``speed_vsod.py`` (``'video'``), with the device flags
    (`engine.inference.runner.add_device_args`); `SpeedFlags.from_args` resolves them."""
    parser.add_argument("--model", default=None, choices=model_names(kind),
                        help=f"model to time (default: {model_names(kind)[0]}, or what --evaluate holds)")
    parser.add_argument("--config", default="baseline", choices=sorted(configs.OP_TABLES),
                        help="the op table to time: 'baseline' times the DCR-converted network, a training op table "
                             "(sdnet, sdnet-a) the multi-branch training form, for the DCR ablation")
    parser.add_argument("-j", "--workers", type=data_processes, default=1,
                        help="accepted for the released command line; nothing is read from disk")
    parser.add_argument("--evaluate", default=None, metavar="CHECKPOINT",
                        help="time these weights (training form or converted, ours or the authors') instead of "
                             "random ones; the timing does not depend on the weights")
    if kind == "image":
        parser.add_argument("--size", type=input_size, required=True,
                            help="input height and width in pixels (release: 320)")
    else:
        parser.add_argument("--size", type=input_size, nargs="+", default=[256], metavar="PIXELS",
                            help="frame height and width in pixels: one value for a square frame, or H W (the "
                                 "release's; default 256)")
        parser.add_argument("--nframes", type=frames_per_clip, default=None,
                            help="frames per clip (one pass = one clip; default 8)")
    parser.add_argument("-b", "--batch-size", type=int_between(1, 1024), default=1, help="images or clips per pass")
    parser.add_argument("-n", "--passes", type=int_between(1, MAX_COUNT), default=None,
                        help="timed passes (default: the release's, e.g. 98 on the CPU and 899 on a GPU for images)")
    parser.add_argument("--warmup", type=int_between(0, MAX_COUNT), default=None,
                        help="untimed passes first, the first of them compiling (CPU) or the third capturing (CUDA) "
                             "the fast path for the input shape (default: the release's, 12 for images on the CPU)")
    parser.add_argument("--json", default=None, metavar="PATH", help="also write the figures to this JSON file")
    add_device_args(parser)


@dataclass(frozen=True)
class SpeedFlags:
    """The speed scripts' flags, resolved: the network to time (``model``, ``config``: 'baseline' = converted,
    ``weights``: a checkpoint or None for random weights), the input (``size`` as (H, W), ``nframes``,
    ``batch_size``), the protocol (``passes``, ``warmup``: None = the release's counts), ``json`` and how it runs
    (``runner``)."""

    model: str | None
    config: str
    weights: str | None
    size: tuple[int, int]
    nframes: int | None
    batch_size: int
    passes: int | None
    warmup: int | None
    json: str | None
    runner: RunnerFlags

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> SpeedFlags:
        size = list(args.size) if isinstance(args.size, list) else [args.size]
        if len(size) > 2:
            fail(f"--size {' '.join(map(str, size))}: give one value (a square) or two (H W)")
        return cls(model=args.model, config=args.config, weights=args.evaluate, size=(size[0], size[-1]),
                   nframes=getattr(args, "nframes", None), batch_size=args.batch_size, passes=args.passes,
                   warmup=args.warmup, json=args.json, runner=RunnerFlags.from_args(args))


def time_passes(run: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, *, passes: int,
                warmup: int) -> list[float]:
    """Seconds of each of ``passes`` timed calls ``run(x)`` after ``warmup`` untimed ones.

    Each timed pass is wall clock from before the call to after ``torch.cuda.synchronize`` (on a CUDA input), so
    asynchronous GPU work is included; ``x`` is expected on the device already (no transfer is timed).
    """
    cuda = x.device.type == "cuda"
    times = []
    for i in range(warmup + passes):
        start = time.perf_counter()
        run(x)
        if cuda:
            torch.cuda.synchronize(x.device)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return times


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory so far in MiB: allocated CUDA memory on a GPU, else the process's peak resident set (VmHWM)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


# Released protocol (design §8) as (timed passes, warm-up passes) per model kind and device type.
SPEED_PASSES = {("image", "cuda"): (899, 101), ("image", "cpu"): (98, 12),
                ("video", "cuda"): (89, 11), ("video", "cpu"): (9, 2)}


def _speed_model(flags: SpeedFlags, kind: str) -> tuple[nn.Module, str, int]:
    """The model to time, its name and frames per clip: random weights (as the release) of the converted
    architecture (``--config baseline``) or of the training form, or the weights of ``--evaluate``."""
    converted = flags.config == "baseline"
    nframes = flags.nframes
    if flags.weights:
        try:
            model, description = load_model(flags.weights, kind=kind, model=flags.model,
                                            train_config=None if converted else flags.config,
                                            inference_config="baseline" if converted else flags.config,
                                            nframes=nframes)
        except CheckpointError as err:
            fail(f"--evaluate {flags.weights}: {err}")
        return model, description.model, description.nframes or 1
    name = flags.model or model_names(kind)[0]
    nframes = (nframes or DEFAULT_NFRAMES) if kind == "video" else 1
    torch.manual_seed(0)
    try:
        # baseline = the converted (deploy) architecture of the model's own table
        model = build_model(name, None if converted else flags.config, deploy=converted, nframes=nframes)
    except ValueError as err:
        fail(f"--config {flags.config}: {err}")
    return model, name, nframes


def run_speed(flags: SpeedFlags, kind: str, device: torch.device) -> dict:
    """Build the model ``flags`` name, count its cost, time it on ``device`` as design §8 and log/return the figures.
    The precision is the one the compiled network reports; a precision other than fp32 also reports its largest
    difference from the fp32 maps of the same backend on the timed input."""
    logger = logging.getLogger(LOGGER_NAME)
    if flags.json and (why := unwritable(flags.json, folder=False)) is not None:
        fail(f"--json {flags.json}: {why}")
    passes, warmup = SPEED_PASSES[(kind, "cuda" if device.type == "cuda" else "cpu")]
    passes = flags.passes if flags.passes is not None else passes
    warmup = flags.warmup if flags.warmup is not None else warmup
    model, name, nframes = _speed_model(flags, kind)
    converted = flags.config == "baseline"
    channels = 3 * nframes if kind == "video" else 3
    x = torch.randn(flags.batch_size, channels, *flags.size)
    params = count_parameters(model)
    macs = count_macs(model.eval(), x[:1])
    runner = runner_from_flags(model, flags.runner, device=device)
    x = x.to(device, runner.dtype)
    try:
        start = time.perf_counter()
        if warmup:
            runner.warm_up(x, warmup)
        warmup_seconds = time.perf_counter() - start
        times = time_passes(runner, x, passes=passes, warmup=0)
        if runner.precision != "fp32":
            reference = prepare_for_inference(model, device, backend=runner.backend.name, threads=runner.threads)
            precision_diff = (runner(x) - reference(x.float())).abs().max().item()
    except BackendError as err:
        fail(str(err))
    frames = flags.batch_size * (nframes if kind == "video" else 1)
    median, mean = statistics.median(times), statistics.fmean(times)
    result = {
        "model": name, "config": flags.config, "form": "converted" if converted else "training",
        "weights": flags.weights or "random weights",
        "kind": kind, "device": str(device), "device_name": device_name(device), "path": runner.path,
        "precision": runner.precision,
        "torch": torch.__version__, "threads": runner.threads, "input_shape": list(x.shape),
        "batch_size": flags.batch_size, "frames_per_pass": frames, "params": params, "macs_per_pass": macs,
        "macs_per_frame": macs // (nframes if kind == "video" else 1), "passes": passes, "warmup": warmup,
        "warmup_s": warmup_seconds,
        "ms_median": median * 1e3, "ms_mean": mean * 1e3, "fps": frames / median, "fps_mean": frames / mean,
        "peak_memory_mb": peak_memory_mb(device),
    }
    if runner.precision != "fp32":
        result["max_abs_diff_vs_fp32"] = precision_diff
    log_speed(logger, result, nframes)
    if flags.json:
        write_json_atomic(flags.json, result)
    return result


def device_name(device: torch.device) -> str:
    """Human-readable name of ``device`` (the GPU model, or the CPU model from /proc/cpuinfo when available)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} ({os.cpu_count()} cores)"
    except OSError:
        pass
    return f"CPU ({os.cpu_count()} cores)"


def log_speed(logger: logging.Logger, result: dict, nframes: int) -> None:
    """Log the figures of `run_speed` in a few human-readable lines."""
    unit = "frames" if result["kind"] == "video" else "images"
    logger.info("model %s, config %s (%s form, %s) on %s (%s), path %s, %d threads",
                result["model"], result["config"], result["form"], result["weights"], result["device"],
                result["device_name"],
                result["path"], result["threads"])
    per_frame = f" = {result['macs_per_frame'] / 1e9:.3f} G per frame" if result["kind"] == "video" else ""
    logger.info("input %s, params %s, MACs %.3f G per %s%s", "x".join(map(str, result["input_shape"])),
                f"{result['params']:,}", result["macs_per_pass"] / 1e9,
                f"clip of {nframes} frames" if result["kind"] == "video" else "image", per_frame)
    logger.info("FPS %.1f %s/s (median of %d passes of %.2f ms after %d warm-up passes in %.1f s; from the mean: "
                "%.1f), peak memory %.0f MiB", result["fps"], unit, result["passes"], result["ms_median"],
                result["warmup"], result["warmup_s"], result["fps_mean"], result["peak_memory_mb"])
    if "max_abs_diff_vs_fp32" in result:
        logger.info("%s vs fp32 maps: max abs difference %.2e", result["precision"], result["max_abs_diff_vs_fp32"])
