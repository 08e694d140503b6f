"""The one start-up sequence of a training run, which ``train_sod.py`` and ``train_vsod.py`` both call (`run`).

A script hands over its resolved flags (`engine.training.settings.TrainSettings`) and its task as data
(`engine.training.settings.TrainingTask`); the sequence only calls down from there. In the order that matters: flags
checked before anything is written, torch's threads chosen, the process group joined, the resume checkpoint read,
seeding, data, model, weights, the step settings (`engine.training.step`), optimizer, run files, then
`engine.training.loop.fit`.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import Dataset

import configs
from data import DataError
from data.atomic import unwritable
from data.datasets import test_loader
from engine.distributed import (
    DistContext,
    convert_sync_batchnorm,
    distributed_context,
    init_distributed,
    is_main_process,
    launch,
    slurm_environment,
)
from engine.training.checkpoints import (
    LATEST_CHECKPOINT,
    checkpoint_path,
    load_training_checkpoint,
    restore_rng_state,
    resume_checkpoint_path,
    trim_log,
    write_args_json,
)
from engine.training.loop import LoopConfig, TrainingStopped, TrainJob, fit, validate
from engine.training.preflight import check_memory, checked_train_set
from engine.training.qat import fake_quantized_layers, prepare_qat
from engine.training.settings import TrainingTask, TrainSettings
from engine.training.step import StepError, nchw_reason, prepare_model, resolve_step_settings
from models import (
    CheckpointError,
    check_description,
    convert_model,
    count_parameters,
    load_checkpoint,
    load_weights,
    preload_backbone,
)
from utils import LOGGER_NAME, fail, parse_gpu_list, seed_everything, setup_logger

__all__ = ["run", "resolve_training_settings", "resolve_list_file", "choose_threads", "is_main_process"]


def choose_threads(settings: TrainSettings, env: Mapping[str, str] = os.environ) -> tuple[int, str]:
    """torch's CPU threads for one training process and why, which the training scripts' ``main`` sets: ``--threads``;
    else ``OMP_NUM_THREADS``; else, on the CPU, the cores this process may use divided among the run's processes on
    this machine (torch's own default counts every core once per process, which oversubscribes a multi-process
    CPU run); with CUDA, torch's default. The loader workers take one thread each (PyTorch's worker default) and
    are mostly asleep on a full prefetch queue."""
    if settings.threads:
        return settings.threads, "--threads"
    if env.get("OMP_NUM_THREADS", "").isdigit() and int(env["OMP_NUM_THREADS"]) > 0:
        return int(env["OMP_NUM_THREADS"]), "OMP_NUM_THREADS"
    if parse_gpu_list(settings.gpu) and torch.cuda.is_available():
        return torch.get_num_threads(), "torch's default, CUDA run"
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    local = max(1, int(env.get("LOCAL_WORLD_SIZE") or slurm_environment(env).get("WORLD_SIZE", "1")))
    return max(1, cores // local), f"{cores} usable cores / {local} process(es) on this machine"


def resolve_training_settings(settings: TrainSettings, ctx: DistContext) -> TrainSettings:
    """The settings checked before anything is written, against this process's device: `utils.fail` (one line,
    exit 2) on a missing ``--datadir``, files of ``--preload`` / ``--finetune`` / ``--resume-from`` that do not
    exist, a batch size that does not split over the processes, a step setting the device cannot run
    (``--precision``; int8 without ``--finetune``); ``--amp`` without CUDA trains in float32 (warned), as the
    release's flag always did."""
    if not settings.datadir:
        fail("--datadir is required: the data root (laid out as docs/data.md says)")
    if not Path(settings.datadir).is_dir():
        fail(f"--datadir {settings.datadir}: no such directory")
    for flag in ("preload", "finetune", "resume_from"):
        value = getattr(settings, flag)
        if value and not Path(value).is_file():
            fail(f"--{flag.replace('_', '-')} {value}: no such file")
    if (why := unwritable(settings.savedir, folder=True)) is not None:
        fail(f"--savedir {settings.savedir}: {why}")
    if settings.quantization_aware and not settings.finetune:
        fail("--precision int8 fine-tunes a trained model quantization-aware: give --finetune CHECKPOINT (its "
             "weights, training form or converted)")
    if settings.batch_size % ctx.world_size:
        fail(f"--batch-size {settings.batch_size} does not split evenly over {ctx.world_size} processes")
    if settings.amp and ctx.device.type != "cuda":
        if ctx.is_main:
            logging.getLogger(LOGGER_NAME).warning("--amp needs CUDA: training in float32")
        settings = settings.replace(amp=False, step=dataclasses.replace(settings.step, precision="fp32"))
    asked = settings.step
    try:
        step = resolve_step_settings(ctx.device, train_form=asked.train_form, precision=asked.precision,
                                     channels_last=asked.channels_last, compile=asked.compile)
    except StepError as err:
        fail(str(err))
    if asked.channels_last is None and not step.channels_last and ctx.is_main:
        logging.getLogger(LOGGER_NAME).warning("--precision bf16 trains in NCHW here: on this CPU %s in channels_last "
                                               "(a check at start-up)", nchw_reason(step.precision, ctx.device))
    return settings.replace(step=step, amp=step.precision == "fp16")


def _check_against_run(description, source: str, settings: TrainSettings) -> None:
    """CheckpointError when a checkpoint of ours describes another model than the run's flags."""
    video = configs.MODELS[settings.model]["kind"] == "video"
    check_description(description, source, model=settings.model, config=settings.config, bn=bool(settings.bn),
                      tid=tuple(settings.tid) if video else None, nframes=int(settings.nframes) if video else None,
                      nstdc=int(settings.nstdc) if video else None)


def _resume_checkpoint(settings: TrainSettings):
    """The checkpoint this run resumes from (`resume_checkpoint_path`), checked against the flags, or None."""
    path = resume_checkpoint_path(settings)
    if path is None:
        if settings.resume:
            logging.getLogger(LOGGER_NAME).info("--resume: no %s in %s yet, starting from scratch",
                                                LATEST_CHECKPOINT, checkpoint_path(settings.savedir, ""))
        return None
    flag = "--resume-from" if settings.resume_from else "--resume"
    try:
        checkpoint = load_training_checkpoint(path)
        _check_against_run(checkpoint.description, str(path), settings)
    except CheckpointError as err:
        fail(f"{flag}: {err}")
    return checkpoint


def _seed(settings: TrainSettings, ctx: DistContext, resume) -> int:
    """``--seed``; else the resumed run's (so shuffling and augmentation continue exactly); else one drawn from the
    clock on rank 0 and shared by all ranks."""
    if settings.seed is not None:
        return settings.seed
    if resume is not None and resume.contents["args"].get("seed") is not None:
        return resume.contents["args"]["seed"]
    seed = [int(time.time() * 1000) % 2**31]
    if ctx.world_size > 1:
        dist.broadcast_object_list(seed, src=0)
    return seed[0]


def _initialise(model: nn.Module, task: TrainingTask, settings: TrainSettings, resume,
                logger: logging.Logger) -> tuple[int, dict]:
    """Weights before training: the resumed checkpoint (its RNG states too), else ``--finetune`` (a whole model),
    else ``--preload`` (the backbone), else the random initialisation; a quantization-aware run's ``--finetune``
    weights in training form are converted first (``task.build_model``). Returns the first epoch to train and the
    best MAE so far per validation set. Errors: one line naming the flag, exit 2."""
    if resume is not None:
        try:
            load_weights(model, resume.state_dict, source=resume_checkpoint_path(settings))
        except CheckpointError as err:
            fail(f"--resume{'-from' if settings.resume_from else ''}: {err}")
        restore_rng_state(resume.contents["rng"])
        logger.info("resuming after epoch %d", resume.contents["epoch"])
        return resume.contents["epoch"] + 1, dict(resume.contents.get("best") or {})
    flag = "--finetune" if settings.finetune else "--preload"
    try:
        if settings.finetune:
            checkpoint = load_checkpoint(settings.finetune)
            # the same keys can still mean another model (e.g. other STDC ops): check what the file says
            _check_against_run(checkpoint.description, settings.finetune, settings)
            weights = checkpoint.state_dict
            if settings.quantization_aware and not checkpoint.description.deploy:  # it fine-tunes the converted form
                trained = load_weights(task.build_model(deploy=False), weights, source=settings.finetune)
                weights = convert_model(trained).state_dict()
            load_weights(model, weights, source=settings.finetune)
            logger.info("starting from the weights of %s", settings.finetune)
        elif settings.preload:
            copied, skipped = preload_backbone(model, settings.preload)
            logger.info("preloaded %d backbone entries from %s (%d ignored)", copied, settings.preload, len(skipped))
            if any(".bn" in key for key in skipped):
                logger.warning("--preload %s has BatchNorm entries this model (bn=%s) lacks; they are ignored",
                               settings.preload, settings.bn)
    except CheckpointError as err:
        fail(f"{flag}: {err}")
    return 0, {}


def _restore_optimizer(optimizer: torch.optim.Optimizer, resume, settings: TrainSettings) -> None:
    """Load the resumed optimizer state, then re-apply this run's group settings (weight decay, lr scale), so the
    flags of the resumed command are the ones in force. A different group layout is a one-line error."""
    fresh = [(group["name"], group["weight_decay"], group["lr_scale"]) for group in optimizer.param_groups]
    saved = resume.contents["optimizer"]
    saved_names = [group.get("name") for group in saved["param_groups"]]
    flag = "--resume-from" if settings.resume_from else "--resume"
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
    for candidate in (Path(path), Path(__file__).resolve().parents[2] / path):
        if candidate.is_file():
            return candidate
    fail(f"{flag} {path}: no such list file (write them with: python dataset/generate_lists.py --root ROOTDIR)")


def _evaluate_only(task: TrainingTask, settings: TrainSettings, ctx: DistContext, logger: logging.Logger) -> None:
    """``--evaluate``: the validation MAE of a checkpoint's weights (ours or the authors', training form or
    converted) on every validation set, logged on rank 0; nothing is written."""
    evaluate = settings.evaluate
    path = checkpoint_path(settings.savedir, "checkpoint_best.pth") if evaluate == "best" else Path(evaluate)
    try:
        checkpoint = load_checkpoint(path)
        _check_against_run(checkpoint.description, str(path), settings)
        model = task.build_model(deploy=checkpoint.description.deploy)
        load_weights(model, checkpoint.state_dict, source=path)
    except CheckpointError as err:
        fail(f"--evaluate: {err}")
    val_sets = _val_sets(task)
    if not val_sets:
        fail("--evaluate: no validation set (see --val-data / --val-lst)")
    cfg = LoopConfig(ctx.device, step=settings.step)
    for name, dataset in val_sets.items():
        result = validate(model.to(ctx.device), test_loader(dataset, settings.workers), cfg)
        logger.info("%s on %s: MAE %.4f over %d items (%d unreadable skipped)", path, name, result["mae"],
                    result["count"], result["skipped"])


def _train_set(task: TrainingTask, seed: int) -> Dataset:
    try:
        return task.train_set(seed=seed)
    except DataError as err:
        fail(f"{task.train_flag}: {err}")


def _val_sets(task: TrainingTask) -> dict[str, Dataset]:
    try:
        return dict(task.val_sets())
    except DataError as err:
        fail(f"{task.val_flag}: {err}")


def one_line(err: Exception) -> str:
    """The message of a `DataError`, also when a DataLoader worker raised it (torch then prepends the worker's
    traceback and ends with the original 'module.DataError: message' line)."""
    line = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
    name = f"{type(err).__module__}.{type(err).__name__}: "
    return line[len(name):] if line.startswith(name) else line


def _train_process(task: TrainingTask, settings: TrainSettings) -> None:
    """One training process (of one or several): the start-up sequence, then `fit`."""
    logger = setup_logger(None, 0 if is_main_process() else 1)
    if settings.checkinfo:  # needs no data
        parameters = count_parameters(task.build_model())
        logger.info("%s (config %s, %s): %d parameters (%.3f M)", settings.model, settings.config, task.summary,
                    parameters, parameters / 1e6)
        return
    ctx = distributed_context(settings.gpu)
    settings = resolve_training_settings(settings, ctx)
    if settings.evaluate:
        if ctx.is_main:
            _evaluate_only(task, settings, ctx, logger)
        return
    init_distributed(ctx)
    resume = _resume_checkpoint(settings)
    settings = settings.replace(seed=_seed(settings, ctx, resume))
    seed_everything(settings.seed)
    train_set, val_sets = _train_set(task, settings.seed), _val_sets(task)
    model = task.build_model(deploy=settings.quantization_aware)
    if settings.quantization_aware:
        prepare_qat(model)
    start_epoch, best = _initialise(model, task, settings, resume, logger)
    if settings.sync_bn and ctx.world_size > 1:
        convert_sync_batchnorm(model)
    prepare_model(model.to(ctx.device), settings.step)
    optimizer = torch.optim.Adam(task.param_groups(model), lr=settings.lr,
                                 betas=configs.TRAIN_DEFAULTS[task.kind]["betas"])
    scaler = torch.amp.GradScaler(ctx.device.type, enabled=settings.step.loss_scaling)
    if resume is not None:
        _restore_optimizer(optimizer, resume, settings)
        if scaler.is_enabled() and "scaler" in resume.contents:
            scaler.load_state_dict(resume.contents["scaler"])
    # The checks that take time come last: every cheaper mistake above has been named first.
    check_memory(task, settings, ctx)
    train_set = checked_train_set(task, train_set, settings, ctx, logger)
    # Only now, after every check passed, does rank 0 write: log.txt, args.json, the trimmed log.jsonl.
    logger = setup_logger(settings.savedir if ctx.is_main else None, ctx.rank)
    if ctx.is_main:
        write_args_json(settings.savedir, settings)
        trim_log(settings.savedir, resume.contents["epoch"] if resume is not None else -1)
    units = "clips" if task.kind == "video" else "images"
    logger.info("training %s (config %s, %s) on %s: %d %s, validation on %s, %d process(es), seed %d",
                settings.model, settings.config, task.summary, ctx.device, len(train_set), units,
                ", ".join(val_sets) or "nothing", ctx.world_size, settings.seed)
    step = settings.step
    logger.info("step: %s form, %s, %s%s; %d torch thread(s) (%s), %d loader worker(s)", step.train_form,
                step.precision, "channels_last" if step.channels_last else "NCHW",
                ", torch.compile" if step.compile else "", torch.get_num_threads(), choose_threads(settings)[1],
                settings.workers)
    if task.loss_meaning:
        logger.info("loss: %s", task.loss_meaning)
    if settings.quantization_aware:
        logger.info("quantization-aware: the converted model, %d convolutions with weights (per output channel) and "
                    "inputs (per tensor) fake-quantized to 8 bits, the one-channel ones in float; its checkpoints "
                    "are converted ones, for --precision int8 inference", len(fake_quantized_layers(model)))
    job = TrainJob(settings=settings, model=model, optimizer=optimizer, train_set=train_set,
                   loss_fn=task.loss(settings.batch_size // ctx.world_size), pass_sizes=list(task.pass_sizes),
                   val_sets=val_sets, best_files={name: task.best_file_of(name) for name in val_sets},
                   drop_last=task.drop_last, warmup=task.warmup, start_epoch=start_epoch, best=best,
                   frames_per_sample=task.frames_per_sample, scaler=scaler)
    try:
        fit(job, ctx, logger)
    except TrainingStopped as err:
        fail(str(err), 1)
    except DataError as err:  # a file whose header passed the check but whose data is damaged
        fail(f"{task.train_flag}: {one_line(err)}; the run stopped (resume with --resume once it is fixed or gone)", 1)


class _TaskWorker:
    """`_train_process` bound to a task, picklable for the processes `launch` spawns."""

    def __init__(self, task: TrainingTask) -> None:
        self.task = task

    def __call__(self, settings: TrainSettings) -> None:
        _train_process(self.task, settings)


def run(task: TrainingTask, settings: TrainSettings) -> None:
    """Train ``task`` as ``settings`` say: in this process, one DDP process per listed GPU (``--gpu 0,1``), or as
    one rank of a torchrun job (`engine.distributed.launch`)."""
    launch(_TaskWorker(task), settings)
