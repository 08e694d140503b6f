"""Shared script helpers: logging, device selection, and (later) checkpoints and the training loop.

Scripts import from here; this module never imports a script.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import io
import itertools
import json
import logging
import math
import os
import random
import re
import socket
import statistics
import sys
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

import cv2
import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from torch.utils.flop_counter import FlopCounterMode
from tqdm import tqdm

import configs
from data.atomic import write_bytes_atomic, write_json_atomic
from data.readers import DataError, read_rgb
from data.transforms import preprocess_test
from models import (
    CheckpointError,
    build_model,
    convert_model,
    load_weights,
    read_checkpoint,
    skip_zero_pre_biases,
)

LOGGER_NAME = "sdnet"


def setup_logger(savedir: str | os.PathLike | None = None, rank: int = 0) -> logging.Logger:
    """Console (and, if ``savedir`` is given, ``savedir/log.txt``) logger; ranks other than 0 log warnings only."""
    logger = logging.getLogger(LOGGER_NAME)
    logger.handlers.clear()
    logger.propagate = False
    logger.setLevel(logging.INFO if rank == 0 else logging.WARNING)
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S")
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(fmt)
    logger.addHandler(console)
    if savedir is not None and rank == 0:
        Path(savedir).mkdir(parents=True, exist_ok=True)
        file_handler = logging.FileHandler(Path(savedir) / "log.txt")
        file_handler.setFormatter(fmt)
        logger.addHandler(file_handler)
    return logger


def select_device(gpu: str | None) -> torch.device:
    """Device for ``--gpu`` ('' or None: CPU; '0' or '0,1': the first listed CUDA device).

    Without CUDA a non-empty ``--gpu`` logs one warning and falls back to the CPU, so every README command also
    runs on a CPU-only machine.
    """
    if not gpu:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        logging.getLogger(LOGGER_NAME).warning("--gpu %s given but CUDA is not available: running on CPU", gpu)
        return torch.device("cpu")
    first = int(str(gpu).split(",")[0])
    return torch.device("cuda", first)


# ---------------------------------------------------------------------------------------------------------------------
# Inference: model from flags + checkpoint, map output (generate_salmaps_*.py, predict.py, export_onnx.py)


def add_inference_args(parser: argparse.ArgumentParser) -> None:
    """Flags describing the model behind a checkpoint and how to run it, shared by the inference scripts."""
    group = parser.add_argument_group("model")
    group.add_argument("--train-config", default=None, choices=sorted(configs.OP_TABLES),
                       help="op table the checkpoint was trained with (default: the model's own, e.g. sdnet)")
    group.add_argument("--inference-config", default="baseline",
                       help="'baseline' runs the DCR-converted model; the training config runs the training form")
    bn = group.add_mutually_exclusive_group()
    bn.add_argument("--bn", dest="bn", action="store_const", const=True, default=None,
                    help="the checkpoint has BatchNorm in the backbone blocks (default for video models)")
    bn.add_argument("--nobn", dest="bn", action="store_const", const=False,
                    help="the checkpoint has no BatchNorm in the backbone blocks (default for image models)")
    group.add_argument("--tid", nargs="+", default=["cv", "cd", "ad"], choices=["cv", "cd", "ad"],
                       help="STDC branch ops of a video checkpoint (training default: cv cd ad)")
    group.add_argument("--nframes", type=int, default=8, help="frames per clip of a video model")
    run = parser.add_argument_group("device")
    run.add_argument("--gpu", default="", help="CUDA device(s), e.g. 0 or 0,1 (first one is used); '' = CPU")
    run.add_argument("--eager", action="store_true",
                     help="plain eager float32 PyTorch instead of the fast path of utils.prepare_for_inference")
    run.add_argument("--half", action="store_true", help="float16 inference on CUDA")


def build_inference_model(name: str, checkpoint: str | os.PathLike, *, train_config: str | None = None,
                          inference_config: str = "baseline", bn: bool | None = None,
                          tid: tuple[str, ...] = ("cv", "cd", "ad"), nframes: int = 8) -> nn.Module:
    """Model ``name`` with the weights of ``checkpoint``, in eval mode on the CPU, ready for `prepare_for_inference`.

    ``inference_config='baseline'`` returns the DCR-converted single-branch model (built with ``deploy=True``); a
    training-form checkpoint (the authors' release with its ``module.`` keys, or ours) is loaded into the training
    form and converted, an already converted checkpoint is loaded directly. ``inference_config == train_config``
    returns the training form itself. ``bn=None`` means the default of the model's kind (image: no BN, video: BN).
    Raises ``CheckpointError`` (a ValueError, one line naming the file and the missing/unexpected keys) when the
    weights do not fit, and ValueError for an unknown ``inference_config``. Forward: image models (B, 3, H, W) ->
    (B, 1, H, W); video models (B, 3T, H, W) -> (B*T, 1, H, W).
    """
    spec = configs.MODELS[name]
    train_config = train_config or spec["config"]
    if inference_config not in ("baseline", train_config):
        raise ValueError(f"--inference-config {inference_config!r}: use 'baseline' (converted) or the training config"
                         f" {train_config!r}")
    shape = {"bn": spec["kind"] == "video" if bn is None else bn, "tid": tuple(tid), "nframes": nframes}
    training = build_model(name, train_config, **shape)
    try:
        load_weights(training, checkpoint)
    except CheckpointError as training_error:
        if inference_config != "baseline":
            raise
        # Converted checkpoints (ours, written with deploy=True) load straight into the inference architecture.
        deploy = build_model(name, train_config, deploy=True, **shape)
        try:
            load_weights(deploy, checkpoint)
        except CheckpointError:
            raise training_error from None
        return deploy.eval()
    training.eval()
    if inference_config != "baseline":
        return training
    deploy = build_model(name, train_config, deploy=True, **shape)
    load_weights(deploy, convert_model(training).state_dict())
    return deploy.eval()


def saliency_to_uint8(saliency: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """Sigmoid maps (N, 1, h, w) -> 8-bit maps (N, H, W) at ``size`` = (H, W), as the authors wrote them (SPEC §7.2).

    Bilinear upsampling (align_corners=False) in float32, times 255 in float32, cast to uint8 by truncation
    (no rounding, 1.0 -> 255). Runs on the maps' device; only the uint8 result is copied to the host.
    """
    maps = saliency.float()
    if tuple(maps.shape[-2:]) != tuple(size):
        maps = F.interpolate(maps, size=tuple(size), mode="bilinear", align_corners=False)
    return (maps[:, 0] * 255).to(torch.uint8).cpu().numpy()


def write_image_atomic(path: str | os.PathLike, image: np.ndarray) -> None:
    """Encode ``image`` by the file suffix (.png, .jpg) and write it so that ``path`` is never half-written.

    ``image``: (H, W) grey, (H, W, 3) BGR or (H, W, 4) BGRA, uint8 (OpenCV channel order). Parent folders are
    created (`data.atomic.write_bytes_atomic`).
    """
    ok, encoded = cv2.imencode(Path(path).suffix, image)
    if not ok:
        raise OSError(f"cannot encode {path}")
    write_bytes_atomic(path, encoded.tobytes())


def fail(message: str, status: int = 2) -> NoReturn:
    """Log ``message`` as one error line (no traceback) and exit with ``status`` (2: bad usage or input)."""
    logging.getLogger(LOGGER_NAME).error(message)
    raise SystemExit(status)


def _keep(item: dict) -> dict:
    return item


class ImageFiles(torch.utils.data.Dataset):
    """Image files read (`data.readers.read_rgb`) and preprocessed (`preprocess_test`) for inference, one per item.

    Item: ``{'index', 'path', 'image': (1, 3, S, S) float32, 'size': (H, W), 'error': None}`` plus ``'rgb'``
    ((H, W, 3) uint8, for overlays) when ``keep_rgb``; a file that cannot be decoded gives ``{'index', 'path',
    'error': message}`` instead of raising, so one bad file does not stop a run. Use `inference_loader` to iterate.
    """

    def __init__(self, paths: list[Path], size: int | None, keep_rgb: bool = False) -> None:
        self.paths, self.size, self.keep_rgb = list(paths), size, keep_rgb

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict:
        path = self.paths[index]
        try:
            rgb = read_rgb(path)
        except DataError as err:
            return {"index": index, "path": path, "error": str(err)}
        item = {"index": index, "path": path, "image": preprocess_test(rgb, self.size)[None],
                "size": rgb.shape[:2], "error": None}
        if self.keep_rgb:
            item["rgb"] = rgb if rgb.dtype == np.uint8 else (rgb // 257).astype(np.uint8)
        return item


def inference_loader(dataset: torch.utils.data.Dataset, workers: int) -> torch.utils.data.DataLoader:
    """Ordered, unbatched loader over ``dataset`` items with ``workers`` processes reading ahead (bounded memory)."""
    return torch.utils.data.DataLoader(dataset, batch_size=None, shuffle=False, num_workers=workers,
                                       collate_fn=_keep)


def load_inference_model(args: argparse.Namespace, checkpoint: str | os.PathLike) -> nn.Module:
    """`build_inference_model` from the flags of `add_inference_args` (plus ``--model``); a checkpoint that cannot
    be loaded or does not fit ends the script with one error line and exit status 2."""
    try:
        return build_inference_model(args.model, checkpoint, train_config=args.train_config,
                                     inference_config=args.inference_config, bn=args.bn, tid=tuple(args.tid),
                                     nframes=args.nframes)
    except ValueError as err:  # CheckpointError is a ValueError
        fail(str(err))


# ---------------------------------------------------------------------------------------------------------------------
# Training (train_sod.py, train_vsod.py): shared flags, seeding, distributed launch, parameter groups, learning-rate
# schedule, checkpoints and resume, and the epoch loop.

CHECKPOINT_DIR = "save_models"
LATEST_CHECKPOINT = "checkpoint_latest.pth"


def parse_lr_steps(text: str) -> tuple[int, ...]:
    """``--lr-steps`` value: epochs joined by '-' as in the released scripts ('90-150'), or by ','."""
    try:
        return tuple(int(value) for value in re.split(r"[-,]", text) if value.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected epochs joined by '-', e.g. 90-150, got {text!r}") from None


def add_common_args(parser: argparse.ArgumentParser, kind: str) -> None:
    """Flags shared by train_sod.py (``kind='image'``) and train_vsod.py (``'video'``), defaults from
    ``configs.TRAIN_DEFAULTS[kind]``; ``--model`` only offers the ``configs.MODELS`` entries of that kind."""
    defaults = configs.TRAIN_DEFAULTS[kind]
    names = sorted(name for name, spec in configs.MODELS.items() if spec["kind"] == kind)
    group = parser.add_argument_group("model")
    group.add_argument("--model", default=defaults["model"], choices=names, help="model to train")
    group.add_argument("--config", default=None, choices=sorted(configs.OP_TABLES),
                       help="training op table of the backbone (SPEC §4.2; default: the model's own)")
    group = parser.add_argument_group("data and output")
    group.add_argument("--datadir", default=None, help="data root (required), laid out as in the README")
    group.add_argument("--savedir", default="results/savedir",
                       help="output folder: args.json, log.jsonl, log.txt and save_models/checkpoint_*.pth")
    group.add_argument("--size", type=int, default=defaults["size"], help="square training input size")
    group.add_argument("-j", "--workers", type=int, default=4, help="data loading processes per training process")
    group = parser.add_argument_group("optimisation")
    group.add_argument("--epochs", type=int, default=defaults["epochs"])
    group.add_argument("--batch-size", type=int, default=defaults["batch_size"],
                       help="global batch size, split evenly over the training processes")
    group.add_argument("--lr", type=float, default=defaults["lr"], help="base learning rate (Adam)")
    group.add_argument("--wd", type=float, default=defaults["wd"],
                       help="weight decay (L2 in Adam) of conv weights and biases; other groups get a fraction")
    group.add_argument("--lr-type", default=defaults["lr_type"], choices=["multistep", "cosine"])
    group.add_argument("--lr-steps", type=parse_lr_steps, default=defaults["lr_steps"],
                       help="multistep: epochs at which the lr is multiplied by 0.1, joined by '-' (default "
                       f"{'-'.join(map(str, defaults['lr_steps']))})")
    group.add_argument("--seed", type=int, default=None,
                       help="seed of initialisation, shuffling and augmentation (default: the time; a resumed run "
                       "keeps its checkpoint's seed)")
    group.add_argument("--amp", action="store_true", help="mixed precision (float16 autocast; CUDA only)")
    group.add_argument("--max-steps", type=int, default=0,
                       help="stop each pass over the training set after this many steps (0: full passes; for smoke "
                       "tests and benchmarks)")
    group = parser.add_argument_group("initialisation and resuming")
    group.add_argument("--preload", default=None,
                       help="backbone weights to start from (every entry whose name contains 'block')")
    group.add_argument("--finetune", default=None,
                       help="full model weights to start from (our checkpoint or a released state dict); fresh "
                       "optimizer, epoch 0")
    group.add_argument("--resume", action="store_true",
                       help="continue from <savedir>/save_models/checkpoint_latest.pth if it exists")
    group.add_argument("--resume-from", default=None, help="continue from this training checkpoint")
    group.add_argument("--save-freq", type=int, default=10,
                       help="also keep save_models/checkpoint_%%03d.pth every this many epochs (0: never)")
    group = parser.add_argument_group("devices")
    group.add_argument("--gpu", default="",
                       help="CUDA devices, e.g. 0 or 0,1 (one DDP process per device); '' = CPU. Under torchrun "
                       "each process takes the device of its LOCAL_RANK")


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators (CUDA included) with ``seed``."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def capture_rng_state() -> dict:
    """Global RNG states (python, numpy, torch CPU, and CUDA if present) as tensors and plain python types, so a
    checkpoint holding them still loads with ``weights_only=True``."""
    _, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(position),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached_gaussian)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict) -> None:
    """Inverse of :func:`capture_rng_state` (CUDA states are restored only if CUDA is available)."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    numpy_state = state["numpy"]
    np.random.set_state(("MT19937", numpy_state["keys"].numpy().astype(np.uint32), numpy_state["pos"],
                         numpy_state["has_gauss"], numpy_state["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"][: torch.cuda.device_count()])


# --- distributed -----------------------------------------------------------------------------------------------------


def parse_gpu_list(gpu: str | None) -> list[int]:
    """``--gpu`` value -> device indices: '0,1' -> [0, 1]; '' or None -> []."""
    return [int(part) for part in str(gpu or "").split(",") if part.strip()]


@dataclass(frozen=True)
class DistContext:
    """This process's place in a (possibly single-process) training run and the device it trains on."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def start_process(gpu: str | None) -> tuple[DistContext, logging.Logger]:
    """Console logger (rank > 0: warnings only) and :func:`distributed_context` of a training process."""
    logger = setup_logger(None, int(os.environ.get("RANK", "0")))
    return distributed_context(gpu), logger


def distributed_context(gpu: str | None) -> DistContext:
    """Rank, world size and device of this process from the torchrun / spawn variables (WORLD_SIZE, RANK,
    LOCAL_RANK) and ``--gpu``: with CUDA, process LOCAL_RANK uses the LOCAL_RANK-th listed device (or
    cuda:LOCAL_RANK when the list is shorter); without CUDA every process runs on the CPU (one warning)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistContext(0, 1, 0, select_device(gpu))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    gpus = parse_gpu_list(gpu)
    if gpus and torch.cuda.is_available():
        device = torch.device("cuda", gpus[local_rank] if local_rank < len(gpus) else local_rank)
    else:
        if gpus and rank == 0:
            logging.getLogger(LOGGER_NAME).warning("--gpu %s given but CUDA is not available: running on CPU", gpu)
        device = torch.device("cpu")
    return DistContext(rank, world_size, local_rank, device)


def init_distributed(ctx: DistContext) -> None:
    """Join the process group of a multi-process run (NCCL on CUDA, Gloo on CPU; rendezvous from MASTER_ADDR /
    MASTER_PORT as set by torchrun or :func:`spawn_workers`). No-op for a single process."""
    if ctx.world_size <= 1 or dist.is_initialized():
        return
    if ctx.device.type == "cuda":
        torch.cuda.set_device(ctx.device)
    backend = "nccl" if ctx.device.type == "cuda" else "gloo"
    # the other ranks wait in a barrier while rank 0 validates on the (large) video validation sets
    dist.init_process_group(backend, init_method="env://", rank=ctx.rank, world_size=ctx.world_size,
                            timeout=datetime.timedelta(hours=2))


def cleanup_distributed() -> None:
    """Leave the process group, if one was joined."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _spawned_entry(index: int, nprocs: int, port: int, worker: Callable, args: tuple) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(index), LOCAL_RANK=str(index),
                      WORLD_SIZE=str(nprocs), LOCAL_WORLD_SIZE=str(nprocs))
    worker(*args)


def spawn_workers(worker: Callable, nprocs: int, *args: object) -> None:
    """Run ``worker(*args)`` in ``nprocs`` new processes on this machine, each with the variables torchrun would
    set (RANK = LOCAL_RANK = index, WORLD_SIZE, MASTER_ADDR/PORT). A worker that exits with a status (e.g. 2 for
    bad input) makes this raise SystemExit with that status."""
    try:
        torch.multiprocessing.spawn(_spawned_entry, args=(nprocs, _free_port(), worker, args), nprocs=nprocs)
    except torch.multiprocessing.ProcessExitedException as err:
        raise SystemExit(err.exit_code if err.exit_code and err.exit_code > 0 else 1) from None


def _run_and_leave_group(worker: Callable[[argparse.Namespace], object], args: argparse.Namespace) -> None:
    try:
        worker(args)
    finally:
        cleanup_distributed()


def launch(worker: Callable[[argparse.Namespace], object], args: argparse.Namespace) -> None:
    """Run a training ``worker(args)``: once per listed GPU with DDP when ``--gpu`` lists several CUDA devices,
    otherwise once in this process (also under torchrun, which has already started one process per rank). Each
    process leaves the process group the worker joined, whether it returns or raises."""
    gpus = parse_gpu_list(args.gpu)
    if "WORLD_SIZE" in os.environ or len(gpus) < 2 or not torch.cuda.is_available():
        _run_and_leave_group(worker, args)
    else:
        spawn_workers(_run_and_leave_group, len(gpus), worker, args)


# --- optimizer and schedule ------------------------------------------------------------------------------------------


def _group_list(named: dict[str, list[nn.Parameter]], wd: float, factors: dict[str, float],
                lr_scales: dict[str, float] | None = None) -> list[dict]:
    lr_scales = lr_scales or {}
    return [{"params": params, "name": name, "weight_decay": wd * factors[name], "lr_scale": lr_scales.get(name, 1.0)}
            for name, params in named.items() if params]


def image_param_groups(model: nn.Module, wd: float) -> list[dict]:
    """Adam parameter groups of image training (SPEC §6.1), by parameter name: ``scales`` (branch logits alpha,
    wd x 0.5), ``bn`` (BN0/BN1 of the DiffBlocks, wd x 0.1), ``other`` (everything else, wd). Each group carries
    its ``name`` and ``lr_scale`` (1) for :func:`set_epoch_lr`."""
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


# --- checkpoints -----------------------------------------------------------------------------------------------------


def checkpoint_path(savedir: str | os.PathLike, name: str) -> Path:
    """``<savedir>/save_models/<name>``."""
    return Path(savedir) / CHECKPOINT_DIR / name


def save_atomic(obj: object, *paths: str | os.PathLike) -> None:
    """``torch.save(obj)`` once and write the bytes atomically, flushed to the disk, to every path in ``paths``."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    for path in paths:
        write_bytes_atomic(path, buffer.getvalue(), fsync=True)


def args_to_dict(args: argparse.Namespace) -> dict:
    """Flags as JSON- and weights_only-safe plain values (tuples -> lists, paths -> strings)."""
    def plain(value: object) -> object:
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, os.PathLike):
            return os.fspath(value)
        return value
    return {key: plain(value) for key, value in sorted(vars(args).items())}


def make_checkpoint(model: nn.Module, args: argparse.Namespace, epoch: int, optimizer: torch.optim.Optimizer,
                    best: dict[str, float], scaler: torch.amp.GradScaler | None = None) -> dict:
    """Self-describing training checkpoint (COMMON contract): model name, config, bn, tid / scales / nframes
    (None for image models), ``deploy=False``, epoch, args, optimizer, scheduler, rng, best (val set -> MAE) and
    the unprefixed ``state_dict`` of the unwrapped ``model``; only tensors and plain types."""
    video = configs.MODELS[args.model]["kind"] == "video"
    checkpoint = {
        "model": args.model, "config": args.config, "bn": bool(args.bn),
        "tid": list(args.tid) if video else None,
        "scales": [float(s) for s in args.scales] if video else None,
        "nframes": int(args.nframes) if video else None,
        "deploy": False, "epoch": int(epoch), "args": args_to_dict(args),
        "optimizer": optimizer.state_dict(),
        "scheduler": {"lr_type": args.lr_type, "lr": args.lr, "lr_steps": list(args.lr_steps),
                      "epochs": args.epochs, "last_epoch": int(epoch)},
        "rng": capture_rng_state(), "best": {name: float(mae) for name, mae in best.items()},
        "state_dict": {key: value.detach().cpu().clone() for key, value in model.state_dict().items()},
    }
    if scaler is not None and scaler.is_enabled():
        checkpoint["scaler"] = scaler.state_dict()
    return checkpoint


def save_epoch_checkpoints(checkpoint: dict, savedir: str | os.PathLike, *, save_freq: int,
                           best_files: list[str]) -> list[Path]:
    """Write ``checkpoint_latest.pth``, ``checkpoint_%03d.pth`` when (epoch + 1) is a multiple of ``save_freq``,
    and each of ``best_files`` (the best checkpoints this epoch improved), all atomically; returns the paths."""
    epoch = checkpoint["epoch"]
    names = [LATEST_CHECKPOINT]
    if save_freq > 0 and (epoch + 1) % save_freq == 0:
        names.append(f"checkpoint_{epoch:03d}.pth")
    paths = [checkpoint_path(savedir, name) for name in names + list(best_files)]
    save_atomic(checkpoint, *paths)
    return paths


TRAINING_CHECKPOINT_KEYS = ("model", "epoch", "optimizer", "state_dict")


def load_training_checkpoint(path: str | os.PathLike) -> dict:
    """Read one of our training checkpoints (``weights_only=True``). Raises ``models.CheckpointError`` (one line
    naming the file) if it is missing, unreadable or not a training checkpoint (e.g. released weights only)."""
    checkpoint = read_checkpoint(path)
    if not isinstance(checkpoint, dict) or not all(key in checkpoint for key in TRAINING_CHECKPOINT_KEYS):
        raise CheckpointError(f"{path}: not a training checkpoint of these scripts (needs the entries "
                              f"{', '.join(TRAINING_CHECKPOINT_KEYS)}); to start from weights only use --finetune")
    return checkpoint


def check_checkpoint_matches(checkpoint: dict, args: argparse.Namespace, source: str) -> None:
    """Raise ``CheckpointError`` if a checkpoint of ours describes another model than ``args`` (name, config, bn,
    and for video models tid and nframes); other checkpoints (no ``model`` entry) are left to key matching."""
    if not isinstance(checkpoint, dict) or "model" not in checkpoint:
        return
    wanted = {"model": args.model, "config": args.config, "bn": bool(args.bn)}
    if configs.MODELS[args.model]["kind"] == "video":
        wanted.update(tid=list(args.tid), nframes=int(args.nframes))
    for key, value in wanted.items():
        if key in checkpoint and checkpoint[key] != value:
            raise CheckpointError(f"{source}: checkpoint has {key}={checkpoint[key]!r}, but this run has "
                                  f"{key}={value!r}")


def resume_checkpoint_path(args: argparse.Namespace) -> Path | None:
    """The checkpoint to resume from: ``--resume-from`` if given, else with ``--resume`` the run's
    ``checkpoint_latest.pth`` if it exists (a first run with ``--resume`` starts from scratch), else None."""
    if args.resume_from:
        return Path(args.resume_from)
    latest = checkpoint_path(args.savedir, LATEST_CHECKPOINT)
    return latest if args.resume and latest.is_file() else None


# --- run files -------------------------------------------------------------------------------------------------------


def write_args_json(savedir: str | os.PathLike, args: argparse.Namespace) -> None:
    """``<savedir>/args.json``: the resolved flags of this run (rewritten atomically on resume)."""
    write_json_atomic(Path(savedir) / "args.json", args_to_dict(args))


def append_log_line(savedir: str | os.PathLike, record: dict) -> None:
    """Append one JSON line (an epoch summary) to ``<savedir>/log.jsonl``."""
    with open(Path(savedir) / "log.jsonl", "a") as handle:
        handle.write(json.dumps(record) + "\n")


def trim_log(savedir: str | os.PathLike, last_epoch: int) -> None:
    """Drop ``log.jsonl`` lines of epochs after ``last_epoch`` (those a resumed run is about to redo; all of them
    for a run starting at epoch 0), and a line cut short by a kill."""
    path = Path(savedir) / "log.jsonl"
    if not path.is_file():
        return

    def epoch_of(line: str) -> float:
        try:
            return json.loads(line).get("epoch", math.inf)
        except (json.JSONDecodeError, AttributeError):
            return math.inf

    lines = [line for line in path.read_text().splitlines() if line.strip()]
    kept = [line for line in lines if epoch_of(line) <= last_epoch]
    if len(kept) != len(lines):
        write_bytes_atomic(path, "".join(line + "\n" for line in kept).encode())


# --- loops -----------------------------------------------------------------------------------------------------------


@dataclass
class LoopConfig:
    """What :func:`train_one_epoch` and :func:`validate` need besides model, data, optimizer and loss."""

    device: torch.device
    rank: int = 0
    world_size: int = 1
    amp: bool = False
    scaler: torch.amp.GradScaler | None = None
    max_steps: int = 0  # steps per pass; 0 = the whole loader
    frames_per_sample: int = 1  # images in one dataset item (T for clips), for images/s


def train_one_epoch(model: nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer,
                    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], epoch: int, cfg: LoopConfig,
                    desc: str = "") -> dict:
    """One pass over ``loader`` of (input, target) batches: forward (float16 autocast with ``cfg.amp``), loss in
    float32, backward, optimizer step. Returns ``{'loss', 'steps', 'images', 'seconds', 'images_per_s'}`` with
    loss, steps and images summed over all processes (loss = mean per step). A tqdm bar on rank 0 shows the
    running loss and images/s."""
    model.train()
    total = min(len(loader), cfg.max_steps) if cfg.max_steps else len(loader)
    batches = itertools.islice(loader, total)
    bar = tqdm(batches, total=total, desc=desc or f"epoch {epoch}", leave=False, dynamic_ncols=True,
               disable=cfg.rank != 0 or None)
    loss_sum, steps, images = 0.0, 0, 0
    start = time.perf_counter()
    for inputs, target in bar:
        inputs = inputs.to(cfg.device, non_blocking=True)
        target = target.to(cfg.device, non_blocking=True)
        with torch.autocast(cfg.device.type, dtype=torch.float16, enabled=cfg.amp):
            pred = model(inputs)
        # BCE is not autocast-safe: the loss always runs in float32.
        loss = loss_fn(pred.float(), target)
        optimizer.zero_grad(set_to_none=True)
        if cfg.scaler is not None and cfg.scaler.is_enabled():
            cfg.scaler.scale(loss).backward()
            cfg.scaler.step(optimizer)
            cfg.scaler.update()
        else:
            loss.backward()
            optimizer.step()
        loss_sum += loss.item()
        steps += 1
        images += inputs.shape[0] * cfg.frames_per_sample
        rate = images * cfg.world_size / max(time.perf_counter() - start, 1e-9)
        bar.set_postfix(loss=f"{loss_sum / steps:.4f}", img_s=f"{rate:.1f}")
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


@dataclass
class TrainJob:
    """Everything the shared epoch loop :func:`fit` needs; built by train_sod.py / train_vsod.py."""

    args: argparse.Namespace
    model: nn.Module  # unwrapped, already on the device
    optimizer: torch.optim.Optimizer
    train_set: Dataset  # train-mode SODDataset / VSODDataset (set_epoch, set_size)
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
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
                     job.frames_per_sample)
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
            passes.append(train_one_epoch(model, loader, job.optimizer, job.loss_fn, epoch, cfg,
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
        loader = DataLoader(dataset, batch_size=None, shuffle=False, num_workers=args.workers)
        result = validate(job.model, loader, cfg)
        if result["skipped"]:
            logger.warning("validation on %s: %d unreadable items skipped", name, result["skipped"])
        val_mae[name] = result["mae"]
    improved = [name for name, mae in val_mae.items() if mae <= job.best.get(name, math.inf)]
    job.best.update({name: val_mae[name] for name in improved})
    checkpoint = make_checkpoint(job.model, args, epoch, job.optimizer, job.best, job.scaler)
    save_epoch_checkpoints(checkpoint, args.savedir, save_freq=args.save_freq,
                           best_files=[job.best_files[name] for name in improved if name in job.best_files])
    seconds = time.perf_counter() - epoch_start
    append_log_line(args.savedir, {"epoch": epoch, "lr": lr, "loss": loss, "val_mae": val_mae,
                                   "images_per_s": rate, "seconds": seconds})
    maes = ", ".join(f"{name} {mae:.4f}" for name, mae in val_mae.items()) or "none"
    logger.info("epoch %d: loss %.4f, val MAE %s, %.1f images/s, %.1f s", epoch, loss, maes, rate, seconds)


# --- script steps shared by train_sod.py and train_vsod.py -----------------------------------------------------------


def check_training_args(args: argparse.Namespace, ctx: DistContext) -> None:
    """Resolve defaults (``--config``) and stop with a one-line error (exit 2) on flags that cannot work, before
    anything is written: missing ``--datadir``, files of ``--preload`` / ``--finetune`` / ``--resume-from`` that do
    not exist, a batch size that does not split over the processes."""
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
    if args.amp and ctx.device.type != "cuda":
        if ctx.is_main:
            logging.getLogger(LOGGER_NAME).warning("--amp needs CUDA: training in float32")
        args.amp = False
    args.config = args.config or configs.MODELS[args.model]["config"]


def load_resume_checkpoint(args: argparse.Namespace) -> dict | None:
    """The checkpoint this run resumes from (see :func:`resume_checkpoint_path`), checked against the flags, or
    None. A run without ``--seed`` takes the checkpoint's seed, so shuffling and augmentation continue exactly."""
    path = resume_checkpoint_path(args)
    if path is None:
        if args.resume:
            logging.getLogger(LOGGER_NAME).info("--resume: no %s in %s yet, starting from scratch", LATEST_CHECKPOINT,
                                                checkpoint_path(args.savedir, ""))
        return None
    flag = "--resume-from" if args.resume_from else "--resume"
    try:
        checkpoint = load_training_checkpoint(path)
        check_checkpoint_matches(checkpoint, args, str(path))
    except CheckpointError as err:
        fail(f"{flag}: {err}")
    if args.seed is None:
        args.seed = checkpoint["args"].get("seed")
    return checkpoint


def initialise_model(model: nn.Module, args: argparse.Namespace, resume: dict | None,
                     logger: logging.Logger) -> tuple[int, dict[str, float]]:
    """Weights before training: the resumed checkpoint (its RNG states too), else ``--finetune`` (a whole model),
    else ``--preload`` (the backbone, ``models.preload_backbone``), else the random initialisation. Returns the
    first epoch to train and the best MAE so far per validation set. Errors: one line naming the flag, exit 2."""
    from models import preload_backbone

    if resume is not None:
        try:
            load_weights(model, resume)
        except CheckpointError as err:
            fail(f"--resume{'-from' if args.resume_from else ''}: {err}")
        restore_rng_state(resume["rng"])
        logger.info("resuming after epoch %d", resume["epoch"])
        return resume["epoch"] + 1, dict(resume.get("best") or {})
    try:
        if args.finetune:
            flag = "--finetune"
            load_weights(model, args.finetune)
            # same keys can still mean another model (e.g. other STDC ops): our checkpoints say what they hold
            check_checkpoint_matches(torch.load(args.finetune, map_location="cpu", weights_only=True), args,
                                     args.finetune)
            logger.info("starting from the weights of %s", args.finetune)
        elif args.preload:
            flag = "--preload"
            copied, skipped = preload_backbone(model, args.preload)
            logger.info("preloaded %d backbone entries from %s (%d ignored)", copied, args.preload, len(skipped))
            if any(".bn" in key for key in skipped):
                logger.warning("--preload %s has BatchNorm entries this model (bn=%s) lacks; they are ignored",
                               args.preload, args.bn)
    except CheckpointError as err:
        fail(f"{flag}: {err}")
    return 0, {}


def restore_optimizer(optimizer: torch.optim.Optimizer, resume: dict, args: argparse.Namespace) -> None:
    """Load the resumed optimizer state, then re-apply this run's group settings (weight decay, lr scale), so the
    flags of the resumed command are the ones in force. A different group layout is a one-line error."""
    fresh = [(group["name"], group["weight_decay"], group["lr_scale"]) for group in optimizer.param_groups]
    saved_names = [group.get("name") for group in resume["optimizer"]["param_groups"]]
    flag = "--resume-from" if args.resume_from else "--resume"
    if saved_names != [name for name, _, _ in fresh]:
        fail(f"{flag}: the checkpoint's optimizer groups {saved_names} differ from this run's "
             f"{[name for name, _, _ in fresh]} (e.g. --preload given in only one of the runs)")
    try:
        optimizer.load_state_dict(resume["optimizer"])
    except ValueError as err:
        fail(f"{flag}: optimizer state does not fit: {err}")
    for group, (_, weight_decay, lr_scale) in zip(optimizer.param_groups, fresh, strict=True):
        group["weight_decay"], group["lr_scale"] = weight_decay, lr_scale


def start_run_files(args: argparse.Namespace, ctx: DistContext, resume: dict | None) -> logging.Logger:
    """After all checks passed: the logger (also to ``<savedir>/log.txt`` on rank 0), ``args.json``, and the
    ``log.jsonl`` lines of epochs this run will (re)do removed. Only rank 0 writes."""
    logger = setup_logger(args.savedir if ctx.is_main else None, ctx.rank)
    if ctx.is_main:
        write_args_json(args.savedir, args)
        trim_log(args.savedir, resume["epoch"] if resume is not None else -1)
    return logger


def resolve_seed(args: argparse.Namespace, ctx: DistContext) -> int:
    """``args.seed``, or (none given, none resumed) one drawn from the clock on rank 0 and shared by all ranks."""
    if args.seed is None:
        seed = [int(time.time() * 1000) % 2**31]
        if ctx.world_size > 1:
            dist.broadcast_object_list(seed, src=0)
        args.seed = seed[0]
    return args.seed


def resolve_list_file(path: str, flag: str) -> Path:
    """A list file given relative to the working directory or, failing that, to the repository (where
    ``dataset/generate_lists.py`` writes them); a one-line error naming ``flag`` if neither exists."""
    for candidate in (Path(path), Path(__file__).resolve().parent / path):
        if candidate.is_file():
            return candidate
    fail(f"{flag} {path}: no such list file (write them with: python dataset/generate_lists.py --root ROOTDIR)")


# ---------------------------------------------------------------------------------------------------------------------
# Fast inference path, model cost and speed measurement (speed_*.py, generate_salmaps_*.py, predict.py, bench/)

# A CUDA graph is captured for an input shape on its third pass: shapes met once or twice (full-resolution maps of
# varied sizes) never pay for a capture, and the eager passes before it let cudnn.benchmark pick its kernels. At most
# CUDA_GRAPH_SHAPES graphs are kept (least recently used dropped), bounding their memory.
CUDA_GRAPH_AFTER = 2
CUDA_GRAPH_SHAPES = 4
# Not measured yet on a GPU (BENCHMARKS.md); NCHW is what cuDNN's depthwise kernels and the release use.
CUDA_CHANNELS_LAST = False
# On the CPU an input shape is compiled (TorchInductor, frozen weights) once its eager passes have taken this many
# seconds, about what a cold compile costs on 2 cores (20-40 s): compiling then never costs more than the time it
# can save, and short runs (tests, the demo, a few maps) never compile. `InferenceRunner.warm_up` compiles at once.
# At most CPU_COMPILE_SHAPES shapes are compiled per runner; other shapes stay on the channels_last eager path.
CPU_COMPILE_AFTER_S = 20.0
CPU_COMPILE_SHAPES = 4
# glibc malloc serves blocks above a (dynamic) threshold with mmap and unmaps them when freed, so every pass pays
# page faults to touch its activations again: ~90,000 per STDNet clip on the CPU, a third of its time. Blocks up to
# this size are kept in the heap instead and reused (resident memory stays at the peak of a pass; BENCHMARKS.md).
MALLOC_KEEP_BYTES = 2**30
_malloc_tuned = False


def _keep_freed_blocks() -> None:
    """Raise glibc's mmap and trim thresholds to MALLOC_KEEP_BYTES once per process (no-op elsewhere)."""
    global _malloc_tuned
    if _malloc_tuned or not sys.platform.startswith("linux"):
        return
    _malloc_tuned = True
    import ctypes

    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # not glibc
        return
    m_trim_threshold, m_mmap_threshold = -1, -3
    # Older glibc refuses mmap thresholds above 32 MiB (returns 0).
    if not mallopt(m_mmap_threshold, MALLOC_KEEP_BYTES):
        mallopt(m_mmap_threshold, 32 * 2**20)
    mallopt(m_trim_threshold, 2**31 - 1)


class InferenceRunner(nn.Module):
    """A private copy of ``model`` in eval mode on ``device``, run the way `prepare_for_inference` chose.

    forward: the model's input ((B, 3, H, W) images or (B, 3T, H, W) clips, any float dtype, any device) -> its maps
    as float32 on ``device`` ((B, 1, H, W) or (B*T, 1, H, W)), computed under ``torch.inference_mode`` (so the
    result is an inference tensor). Input shapes that repeat move to a faster steady state (a CUDA graph on a GPU, a
    compiled graph on the CPU; see the constants above); `warm_up` gets there at once. ``path`` names the choice for
    logs and benchmark records, ``dtype`` the precision the network runs in; ``kind`` and ``nframes`` are the
    wrapped model's.
    """

    def __init__(self, model: nn.Module, device: torch.device, *, channels_last: bool, cuda_graphs: bool,
                 compile_cpu: bool, dtype: torch.dtype) -> None:
        super().__init__()
        self.model = model
        self.device, self.dtype = torch.device(device), dtype
        self.channels_last, self.cuda_graphs, self.compile_cpu = channels_last, cuda_graphs, compile_cpu
        self.kind = getattr(model, "kind", "image")
        self.nframes = getattr(model, "nframes", 1)
        self._graphs: OrderedDict[tuple, tuple[torch.cuda.CUDAGraph, torch.Tensor, torch.Tensor]] = OrderedDict()
        self._compiled: Callable[[torch.Tensor], torch.Tensor] | None = None
        self._compiled_shapes: set[tuple] = set()
        self._usage: dict[tuple, float] = {}  # per input shape: eager passes (CUDA) or eager seconds (CPU)

    @property
    def path(self) -> str:
        if not (self.channels_last or self.cuda_graphs or self.compile_cpu):
            return "eager+fp32"
        parts = ["channels_last" if self.channels_last else "nchw"]
        parts += ["cudnn_benchmark", "cuda_graphs"] if self.cuda_graphs else []
        parts += ["inductor"] if self.compile_cpu else []
        return "+".join(parts + ["fp16" if self.dtype == torch.float16 else "fp32"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            x = x.to(self.device, self.dtype)
            if self.cuda_graphs:
                out = self._graph_forward(x)
            elif self.compile_cpu:
                out = self._compiled_forward(x)
            else:
                out = self.model(x)
            return out.float()

    def warm_up(self, x: torch.Tensor, passes: int = 1) -> None:
        """Run ``passes`` untimed passes on ``x``, the first of which reaches the steady state for its shape."""
        self._usage[self._key(x)] = math.inf
        for _ in range(passes):
            self(x)

    def _key(self, x: torch.Tensor) -> tuple:
        return tuple(x.shape), self.dtype

    def _count(self, key: tuple, amount: float) -> float:
        if len(self._usage) > 4096:  # many distinct sizes: forget the counts
            self._usage.clear()
        self._usage[key] = self._usage.get(key, 0.0) + amount
        return self._usage[key]

    def _compiled_forward(self, x: torch.Tensor) -> torch.Tensor:
        key = self._key(x)
        if key in self._compiled_shapes:
            return self._compiled(x)
        if len(self._compiled_shapes) >= CPU_COMPILE_SHAPES or self._usage.get(key, 0.0) < CPU_COMPILE_AFTER_S:
            start = time.perf_counter()
            out = self.model(x)
            self._count(key, time.perf_counter() - start)
            return out
        logger = logging.getLogger(LOGGER_NAME)
        logger.info("compiling the network for input %s (once per input shape; slow on a few cores)",
                    "x".join(map(str, x.shape)))
        if self._compiled is None:
            self._compiled = torch.compile(self.model, dynamic=False)
        try:
            # Freezing (weights as constants: oneDNN-prepacked convs with fused ReLU/add) must be on while dynamo
            # traces, not only in inductor's options; later calls of the compiled shape need no patch.
            import torch._inductor.config as inductor_config

            with inductor_config.patch(freezing=True):
                out = self._compiled(x)
        except Exception as err:  # no C++ compiler, an unsupported op, ...: keep the eager path
            logger.warning("compiling failed (%s): running channels_last eager", str(err).splitlines()[0])
            self.compile_cpu = False
            return self.model(x)
        self._compiled_shapes.add(key)
        return out

    def _graph_forward(self, x: torch.Tensor) -> torch.Tensor:
        key = self._key(x)
        entry = self._graphs.get(key)
        if entry is None:
            if self._count(key, 1) <= CUDA_GRAPH_AFTER:
                return self.model(x)
            try:
                entry = self._capture(x)
            except RuntimeError as err:
                logging.getLogger(LOGGER_NAME).warning("CUDA graph capture failed (%s): running eagerly", err)
                self.cuda_graphs = False
                return self.model(x)
            self._graphs[key] = entry
            if len(self._graphs) > CUDA_GRAPH_SHAPES:
                self._graphs.popitem(last=False)
        self._graphs.move_to_end(key)
        graph, static_input, static_output = entry
        static_input.copy_(x)
        graph.replay()
        # The graph overwrites static_output on its next replay: hand out a copy.
        return static_output.clone()

    def _capture(self, x: torch.Tensor) -> tuple[torch.cuda.CUDAGraph, torch.Tensor, torch.Tensor]:
        static_input = x.clone()
        # Capture needs one pass on a side stream first (lazy allocations, cuDNN workspace).
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            self.model(static_input)
        torch.cuda.current_stream(self.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_output = self.model(static_input)
        return graph, static_input, static_output


def prepare_for_inference(model: nn.Module, device: torch.device, *, eager: bool = False,
                          half: bool = False) -> InferenceRunner:
    """The one place choosing how a model runs at inference; returns an `InferenceRunner` (a callable module).

    The model is deep-copied (the caller's stays as it was), put in eval mode without gradients and moved to
    ``device``. Default on the CPU: channels_last (NHWC) weights, so oneDNN runs the convs, max-pools and
    element-wise ops in NHWC (2.5-3x faster than NCHW for these depthwise networks), and input shapes that keep
    coming back are compiled with TorchInductor (frozen weights; fuses the element-wise ops, pads and permutes);
    glibc malloc is told to keep freed activation blocks for reuse (a process-wide setting, made once). On every
    device but with ``eager``, DiffBlock pre-biases that are exactly zero are skipped (`skip_zero_pre_biases`).
    Default on CUDA: cudnn.benchmark (a process-wide switch) and a CUDA graph per repeated input shape; ``half``
    runs the network in float16 there (ignored on the CPU, with a warning). Every path gives the eager NCHW float32
    maps to float rounding (about 1e-7; BENCHMARKS.md). ``eager`` gives that plain eager NCHW float32 model
    (``half`` ignored) for comparison. Inputs of any size and batch size work on every path.
    """
    logger = logging.getLogger(LOGGER_NAME)
    device = torch.device(device)
    cuda = device.type == "cuda"
    if half and (eager or not cuda):
        logger.warning("--half %s: running float32", "is ignored with --eager" if eager else "needs CUDA")
        half = False
    model = copy.deepcopy(model).eval().requires_grad_(False).to(device)
    if eager:
        return InferenceRunner(model, device, channels_last=False, cuda_graphs=False, compile_cpu=False,
                               dtype=torch.float32)
    skip_zero_pre_biases(model)
    channels_last = CUDA_CHANNELS_LAST if cuda else True
    if half:
        model = model.half()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    if cuda:
        torch.backends.cudnn.benchmark = True
    else:
        _keep_freed_blocks()
    return InferenceRunner(model, device, channels_last=channels_last, cuda_graphs=cuda, compile_cpu=not cuda,
                           dtype=torch.float16 if half else torch.float32)


def count_parameters(model: nn.Module) -> int:
    """Number of parameter elements (buffers such as BN running statistics and pre-biases excluded, SPEC §5)."""
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, *inputs: torch.Tensor) -> int:
    """Multiply-accumulates of one forward pass of ``model`` on ``inputs`` = FLOPs / 2 by FlopCounterMode.

    PyTorch's counter counts convolutions and matrix products only (not pooling, interpolation or element-wise
    ops), which is the convention of SPEC §5. It counts what the module actually executes, so a training-form
    model is charged for each of its branches. The pass runs on the meta device (shapes only, no arithmetic) and
    falls back to a real pass on ``inputs``' device if some op has no meta kernel.
    """
    try:
        meta_model = copy.deepcopy(model).to("meta")
        with torch.inference_mode(), FlopCounterMode(display=False) as counter:
            meta_model(*(x.to("meta") for x in inputs))
    except (NotImplementedError, RuntimeError):  # an op without a meta kernel: count a real pass
        with torch.inference_mode(), FlopCounterMode(display=False) as counter:
            model(*inputs)
    return counter.get_total_flops() // 2


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


# Released protocol (SPEC §8) as (timed passes, warm-up passes) per model kind and device type.
SPEED_PASSES = {("image", "cuda"): (899, 101), ("image", "cpu"): (98, 12),
                ("video", "cuda"): (89, 11), ("video", "cpu"): (9, 2)}


def add_speed_args(parser: argparse.ArgumentParser, kind: str) -> None:
    """Flags of ``speed_sod.py`` (``kind='image'``) and ``speed_vsod.py`` (``'video'``)."""
    names = sorted(name for name, spec in configs.MODELS.items() if spec["kind"] == kind)
    parser.add_argument("--model", default=names[0] if names else None, choices=names, help="model to time")
    parser.add_argument("--config", default="baseline", choices=sorted(configs.OP_TABLES),
                        help="'baseline': the DCR-converted network; a training op table (sdnet, sdnet-a): the "
                             "multi-branch training form, for the DCR ablation")
    parser.add_argument("-j", "--workers", type=int, default=1,
                        help="accepted for the released command line; nothing is read from disk")
    parser.add_argument("--gpu", default="", help="CUDA device, e.g. 0 ('' = CPU; without CUDA: CPU, warned)")
    parser.add_argument("--evaluate", default=None, metavar="CHECKPOINT",
                        help="time these weights (training form or converted, ours or the authors') instead of "
                             "random ones; the timing does not depend on the weights")
    if kind == "image":
        parser.add_argument("--size", type=int, required=True, help="input height and width (release: 320)")
    else:
        parser.add_argument("--size", type=int, default=256, help="frame height and width")
        parser.add_argument("--nframes", type=int, default=8, help="frames per clip (one pass = one clip)")
    parser.add_argument("-b", "--batch-size", type=int, default=1, help="images or clips per pass")
    parser.add_argument("-n", "--passes", type=int, default=None,
                        help="timed passes (default: the release's, e.g. 98 on the CPU and 899 on a GPU for images)")
    parser.add_argument("--warmup", type=int, default=None,
                        help="untimed passes first, the first of them compiling (CPU) or capturing (CUDA) the fast "
                             "path for the input shape (default: the release's, e.g. 12 for images on the CPU)")
    parser.add_argument("--eager", action="store_true", help="plain eager NCHW float32 instead of the fast path")
    parser.add_argument("--half", action="store_true", help="float16 on CUDA; the max difference from float32 "
                                                              "is reported")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: PyTorch's, one per core)")
    parser.add_argument("--json", default=None, metavar="PATH", help="also write the figures to this JSON file")


def run_speed(args: argparse.Namespace, parser: argparse.ArgumentParser, kind: str) -> dict:
    """Build the random-weight model of ``args``, count its cost, time it as SPEC §8 and log/return the figures."""
    logger = logging.getLogger(LOGGER_NAME)
    nframes = getattr(args, "nframes", 1)
    for flag, value, least in (("--size", args.size, 1), ("--batch-size", args.batch_size, 1),
                               ("--passes", args.passes, 1), ("--warmup", args.warmup, 0),
                               ("--threads", args.threads, 1), ("--nframes", nframes, 1)):
        if value is not None and value < least:
            parser.error(f"{flag} must be at least {least}, got {value}")
    if args.model is None:
        parser.error(f"no {kind} model is defined in configs.MODELS")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = select_device(args.gpu)
    passes, warmup = SPEED_PASSES[(kind, "cuda" if device.type == "cuda" else "cpu")]
    passes = args.passes if args.passes is not None else passes
    warmup = args.warmup if args.warmup is not None else warmup
    torch.manual_seed(0)
    converted = args.config == "baseline"
    try:
        # Random weights as the release; baseline = the converted (deploy) architecture of the model's own table.
        model = build_model(args.model, None if converted else args.config, deploy=converted, nframes=nframes)
    except ValueError as err:
        parser.error(f"--config {args.config}: {err}")
    if args.evaluate:
        train_config = None if converted else args.config
        try:
            model = build_inference_model(args.model, args.evaluate, train_config=train_config,
                                          inference_config="baseline" if converted else args.config, nframes=nframes)
        except ValueError as err:  # CheckpointError included
            fail(f"--evaluate {args.evaluate}: {err}")
    channels = 3 * nframes if kind == "video" else 3
    x = torch.randn(args.batch_size, channels, args.size, args.size)
    params = count_parameters(model)
    macs = count_macs(model.eval(), x[:1])
    runner = prepare_for_inference(model, device, eager=args.eager, half=args.half)
    x = x.to(device, runner.dtype)
    start = time.perf_counter()
    if warmup:
        runner.warm_up(x, warmup)
    warmup_seconds = time.perf_counter() - start
    times = time_passes(runner, x, passes=passes, warmup=0)
    frames = args.batch_size * (nframes if kind == "video" else 1)
    median, mean = statistics.median(times), statistics.fmean(times)
    result = {
        "model": args.model, "config": args.config, "form": "converted" if converted else "training",
        "weights": args.evaluate or "random weights",
        "kind": kind, "device": str(device), "device_name": device_name(device), "path": runner.path,
        "torch": torch.__version__, "threads": torch.get_num_threads(), "input_shape": list(x.shape),
        "batch_size": args.batch_size, "frames_per_pass": frames, "params": params, "macs_per_pass": macs,
        "macs_per_frame": macs // (nframes if kind == "video" else 1), "passes": passes, "warmup": warmup,
        "warmup_s": warmup_seconds,
        "ms_median": median * 1e3, "ms_mean": mean * 1e3, "fps": frames / median, "fps_mean": frames / mean,
        "peak_memory_mb": peak_memory_mb(device),
    }
    if runner.dtype == torch.float16:
        reference = prepare_for_inference(model, device)
        result["half_max_abs_diff"] = (runner(x) - reference(x.float())).abs().max().item()
    log_speed(logger, result, nframes)
    if args.json:
        write_json_atomic(args.json, result)
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
    if "half_max_abs_diff" in result:
        logger.info("float16 vs float32 maps: max abs difference %.2e", result["half_max_abs_diff"])
