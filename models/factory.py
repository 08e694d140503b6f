"""``build_model``, the one factory of the models: it reads ``configs.MODELS`` and ``configs.OP_TABLES``."""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn as nn

from configs import MODELS

from .sdnet import SDNet
from .stdnet import STDNet

__all__ = ["build_model"]


def build_model(name: str, config: str | Sequence[Sequence[str]] | None = None, *, bn: bool = False,
                deploy: bool = False, tid: Sequence[str] = ("cv", "cd", "ad"), scales: Sequence[float] = (0, 1, 1),
                nframes: int = 8, nstdc: int = 1) -> nn.Module:
    """Build model ``name`` (a key of ``configs.MODELS``) in training form, or in converted form if ``deploy``.

    ``config``: training op table (an ``OP_TABLES`` name or a table of op lists; default: the model's own).
    ``bn``: BN0/BN1_i in the backbone DiffBlocks (training form only). ``deploy=True`` builds the inference
    architecture (single depthwise conv with bias and pre-bias per block, 5x5 where ``config`` has ``rd``, no BN or
    branch logits) into which ``convert_model`` output of the same name/config loads strictly. ``tid``,
    ``scales``, ``nframes`` and ``nstdc`` (STDC pairs per temporal module) configure the video models only. Image
    models map (B, 3, H, W) -> (B, 1, H, W).
    """
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose from {sorted(MODELS)}")
    spec = MODELS[name]
    config = spec["config"] if config is None else config
    if spec["kind"] == "image":
        return SDNet(spec["backbone"], config, bn=bn, deploy=deploy)
    if spec["kind"] == "video":
        return STDNet(spec["backbone"], config, bn=bn, deploy=deploy, tid=tid, scales=scales, nframes=nframes,
                      nstdc=nstdc)
    raise ValueError(f"model {name!r} has unknown kind {spec['kind']!r}")
