"""A model from a checkpoint, checked against what the caller asks: what the checkpoint says decides, the caller
fills in only what it cannot say, and a contradiction is one error line naming the flag and the file.

The scripts reach `load_model` through the flags of `engine.inference.loading`; training checks a checkpoint it
resumes or starts from with `check_description`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from torch import nn

from configs import MODELS, TEMPORAL_OPS, TRAIN_DEFAULTS

from .checkpoint import CheckpointError, ModelDescription, load_checkpoint, load_weights
from .dcr import convert_model
from .factory import build_model

__all__ = ["DEFAULT_NFRAMES", "check_description", "load_model"]

# How a field of the description is named on the command line, for error messages.
FIELD_FLAGS = {"model": "--model", "config": "--config", "tid": "--tid", "nframes": "--nframes", "nstdc": "--nstdc"}
DEFAULT_NFRAMES = TRAIN_DEFAULTS["video"]["nframes"]


def _flag_text(field: str, value: object, flags: Mapping[str, str]) -> str:
    if field == "bn":
        return "--bn" if value else "--nobn"
    shown = " ".join(value) if isinstance(value, (list, tuple)) else value
    return f"{flags.get(field, FIELD_FLAGS.get(field, '--' + field))} {shown}"


def check_description(description: ModelDescription, source: str | os.PathLike,
                      flags: Mapping[str, str] | None = None, **given: object) -> None:
    """Raise ``CheckpointError`` naming the flag and the checkpoint when a ``given`` value (by description field;
    None: not given) contradicts what ``description`` says (None: the checkpoint cannot say). ``flags`` renames
    a field's flag for the message (``{'config': '--train-config'}``)."""
    for field, value in given.items():
        found = getattr(description, field)
        if value is None or found is None:
            continue
        if isinstance(found, (list, tuple)):
            found, value = tuple(found), tuple(value)
        if found != value:
            shown = " ".join(found) if isinstance(found, tuple) else found
            raise CheckpointError(f"{_flag_text(field, value, flags or {})} contradicts {source}, which has "
                                  f"{field} {shown}")


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
    spec = MODELS[name]
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
        tid=tuple(found.tid or tid or TEMPORAL_OPS) if video else None,
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
