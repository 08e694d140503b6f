"""A model from a checkpoint and the flags: `models.load_model` as the scripts' model flags (`add_model_args`,
resolved once into `ModelFlags`) ask, ending a script with one error line where the checkpoint does not fit."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass

from torch import nn

import configs
from models import CheckpointError, ModelDescription, load_model
from utils import fail, frames_per_clip, model_names

__all__ = ["add_model_args", "ModelFlags", "model_from_flags"]


def add_model_args(parser: argparse.ArgumentParser, kind: str | None = None) -> None:
    """The flags describing the model behind a checkpoint, resolved by `ModelFlags.from_args`. Each defaults to what
    the checkpoint says (`load_model`); given, it must agree with it. ``kind`` limits ``--model`` to that kind (and
    "image" leaves out the video models' ``--tid`` / ``--nframes``)."""
    group = parser.add_argument_group("model (default: what the checkpoint says)")
    group.add_argument("--model", default=None, choices=model_names(kind), help="the model the checkpoint holds")
    group.add_argument("--train-config", default=None, choices=sorted(configs.OP_TABLES),
                       help="the op table the checkpoint was trained with (e.g. sdnet)")
    group.add_argument("--inference-config", default="baseline",
                       help="'baseline' (default): run the DCR-converted model; the training op table (e.g. "
                            "sdnet): run the multi-branch training form")
    bn = group.add_mutually_exclusive_group()
    bn.add_argument("--bn", dest="bn", action="store_const", const=True, default=None,
                    help="the checkpoint has BatchNorm in the backbone blocks")
    bn.add_argument("--nobn", dest="bn", action="store_const", const=False,
                    help="the checkpoint has no BatchNorm in the backbone blocks")
    if kind == "image":
        return
    group.add_argument("--tid", nargs="+", default=None, choices=configs.TEMPORAL_OPS,
                       help="STDC branch ops of a video checkpoint (the release's: cv cd ad)")
    group.add_argument("--nframes", type=frames_per_clip, default=None, help="frames per clip of a video model (8)")


@dataclass(frozen=True)
class ModelFlags:
    """The model flags, resolved: what `load_model` takes beside the checkpoint (None: what the checkpoint says;
    ``inference_config`` 'baseline': run the DCR-converted model, the training op table: the training form)."""

    model: str | None = None
    train_config: str | None = None
    inference_config: str = "baseline"
    bn: bool | None = None
    tid: tuple[str, ...] | None = None
    nframes: int | None = None

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> ModelFlags:
        """From the flags of `add_model_args` (an image script has no ``--tid`` / ``--nframes``)."""
        tid = getattr(args, "tid", None)
        return cls(model=args.model, train_config=args.train_config, inference_config=args.inference_config,
                   bn=args.bn, tid=tuple(tid) if tid else None, nframes=getattr(args, "nframes", None))


def model_from_flags(flags: ModelFlags, checkpoint: str | os.PathLike,
                     kind: str | None = None) -> tuple[nn.Module, ModelDescription]:
    """`load_model` as ``flags`` ask; a checkpoint that cannot be read, does not fit or contradicts a flag ends the
    script with one error line and exit status 2."""
    try:
        return load_model(checkpoint, kind=kind, model=flags.model, train_config=flags.train_config,
                          inference_config=flags.inference_config, bn=flags.bn, tid=flags.tid, nframes=flags.nframes)
    except CheckpointError as err:
        fail(str(err))
