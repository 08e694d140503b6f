"""The one start-up sequence of a training run, which ``train_sod.py`` and ``train_vsod.py`` both call (`run`).

What differs between image and video training is a `TrainingTask` (data, loss, parameter groups, passes per
epoch); each script defines one and calls ``run(task, args)``. Everything else, in the order that matters, is here:
flags checked before anything is written, the process group joined, the resume checkpoint read, seeding, data,
model, weights, optimizer, run files, then `engine.train.fit`.
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import Dataset

import configs
from data.atomic import unwritable
from data.datasets import test_loader
from engine.checkpoints import (
    LATEST_CHECKPOINT,
    check_description,
    checkpoint_path,
    load_training_checkpoint,
    restore_rng_state,
    resume_checkpoint_path,
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
from engine.train import LoopConfig, LossFn, TrainJob, fit, validate
from models import CheckpointError, build_model, load_checkpoint, load_weights, preload_backbone
from utils import LOGGER_NAME, fail, seed_everything, setup_logger

__all__ = ["TrainingTask", "run", "resolve_training_args", "resolve_list_file"]



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
    if (why := unwritable(args.savedir, folder=True)) is not None:
        fail(f"--savedir {args.savedir}: {why}")
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
