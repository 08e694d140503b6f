"""SpatioTemporal Difference Convolution (STDC) and the temporal module STDM of STDNet (SPEC §3).

An STDC is a dense 3x3 convolution over a (time x one spatial axis) plane of a tensor (N', C, T, S): kernel rows
index the time offset, columns the spatial offset. Frames are replicate-padded by one at both temporal ends, the
spatial axis is zero-padded by one. In training form it runs parallel PDC branches (``tid``, e.g. cv/cd/ad), each
with its own BatchNorm, mixed by softmax(alpha); ``reparameterize()`` folds them into one 3x3 conv with bias.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from configs import TEMPORAL_OPS

from .layers import bn_scale_shift
from .pdc import pdc_kernel

__all__ = ["ProjectLayer", "STDC", "STDM"]


class ProjectLayer(nn.Module):
    """1x1 conv C_in -> C_out, then optional BatchNorm and optional ReLU: (N, C_in, H, W) -> (N, C_out, H, W).

    The conv carries a bias (initialised to 0) only when there is no BatchNorm after it.
    """

    def __init__(self, in_channels: int, out_channels: int, bn: bool = True, relu: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 1, bias=not bn)
        if not bn:
            nn.init.zeros_(self.conv.bias)
        self.norm = nn.BatchNorm2d(out_channels) if bn else None
        self.relu = relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if self.norm is not None:
            x = self.norm(x)
        return F.relu(x) if self.relu else x


def _pad_plane(x: torch.Tensor) -> torch.Tensor:
    """Pad (N', C, T, S) to (N', C, T+2, S+2): replicate one frame at each temporal end, zeros along space."""
    x = F.pad(x, (0, 0, 1, 1), mode="replicate")
    return F.pad(x, (1, 1, 0, 0))


class STDC(nn.Module):
    """Spatio-temporal difference convolution over a (T, S) plane: (N', C, T, S) -> (N', C, T, S).

    Training form (several branches, or any branch with ``bn``): parameters ``scales`` (branch logits alpha, one
    per op in ``tid``), ``convs.{i}.weight`` (C, C, 3, 3) without bias, ``norms.{i}`` BatchNorm2d(C) when ``bn``;
    output sum_i softmax(alpha)_i * BN_i(PDC_i(x)). Single-branch form (one op, no BN, e.g. the converted layer):
    one conv ``convs`` (C, C, 3, 3) with bias, initialised to 0; ``deploy=True`` builds this form with op ``cv``,
    which is what ``reparameterize()`` leaves. The ``cd`` and ``ad`` ops are those of SPEC §2.2
    on the (t, s) plane; their centre tap is always the unpadded pixel, so folding them into a plain kernel is exact
    at the borders, with replicate temporal padding too.
    """

    def __init__(
        self,
        channels: int,
        tid: Sequence[str] = ("cv", "cd", "ad"),
        scales: Sequence[float] = (0.0, 1.0, 1.0),
        bn: bool = True,
        deploy: bool = False,
    ) -> None:
        super().__init__()
        if deploy:
            tid, bn = ("cv",), False
        tid = tuple(tid)
        bad = [op for op in tid if op not in TEMPORAL_OPS]
        if not tid or bad:
            raise ValueError(f"STDC tid must be a non-empty list of {'/'.join(TEMPORAL_OPS)}, got {list(tid)}")
        self.tid = tid
        self.bn = bn
        if len(tid) == 1 and not bn:
            self.convs = nn.Conv2d(channels, channels, 3, bias=True)
            nn.init.zeros_(self.convs.bias)
            return
        if len(scales) != len(tid):
            raise ValueError(f"STDC needs one initial scale per temporal op: tid {list(tid)}, scales {list(scales)}")
        self.scales = nn.Parameter(torch.tensor([float(s) for s in scales]))
        self.convs = nn.ModuleList(nn.Conv2d(channels, channels, 3, bias=False) for _ in tid)
        self.norms = nn.ModuleList(nn.BatchNorm2d(channels) for _ in tid) if bn else None

    @property
    def single_conv(self) -> bool:
        """True in the single-conv form (one branch with bias, no BN)."""
        return isinstance(self.convs, nn.Conv2d)

    @property
    def deploy(self) -> bool:
        """True in the converted form: one plain (``cv``) 3x3 conv with bias."""
        return self.single_conv and self.tid == ("cv",)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _pad_plane(x)
        if self.single_conv:
            return F.conv2d(x, pdc_kernel(self.tid[0], self.convs.weight), self.convs.bias)
        # One dense conv with all branch kernels stacked along the output channels, then per-branch BN.
        kernels = torch.cat([pdc_kernel(op, conv.weight) for op, conv in zip(self.tid, self.convs)])
        branches = F.conv2d(x, kernels).chunk(len(self.tid), dim=1)
        weights = torch.softmax(self.scales, dim=0)
        out = 0
        for i, branch in enumerate(branches):
            if self.norms is not None:
                branch = self.norms[i](branch)
            out = out + weights[i] * branch
        return out

    def equivalent_kernel_bias(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The single 3x3 kernel (C, C, 3, 3) and bias (C,) equal to this layer in eval mode (BN running stats)."""
        if self.single_conv:
            return pdc_kernel(self.tid[0], self.convs.weight), self.convs.bias
        weights = torch.softmax(self.scales, dim=0)
        kernel = 0
        bias = 0
        for i, (op, conv) in enumerate(zip(self.tid, self.convs)):
            branch_kernel = pdc_kernel(op, conv.weight)
            if self.norms is None:
                kernel = kernel + weights[i] * branch_kernel
                continue
            scale, shift = bn_scale_shift(self.norms[i])
            kernel = kernel + weights[i] * scale[:, None, None, None] * branch_kernel
            bias = bias + weights[i] * shift
        if self.norms is None:
            bias = kernel.new_zeros(kernel.shape[0])
        return kernel, bias

    @torch.no_grad()
    def reparameterize(self) -> None:
        """Fold all branches (and their BNs) into one plain 3x3 conv with bias, in place; no-op if already done."""
        if self.deploy:
            return
        kernel, bias = self.equivalent_kernel_bias()
        channels = kernel.shape[0]
        conv = nn.Conv2d(channels, channels, 3, bias=True).to(device=kernel.device, dtype=kernel.dtype)
        conv.weight.copy_(kernel)
        conv.bias.copy_(bias)
        for name in ("scales", "convs", "norms"):
            if hasattr(self, name):
                delattr(self, name)
        self.convs = conv
        self.tid = ("cv",)
        self.bn = False


class STDM(nn.Module):
    """Spatio-temporal difference module: (B*T, C, H, W) -> (B*T, C_out, H, W) for clips of ``nframes`` frames.

    ``nstdc`` times: x <- x + ReLU(STDC(x)) on the T-W plane, then x <- x + ReLU(STDC(x)) on the T-H plane (modules
    ``tdc1``, ``tdc2``, then ``tdc3``, ``tdc4``, ...; the released models have ``nstdc`` = 1); then ``project2`` =
    ProjectLayer(C -> C_out, BN, ReLU). Frames of one clip are consecutive in the batch dimension.
    ``tid``/``scales``/``bn``/``deploy`` configure every STDC as in ``STDC``.
    """

    def __init__(
        self,
        channels: int = 48,
        out_channels: int = 24,
        tid: Sequence[str] = ("cv", "cd", "ad"),
        scales: Sequence[float] = (0.0, 1.0, 1.0),
        bn: bool = True,
        deploy: bool = False,
        nstdc: int = 1,
    ) -> None:
        super().__init__()
        if nstdc < 1:
            raise ValueError(f"nstdc must be >= 1, got {nstdc}")
        self.nstdc = nstdc
        for index in range(1, 2 * nstdc + 1):
            self.add_module(f"tdc{index}", STDC(channels, tid, scales, bn, deploy))
        self.project2 = ProjectLayer(channels, out_channels, bn=True, relu=True)

    def forward(self, x: torch.Tensor, nframes: int) -> torch.Tensor:
        bt, c, h, w = x.shape
        b = bt // nframes
        x = x.reshape(b, nframes, c, h, w)  # (B, T, C, H, W)
        for step in range(self.nstdc):
            # one T-W plane per image row, then one T-H plane per image column
            plane = x.permute(0, 3, 2, 1, 4).reshape(b * h, c, nframes, w)
            plane = plane + F.relu(getattr(self, f"tdc{2 * step + 1}")(plane))
            x = plane.reshape(b, h, c, nframes, w).permute(0, 3, 2, 1, 4)
            plane = x.permute(0, 4, 2, 1, 3).reshape(b * w, c, nframes, h)
            plane = plane + F.relu(getattr(self, f"tdc{2 * step + 2}")(plane))
            x = plane.reshape(b, w, c, nframes, h).permute(0, 3, 2, 4, 1)
        return self.project2(x.reshape(bt, c, h, w))
