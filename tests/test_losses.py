"""Training losses against hand computations and direct (loop) formulas."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from models.losses import (
    bce_ssim_iou_loss,
    bce_weights,
    gaussian_window,
    iou_loss,
    ssim,
    weighted_bce_loss,
)


def _two_images() -> torch.Tensor:
    # image 0: 2 positives (1, 0.9), 3 negatives (0, 0.005, 0), 1 in between (0.5)
    # image 1: 1 positive, 5 negatives
    return torch.tensor(
        [[[[1.0, 0.9, 0.0], [0.005, 0.5, 0.0]]], [[[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]]]], dtype=torch.float64
    )


def test_bce_weights_per_image_hand_values():
    weights = bce_weights(_two_images(), beta=1.1)
    w_pos0, w_neg0 = 3 / 5, 1.1 * 2 / 5
    expected0 = [[w_pos0, w_pos0, w_neg0], [w_neg0, (w_pos0 + w_neg0) / 2, w_neg0]]
    w_pos1, w_neg1 = 5 / 6, 1.1 * 1 / 6
    expected1 = [[w_neg1, w_neg1, w_neg1], [w_pos1, w_neg1, w_neg1]]
    expected = torch.tensor([[expected0], [expected1]], dtype=torch.float64)
    torch.testing.assert_close(weights, expected, rtol=0, atol=1e-15)


def test_bce_weights_thresholds_are_strict():
    # 0.8 is not positive and 0.01 is not negative: both are "in between"
    target = torch.tensor([[[[0.8, 0.01, 1.0, 0.0]]]], dtype=torch.float64)
    w_pos, w_neg = 1 / 2, 1.1 * 1 / 2
    expected = torch.tensor([[[[(w_pos + w_neg) / 2, (w_pos + w_neg) / 2, w_pos, w_neg]]]], dtype=torch.float64)
    torch.testing.assert_close(bce_weights(target), expected, rtol=0, atol=1e-15)


def test_weighted_bce_matches_direct_formula_and_divides_by_batch():
    target = _two_images()
    pred = torch.tensor(
        [[[[0.7, 0.6, 0.2], [0.1, 0.4, 0.3]]], [[[0.2, 0.1, 0.05], [0.9, 0.3, 0.5]]]], dtype=torch.float64
    )
    w = bce_weights(target).numpy()
    p, t = pred.numpy(), target.numpy()
    direct = -(w * (t * np.log(p) + (1 - t) * np.log(1 - p))).sum()
    assert weighted_bce_loss(pred, target).item() == pytest.approx(direct / 2, rel=1e-12)
    # a smaller last batch is divided by the nominal batch size when the caller says so
    assert weighted_bce_loss(pred, target, divisor=24).item() == pytest.approx(direct / 24, rel=1e-12)


def test_weighted_bce_log_clamp_at_minus_100():
    # p = 0 on a positive pixel: log(0) is clamped to -100, giving w_pos * 100 (only pixel with nonzero loss)
    target = torch.tensor([[[[1.0, 0.0]]]], dtype=torch.float64)
    pred = torch.tensor([[[[0.0, 0.0]]]], dtype=torch.float64)
    assert weighted_bce_loss(pred, target).item() == pytest.approx(0.5 * 100, rel=1e-12)


def test_gaussian_window():
    window = gaussian_window(11, 1.5, torch.float64)
    assert window.shape == (11, 11)
    assert window.sum().item() == pytest.approx(1.0, abs=1e-15)
    assert window.argmax().item() == 5 * 11 + 5
    assert (window[5, 6] / window[5, 5]).item() == pytest.approx(math.exp(-1 / (2 * 1.5**2)), rel=1e-12)
    assert (window[4, 7] / window[5, 5]).item() == pytest.approx(math.exp(-(1 + 4) / (2 * 1.5**2)), rel=1e-12)
    torch.testing.assert_close(window, window.T, rtol=0, atol=0)


def _ssim_loop(x: np.ndarray, y: np.ndarray) -> float:
    """SSIM of two (H, W) maps by explicit window sums with zero padding (Gaussian sigma 1.5, 11x11)."""
    g = np.exp(-((np.arange(11) - 5) ** 2) / (2 * 1.5**2))
    g /= g.sum()
    w = np.outer(g, g)
    h, wd = x.shape
    xp, yp = np.pad(x, 5), np.pad(y, 5)
    values = []
    for i in range(h):
        for j in range(wd):
            px, py = xp[i : i + 11, j : j + 11], yp[i : i + 11, j : j + 11]
            mx, my = (w * px).sum(), (w * py).sum()
            vx = (w * px * px).sum() - mx * mx
            vy = (w * py * py).sum() - my * my
            cxy = (w * px * py).sum() - mx * my
            c1, c2 = 0.01**2, 0.03**2
            values.append((2 * mx * my + c1) * (2 * cxy + c2) / ((mx * mx + my * my + c1) * (vx + vy + c2)))
    return float(np.mean(values))


def test_ssim_matches_loop_formula():
    gen = torch.Generator().manual_seed(0)
    pred = torch.rand(2, 1, 9, 13, generator=gen, dtype=torch.float64)
    target = (torch.rand(2, 1, 9, 13, generator=gen, dtype=torch.float64) > 0.5).to(torch.float64)
    expected = np.mean([_ssim_loop(pred[n, 0].numpy(), target[n, 0].numpy()) for n in range(2)])
    assert ssim(pred, target).item() == pytest.approx(expected, rel=1e-12)
    assert ssim(target, target).item() == pytest.approx(1.0, abs=1e-12)


def test_iou_loss_hand_values_and_no_epsilon():
    pred = torch.tensor([[[[0.5, 0.5], [0.0, 1.0]]], [[[1.0, 0.0], [0.0, 0.0]]]], dtype=torch.float64)
    target = torch.tensor([[[[1.0, 0.0], [0.0, 1.0]]], [[[1.0, 1.0], [0.0, 0.0]]]], dtype=torch.float64)
    # map 0: I = 1.5, U = 2 + 2 - 1.5 = 2.5 -> 0.4; map 1: I = 1, U = 2 + 1 - 1 = 2 -> 0.5
    assert iou_loss(pred, target).item() == pytest.approx((0.4 + 0.5) / 2, rel=1e-12)
    empty = torch.zeros(1, 1, 2, 2, dtype=torch.float64)
    assert math.isnan(iou_loss(empty, empty).item())


def test_bce_ssim_iou_is_unweighted_sum():
    gen = torch.Generator().manual_seed(1)
    pred = torch.rand(3, 1, 16, 16, generator=gen, dtype=torch.float64) * 0.98 + 0.01
    target = (torch.rand(3, 1, 16, 16, generator=gen, dtype=torch.float64) > 0.6).to(torch.float64)
    p, t = pred.numpy(), target.numpy()
    bce = -(t * np.log(p) + (1 - t) * np.log(1 - p)).mean()
    expected = bce + (1 - ssim(pred, target).item()) + iou_loss(pred, target).item()
    assert bce_ssim_iou_loss(pred, target).item() == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("loss", [weighted_bce_loss, bce_ssim_iou_loss], ids=["image", "video"])
def test_losses_are_differentiable(loss):
    """Each loss's gradient in ``pred`` is its derivative: autograd against central finite differences in float64
    (gradcheck), at predictions inside (0, 1) and a GT with salient, background and in-between pixels. The
    difference quotient with step 1e-6 is within 1e-10 of the derivative (its truncation, 1e-12 x the third
    derivative, plus rounding, u / 1e-6 = 1e-10 x the loss's scale), well inside gradcheck's 1e-5."""
    generator = torch.Generator().manual_seed(0)
    pred = (torch.rand(2, 1, 12, 12, generator=generator, dtype=torch.float64) * 0.8 + 0.1).requires_grad_()
    target = torch.zeros(2, 1, 12, 12, dtype=torch.float64)
    target[:, :, 3:8, 3:8] = 1
    target[:, :, 8, 3:8] = 0.5
    assert torch.autograd.gradcheck(lambda p: loss(p, target), (pred,), eps=1e-6, atol=1e-5, rtol=1e-4)


def test_video_beta_weights_and_clip_weights():
    """Video --beta (design §6.3): BETA weighs a clip's salient pixels by N_neg / (BETA N_pos) (background 1, the
    mean in between), counted over the whole clip; NAME BETA weighs whole clips in BCE and IoU."""
    from models.losses import bce_ssim_iou_loss, clip_bce_weights

    target = torch.zeros(4, 1, 2, 5)  # 2 clips of 2 frames
    target[0, 0, 0, :2] = 1.0  # clip 0: 2 positives, frame 1 one in-between pixel
    target[1, 0, 1, 0] = 0.5
    target[2:, 0, 0, 0] = 1.0  # clip 1: 2 positives (one per frame), 18 negatives
    weights = clip_bce_weights(target, nframes=2, beta=2.0)
    assert weights[0, 0, 0, 0] == pytest.approx(17 / (2 * 2)) and weights[0, 0, 1, 1] == 1.0
    assert weights[1, 0, 1, 0] == pytest.approx((17 / 4 + 1) / 2)
    assert weights[2, 0, 0, 0] == pytest.approx(18 / 4) and weights[3, 0, 0, 0] == pytest.approx(18 / 4)
    pred = torch.rand(4, 1, 2, 5, generator=torch.Generator().manual_seed(0)) * 0.9 + 0.05
    ones = torch.ones(4)
    assert torch.equal(bce_ssim_iou_loss(pred, target, frame_weights=ones), bce_ssim_iou_loss(pred, target))
    heavier = bce_ssim_iou_loss(pred, target, frame_weights=torch.tensor([2.0, 2.0, 1.0, 1.0]))
    assert heavier > bce_ssim_iou_loss(pred, target)
