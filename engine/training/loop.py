"""Training: parameter groups, the learning-rate schedule, one pass over the data, validation and the epoch loop
(`fit`), which `engine.training.startup` runs once a run's flags, data, model and optimizer are ready."""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from tqdm import tqdm

import configs
from data.datasets import test_loader
from engine.distributed import DistContext
from engine.training.checkpoints import append_log_line, save_training_checkpoint
from engine.training.settings import TrainSettings
from engine.training.step import StepSettings, compile_errors, step_autocast, to_step_input
from utils import LOGGER_NAME

__all__ = ["image_param_groups", "video_param_groups", "lr_at_epoch", "set_epoch_lr", "LoopConfig",
           "train_one_pass", "validate", "TrainJob", "fit", "LossFn", "TrainingStopped"]

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class TrainingStopped(RuntimeError):
    """A run that cannot go on (a non-finite loss, a failed ``--compile``); the message is one line for the log.
    Every checkpoint written before it stays complete."""


# --- optimizer and schedule ------------------------------------------------------------------------------------------


def _group_list(named: dict[str, list[nn.Parameter]], wd: float, factors: dict[str, float],
                lr_scales: dict[str, float] | None = None) -> list[dict]:
    lr_scales = lr_scales or {}
    return [{"params": params, "name": name, "weight_decay": wd * factors[name], "lr_scale": lr_scales.get(name, 1.0)}
            for name, params in named.items() if params]


def image_param_groups(model: nn.Module, wd: float) -> list[dict]:
    """Adam parameter groups of image training (design §6.1), by parameter name: ``scales`` (branch logits alpha,
    wd x 0.5), ``bn`` (BN0/BN1 of the DiffBlocks, wd x 0.1), ``other`` (everything else, wd). Each group carries
    its ``name`` and ``lr_scale`` (1) for `set_epoch_lr`."""
    named: dict[str, list[nn.Parameter]] = {"scales": [], "bn": [], "other": []}
    for name, param in model.named_parameters():
        if param.requires_grad:
            named["scales" if "scales" in name else "bn" if "bn" in name else "other"].append(param)
    return _group_list(named, wd, configs.TRAIN_DEFAULTS["image"]["wd_factors"])


def video_param_groups(model: nn.Module, wd: float, lr_reduce: float, preloaded: bool) -> list[dict]:
    """Adam parameter groups of video training (design §6.3), by parameter name. With a preloaded backbone:
    ``backbone`` (names containing 'block': lr x ``lr_reduce``, wd x 0.5), ``norm`` (other names containing
    'norm': wd x 0.1), ``other`` (wd). From scratch: ``norm`` (names containing 'norm' or 'bn', wd x 0.1) and
    ``other`` (wd), no lr reduction."""
    factors = configs.TRAIN_DEFAULTS["video"]["wd_factors"]
    named: dict[str, list[nn.Parameter]] = {"backbone": [], "norm": [], "other": []}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if preloaded and "block" in name:
            named["backbone"].append(param)
        elif "norm" in name or (not preloaded and "bn" in name):
            named["norm"].append(param)
        else:
            named["other"].append(param)
    return _group_list(named, wd, factors, {"backbone": lr_reduce})


def lr_at_epoch(epoch: int, *, lr: float, lr_type: str, lr_steps: tuple[int, ...], epochs: int) -> float:
    """Base learning rate of ``epoch`` (from 0): multistep (x 0.1 at each of ``lr_steps``) or cosine
    (0.5 lr (1 + cos(pi epoch / epochs)))."""
    if lr_type == "cosine":
        return 0.5 * lr * (1 + math.cos(math.pi * epoch / epochs))
    return lr * 0.1 ** sum(epoch >= step for step in lr_steps)


def set_epoch_lr(optimizer: torch.optim.Optimizer, lr: float, *, freeze_scales: bool = False) -> None:
    """Set every group's lr to ``lr`` x its ``lr_scale``; with ``freeze_scales`` the ``scales`` group (branch
    logits) gets lr 0, so alpha does not move during the warm-up epochs."""
    for group in optimizer.param_groups:
        frozen = freeze_scales and group.get("name") == "scales"
        group["lr"] = 0.0 if frozen else lr * group.get("lr_scale", 1.0)


# --- one pass and validation -----------------------------------------------------------------------------------------


@dataclass
class LoopConfig:
    """What `train_one_pass` and `validate` need besides model, data, optimizer and loss."""

    device: torch.device
    rank: int = 0
    world_size: int = 1
    step: StepSettings = field(default_factory=StepSettings)
    scaler: torch.amp.GradScaler | None = None
    max_steps: int = 0  # optimizer steps per pass; 0 = the whole loader
    frames_per_sample: int = 1  # images in one dataset item (T for clips), for images/s
    iter_size: int = 1  # loader batches (micro-batches) accumulated into one optimizer step
    print_freq: int = 0  # log the running loss every this many steps (0: never)


def train_one_pass(model: nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer, loss_fn: LossFn,
                   cfg: LoopConfig, desc: str = "") -> dict:
    """One pass over ``loader`` of (input, target[, weight]) batches: forward (under ``cfg.step``: autocast,
    memory layout), loss in float32, backward; one optimizer step per ``cfg.iter_size`` batches (gradients
    accumulated; a pass ending mid-way steps with what it has). Returns ``{'loss', 'steps', 'images', 'seconds',
    'images_per_s'}`` with loss, steps and images summed over all processes (loss = mean per step of the summed
    micro-batch losses). On rank 0 a tqdm bar, and after the first and every ``cfg.print_freq`` steps a log line,
    show the running loss and images/s. `TrainingStopped` on a non-finite loss (training on would only spread it
    through the weights) and on a ``torch.compile`` failure (``model`` compiled by `fit`)."""
    model.train()
    logger = logging.getLogger(LOGGER_NAME)
    total = min(len(loader), cfg.max_steps * cfg.iter_size) if cfg.max_steps else len(loader)
    bar = tqdm(itertools.islice(loader, total), total=total, desc=desc, leave=False, dynamic_ncols=True,
               disable=cfg.rank != 0 or None)
    scaled = cfg.scaler is not None and cfg.scaler.is_enabled()
    loss_sum, steps, images, pending = 0.0, 0, 0, 0
    start = time.perf_counter()
    optimizer.zero_grad(set_to_none=True)
    for index, (inputs, target, *weight) in enumerate(bar):
        inputs = to_step_input(inputs, cfg.step, cfg.device)
        target = target.to(cfg.device, non_blocking=True)
        # DDP all-reduces the gradients once per optimizer step: the micro-batches before the last of a step
        # accumulate locally (forward and backward under no_sync), the last one's backward reduces them all.
        accumulating = pending + 1 < cfg.iter_size and index + 1 < total and hasattr(model, "no_sync")
        with model.no_sync() if accumulating else contextlib.nullcontext():
            try:
                with step_autocast(cfg.step, cfg.device):
                    pred = model(inputs)
            except compile_errors() as err:
                raise TrainingStopped(f"--compile: torch.compile failed: {str(err).strip().splitlines()[0]} (train "
                                      "without --compile)") from err
            # Non-finite maps stop the run as a non-finite loss does, before BCE refuses them with a traceback.
            if not torch.isfinite(pred).all():
                raise TrainingStopped(f"{desc}: the maps are not finite at batch {index + 1} "
                                      f"({_step_words(cfg.step)}): stopped; the checkpoints written so far are intact")
            # BCE is not autocast-safe: the loss always runs in float32.
            loss = loss_fn(pred.float(), target, *(w.to(cfg.device) for w in weight))
            if not torch.isfinite(loss):
                raise TrainingStopped(f"{desc}: the loss is {loss.item()} at batch {index + 1} "
                                      f"({_step_words(cfg.step)}): stopped; the checkpoints written so far are intact")
            (cfg.scaler.scale(loss) if scaled else loss).backward()
        loss_sum += loss.item()
        images += inputs.shape[0] * cfg.frames_per_sample
        pending += 1
        if pending < cfg.iter_size and index + 1 < total:
            continue
        if scaled:
            cfg.scaler.step(optimizer)
            cfg.scaler.update()
        else:
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        steps, pending = steps + 1, 0
        rate = images * cfg.world_size / max(time.perf_counter() - start, 1e-9)
        # the first step too: a pass is never silent until its tenth step
        if cfg.print_freq and (steps % cfg.print_freq == 0 or steps == 1) and cfg.rank == 0:
            bar.set_postfix(loss=f"{loss_sum / steps:.4f}", img_s=f"{rate:.1f}")
            logger.info("%s: step %d/%d, loss %.4f, %.1f images/s", desc, steps, -(-total // cfg.iter_size),
                        loss_sum / steps, rate)
    seconds = time.perf_counter() - start
    totals = torch.tensor([loss_sum, steps, images], dtype=torch.float64)
    if cfg.world_size > 1:
        dist.all_reduce(totals)
    loss_sum, steps, images = totals.tolist()
    return {"loss": loss_sum / max(steps, 1), "steps": int(steps), "images": int(images), "seconds": seconds,
            "images_per_s": images / max(seconds, 1e-9)}


def _step_words(step: StepSettings) -> str:
    return f"{step.precision}, {step.train_form} form, {'channels_last' if step.channels_last else 'NCHW'}"


def validate(model: nn.Module, loader: DataLoader, cfg: LoopConfig) -> dict:
    """MAE of ``model`` (under ``cfg.step``'s autocast and layout) over a test-mode dataset loader (items: dicts
    with ``image`` (3, S, S) or ``clip`` (3T, S, S), ``gt`` (1, H, W) or (T, 1, H, W) and ``error``;
    ``batch_size=None``), as in the authors' validation: maps upsampled bilinearly to the GT size, quantised to
    floor(255 p) / 255, mean |. - GT| per item, averaged over items. Items with an error are skipped and counted.
    Returns ``{'mae', 'count', 'skipped'}``; the model is left in train mode."""
    model.eval()
    errors, skipped = [], 0
    with torch.no_grad():
        for item in loader:
            if item.get("error") or item.get("gt") is None:
                skipped += 1
                continue
            inputs = to_step_input((item["clip"] if "clip" in item else item["image"])[None], cfg.step, cfg.device)
            gt = item["gt"].to(cfg.device)
            gt = gt.reshape(-1, 1, *gt.shape[-2:])
            with step_autocast(cfg.step, cfg.device):
                pred = model(inputs)
            pred = pred.float()
            if pred.shape[-2:] != gt.shape[-2:]:
                pred = F.interpolate(pred, size=gt.shape[-2:], mode="bilinear", align_corners=False)
            errors.append((torch.floor(pred * 255) / 255 - gt).abs().mean().item())
    model.train()
    mae = sum(errors) / len(errors) if errors else float("nan")
    return {"mae": mae, "count": len(errors), "skipped": skipped}


# --- the epoch loop --------------------------------------------------------------------------------------------------


@dataclass
class TrainJob:
    """Everything the epoch loop `fit` needs; built by each training process (`engine.training.startup`)."""

    settings: TrainSettings
    model: nn.Module  # unwrapped, already on the device, prepared (engine.training.step.prepare_model)
    optimizer: torch.optim.Optimizer
    train_set: Dataset  # train-mode SODDataset / VSODDataset (set_epoch, set_size)
    loss_fn: LossFn
    pass_sizes: list[int]  # one pass over train_set per entry and epoch, at that input size
    val_sets: dict[str, Dataset] = field(default_factory=dict)  # name -> test-mode dataset
    best_files: dict[str, str] = field(default_factory=dict)  # val set name -> best checkpoint file name
    drop_last: bool = False
    warmup: int = 0  # epochs with frozen branch logits
    start_epoch: int = 0
    best: dict[str, float] = field(default_factory=dict)
    frames_per_sample: int = 1
    scaler: torch.amp.GradScaler | None = None


def _train_loader(job: TrainJob, ctx: DistContext) -> tuple[DataLoader, DistributedSampler]:
    settings = job.settings
    # One sampler for any number of processes: the shuffle depends only on (seed, pass), so a run is the same
    # after a resume and with any -j; rank r takes every world_size-th index of the shuffled order.
    sampler = DistributedSampler(job.train_set, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True,
                                 seed=settings.seed, drop_last=False)
    loader = DataLoader(job.train_set, batch_size=settings.batch_size // ctx.world_size, sampler=sampler,
                        num_workers=settings.workers, drop_last=job.drop_last, pin_memory=ctx.device.type == "cuda",
                        generator=torch.Generator().manual_seed(settings.seed))
    return loader, sampler


def fit(job: TrainJob, ctx: DistContext, logger: logging.Logger) -> dict[str, float]:
    """Train from ``job.start_epoch`` to ``settings.epochs``: per epoch set the lr (and the alpha freeze), make one
    pass per entry of ``pass_sizes``, then on rank 0 validate, write the checkpoints and one ``log.jsonl`` line.
    Returns the best MAE per validation set. With ``--compile`` the (DDP-wrapped) model is compiled once here."""
    settings = job.settings
    loader, sampler = _train_loader(job, ctx)
    model = job.model
    if ctx.world_size > 1:
        device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
        model = nn.parallel.DistributedDataParallel(job.model, device_ids=device_ids)
    if settings.step.compile:
        model = torch.compile(model)
    cfg = LoopConfig(ctx.device, ctx.rank, ctx.world_size, settings.step, job.scaler, settings.max_steps,
                     job.frames_per_sample, settings.iter_size, settings.print_freq)
    for epoch in range(job.start_epoch, settings.epochs):
        epoch_start = time.perf_counter()
        lr = lr_at_epoch(epoch, lr=settings.lr, lr_type=settings.lr_type, lr_steps=settings.lr_steps,
                         epochs=settings.epochs)
        frozen = epoch < job.warmup
        set_epoch_lr(job.optimizer, lr, freeze_scales=frozen)
        logger.info("epoch %d/%d: lr %g%s", epoch, settings.epochs, lr, " (branch logits frozen)" if frozen else "")
        job.train_set.set_epoch(epoch)
        passes = []
        for index, size in enumerate(job.pass_sizes):
            job.train_set.set_size(size)
            sampler.set_epoch(epoch * len(job.pass_sizes) + index)
            passes.append(train_one_pass(model, loader, job.optimizer, job.loss_fn, cfg,
                                         desc=f"epoch {epoch} @{size}"))
        steps = sum(p["steps"] for p in passes)
        images, seconds = sum(p["images"] for p in passes), sum(p["seconds"] for p in passes)
        loss = sum(p["loss"] * p["steps"] for p in passes) / max(steps, 1)
        if ctx.is_main:
            _finish_epoch(job, epoch, lr, loss, images / max(seconds, 1e-9), epoch_start, cfg, logger)
        if ctx.world_size > 1:
            dist.barrier()
    return job.best


def _finish_epoch(job: TrainJob, epoch: int, lr: float, loss: float, rate: float, epoch_start: float,
                  cfg: LoopConfig, logger: logging.Logger) -> None:
    """Rank 0 after an epoch: validation, best tracking, checkpoints, log line."""
    settings = job.settings
    val_mae = {}
    for name, dataset in job.val_sets.items():
        result = validate(job.model, test_loader(dataset, settings.workers), cfg)
        if result["skipped"]:
            logger.warning("validation on %s: %d unreadable items skipped", name, result["skipped"])
        val_mae[name] = result["mae"]
    improved = [name for name, mae in val_mae.items() if mae <= job.best.get(name, math.inf)]
    job.best.update({name: val_mae[name] for name in improved})
    seconds = time.perf_counter() - epoch_start
    # The log line before the checkpoint: a kill between the two resumes from the epoch before, which drops the
    # line and writes it again (engine.training.checkpoints.trim_log).
    append_log_line(settings.savedir, {"epoch": epoch, "lr": lr, "loss": loss, "val_mae": val_mae,
                                   "images_per_s": rate, "seconds": seconds, **settings.step.describe()})
    save_training_checkpoint(job.model, settings, epoch, job.optimizer, job.best, scaler=job.scaler,
                             best_files=[job.best_files[name] for name in improved if name in job.best_files])
    maes = ", ".join(f"{name} {mae:.4f}" for name, mae in val_mae.items()) or "none"
    logger.info("epoch %d: loss %.4f, val MAE %s, %.1f images/s, %.1f s", epoch, loss, maes, rate, seconds)
