"""A training run's files: its checkpoints (written by `engine.checkpoint_file.save_checkpoint`, with the training
state) and resuming from them, the RNG state, ``args.json`` and the log files."""

from __future__ import annotations

import argparse
import json
import math
import os
import random
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch

import configs
from data.atomic import append_line_atomic, write_bytes_atomic, write_json_atomic
from engine.checkpoint_file import save_checkpoint
from models import CheckpointError, LoadedCheckpoint, ModelDescription, load_checkpoint

__all__ = ["LATEST_CHECKPOINT", "save_training_checkpoint",
           "load_training_checkpoint", "resume_checkpoint_path", "checkpoint_path", "capture_rng_state",
           "restore_rng_state", "write_args_json", "append_log_line", "trim_log"]

CHECKPOINT_DIR = "save_models"
LATEST_CHECKPOINT = "checkpoint_latest.pth"
TRAINING_KEYS = ("epoch", "optimizer", "rng", "args")


# --- training checkpoints --------------------------------------------------------------------------------------------


def checkpoint_path(savedir: str | os.PathLike, name: str) -> Path:
    """``<savedir>/save_models/<name>``."""
    return Path(savedir) / CHECKPOINT_DIR / name


def args_to_dict(args) -> dict:
    """A run's flags (`engine.training.settings.TrainSettings.as_flags`, or an argparse Namespace's) as JSON- and
    weights_only-safe plain values (tuples -> lists, paths -> strings)."""
    flags = args.as_flags() if hasattr(args, "as_flags") else vars(args)

    def plain(value: object) -> object:
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, os.PathLike):
            return os.fspath(value)
        return value
    return {key: plain(value) for key, value in sorted(flags.items())}


def training_description(args: argparse.Namespace) -> ModelDescription:
    """The description of the model a training run with these flags trains (training form; converted for a
    quantization-aware run, which fine-tunes the converted model)."""
    video = configs.MODELS[args.model]["kind"] == "video"
    return ModelDescription(model=args.model, config=args.config, bn=bool(args.bn),
                            tid=tuple(args.tid) if video else None, nframes=int(args.nframes) if video else None,
                            deploy=bool(getattr(args, "quantization_aware", False)),
                            nstdc=int(args.nstdc) if video else None)


def save_training_checkpoint(model: torch.nn.Module, args: argparse.Namespace, epoch: int,
                             optimizer: torch.optim.Optimizer, best: dict[str, float], *,
                             scaler: torch.amp.GradScaler | None = None, best_files: Iterable[str] = ()) -> list[Path]:
    """Write the checkpoint of ``epoch``: ``checkpoint_latest.pth``, ``checkpoint_%03d.pth`` when (epoch + 1) is a
    multiple of ``args.save_freq``, and each of ``best_files`` (the best checkpoints this epoch improved). Beside
    the description and the weights of the unwrapped ``model`` it holds epoch, args, optimizer, scheduler, RNG
    states, best (val set -> MAE), the initial STDC logits (video) and the AMP scaler; returns the paths."""
    video = configs.MODELS[args.model]["kind"] == "video"
    extra = {
        "scales": [float(s) for s in args.scales] if video else None,
        "epoch": int(epoch), "args": args_to_dict(args), "optimizer": optimizer.state_dict(),
        "scheduler": {"lr_type": args.lr_type, "lr": args.lr, "lr_steps": list(args.lr_steps),
                      "epochs": args.epochs, "last_epoch": int(epoch)},
        "rng": capture_rng_state(), "best": {name: float(mae) for name, mae in best.items()},
    }
    if scaler is not None and scaler.is_enabled():
        extra["scaler"] = scaler.state_dict()
    names = list(best_files)
    if args.save_freq > 0 and (epoch + 1) % args.save_freq == 0:
        names.insert(0, f"checkpoint_{epoch:03d}.pth")
    # checkpoint_latest.pth last: a run killed before it is in place resumes from the epoch before and writes the
    # epoch's other files again, so a kill between two of them loses none.
    paths = [checkpoint_path(args.savedir, name) for name in names + [LATEST_CHECKPOINT]]
    save_checkpoint(paths, model.state_dict(), training_description(args), **extra)
    return paths


def load_training_checkpoint(path: str | os.PathLike) -> LoadedCheckpoint:
    """Read one of our training checkpoints. Raises ``CheckpointError`` (one line naming the file) if it is
    missing, unreadable or not a training checkpoint (e.g. released or converted weights only)."""
    checkpoint = load_checkpoint(path)
    contents = checkpoint.contents
    if not isinstance(contents, dict) or not all(key in contents for key in TRAINING_KEYS):
        raise CheckpointError(f"{path}: not a training checkpoint of these scripts (needs the entries "
                              f"{', '.join(TRAINING_KEYS)}); to start from weights only use --finetune")
    return checkpoint


def resume_checkpoint_path(args: argparse.Namespace) -> Path | None:
    """The checkpoint to resume from: ``--resume-from`` if given, else with ``--resume`` the run's
    ``checkpoint_latest.pth`` if it exists (a first run with ``--resume`` starts from scratch), else None."""
    if args.resume_from:
        return Path(args.resume_from)
    latest = checkpoint_path(args.savedir, LATEST_CHECKPOINT)
    return latest if args.resume and latest.is_file() else None


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
    """Inverse of `capture_rng_state` (CUDA states are restored only if CUDA is available)."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    numpy_state = state["numpy"]
    np.random.set_state(("MT19937", numpy_state["keys"].numpy().astype(np.uint32), numpy_state["pos"],
                         numpy_state["has_gauss"], numpy_state["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"][: torch.cuda.device_count()])


# --- run files -------------------------------------------------------------------------------------------------------


def write_args_json(savedir: str | os.PathLike, args: argparse.Namespace) -> None:
    """``<savedir>/args.json``: the resolved flags of this run (rewritten atomically on resume)."""
    write_json_atomic(Path(savedir) / "args.json", args_to_dict(args))


def append_log_line(savedir: str | os.PathLike, record: dict) -> None:
    """Append one JSON line (an epoch summary) to ``<savedir>/log.jsonl``, atomically and flushed to the disk: the
    training loop writes it before the epoch's checkpoint, and a resumed run drops the lines of epochs after its
    checkpoint (`trim_log`), so a kill between the two neither loses nor repeats a line."""
    append_line_atomic(Path(savedir) / "log.jsonl", json.dumps(record), fsync=True)


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
        write_bytes_atomic(path, "".join(line + "\n" for line in kept).encode(), fsync=True)
