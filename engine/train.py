"""Training: parameter groups, the learning-rate schedule, one pass over the data, validation, the epoch loop, and
the one start-up sequence both ``train_sod.py`` and ``train_vsod.py`` run (`run`).

What differs between image and video training is a `TrainingTask` (data, loss, parameter groups, passes per
epoch); each script defines one and calls ``run(task, args)``. Everything else, in the order that matters, is here:
flags checked before anything is written, the process group joined, the resume checkpoint read, seeding, data,
model, weights, optimizer, run files, then `fit`.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from tqdm import tqdm

import configs
from data.datasets import test_loader
from engine.checkpoints import (
    LATEST_CHECKPOINT,
    append_log_line,
    check_description,
    checkpoint_path,
    load_training_checkpoint,
    restore_rng_state,
    resume_checkpoint_path,
    save_training_checkpoint,
    trim_log,
    write_args_json,
)
from engine.distributed import (
    DistContext,
    convert_sync_batchnorm,
    distributed_context,
    init_distributed,
    launch,
    slurm_environment,
)
from engine.speed import count_parameters
from models import CheckpointError, build_model, load_checkpoint, load_weights, preload_backbone
from utils import LOGGER_NAME, fail, seed_everything, setup_logger

__all__ = ["TrainingTask", "run", "image_param_groups", "video_param_groups", "lr_at_epoch", "set_epoch_lr",
           "train_one_pass", "resolve_list_file"]

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


# --- optimizer and schedule ------------------------------------------------------------------------------------------


def _group_list(named: dict[str, list[nn.Parameter]], wd: float, factors: dict[str, float],
                lr_scales: dict[str, float] | None = None) -> list[dict]:
    lr_scales = lr_scales or {}
    return [{"params": params, "name": name, "weight_decay": wd * factors[name], "lr_scale": lr_scales.get(name, 1.0)}
            for name, params in named.items() if params]


def image_param_groups(model: nn.Module, wd: float) -> list[dict]:
    """Adam parameter groups of image training (SPEC §6.1), by parameter name: ``scales`` (branch logits alpha,
    wd x 0.5), ``bn`` (BN0/BN1 of the DiffBlocks, wd x 0.1), ``other`` (everything else, wd). Each group carries
    its ``name`` and ``lr_scale`` (1) for `set_epoch_lr`."""
    named: dict[str, list[nn.Parameter]] = {"scales": [], "bn": [], "other": []}
    for name, param in model.named_parameters():
        if param.requires_grad:
            named["scales" if "scales" in name else "bn" if "bn" in name else "other"].append(param)
    return _group_list(named, wd, configs.TRAIN_DEFAULTS["image"]["wd_factors"])


def video_param_groups(model: nn.Module, wd: float, lr_reduce: float, preloaded: bool) -> list[dict]:
    """Adam parameter groups of video training (SPEC §6.3), by parameter name. With a preloaded backbone:
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
    amp: bool = False
    scaler: torch.amp.GradScaler | None = None
    max_steps: int = 0  # optimizer steps per pass; 0 = the whole loader
    frames_per_sample: int = 1  # images in one dataset item (T for clips), for images/s
    iter_size: int = 1  # loader batches (micro-batches) accumulated into one optimizer step
    print_freq: int = 0  # log the running loss every this many steps (0: never)


def train_one_pass(model: nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer, loss_fn: LossFn,
                   cfg: LoopConfig, desc: str = "") -> dict:
    """One pass over ``loader`` of (input, target[, weight]) batches: forward (float16 autocast with ``cfg.amp``),
    loss in float32, backward; one optimizer step per ``cfg.iter_size`` batches (gradients accumulated; a pass
    ending mid-way steps with what it has). Returns ``{'loss', 'steps', 'images', 'seconds', 'images_per_s'}``
    with loss, steps and images summed over all processes (loss = mean per step of the summed micro-batch
    losses). On rank 0 a tqdm bar, and every ``cfg.print_freq`` steps a log line, show the running loss and
    images/s."""
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
        inputs = inputs.to(cfg.device, non_blocking=True)
        target = target.to(cfg.device, non_blocking=True)
        with torch.autocast(cfg.device.type, dtype=torch.float16, enabled=cfg.amp):
            pred = model(inputs)
        # BCE is not autocast-safe: the loss always runs in float32.
        loss = loss_fn(pred.float(), target, *(w.to(cfg.device) for w in weight))
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
        if cfg.print_freq and steps % cfg.print_freq == 0 and cfg.rank == 0:
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


def validate(model: nn.Module, loader: DataLoader, cfg: LoopConfig) -> dict:
    """MAE of ``model`` over a test-mode dataset loader (items: dicts with ``image`` (3, S, S) or ``clip``
    (3T, S, S), ``gt`` (1, H, W) or (T, 1, H, W) and ``error``; ``batch_size=None``), as in the authors'
    validation: maps upsampled bilinearly to the GT size, quantised to floor(255 p) / 255, mean |. - GT| per
    item, averaged over items. Items with an error are skipped and counted. Returns ``{'mae', 'count',
    'skipped'}``; the model is left in train mode."""
    model.eval()
    errors, skipped = [], 0
    with torch.no_grad():
        for item in loader:
            if item.get("error") or item.get("gt") is None:
                skipped += 1
                continue
            inputs = (item["clip"] if "clip" in item else item["image"])[None].to(cfg.device)
            gt = item["gt"].to(cfg.device)
            gt = gt.reshape(-1, 1, *gt.shape[-2:])
            with torch.autocast(cfg.device.type, dtype=torch.float16, enabled=cfg.amp):
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
    """Everything the epoch loop `fit` needs; built by `run`."""

    args: argparse.Namespace
    model: nn.Module  # unwrapped, already on the device
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
    args = job.args
    # One sampler for any number of processes: the shuffle depends only on (seed, pass), so a run is the same
    # after a resume and with any -j; rank r takes every world_size-th index of the shuffled order.
    sampler = DistributedSampler(job.train_set, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True,
                                 seed=args.seed, drop_last=False)
    loader = DataLoader(job.train_set, batch_size=args.batch_size // ctx.world_size, sampler=sampler,
                        num_workers=args.workers, drop_last=job.drop_last, pin_memory=ctx.device.type == "cuda",
                        generator=torch.Generator().manual_seed(args.seed))
    return loader, sampler


def fit(job: TrainJob, ctx: DistContext, logger: logging.Logger) -> dict[str, float]:
    """Train from ``job.start_epoch`` to ``args.epochs``: per epoch set the lr (and the alpha freeze), make one
    pass per entry of ``pass_sizes``, then on rank 0 validate, write the checkpoints and one ``log.jsonl`` line.
    Returns the best MAE per validation set."""
    args = job.args
    loader, sampler = _train_loader(job, ctx)
    model = job.model
    if ctx.world_size > 1:
        device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
        model = nn.parallel.DistributedDataParallel(job.model, device_ids=device_ids)
    cfg = LoopConfig(ctx.device, ctx.rank, ctx.world_size, args.amp, job.scaler, args.max_steps,
                     job.frames_per_sample, args.iter_size, args.print_freq)
    for epoch in range(job.start_epoch, args.epochs):
        epoch_start = time.perf_counter()
        lr = lr_at_epoch(epoch, lr=args.lr, lr_type=args.lr_type, lr_steps=args.lr_steps, epochs=args.epochs)
        frozen = epoch < job.warmup
        set_epoch_lr(job.optimizer, lr, freeze_scales=frozen)
        logger.info("epoch %d/%d: lr %g%s", epoch, args.epochs, lr, " (branch logits frozen)" if frozen else "")
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
    args = job.args
    val_mae = {}
    for name, dataset in job.val_sets.items():
        result = validate(job.model, test_loader(dataset, args.workers), cfg)
        if result["skipped"]:
            logger.warning("validation on %s: %d unreadable items skipped", name, result["skipped"])
        val_mae[name] = result["mae"]
    improved = [name for name, mae in val_mae.items() if mae <= job.best.get(name, math.inf)]
    job.best.update({name: val_mae[name] for name in improved})
    seconds = time.perf_counter() - epoch_start
    # The log line before the checkpoint: a kill between the two resumes from the epoch before, which drops the
    # line and writes it again (engine.checkpoints.trim_log).
    append_log_line(args.savedir, {"epoch": epoch, "lr": lr, "loss": loss, "val_mae": val_mae,
                                   "images_per_s": rate, "seconds": seconds})
    save_training_checkpoint(job.model, args, epoch, job.optimizer, job.best, scaler=job.scaler,
                             best_files=[job.best_files[name] for name in improved if name in job.best_files])
    maes = ", ".join(f"{name} {mae:.4f}" for name, mae in val_mae.items()) or "none"
    logger.info("epoch %d: loss %.4f, val MAE %s, %.1f images/s, %.1f s", epoch, loss, maes, rate, seconds)


# --- the start-up sequence -------------------------------------------------------------------------------------------


class TrainingTask:
    """What differs between image and video training. ``train_sod.py`` and ``train_vsod.py`` each subclass it and
    pass an instance to `run`; the methods get the resolved flags."""

    kind = "image"
    drop_last = False

    def resolve(self, args: argparse.Namespace, ctx: DistContext) -> argparse.Namespace:
        """Check the task's own flags and return them resolved (a copy); `utils.fail` on a flag that cannot work."""
        return args

    def datasets(self, args: argparse.Namespace) -> tuple[Dataset, dict[str, Dataset]]:
        """The train-mode training set and the test-mode validation sets by name (`utils.fail` on bad data)."""
        raise NotImplementedError

    def build(self, args: argparse.Namespace, deploy: bool = False) -> nn.Module:
        """The model of the flags: training form, or converted with ``deploy`` (``--evaluate`` only)."""
        return build_model(args.model, args.config, bn=args.bn, deploy=deploy)

    def param_groups(self, model: nn.Module, args: argparse.Namespace) -> list[dict]:
        raise NotImplementedError

    def loss(self, args: argparse.Namespace, batch: int) -> LossFn:
        """The loss of a batch of ``batch`` samples per process."""
        raise NotImplementedError

    def pass_sizes(self, args: argparse.Namespace) -> list[int]:
        """Input size of each pass over the training set of one epoch."""
        return [args.size]

    def best_file(self, val_set: str) -> str:
        """Checkpoint file name of the best epoch on ``val_set``."""
        return "checkpoint_best.pth"

    def warmup(self, args: argparse.Namespace) -> int:
        """Epochs with frozen branch logits."""
        return 0

    def frames_per_sample(self, args: argparse.Namespace) -> int:
        return 1

    def summary(self, args: argparse.Namespace) -> str:
        """What the start-up log line says about the model besides its name and config."""
        return f"bn {args.bn}"


def _replace(args: argparse.Namespace, **changes: object) -> argparse.Namespace:
    return argparse.Namespace(**{**vars(args), **changes})


def resolve_training_args(args: argparse.Namespace, ctx: DistContext) -> argparse.Namespace:
    """The flags with defaults resolved (``--config``; ``--amp`` off without CUDA, warned), checked before
    anything is written: `utils.fail` (one line, exit 2) on a missing ``--datadir``, files of ``--preload`` /
    ``--finetune`` / ``--resume-from`` that do not exist, a batch size that does not split over the processes."""
    if not args.datadir:
        fail("--datadir is required: the data root (see the README's data section)")
    if not Path(args.datadir).is_dir():
        fail(f"--datadir {args.datadir}: no such directory")
    for flag in ("preload", "finetune", "resume_from"):
        value = getattr(args, flag)
        if value and not Path(value).is_file():
            fail(f"--{flag.replace('_', '-')} {value}: no such file")
    for flag in ("epochs", "batch_size", "size"):
        if getattr(args, flag) < 1:
            fail(f"--{flag.replace('_', '-')} must be at least 1")
    if args.batch_size % ctx.world_size:
        fail(f"--batch-size {args.batch_size} does not split evenly over {ctx.world_size} processes")
    amp = args.amp
    if amp and ctx.device.type != "cuda":
        if ctx.is_main:
            logging.getLogger(LOGGER_NAME).warning("--amp needs CUDA: training in float32")
        amp = False
    return _replace(args, amp=amp, config=args.config or configs.MODELS[args.model]["config"])


def _check_against_run(description, source: str, args: argparse.Namespace) -> None:
    """CheckpointError when a checkpoint of ours describes another model than the run's flags."""
    video = configs.MODELS[args.model]["kind"] == "video"
    check_description(description, source, model=args.model, config=args.config, bn=bool(args.bn),
                      tid=tuple(args.tid) if video else None, nframes=int(args.nframes) if video else None,
                      nstdc=int(args.nstdc) if video else None)


def _resume_checkpoint(args: argparse.Namespace):
    """The checkpoint this run resumes from (`resume_checkpoint_path`), checked against the flags, or None."""
    path = resume_checkpoint_path(args)
    if path is None:
        if args.resume:
            logging.getLogger(LOGGER_NAME).info("--resume: no %s in %s yet, starting from scratch",
                                                LATEST_CHECKPOINT, checkpoint_path(args.savedir, ""))
        return None
    flag = "--resume-from" if args.resume_from else "--resume"
    try:
        checkpoint = load_training_checkpoint(path)
        _check_against_run(checkpoint.description, str(path), args)
    except CheckpointError as err:
        fail(f"{flag}: {err}")
    return checkpoint


def _seed(args: argparse.Namespace, ctx: DistContext, resume) -> int:
    """``--seed``; else the resumed run's (so shuffling and augmentation continue exactly); else one drawn from the
    clock on rank 0 and shared by all ranks."""
    if args.seed is not None:
        return args.seed
    if resume is not None and resume.contents["args"].get("seed") is not None:
        return resume.contents["args"]["seed"]
    seed = [int(time.time() * 1000) % 2**31]
    if ctx.world_size > 1:
        dist.broadcast_object_list(seed, src=0)
    return seed[0]


def _initialise(model: nn.Module, args: argparse.Namespace, resume, logger: logging.Logger) -> tuple[int, dict]:
    """Weights before training: the resumed checkpoint (its RNG states too), else ``--finetune`` (a whole model),
    else ``--preload`` (the backbone), else the random initialisation. Returns the first epoch to train and the
    best MAE so far per validation set. Errors: one line naming the flag, exit 2."""
    if resume is not None:
        try:
            load_weights(model, resume.state_dict, source=resume_checkpoint_path(args))
        except CheckpointError as err:
            fail(f"--resume{'-from' if args.resume_from else ''}: {err}")
        restore_rng_state(resume.contents["rng"])
        logger.info("resuming after epoch %d", resume.contents["epoch"])
        return resume.contents["epoch"] + 1, dict(resume.contents.get("best") or {})
    flag = "--finetune" if args.finetune else "--preload"
    try:
        if args.finetune:
            checkpoint = load_checkpoint(args.finetune)
            # the same keys can still mean another model (e.g. other STDC ops): check what the file says
            _check_against_run(checkpoint.description, args.finetune, args)
            load_weights(model, checkpoint.state_dict, source=args.finetune)
            logger.info("starting from the weights of %s", args.finetune)
        elif args.preload:
            copied, skipped = preload_backbone(model, args.preload)
            logger.info("preloaded %d backbone entries from %s (%d ignored)", copied, args.preload, len(skipped))
            if any(".bn" in key for key in skipped):
                logger.warning("--preload %s has BatchNorm entries this model (bn=%s) lacks; they are ignored",
                               args.preload, args.bn)
    except CheckpointError as err:
        fail(f"{flag}: {err}")
    return 0, {}


def _restore_optimizer(optimizer: torch.optim.Optimizer, resume, args: argparse.Namespace) -> None:
    """Load the resumed optimizer state, then re-apply this run's group settings (weight decay, lr scale), so the
    flags of the resumed command are the ones in force. A different group layout is a one-line error."""
    fresh = [(group["name"], group["weight_decay"], group["lr_scale"]) for group in optimizer.param_groups]
    saved = resume.contents["optimizer"]
    saved_names = [group.get("name") for group in saved["param_groups"]]
    flag = "--resume-from" if args.resume_from else "--resume"
    if saved_names != [name for name, _, _ in fresh]:
        fail(f"{flag}: the checkpoint's optimizer groups {saved_names} differ from this run's "
             f"{[name for name, _, _ in fresh]} (e.g. --preload given in only one of the runs)")
    try:
        optimizer.load_state_dict(saved)
    except ValueError as err:
        fail(f"{flag}: optimizer state does not fit: {err}")
    for group, (_, weight_decay, lr_scale) in zip(optimizer.param_groups, fresh, strict=True):
        group["weight_decay"], group["lr_scale"] = weight_decay, lr_scale


def resolve_list_file(path: str, flag: str) -> Path:
    """A list file given relative to the working directory or, failing that, to the repository (where
    ``dataset/generate_lists.py`` writes them); a one-line error naming ``flag`` if neither exists."""
    for candidate in (Path(path), Path(__file__).resolve().parents[1] / path):
        if candidate.is_file():
            return candidate
    fail(f"{flag} {path}: no such list file (write them with: python dataset/generate_lists.py --root ROOTDIR)")


def _evaluate_only(task: TrainingTask, args: argparse.Namespace, ctx: DistContext, val_sets: dict,
                   logger: logging.Logger) -> None:
    """``--evaluate``: the validation MAE of a checkpoint's weights (ours or the authors', training form or
    converted) on every validation set, logged on rank 0; nothing is written."""
    path = checkpoint_path(args.savedir, "checkpoint_best.pth") if args.evaluate == "best" else Path(args.evaluate)
    try:
        checkpoint = load_checkpoint(path)
        _check_against_run(checkpoint.description, str(path), args)
        model = task.build(args, deploy=checkpoint.description.deploy)
        load_weights(model, checkpoint.state_dict, source=path)
    except CheckpointError as err:
        fail(f"--evaluate: {err}")
    if not val_sets:
        fail("--evaluate: no validation set (see --val-data / --val-lst)")
    cfg = LoopConfig(ctx.device, amp=args.amp)
    for name, dataset in val_sets.items():
        result = validate(model.to(ctx.device), test_loader(dataset, args.workers), cfg)
        logger.info("%s on %s: MAE %.4f over %d items (%d unreadable skipped)", path, name, result["mae"],
                    result["count"], result["skipped"])


def _train_process(task: TrainingTask, args: argparse.Namespace) -> None:
    """One training process (of one or several): the start-up sequence, then `fit`."""
    logger = setup_logger(None, int(slurm_environment(os.environ).get("RANK", os.environ.get("RANK", "0"))))
    if args.checkinfo:  # needs no data
        args = _replace(args, config=args.config or configs.MODELS[args.model]["config"])
        parameters = count_parameters(task.build(args))
        logger.info("%s (config %s, %s): %d parameters (%.3f M)", args.model, args.config, task.summary(args),
                    parameters, parameters / 1e6)
        return
    ctx = distributed_context(args.gpu)
    args = task.resolve(resolve_training_args(args, ctx), ctx)
    if args.evaluate:
        if ctx.is_main:
            _evaluate_only(task, args, ctx, task.datasets(_replace(args, seed=args.seed or 0))[1], logger)
        return
    init_distributed(ctx)
    resume = _resume_checkpoint(args)
    args = _replace(args, seed=_seed(args, ctx, resume))
    seed_everything(args.seed)
    train_set, val_sets = task.datasets(args)
    model = task.build(args)
    start_epoch, best = _initialise(model, args, resume, logger)
    if args.sync_bn and ctx.world_size > 1:
        convert_sync_batchnorm(model)
    model.to(ctx.device)
    optimizer = torch.optim.Adam(task.param_groups(model, args), lr=args.lr,
                                 betas=configs.TRAIN_DEFAULTS[task.kind]["betas"])
    scaler = torch.amp.GradScaler("cuda", enabled=args.amp)
    if resume is not None:
        _restore_optimizer(optimizer, resume, args)
        if args.amp and "scaler" in resume.contents:
            scaler.load_state_dict(resume.contents["scaler"])
    # Only now, after every check passed, does rank 0 write: log.txt, args.json, the trimmed log.jsonl.
    logger = setup_logger(args.savedir if ctx.is_main else None, ctx.rank)
    if ctx.is_main:
        write_args_json(args.savedir, args)
        trim_log(args.savedir, resume.contents["epoch"] if resume is not None else -1)
    units = "clips" if task.kind == "video" else "images"
    logger.info("training %s (config %s, %s) on %s: %d %s, validation on %s, %d process(es), seed %d", args.model,
                args.config, task.summary(args), ctx.device, len(train_set), units, ", ".join(val_sets) or "nothing",
                ctx.world_size, args.seed)
    job = TrainJob(args=args, model=model, optimizer=optimizer, train_set=train_set,
                   loss_fn=task.loss(args, args.batch_size // ctx.world_size), pass_sizes=task.pass_sizes(args),
                   val_sets=val_sets, best_files={name: task.best_file(name) for name in val_sets},
                   drop_last=task.drop_last, warmup=task.warmup(args), start_epoch=start_epoch, best=best,
                   frames_per_sample=task.frames_per_sample(args), scaler=scaler)
    fit(job, ctx, logger)


class _TaskWorker:
    """`_train_process` bound to a task, picklable for the processes `launch` spawns."""

    def __init__(self, task: TrainingTask) -> None:
        self.task = task

    def __call__(self, args: argparse.Namespace) -> None:
        _train_process(self.task, args)


def run(task: TrainingTask, args: argparse.Namespace) -> None:
    """Train as ``args`` say: in this process, one DDP process per listed GPU (``--gpu 0,1``), or as one rank of a
    torchrun job (`engine.distributed.launch`)."""
    launch(_TaskWorker(task), args)
