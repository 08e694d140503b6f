"""Pixel difference convolutions (PDC) and their exact vanilla-kernel conversions.

Each op is a pure function ``<op>_conv(x, weight, ...)`` computing the difference convolution, paired with
``<op>_kernel(weight)`` returning the vanilla kernel that gives the same output under ``F.conv2d`` (design §2.2).
``PDC_OPS`` is the one table the rest of the code reads. Kernels are indexed k = 3u + v (row u, column v).
``mixed_kernel`` / ``mixed_conv`` are the one place where several branches become one kernel: DCR after training
and the fused training form (each step, differentiably) both use them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F

__all__ = [
    "AD_PERMUTATION",
    "RD_OUTER",
    "RD_INNER",
    "PDC_OPS",
    "PDCOp",
    "cv_conv",
    "cv_kernel",
    "cd_conv",
    "cd_kernel",
    "ad_conv",
    "ad_kernel",
    "rd_conv",
    "rd_kernel",
    "pdc_kernel",
    "embed_kernel",
    "mixed_kernel",
    "mixed_conv",
]

# ad: W'_k = W_k - W_{pi(k)}: each ring tap minus its anticlockwise neighbour, i.e. the pair
# x(p+d_j) - x(p+d_sigma(j)) with sigma the clockwise successor 0->1->2->5->8->7->6->3->0.
AD_PERMUTATION = (3, 0, 1, 6, 4, 2, 7, 8, 5)
# rd: flat 5x5 positions that receive +W[1..8] (outer ring) and -W[1..8] (inner ring). The map is by flat
# index, not geometric: W[0] is never used and the 3x3 centre W[4] drives the "W" direction. The released
# checkpoints were trained with exactly this map.
RD_OUTER = (0, 2, 4, 10, 14, 20, 22, 24)
RD_INNER = (6, 7, 8, 11, 13, 16, 17, 18)


def cv_kernel(weight: torch.Tensor) -> torch.Tensor:
    """Vanilla conv: the kernel is the weight itself. weight: (C_out, C_in/groups, 3, 3)."""
    return weight


def cd_kernel(weight: torch.Tensor) -> torch.Tensor:
    """Central PDC as a vanilla 3x3 kernel: centre tap minus the sum of all taps. weight: (C_out, C_in/g, 3, 3)."""
    kernel = weight.clone()
    kernel[:, :, 1, 1] = weight[:, :, 1, 1] - weight.sum(dim=(2, 3))
    return kernel


def ad_kernel(weight: torch.Tensor) -> torch.Tensor:
    """Angular PDC as a vanilla 3x3 kernel W - W[pi] (centre becomes 0). weight: (C_out, C_in/g, 3, 3)."""
    flat = weight.flatten(2)
    return (flat - flat[:, :, list(AD_PERMUTATION)]).view_as(weight)


def rd_kernel(weight: torch.Tensor) -> torch.Tensor:
    """Radial PDC as a vanilla 5x5 kernel (needs padding 2*dilation). weight: (C_out, C_in/g, 3, 3) -> (..., 5, 5)."""
    flat = weight.flatten(2)
    kernel = weight.new_zeros(weight.shape[0], weight.shape[1], 25)
    kernel[:, :, list(RD_OUTER)] = flat[:, :, 1:]
    kernel[:, :, list(RD_INNER)] = -flat[:, :, 1:]
    return kernel.view(weight.shape[0], weight.shape[1], 5, 5)


def cv_conv(x, weight, bias=None, stride=1, dilation=1, groups=1):
    """Vanilla 3x3 conv, zero padding = dilation. x: (N, C_in, H, W) -> (N, C_out, H', W')."""
    return F.conv2d(x, weight, bias, stride, dilation, dilation, groups)


def cd_conv(x, weight, bias=None, stride=1, dilation=1, groups=1):
    """Central PDC: sum_k W_k (x(p+d_k) - x(p)), as a 3x3 conv minus a 1x1 conv with the summed kernel."""
    centre = F.conv2d(x, weight.sum(dim=(2, 3), keepdim=True), None, stride, 0, 1, groups)
    return F.conv2d(x, weight, bias, stride, dilation, dilation, groups) - centre


def ad_conv(x, weight, bias=None, stride=1, dilation=1, groups=1):
    """Angular PDC: sum over the 8-ring of W_j (x(p+d_j) - x(p+d_sigma(j))), via its 3x3 kernel."""
    return F.conv2d(x, ad_kernel(weight), bias, stride, dilation, dilation, groups)


def rd_conv(x, weight, bias=None, stride=1, dilation=1, groups=1):
    """Radial PDC: sum_m W_m (x(p+2d_m) - x(p+d_m)), via its 5x5 kernel with padding 2*dilation."""
    return F.conv2d(x, rd_kernel(weight), bias, stride, 2 * dilation, dilation, groups)


class PDCOp(NamedTuple):
    """One PDC op: its conv function, its kernel conversion, and the converted kernel size."""

    conv: Callable[..., torch.Tensor]
    kernel: Callable[[torch.Tensor], torch.Tensor]
    kernel_size: int


PDC_OPS: dict[str, PDCOp] = {
    "cv": PDCOp(cv_conv, cv_kernel, 3),
    "cd": PDCOp(cd_conv, cd_kernel, 3),
    "ad": PDCOp(ad_conv, ad_kernel, 3),
    "rd": PDCOp(rd_conv, rd_kernel, 5),
}


def embed_kernel(kernel: torch.Tensor, size: int) -> torch.Tensor:
    """Zero-pad a square kernel (..., k, k) symmetrically to (..., size, size); used to sum 3x3 and 5x5 branches."""
    pad = (size - kernel.shape[-1]) // 2
    return F.pad(kernel, (pad, pad, pad, pad)) if pad > 0 else kernel


def pdc_kernel(op: str, weight: torch.Tensor, size: int | None = None) -> torch.Tensor:
    """Vanilla kernel equivalent to PDC ``op`` with 3x3 ``weight``; optionally zero-embedded into ``size`` x ``size``.

    weight: (C_out, C_in/groups, 3, 3). Returns (C_out, C_in/groups, k, k) with k = 3 (5 for ``rd``) or ``size``.
    Never mutates ``weight``.
    """
    kernel = PDC_OPS[op].kernel(weight)
    return embed_kernel(kernel, size) if size else kernel


def mixed_kernel(ops: Sequence[str], weights: Sequence[torch.Tensor], coefficients: torch.Tensor,
                 size: int | None = None) -> torch.Tensor:
    """The one vanilla kernel of parallel PDC branches mixed linearly: sum_i c_i T_i(W_i) (design §2.3).

    ``weights[i]``: (C_out, C_in/groups, 3, 3) of op ``ops[i]``; ``coefficients``: (n,) per branch or (n, C_out)
    per branch and output channel (e.g. softmax logits times an eval BatchNorm's scale). Kernels are embedded in
    ``size`` x ``size`` (default: 5 if an op is ``rd`` else 3). Returns (C_out, C_in/groups, size, size);
    differentiable in the weights and coefficients, never mutates them.
    """
    size = size or max(PDC_OPS[op].kernel_size for op in ops)
    kernel = 0
    for i, (op, weight) in enumerate(zip(ops, weights, strict=True)):
        coefficient = coefficients[i]
        if coefficient.dim():
            coefficient = coefficient.view(-1, 1, 1, 1)
        kernel = kernel + coefficient * pdc_kernel(op, weight, size)
    return kernel


def mixed_conv(x: torch.Tensor, ops: Sequence[str], weights: Sequence[torch.Tensor], coefficients: torch.Tensor,
               bias: torch.Tensor | None = None, stride: int = 1, dilation: int = 1, groups: int = 1) -> torch.Tensor:
    """sum_i c_i PDC_i(x; W_i) (+ bias) as ONE convolution with `mixed_kernel`: (N, C_in, H, W) ->
    (N, C_out, H', W'), the same output size and sampling as each branch's ``<op>_conv`` with these ``stride``,
    ``dilation`` and ``groups`` (zero padding of (k // 2) x dilation for the k x k mixed kernel)."""
    kernel = mixed_kernel(ops, weights, coefficients)
    padding = kernel.shape[-1] // 2 * dilation
    return F.conv2d(x, kernel, bias, stride, padding, dilation, groups)
