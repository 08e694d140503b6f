"""The checks of a training run that need its data or its machine, made by every training process before anything
is written: whether a step at the requested size and batch can fit in memory (`check_memory`), and every training
pair's files (`checked_train_set`, `data.pair_check`)."""

from __future__ import annotations

import logging
import os

from torch.utils.data import Dataset
from tqdm import tqdm

import configs
from data.pair_check import check_pairs, distinct_pairs, drop_samples
from engine.distributed import DistContext
from engine.hardware import memory_bytes
from engine.training.settings import TrainingTask, TrainSettings
from utils import fail

__all__ = ["step_memory_estimate", "check_memory", "checked_train_set"]

# Beside the activations: the Python process with torch, the model, its gradients and Adam's state, the loader.
FIXED_BYTES = 2**29


def step_memory_estimate(model: str, size: int, batch: int, frames: int = 1) -> int:
    """Bytes a training step of ``model`` needs at a square input of ``size`` px with ``batch`` samples of ``frames``
    frames each: `configs.TRAIN_BYTES_PER_PIXEL` (measured, bench/bench_train_memory.py) per input pixel, plus
    `FIXED_BYTES`."""
    return FIXED_BYTES + configs.TRAIN_BYTES_PER_PIXEL[model] * size * size * batch * frames


def check_memory(task: TrainingTask, settings: TrainSettings, ctx: DistContext) -> None:
    """One line and exit 2 when a step of the largest pass cannot fit: the estimate of all the processes that share
    the device's memory (every process of the machine on the CPU) against what they have."""
    size = max(task.pass_sizes)
    per_process = settings.batch_size // ctx.world_size
    # On the CPU every process of this machine shares its memory (torchrun says how many there are here).
    sharing = int(os.environ.get("LOCAL_WORLD_SIZE", ctx.world_size)) if ctx.device.type == "cpu" else 1
    need = step_memory_estimate(settings.model, size, per_process, task.frames_per_sample) * sharing
    have, what = memory_bytes(ctx.device)
    if need > have:
        processes = f" in each of {sharing} processes" if sharing > 1 else ""
        fail(f"--size {settings.size} / --batch-size {settings.batch_size}: a training step at {size} px with "
             f"{per_process} {'clips' if task.kind == 'video' else 'images'}{processes} needs about "
             f"{need / 2**30:.1f} GiB, more than {what} ({have / 2**30:.1f} GiB); lower --batch-size or --size")


def checked_train_set(task: TrainingTask, train_set: Dataset, settings: TrainSettings, ctx: DistContext,
                      logger: logging.Logger) -> Dataset:
    """``train_set`` once every distinct training pair passed `data.pair_check.check_pair` (a progress bar on the
    main process). Refused pairs are logged one line each, then: exit 2, or with ``--skip-bad-pairs`` the samples
    that use them are dropped and counted."""
    pairs = distinct_pairs(train_set)
    checks = tqdm(check_pairs(pairs, settings.max_pixels, settings.workers), total=len(pairs),
                  desc="checking training pairs", unit="pair", leave=False, disable=not ctx.is_main)
    refused = {pair: reason for pair, reason in checks if reason is not None}
    if not refused:
        return train_set
    if ctx.is_main:
        for reason in refused.values():
            logger.error("%s", reason)
    summary = f"{len(refused)} of {len(pairs)} training pairs refused (listed above)"
    if not settings.skip_bad_pairs:
        fail(f"{task.train_flag}: {summary}; nothing was written. Fix or remove them, or train without them with "
             "--skip-bad-pairs")
    dropped = drop_samples(train_set, refused)
    if not len(train_set):
        fail(f"{task.train_flag}: {summary}: no training sample left")
    if ctx.is_main:
        logger.warning("%s: training without them (--skip-bad-pairs): %d of %d samples dropped", summary, dropped,
                       len(train_set) + dropped)
    return train_set
