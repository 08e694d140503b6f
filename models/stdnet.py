"""STDNet and STDNet-A video saliency models (design §4.6) and backbone preloading.

The SDNet / SDNet-A backbone runs on every frame (frames folded into the batch); a four-level top-down decoder
mixes a spatial branch (video CDCM) and a temporal branch (STDM, ``models.stdc``) at each level. Decoder modules
are direct attributes named like the authors' keys (``project1``, ``global_spatial``, ``global_temporal``,
``project2``, ``attention``, ``project_final``; index = level - 1), so the authors' state dicts load as they are.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .checkpoint import CheckpointError, load_state_dict_file
from .layers import CSAM
from .sdnet import SDNetBackbone
from .stdc import STDM, ProjectLayer

__all__ = ["STDNet", "preload_backbone"]

VIDEO_CDCM_DILATIONS = (1, 3, 5)


class VideoCDCM(nn.Module):
    """Spatial branch of the video decoder: (N, C_in, H, W) -> (N, C_out, H, W) (design §4.1, video version).

    ``conv1`` = 1x1 conv C_in -> C_out with bias (no BN, no ReLU); the sum of the identity (dilation 1) and 3x3
    convs C_out -> C_out without bias at dilations 3 and 5 (``conv_dils.1``, ``conv_dils.2``); then BN and ReLU.
    """

    def __init__(self, in_channels: int = 48, out_channels: int = 24,
                 dilations: Sequence[int] = VIDEO_CDCM_DILATIONS) -> None:
        super().__init__()
        self.conv1 = ProjectLayer(in_channels, out_channels, bn=False, relu=False)
        self.conv_dils = nn.ModuleList(
            nn.Identity() if d == 1 else nn.Conv2d(out_channels, out_channels, 3, padding=d, dilation=d, bias=False)
            for d in dilations
        )
        self.norm = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        return F.relu(self.norm(sum(conv(x) for conv in self.conv_dils)))


class STDNet(SDNetBackbone):
    """STDNet (``variant='sdnet'``) / STDNet-A (``'sdnet-a'``) video saliency model (design §4.6).

    forward: (B, 3*T, H, W) normalised clips (frame t in channels 3t..3t+2) -> (B*T, 1, H, W) sigmoid maps, frame
    by frame; T is read from the input's channel count (``nframes`` is the clip length the model is meant for).
    For levels i = 4..1: p_i = ``project1[i-1]``(x_i) (24 channels, 48 at level 4), concatenated with the
    upsampled previous level below level 4; s_i = ``global_spatial[i-1]``(.) (video CDCM), t_i =
    ``global_temporal[i-1]``(.) (STDM; t_i = s_i when T = 1); prev = ``attention[i-1]``(``project2[i-1]``(cat[s_i,
    t_i])). ``project_final`` (1x1, 24 -> 1, bias) at 1/2 resolution, bilinear upsampling, sigmoid.
    ``config``/``bn``/``deploy`` configure the backbone as in ``SDNetBackbone``; ``tid``/``scales`` (and ``bn``,
    ``deploy``) the STDCs as in ``models.stdc.STDC``, ``nstdc`` the STDC pairs per STDM; decoder ProjectLayers
    always have BN.
    """

    kind = "video"

    def __init__(self, variant: str = "sdnet", config: str | Sequence[Sequence[str]] | None = None, *,
                 bn: bool = True, deploy: bool = False, tid: Sequence[str] = ("cv", "cd", "ad"),
                 scales: Sequence[float] = (0.0, 1.0, 1.0), nframes: int = 8, dil: int = 24, nstdc: int = 1) -> None:
        super().__init__(variant, config, bn=bn, deploy=deploy)
        if nframes < 1:
            raise ValueError(f"nframes must be >= 1, got {nframes}")
        self.nframes = nframes
        levels = len(self.out_channels)
        widths = [dil] * (levels - 1) + [2 * dil]  # the deepest level has no top-down input to concatenate
        self.project1 = nn.ModuleList(ProjectLayer(c, w) for c, w in zip(self.out_channels, widths))
        self.global_spatial = nn.ModuleList(VideoCDCM(2 * dil, dil) for _ in range(levels))
        self.global_temporal = nn.ModuleList(
            STDM(2 * dil, dil, tid, scales, bn=bn, deploy=deploy, nstdc=nstdc) for _ in range(levels)
        )
        self.project2 = nn.ModuleList(ProjectLayer(2 * dil, dil, relu=False) for _ in range(levels))
        self.attention = nn.ModuleList(CSAM(dil) for _ in range(levels))
        self.project_final = ProjectLayer(dil, 1, bn=False, relu=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, channels, h, w = x.shape
        if channels % 3:
            raise ValueError(f"expected a clip tensor (B, 3*T, H, W), got {channels} channels")
        nframes = channels // 3
        features = self.forward_features(x.reshape(b * nframes, 3, h, w))
        prev = None
        for i in reversed(range(len(features))):
            lateral = self.project1[i](features[i])
            if prev is not None:
                up = F.interpolate(prev, size=lateral.shape[-2:], mode="bilinear", align_corners=False)
                lateral = torch.cat([lateral, up], dim=1)
            spatial = self.global_spatial[i](lateral)
            temporal = self.global_temporal[i](lateral, nframes) if nframes > 1 else spatial
            prev = self.attention[i](self.project2[i](torch.cat([spatial, temporal], dim=1)))
        out = F.interpolate(self.project_final(prev), size=(h, w), mode="bilinear", align_corners=False)
        return torch.sigmoid(out)


def preload_backbone(model: nn.Module,
                     path_or_state_dict: str | os.PathLike | Mapping[str, torch.Tensor]) -> tuple[int, list[str]]:
    """Copy the backbone weights of a checkpoint into ``model`` (image or video), in place.

    Every model entry whose name contains ``block`` (``init_block.*``, ``blockX_Y.*``) is taken from the
    checkpoint (read as in ``load_state_dict_file``: ``module.`` prefix stripped, ``{'state_dict': ...}`` unwrapped;
    a state dict may be passed directly), e.g. ``sdnet_stage1_backbone.pth`` or
    ``sdneta_imagenet_pretrained_backbone.pth``. Returns (number of tensors copied, sorted checkpoint keys not
    copied: non-backbone entries such as a decoder). Raises ``CheckpointError`` naming the missing or mis-shaped
    backbone entries (and copies nothing) when the checkpoint does not fit the model's backbone.
    """
    if isinstance(path_or_state_dict, Mapping):
        source = "state dict"
        state_dict = {k.removeprefix("module."): v for k, v in path_or_state_dict.items()}
    else:
        source = str(path_or_state_dict)
        state_dict = load_state_dict_file(path_or_state_dict)
    targets = {k: v for k, v in model.state_dict().items() if "block" in k}
    missing = [k for k in targets if k not in state_dict]
    mis_shaped = [f"{k} {tuple(state_dict[k].shape)} vs {tuple(v.shape)}"
                  for k, v in targets.items() if k in state_dict and state_dict[k].shape != v.shape]
    if missing or mis_shaped:
        problems = []
        if missing:
            problems.append(f"missing backbone keys: {', '.join(missing[:6])}"
                            + (f", ... ({len(missing)} in all)" if len(missing) > 6 else ""))
        if mis_shaped:
            problems.append(f"shape mismatch (checkpoint vs model): {', '.join(mis_shaped[:6])}")
        raise CheckpointError(f"{source}: backbone does not fit the model: {'; '.join(problems)}")
    with torch.no_grad():
        for key, target in targets.items():
            target.copy_(state_dict[key])
    skipped = sorted(k for k in state_dict if k not in targets)
    return len(targets), skipped
