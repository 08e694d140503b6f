"""A model from a checkpoint and the flags: what the checkpoint says decides, the flags fill in the rest.

`load_model` reads a checkpoint, takes from its description (`models.ModelDescription`) everything it says, asks
the arguments only for what it cannot say, and refuses one that contradicts it; `model_from_flags` is the same with
the flags of `add_model_args` (resolved once into `ModelFlags`), ending a script with one error line where the
checkpoint does not fit.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass

from torch import nn

import configs
from engine.checkpoints import check_description
from models import CheckpointError, ModelDescription, build_model, convert_model, load_checkpoint, load_weights
from utils import fail, model_names, positive_int

__all__ = ["DEFAULT_NFRAMES", "load_model", "add_model_args", "ModelFlags", "model_from_flags"]

DEFAULT_NFRAMES = configs.TRAIN_DEFAULTS["video"]["nframes"]


def load_model(checkpoint: str | os.PathLike, *, kind: str | None = None, model: str | None = None,
               train_config: str | None = None, inference_config: str = "baseline", bn: bool | None = None,
               tid: tuple[str, ...] | None = None, nframes: int | None = None) -> tuple[nn.Module, ModelDescription]:
    """The model of ``checkpoint`` in eval mode on the CPU, ready for `engine.inference.prepare_for_inference`,
    and its description.

    What the checkpoint says (ours: its metadata; the authors' raw state dicts: inferred from keys and shapes)
    decides; the arguments (the scripts' flags, None = not given) fill in only what it cannot say, and one that
    contradicts it raises ``CheckpointError`` naming the flag and the file. ``kind`` ('image' / 'video') is the
    script's. ``inference_config='baseline'`` gives the DCR-converted single-branch model (a training-form
    checkpoint is converted, a converted one loaded as it is); the training config gives the training form.
    Defaults for what nobody says: the model's own op table, BN for video models only, tid cv cd ad, 8 frames.
    Raises ``CheckpointError`` (a ValueError, one line) when the file is unreadable or the weights do not fit.
    Forward: image models (B, 3, H, W) -> (B, 1, H, W); video models (B, 3T, H, W) -> (B*T, 1, H, W).
    """
    loaded = load_checkpoint(checkpoint)
    found = loaded.description
    check_description(found, checkpoint, flags={"config": "--train-config"}, model=model, config=train_config, bn=bn,
                      tid=tid, nframes=nframes)
    if found.model is None:
        raise CheckpointError(f"{checkpoint}: holds only a backbone (no saliency decoder), e.g. for --preload; it "
                              "cannot make maps")
    name = found.model
    spec = configs.MODELS[name]
    if kind is not None and spec["kind"] != kind:
        raise CheckpointError(f"{checkpoint} holds the {spec['kind']} model {name}; this script runs {kind} models")
    video = spec["kind"] == "video"
    config = found.config or train_config or spec["config"]
    if inference_config not in ("baseline", config):
        raise CheckpointError(f"--inference-config {inference_config}: use 'baseline' (converted) or the training "
                              f"config {config!r}")
    if video and not found.deploy and found.tid is None and tid is None:
        raise CheckpointError(f"{checkpoint}: the STDC branch ops cannot be read off its weights: give --tid")
    if found.deploy and inference_config != "baseline":
        raise CheckpointError(f"--inference-config {inference_config} contradicts {checkpoint}, which is already "
                              "converted (DCR): only 'baseline' runs it")
    description = ModelDescription(
        model=name, config=config, bn=next(value for value in (found.bn, bn, video) if value is not None),
        tid=tuple(found.tid or tid or configs.TEMPORAL_OPS) if video else None,
        nframes=(found.nframes or nframes or DEFAULT_NFRAMES) if video else None,
        deploy=inference_config == "baseline", nstdc=(found.nstdc or 1) if video else None)
    shape = {"bn": description.bn}
    if video:
        shape.update(tid=description.tid, nframes=description.nframes, nstdc=description.nstdc)
    network = build_model(name, config, deploy=found.deploy, **shape)
    load_weights(network, loaded.state_dict, source=checkpoint)
    if description.deploy and not found.deploy:
        deploy = build_model(name, config, deploy=True, **shape)
        network = load_weights(deploy, convert_model(network.eval()).state_dict())
    return network.eval(), description


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
    group.add_argument("--nframes", type=positive_int, default=None, help="frames per clip of a video model (8)")


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
