"""SpatioTemporal Difference Convolution (STDC) and the temporal module STDM of STDNet (design §3).

An STDC is a dense 3x3 convolution over the (time x one spatial axis) planes of a clip: the (T, W) plane of every
image row or the (T, H) plane of every column. Kernel rows index the time offset, columns the spatial offset. Frames
are replicate-padded by one at both temporal ends, the spatial axis is zero-padded by one. It is computed on the
frames as they are, (B*T, C, H, W): kernel row dt is a 1x3 (3x1) conv of frame t + dt, and the three are summed.
This needs no transposes into planes, which inference runtimes spent a third of an STDNet clip on (OpenVINO: 29 ->
42 frames/s, BENCHMARKS.md). In training form it runs parallel PDC branches (``tid``, e.g. cv/cd/ad), each
with its own BatchNorm, mixed by softmax(alpha); ``reparameterize()`` folds them into one 3x3 conv with bias.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from configs import TEMPORAL_OPS

from .layers import bn_scale_shift, keep_release_keys, uses_batch_statistics
from .pdc import mixed_kernel, pdc_kernel

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


def _time_neighbours(x: torch.Tensor, nframes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Frames t-1 and t+1 of every frame of (B*T, C, H, W) clips (T = ``nframes``, frames of a clip consecutive),
    the first and last frame standing in for the missing ones (replicate padding): two (B*T, C, H, W) tensors.

    Slices and concatenations along the batch axis only, which keep any memory layout of a frame (an inference
    runtime copies whole frames, with no transposes)."""
    previous, following = [], []
    for start in range(0, x.shape[0], nframes):
        end = start + nframes
        previous += [x[start:start + 1], x[start:end - 1]]
        following += [x[start + 1:end], x[end - 1:end]]
    return torch.cat(previous), torch.cat(following)


class STDC(nn.Module):
    """Spatio-temporal difference convolution on the (T, W) or (T, H) planes of clips: (B*T, C, H, W) ->
    (B*T, C, H, W), frames of a clip consecutive in the batch dimension (see the module docstring).

    Training form (several branches, or any branch with ``bn``): parameters ``scales`` (branch logits alpha, one
    per op in ``tid``), ``branches.{i}.weight`` (C, C, 3, 3) without bias, ``norms.{i}`` BatchNorm2d(C) when
    ``bn``; output sum_i softmax(alpha)_i * BN_i(PDC_i(x)). Single-branch form (one op, no BN, e.g. the converted
    layer): one conv ``conv`` (C, C, 3, 3) with bias, initialised to 0; ``deploy=True`` builds this form with op
    ``cv``, which is what ``reparameterize()`` leaves. Both are saved under the release's key ``convs``
    (`models.layers.keep_release_keys`). The ``cd`` and ``ad`` ops are those of design §2.2
    on the (t, s) plane; their centre tap is always the unpadded pixel, so folding them into a plain kernel is exact
    at the borders, with replicate temporal padding too. ``train_form`` 'fused' (see ``models.layers``) runs the
    branches as one kernel (BN at running statistics folded in); while BN uses batch statistics, as the separate
    form does.
    """

    train_form = "separate"
    SAVED_AS = {"branches": "convs", "conv": "convs"}

    def loaded_as(self) -> dict[str, str]:
        return {"convs": "conv" if self.single_conv else "branches"}

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
        keep_release_keys(self)
        if len(tid) == 1 and not bn:
            self.conv = nn.Conv2d(channels, channels, 3, bias=True)
            nn.init.zeros_(self.conv.bias)
            return
        if len(scales) != len(tid):
            raise ValueError(f"STDC needs one initial scale per temporal op: tid {list(tid)}, scales {list(scales)}")
        self.scales = nn.Parameter(torch.tensor([float(s) for s in scales]))
        self.branches = nn.ModuleList(nn.Conv2d(channels, channels, 3, bias=False) for _ in tid)
        self.norms = nn.ModuleList(nn.BatchNorm2d(channels) for _ in tid) if bn else None

    @property
    def single_conv(self) -> bool:
        """True in the single-conv form (one branch with bias, no BN)."""
        return isinstance(getattr(self, "conv", None), nn.Conv2d)

    @property
    def deploy(self) -> bool:
        """True in the converted form: one plain (``cv``) 3x3 conv with bias."""
        return self.single_conv and self.tid == ("cv",)

    def forward(self, x: torch.Tensor, nframes: int, axis: int) -> torch.Tensor:
        """(B*T, C, H, W) clips of ``nframes`` frames -> (B*T, C, H, W): the 3x3 conv on the (T, W) plane of every
        image row (``axis`` = 3) or on the (T, H) plane of every column (``axis`` = 2).

        Computed frame by frame, with no transposes: the kernel row of time offset dt is a 1x3 (or 3x1) conv of
        frame t + dt, and the three are summed; equal to the plane conv up to float rounding."""
        if axis not in (2, 3):
            raise ValueError(f"STDC axis must be 2 (T-H planes) or 3 (T-W planes), got {axis}")
        if x.shape[0] % nframes:
            raise ValueError(f"STDC expects whole clips of {nframes} frames, got a batch of {x.shape[0]} frames")
        if self.train_form == "fused" and not self.single_conv and not uses_batch_statistics(self.norms):
            kernels, bias = self.equivalent_kernel_bias()  # linear in x: the branches as one kernel
            stacked = False
        elif self.single_conv:
            kernels, bias, stacked = pdc_kernel(self.tid[0], self.conv.weight), self.conv.bias, False
        else:
            # All branch kernels stacked along the output channels; per-branch BN after the conv.
            kernels = torch.cat([pdc_kernel(op, conv.weight) for op, conv in zip(self.tid, self.branches)])
            bias, stacked = None, True
        previous, following = _time_neighbours(x, nframes)
        padding = (0, 1) if axis == 3 else (1, 0)

        def taps(dt: int) -> torch.Tensor:  # kernel row dt as (C_out, C, 1, 3) on rows, (C_out, C, 3, 1) on columns
            return kernels[:, :, dt, None, :] if axis == 3 else kernels[:, :, dt, :, None]

        out = F.conv2d(x, taps(1), bias, padding=padding)
        out += F.conv2d(previous, taps(0), padding=padding)  # in place: a conv's backward does not need its output
        out += F.conv2d(following, taps(2), padding=padding)
        if not stacked:
            return out
        weights = torch.softmax(self.scales, dim=0)
        mixed = 0
        for i, branch in enumerate(out.chunk(len(self.tid), dim=1)):
            if self.norms is not None:
                branch = self.norms[i](branch)
            mixed = mixed + weights[i] * branch
        return mixed

    def equivalent_kernel_bias(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The single 3x3 kernel (C, C, 3, 3) and bias (C,) equal to this layer in eval mode (BN running stats)."""
        if self.single_conv:
            return pdc_kernel(self.tid[0], self.conv.weight), self.conv.bias
        weights = torch.softmax(self.scales, dim=0)
        branch_weights = [conv.weight for conv in self.branches]
        if self.norms is None:
            kernel = mixed_kernel(self.tid, branch_weights, weights)
            return kernel, kernel.new_zeros(kernel.shape[0])
        scales, shifts = zip(*(bn_scale_shift(norm) for norm in self.norms))
        return (mixed_kernel(self.tid, branch_weights, weights[:, None] * torch.stack(scales)),
                (weights[:, None] * torch.stack(shifts)).sum(0))

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
        for name in ("scales", "branches", "norms"):
            if hasattr(self, name):
                delattr(self, name)
        self.conv = conv
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
        for step in range(self.nstdc):
            x = x + F.relu(getattr(self, f"tdc{2 * step + 1}")(x, nframes, axis=3))  # T-W planes
            x = x + F.relu(getattr(self, f"tdc{2 * step + 2}")(x, nframes, axis=2))  # T-H planes
        return self.project2(x)
