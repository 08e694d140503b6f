"""SDNet and SDNet-A (design §4.3-§4.5): a strided four-stage DiffBlock backbone and a top-down decoder.

``SDNetBackbone`` is shared with the video models. Blocks are direct attributes named like the authors' keys
(``init_block``, ``block1_1`` ... ``block4_4``) so state-dict keys stay flat and the released checkpoints load as
they are; they are built in a loop from ``configs.BACKBONE_STAGES`` and the per-layer op table (``configs.OP_TABLES``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from configs import BACKBONE_STAGES, INIT_CHANNELS, OP_TABLES

from .layers import CDCM, CSAM, DiffBlock, FuseConv, InitialBlock, MobileViTv2Block
from .pdc import PDC_OPS

__all__ = ["SDNetBackbone", "SDNet"]

# CDCM dilation lists of decoder levels 1..4 (dilation 1 = identity branch).
CDCM_DILATIONS = ((1, 3), (1, 3, 5), (3, 5, 7, 9), (5, 7, 9, 11))


def resolve_op_table(config: str | Sequence[Sequence[str]], num_layers: int) -> tuple[tuple[str, ...], ...]:
    """Op lists of the first ``num_layers`` layers from a name in ``OP_TABLES`` or an explicit table.

    Raises ValueError naming the problem (unknown name, unknown op, too few entries).
    """
    if isinstance(config, str):
        if config not in OP_TABLES:
            raise ValueError(f"unknown op config {config!r}; choose from {sorted(OP_TABLES)}")
        table = OP_TABLES[config]
    else:
        table = tuple(tuple(ops) for ops in config)
    if len(table) < num_layers:
        raise ValueError(f"op config has {len(table)} entries but the backbone needs {num_layers}")
    for ops in table[:num_layers]:
        if not ops or any(op not in PDC_OPS for op in ops):
            raise ValueError(f"op config entries must be non-empty lists of {sorted(PDC_OPS)}, got {list(ops)}")
    return tuple(tuple(ops) for ops in table[:num_layers])


class SDNetBackbone(nn.Module):
    """Backbone of SDNet (``variant='sdnet'``) or SDNet-A (``'sdnet-a'``): InitialBlock + four strided stages.

    ``config`` is an ``OP_TABLES`` name or a table of op lists (entry 0 for the InitialBlock, then one per
    DiffBlock in construction order); default: the variant's own table. ``bn`` adds BN0/BN1_i to the DiffBlocks;
    ``deploy`` builds the converted form directly (no branches, BN or logits; 5x5 kernels where the op list has
    ``rd``). ``forward_features``: (N, 3, H, W) -> [x1, x2, x3, x4] at strides 2, 4, 8, 16 with
    ``out_channels`` = (60, 120, 240, 240) channels.
    """

    def __init__(self, variant: str = "sdnet", config: str | Sequence[Sequence[str]] | None = None, *,
                 bn: bool = False, deploy: bool = False):
        super().__init__()
        if variant not in BACKBONE_STAGES:
            raise ValueError(f"unknown backbone variant {variant!r}; choose from {sorted(BACKBONE_STAGES)}")
        stages = BACKBONE_STAGES[variant]
        num_layers = 1 + sum(num_blocks for _, num_blocks, _ in stages)
        self.variant, self.bn = variant, bn
        self.op_table = resolve_op_table(variant if config is None else config, num_layers)
        self.out_channels = tuple(channels for channels, _, _ in stages)

        self.init_block = InitialBlock(3, INIT_CHANNELS, self.op_table[0], deploy=deploy)
        self.stage_blocks: list[tuple[str, ...]] = []
        layer, in_channels = 1, INIT_CHANNELS
        for stage, (channels, num_blocks, patch_size) in enumerate(stages, start=1):
            names = []
            for j in range(1, num_blocks + 1):
                block = DiffBlock(in_channels, channels, self.op_table[layer], stride=2 if j == 1 else 1, bn=bn,
                                  deploy=deploy)
                names.append(f"block{stage}_{j}")
                self.add_module(names[-1], block)
                layer, in_channels = layer + 1, channels
            if patch_size is not None:
                names.append(f"block{stage}_{num_blocks + 1}")
                self.add_module(names[-1], MobileViTv2Block(channels, depth=2, patch_size=patch_size))
            self.stage_blocks.append(tuple(names))

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """(N, 3, H, W) -> [x1, x2, x3, x4], the outputs of the four stages."""
        x = self.init_block(x)
        features = []
        for names in self.stage_blocks:
            for name in names:
                x = getattr(self, name)(x)
            features.append(x)
        return features

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.forward_features(x)


class SDNet(SDNetBackbone):
    """SDNet / SDNet-A image saliency model: backbone + per-level CDCM and CSAM + linear top-down fusion (§4.4).

    f_i = CSAM(CDCM_i(x_i)) (``dil`` = 24 channels); e = f4; for i = 3, 2, 1: e = conv_reduces[i-1](cat[f_i,
    up(e)]); the last fusion gives 1 channel, upsampled to the input size. forward: (N, 3, H, W) normalised
    images -> (N, 1, H, W) sigmoid saliency maps. Arguments as in ``SDNetBackbone``.
    """

    kind = "image"

    def __init__(self, variant: str = "sdnet", config: str | Sequence[Sequence[str]] | None = None, *,
                 bn: bool = False, deploy: bool = False, dil: int = 24):
        super().__init__(variant, config, bn=bn, deploy=deploy)
        self.attentions = nn.ModuleList(CSAM(dil) for _ in self.out_channels)
        self.dilations = nn.ModuleList(CDCM(c, dil, d) for c, d in zip(self.out_channels, CDCM_DILATIONS))
        self.conv_reduces = nn.ModuleList([FuseConv(2 * dil, 1), FuseConv(2 * dil, dil), FuseConv(2 * dil, dil)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.forward_features(x)
        lateral = [att(cdcm(f)) for f, cdcm, att in zip(features, self.dilations, self.attentions)]
        fused = lateral[-1]
        for i in reversed(range(len(self.conv_reduces))):
            up = F.interpolate(fused, size=lateral[i].shape[-2:], mode="bilinear", align_corners=False)
            fused = self.conv_reduces[i](torch.cat([lateral[i], up], dim=1))
        fused = F.interpolate(fused, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return torch.sigmoid(fused)
