"""The one checkpoint writer: every checkpoint we save, training and converted, goes through `save_checkpoint`.

A checkpoint holds the fields of `models.ModelDescription` beside ``state_dict`` (unprefixed, from the unwrapped
model), plus whatever the caller adds (a training run's state: `engine.training.checkpoints`).
`models.load_checkpoint` reads them back with their description. Files are written atomically and flushed to the
disk, so a kill or a power cut leaves the old file or the complete new one.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable, Mapping

import torch

from data.atomic import write_bytes_atomic
from models import ModelDescription

__all__ = ["save_checkpoint"]


def save_checkpoint(paths: str | os.PathLike | Iterable[str | os.PathLike], state_dict: Mapping[str, torch.Tensor],
                    description: ModelDescription, **extra: object) -> None:
    """Write ``{**description fields, **extra, 'state_dict'}`` with ``torch.save`` once, atomically and flushed to
    the disk, to every path in ``paths``. ``state_dict``'s tensors are copied to the CPU; ``extra`` must hold only
    tensors and plain types, so the file loads with ``weights_only=True``."""
    paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    payload = {**description.as_dict(), **extra,
               "state_dict": {key: value.detach().cpu().clone() for key, value in state_dict.items()}}
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    for path in paths:
        write_bytes_atomic(path, buffer.getvalue(), fsync=True)
