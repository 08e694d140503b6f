"""A model from a checkpoint and the flags: what the checkpoint says decides, the flags fill in the rest.

`load_model` reads a checkpoint, takes from its description (`models.ModelDescription`) everything it says, asks
the arguments only for what it cannot say, and refuses one that contradicts it; `model_from_flags` is the same with
the flags of `utils.add_model_args`, ending a script with one error line where the checkpoint does not fit.
"""

from __future__ import annotations

import os

from torch import nn

import configs
from engine.checkpoints import check_description
from models import CheckpointError, ModelDescription, build_model, convert_model, load_checkpoint, load_weights
from utils import fail

__all__ = ["DEFAULT_NFRAMES", "load_model", "model_from_flags"]

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


def model_from_flags(args, checkpoint: str | os.PathLike, kind: str | None = None) -> tuple[nn.Module,
                                                                                            ModelDescription]:
    """`load_model` with the flags of `utils.add_model_args` (an image script has no ``--tid`` / ``--nframes``); a
    checkpoint that cannot be read, does not fit or contradicts a flag ends the script with one error line and exit
    status 2."""
    try:
        return load_model(checkpoint, kind=kind, model=args.model, train_config=args.train_config,
                          inference_config=args.inference_config, bn=args.bn,
                          tid=tuple(args.tid) if getattr(args, "tid", None) else None,
                          nframes=getattr(args, "nframes", None))
    except CheckpointError as err:
        fail(str(err))
