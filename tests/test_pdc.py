"""Each PDC op equals its vanilla kernel and its definitional difference formula (float64, borders included)."""

import bounds
import pytest
import torch
import torch.nn.functional as F

from models.pdc import PDC_OPS, pdc_kernel

# Offsets (du, dv) of the 3x3 taps k = 3u + v.
OFFSETS = [(u - 1, v - 1) for u in range(3) for v in range(3)]
CLOCKWISE_NEXT = {0: 1, 1: 2, 2: 5, 5: 8, 8: 7, 7: 6, 6: 3, 3: 0}
RD_DIRECTIONS = [(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)]


def _shift(x, du, dv, pad):
    """x(p + (du, dv)) for every p, with zero padding ``pad`` (pad >= max offset)."""
    h, w = x.shape[-2:]
    xp = F.pad(x, (pad, pad, pad, pad))
    return xp[..., pad + du: pad + du + h, pad + dv: pad + dv + w]


def _definition(op, x, weight, dilation):
    """Depthwise PDC straight from its difference formula (stride 1)."""
    w = weight[:, 0].flatten(1)[None, :, :, None, None]  # (1, C, 9, 1, 1)
    pad = 2 * dilation
    tap = {k: _shift(x, du * dilation, dv * dilation, pad) for k, (du, dv) in enumerate(OFFSETS)}
    if op == "cv":
        return sum(w[:, :, k] * tap[k] for k in range(9))
    if op == "cd":
        return sum(w[:, :, k] * (tap[k] - x) for k in range(9))
    if op == "ad":
        return sum(w[:, :, j] * (tap[j] - tap[CLOCKWISE_NEXT[j]]) for j in CLOCKWISE_NEXT)
    out = 0
    for m, (du, dv) in enumerate(RD_DIRECTIONS, start=1):
        far = _shift(x, 2 * du * dilation, 2 * dv * dilation, pad)
        out = out + w[:, :, m] * (far - tap[OFFSETS.index((du, dv))])
    return out


@pytest.mark.parametrize("op", sorted(PDC_OPS))
@pytest.mark.parametrize("channels", [1, 4, 7])
@pytest.mark.parametrize("dilation", [1, 2])
def test_pdc_equals_definition_and_kernel(op, channels, dilation):
    g = torch.Generator().manual_seed(channels * 10 + dilation)
    x = torch.randn(2, channels, 11, 13, dtype=torch.float64, generator=g)
    weight = torch.randn(channels, 1, 3, 3, dtype=torch.float64, generator=g)
    conv = PDC_OPS[op].conv(x, weight, dilation=dilation, groups=channels)
    reference = _definition(op, x, weight, dilation)
    kernel = pdc_kernel(op, weight)
    pad = kernel.shape[-1] // 2 * dilation
    vanilla = F.conv2d(x, kernel, None, 1, pad, dilation, channels)
    assert (conv - reference).abs().max().item() < bounds.FLOAT64
    assert (vanilla - reference).abs().max().item() < bounds.FLOAT64


@pytest.mark.parametrize("op", sorted(PDC_OPS))
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("dilation", [1, 2])
def test_pdc_dense_strided_equals_kernel(op, stride, dilation):
    g = torch.Generator().manual_seed(stride * 7 + dilation)
    x = torch.randn(2, 3, 12, 15, dtype=torch.float64, generator=g)
    weight = torch.randn(5, 3, 3, 3, dtype=torch.float64, generator=g)
    conv = PDC_OPS[op].conv(x, weight, stride=stride, dilation=dilation)
    kernel = pdc_kernel(op, weight)
    pad = kernel.shape[-1] // 2 * dilation
    vanilla = F.conv2d(x, kernel, None, stride, pad, dilation)
    assert conv.shape == vanilla.shape
    assert (conv - vanilla).abs().max().item() < bounds.FLOAT64


def test_kernel_conversion_does_not_mutate():
    weight = torch.randn(3, 1, 3, 3, dtype=torch.float64)
    before = weight.clone()
    for op in PDC_OPS:
        pdc_kernel(op, weight)
    assert torch.equal(weight, before)
