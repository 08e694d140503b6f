"""Safe reading of model weights, the authors' released state dicts and our own checkpoints, and what they hold.

Files are always read with ``torch.load(..., weights_only=True)``, so a file that would need arbitrary pickled
objects (and could run code) is refused before anything in it runs. Accepted layouts: a flat state dict (keys
may carry the DataParallel prefix ``module.``), or any dict holding one under ``'state_dict'`` (the authors'
wrappers and our own checkpoints).

Our checkpoints are dicts with the fields of `ModelDescription` beside ``state_dict`` (and, for training
checkpoints, the training state; ``engine.checkpoint_file.save_checkpoint`` is their one writer). `load_checkpoint`
returns the weights with a `ModelDescription`: read from those fields for our files, inferred from the keys and
shapes for the authors' raw state dicts.
"""

from __future__ import annotations

import os
import pickle
import re
import zipfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn as nn

from configs import BACKBONE_STAGES, MODELS, OP_TABLES, TEMPORAL_OPS

from .dcr import is_converted

__all__ = ["CheckpointError", "ModelDescription", "LoadedCheckpoint", "describe_state_dict", "load_checkpoint",
           "load_state_dict_file", "load_weights", "read_checkpoint"]

_PREFIX = "module."


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit the model; the message is one line naming the file."""


def _not_a_checkpoint(path: Path) -> str | None:
    """Why a file cannot be a torch.save file, from its first bytes and (for zip archives) its directory; None when
    it may be one. torch.save writes a zip archive holding <name>/data.pkl (or, before PyTorch 1.6, a pickle)."""
    try:
        with open(path, "rb") as file:
            head = file.read(512)
    except OSError as err:
        return f"cannot read it ({err.strerror or err})"
    if not head:
        return "an empty file (0 bytes)"
    if head.startswith(b"PK\x03\x04"):
        if not zipfile.is_zipfile(path):
            return "a zip archive cut short (no central directory: an incomplete download or copy?)"
        with zipfile.ZipFile(path) as archive:
            if not any(name.endswith("/data.pkl") for name in archive.namelist()):
                return "a zip archive without the data.pkl of torch.save"
        return None
    if head[:1] == b"\x80":  # a pickle, protocol 2 or later (torch.save before 1.6)
        return None
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return f"neither a zip archive nor a pickle (starts with {head[:8].hex(' ')})"
    return "a text file" + (" (an HTML page: a download that failed?)" if b"<html" in head.lower() else "")


def read_checkpoint(path: str | os.PathLike) -> object:
    """The object in a checkpoint file, read on the CPU with ``torch.load(weights_only=True)`` (tensors and plain
    containers only); every failure (missing, damaged, unsafe) becomes a one-line ``CheckpointError`` naming the
    file."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path}: not a checkpoint: a folder")
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if (why := _not_a_checkpoint(path)) is not None:
        raise CheckpointError(f"{path}: not a checkpoint: {why}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # weights_only refuses anything but tensors and plain containers before running any of it.
        message = str(exc)
        found = re.search(r"GLOBAL ([\w.]+)", message) or re.search(r"WeightsUnpickler error:\s*(\S[^\n]*)", message)
        detail = f" ({found.group(1).strip()})" if found else ""
        raise CheckpointError(f"{path}: refused to load: not a plain tensor checkpoint{detail}; only "
                              "torch.load(weights_only=True) is used") from None
    except Exception as exc:  # torch raises RuntimeError, EOFError, ... for damaged or foreign files
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: cannot read checkpoint: {first_line}") from None


def _extract_state_dict(obj: object, source: str) -> dict[str, torch.Tensor]:
    """Unwrap ``{'state_dict': ...}``, check that every entry is a tensor, strip ``module.`` prefixes."""
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{source}: expected a state dict (a dict of tensors), got {type(obj).__name__}")
    state_dict = {}
    for key, value in obj.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise CheckpointError(f"{source}: entry {key!r} is a {type(value).__name__}, not a tensor; "
                                  "expected a state dict or a dict with key 'state_dict'")
        state_dict[key[len(_PREFIX):] if key.startswith(_PREFIX) else key] = value
    return state_dict


def load_state_dict_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a checkpoint file into a flat state dict on the CPU, without the ``module.`` prefix.

    Accepts raw state dicts and dicts with a ``'state_dict'`` entry; raises ``CheckpointError`` (one line, naming
    the file) for a missing, damaged or unsafe file or one that holds no state dict.
    """
    return _extract_state_dict(read_checkpoint(path), str(path))


def _short(keys: list[str], limit: int = 6) -> str:
    shown = ", ".join(keys[:limit])
    return f"{shown}, ... ({len(keys)} in all)" if len(keys) > limit else shown


def load_weights(model: nn.Module, path_or_state_dict: str | os.PathLike | Mapping[str, torch.Tensor],
                 source: str | os.PathLike | None = None) -> nn.Module:
    """Load weights strictly into ``model`` (in place) and return it.

    ``path_or_state_dict``: a checkpoint path (read as in ``load_state_dict_file``) or an in-memory state dict /
    checkpoint dict (``source`` names its file in messages). Every model entry must be present with the same shape
    and nothing extra may be left over; otherwise ``CheckpointError`` names the missing, unexpected and mis-shaped
    keys in one line, with a hint when the checkpoint's converted/BN form differs from the model's.
    """
    if isinstance(path_or_state_dict, Mapping):
        source, raw = str(source or "state dict"), path_or_state_dict
    else:
        source = str(path_or_state_dict)
        raw = read_checkpoint(path_or_state_dict)
    state_dict = _extract_state_dict(raw, source)
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    mis_shaped = [f"{k} {tuple(state_dict[k].shape)} vs {tuple(v.shape)}"
                  for k, v in expected.items() if k in state_dict and state_dict[k].shape != v.shape]
    if missing or unexpected or mis_shaped:
        problems = []
        if missing:
            problems.append(f"missing keys: {_short(missing)}")
        if unexpected:
            problems.append(f"unexpected keys: {_short(unexpected)}")
        if mis_shaped:
            problems.append(f"shape mismatch (checkpoint vs model): {_short(mis_shaped)}")
        hints = []
        if isinstance(raw, Mapping) and isinstance(raw.get("deploy"), bool) and raw["deploy"] != is_converted(model):
            hints.append(f"the checkpoint has deploy={raw['deploy']}")
        if any(".bn0." in k for k in missing) or any(".bn0." in k for k in unexpected):
            hints.append("BN layers differ: check the bn flag")
        hint = f" ({'; '.join(hints)})" if hints else ""
        raise CheckpointError(f"{source}: checkpoint does not match the model: {'; '.join(problems)}{hint}")
    model.load_state_dict(state_dict, strict=True)
    return model


@dataclass(frozen=True)
class ModelDescription:
    """What a checkpoint holds; ``None`` where it cannot say (the caller's flag or default decides).

    ``model``: a ``configs.MODELS`` name (None for a backbone-only file); ``config``: the training op table (an
    ``OP_TABLES`` name); ``bn``: BatchNorm in the backbone blocks (and STDC branches of video models) during
    training; ``tid``: the STDC branch ops, ``nframes``: the clip length and ``nstdc``: the STDC pairs per temporal
    module (video models only); ``deploy``: the weights are DCR-converted (single-branch) rather than the
    multi-branch training form.
    """

    model: str | None
    config: str | None
    bn: bool | None
    tid: tuple[str, ...] | None
    nframes: int | None
    deploy: bool
    nstdc: int | None = None

    @property
    def kind(self) -> str | None:
        """'image', 'video', or None when the model is unknown."""
        return MODELS[self.model]["kind"] if self.model in MODELS else None

    def as_dict(self) -> dict:
        """The fields as plain values (``tid`` a list), as our checkpoints store them."""
        fields = asdict(self)
        fields["tid"] = list(self.tid) if self.tid is not None else None
        return fields


class LoadedCheckpoint(NamedTuple):
    """A checkpoint read from disk: its unprefixed ``state_dict``, its `ModelDescription` and the whole object
    (``contents``: our training state such as ``optimizer`` and ``epoch``, when it is one of our files)."""

    state_dict: dict[str, torch.Tensor]
    description: ModelDescription
    contents: object


def _backbone_layers(variant: str) -> list[str]:
    """Names of the InitialBlock and the DiffBlocks of a backbone variant, in op-table order."""
    names = ["init_block"]
    for stage, (_, blocks, _) in enumerate(BACKBONE_STAGES[variant], start=1):
        names += [f"block{stage}_{j}" for j in range(1, blocks + 1)]
    return names


def _fitting_op_tables(state_dict: Mapping[str, torch.Tensor], variant: str, deploy: bool) -> list[str]:
    """The ``OP_TABLES`` names whose layers fit the checkpoint: the branch count of each layer (training form), or
    the kernel size, 5 exactly where the table has ``rd`` (converted form)."""
    layers = _backbone_layers(variant)
    if deploy:
        keys = ["init_block.weight"] + [f"{name}.conv1.weight" for name in layers[1:]]
        found = [state_dict[key].shape[-1] if key in state_dict else None for key in keys]
        wanted = [lambda ops: 5 if "rd" in ops else 3] * len(keys)
    else:
        found = [state_dict[f"{name}.scales"].numel() if f"{name}.scales" in state_dict else None for name in layers]
        wanted = [len] * len(layers)
    return [name for name, table in OP_TABLES.items()
            if len(table) >= len(layers) and all(f(ops) == size for f, ops, size in zip(wanted, table, found))]


def describe_state_dict(state_dict: Mapping[str, torch.Tensor]) -> ModelDescription:
    """Infer the description of an unprefixed state dict from its keys and shapes (the authors' raw files).

    Video models have a temporal decoder (``global_temporal``), image models ``conv_reduces``; SDNet-A backbones
    have MobileViT blocks (``conv_pre``); converted weights have ``init_block.weight`` where the training form has
    branch logits ``init_block.scales``; BN shows as ``bn0`` in the blocks. The op table is the one ``OP_TABLES``
    entry whose branch counts (or 5x5 kernels) fit, None if several do. A 3-branch STDC is the release's tid
    ``cv cd ad``; other branch counts leave ``tid`` None, as they do ``nframes`` (no weight depends on it).
    """
    keys = list(state_dict)
    video = any(key.startswith("global_temporal.") for key in keys)
    image = any(key.startswith("conv_reduces.") for key in keys)
    variant = "sdnet-a" if any(".conv_pre." in key for key in keys) else "sdnet"
    deploy = "init_block.weight" in state_dict
    model = None
    if video or image:
        kind = "video" if video else "image"
        model = next(name for name, spec in MODELS.items() if spec["kind"] == kind and spec["backbone"] == variant)
    tables = _fitting_op_tables(state_dict, variant, deploy)
    bn = None if deploy else any(".bn0." in key for key in keys)
    tid, nstdc = None, None
    if video:
        nstdc = len({key.split(".")[2] for key in keys if re.match(r"global_temporal\.0\.tdc\d+\.", key)}) // 2
        branches = sum(1 for key in keys if re.fullmatch(r"global_temporal\.0\.tdc1\.convs\.\d+\.weight", key))
        if deploy:
            tid = ("cv",)
        elif branches == len(TEMPORAL_OPS):
            tid = TEMPORAL_OPS
    return ModelDescription(model=model, config=tables[0] if len(tables) == 1 else None, bn=bn, tid=tid,
                            nframes=None, deploy=deploy, nstdc=nstdc)


def _from_metadata(contents: Mapping, source: str) -> ModelDescription:
    """The description stored in one of our checkpoints (fields it lacks are None)."""
    model = contents.get("model")
    if model not in MODELS:
        raise CheckpointError(f"{source}: unknown model {model!r} in the checkpoint; known: {sorted(MODELS)}")
    tid, video = contents.get("tid"), MODELS[model]["kind"] == "video"
    return ModelDescription(model=model, config=contents.get("config"), bn=contents.get("bn"),
                            tid=tuple(tid) if tid is not None else None, nframes=contents.get("nframes"),
                            deploy=bool(contents.get("deploy", False)),
                            nstdc=contents.get("nstdc", 1) if video else None)


def load_checkpoint(path: str | os.PathLike) -> LoadedCheckpoint:
    """Read a checkpoint file (see `read_checkpoint`) into its state dict and its `ModelDescription`.

    Our files (dicts with a ``model`` entry) describe themselves; anything else is described by
    `describe_state_dict`. Raises ``CheckpointError`` (one line naming the file) for unreadable files and for
    files that hold no state dict.
    """
    contents = read_checkpoint(path)
    state_dict = _extract_state_dict(contents, str(path))
    if isinstance(contents, Mapping) and "model" in contents and "state_dict" in contents:
        description = _from_metadata(contents, str(path))
    else:
        description = describe_state_dict(state_dict)
    return LoadedCheckpoint(state_dict, description, contents)
