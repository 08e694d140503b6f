"""Safe loading of model weights: the authors' released state dicts and our own checkpoints.

Files are always read with ``torch.load(..., weights_only=True)``, so a file that would need arbitrary pickled
objects (and could run code) is refused before anything in it runs. Accepted layouts: a flat state dict (keys
may carry the DataParallel prefix ``module.``), or any dict holding one under ``'state_dict'`` (the authors'
wrappers and our own checkpoints).
"""

from __future__ import annotations

import os
import pickle
import re
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn as nn

from .dcr import is_converted

__all__ = ["CheckpointError", "load_state_dict_file", "load_weights", "read_checkpoint"]

_PREFIX = "module."


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit the model; the message is one line naming the file."""


def read_checkpoint(path: str | os.PathLike) -> object:
    """The object in a checkpoint file, read on the CPU with ``torch.load(weights_only=True)`` (tensors and plain
    containers only); every failure (missing, damaged, unsafe) becomes a one-line ``CheckpointError`` naming the
    file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
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


def load_weights(model: nn.Module, path_or_state_dict: str | os.PathLike | Mapping[str, torch.Tensor]) -> nn.Module:
    """Load weights strictly into ``model`` (in place) and return it.

    ``path_or_state_dict``: a checkpoint path (read as in ``load_state_dict_file``) or an in-memory state dict /
    checkpoint dict. Every model entry must be present with the same shape and nothing extra may be left over;
    otherwise ``CheckpointError`` names the missing, unexpected and mis-shaped keys in one line, with a hint when
    the checkpoint's converted/BN form differs from the model's.
    """
    if isinstance(path_or_state_dict, Mapping):
        source, raw = "state dict", path_or_state_dict
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
