"""Shared script helpers: logging, device selection, and (later) checkpoints and the training loop.

Scripts import from here; this module never imports a script.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import torch

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
