"""Training losses: weighted BCE for still images (design §6.1) and BCE + (1 - SSIM) + IoU for clips (design §6.3).

All functions take sigmoid maps ``pred`` and ground truth ``target`` in [0, 1] of shape (N, 1, H, W), where N is
the batch size for images and B*T frames for clips, and return a scalar tensor. Pure torch, differentiable in
``pred``.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

__all__ = [
    "bce_weights",
    "weighted_bce_loss",
    "gaussian_window",
    "ssim",
    "iou_loss",
    "clip_bce_weights",
    "bce_ssim_iou_loss",
    "video_loss",
    "image_training_loss",
    "video_training_loss",
]

# GT values above/below these count as salient/background when balancing the BCE (continuous GT after resizing
# has a band of in-between values that gets the mean of the two weights).
POSITIVE_THRESHOLD = 0.8
NEGATIVE_THRESHOLD = 0.01
SSIM_C1 = 0.01**2
SSIM_C2 = 0.03**2


def bce_weights(target: torch.Tensor, beta: float = 1.1) -> torch.Tensor:
    """Per-pixel class-balancing weights of the image loss, computed per image.

    target: (N, 1, H, W) in [0, 1]. With N_pos = #(GT > 0.8) and N_neg = #(GT < 0.01) counted per image,
    positives get w_pos = N_neg / (N_pos + N_neg), negatives w_neg = beta * N_pos / (N_pos + N_neg), and all other
    pixels (w_pos + w_neg) / 2. Returns a tensor shaped like ``target``. An image with no pixel in either class
    (never the case for real GT) gets all-zero weights instead of NaN.
    """
    positive = target > POSITIVE_THRESHOLD
    negative = target < NEGATIVE_THRESHOLD
    dims = tuple(range(1, target.dim()))
    shape = (-1,) + (1,) * (target.dim() - 1)
    num_pos = positive.sum(dim=dims).to(target.dtype).view(shape)
    num_neg = negative.sum(dim=dims).to(target.dtype).view(shape)
    total = (num_pos + num_neg).clamp(min=1)
    w_pos = num_neg / total
    w_neg = beta * num_pos / total
    weights = ((w_pos + w_neg) / 2).expand_as(target).clone()
    weights = torch.where(positive, w_pos.expand_as(target), weights)
    weights = torch.where(negative, w_neg.expand_as(target), weights)
    return weights


def weighted_bce_loss(
    pred: torch.Tensor, target: torch.Tensor, beta: float = 1.1, divisor: float | None = None
) -> torch.Tensor:
    """Class-balanced BCE of SDNet training (design §6.1): sum over all pixels of the batch, divided by ``divisor``.

    pred, target: (N, 1, H, W) in [0, 1]. Weights from :func:`bce_weights` (no gradient through them). PyTorch's
    ``binary_cross_entropy`` clamps the log terms at -100, as in the authors' training. ``divisor`` defaults to N;
    the training scripts pass the nominal per-process batch size so a smaller last batch is divided by the same
    constant, as in the released code.
    """
    weights = bce_weights(target.detach(), beta)
    total = F.binary_cross_entropy(pred, target, weight=weights, reduction="sum")
    return total / (pred.shape[0] if divisor is None else divisor)


def gaussian_window(size: int = 11, sigma: float = 1.5, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Normalised 2-D Gaussian window (size, size), centre (size // 2), sum 1 (outer product of the 1-D one)."""
    centre = size // 2
    g = torch.tensor([math.exp(-((i - centre) ** 2) / (2 * sigma**2)) for i in range(size)], dtype=torch.float64)
    g = g / g.sum()
    return torch.outer(g, g).to(dtype)


def ssim(pred: torch.Tensor, target: torch.Tensor, window_size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Mean SSIM over all pixels, channels and maps (the form used in DCFNet's / BASNet's training losses).

    pred, target: (N, C, H, W). Local statistics come from a depthwise convolution with the Gaussian window and
    zero padding ``window_size // 2``; variances are E[x^2] - mu^2; C1 = 0.01^2, C2 = 0.03^2.
    """
    channels = pred.shape[1]
    window = gaussian_window(window_size, sigma, pred.dtype).to(pred.device)
    window = window.expand(channels, 1, window_size, window_size).contiguous()
    pad = window_size // 2

    def local_mean(x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, window, padding=pad, groups=channels)

    mu_p, mu_t = local_mean(pred), local_mean(target)
    var_p = local_mean(pred * pred) - mu_p * mu_p
    var_t = local_mean(target * target) - mu_t * mu_t
    cov = local_mean(pred * target) - mu_p * mu_t
    numerator = (2 * mu_p * mu_t + SSIM_C1) * (2 * cov + SSIM_C2)
    denominator = (mu_p * mu_p + mu_t * mu_t + SSIM_C1) * (var_p + var_t + SSIM_C2)
    return (numerator / denominator).mean()


def iou_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Soft IoU loss averaged over maps: mean_n [1 - sum(P G) / (sum G + sum P - sum(P G))], no epsilon.

    pred, target: (N, 1, H, W). An empty GT with an all-zero prediction would divide by zero, as in the original;
    sigmoid outputs are never exactly zero, so this does not happen in training.
    """
    dims = tuple(range(1, pred.dim()))
    intersection = (pred * target).sum(dim=dims)
    union = target.sum(dim=dims) + pred.sum(dim=dims) - intersection
    return (1 - intersection / union).mean()


def clip_bce_weights(target: torch.Tensor, nframes: int, beta: float) -> torch.Tensor:
    """Video ``--beta`` pixel weights (design §6.3), counted per clip of ``nframes`` frames: 1 for GT < 0.01,
    N_neg / (beta N_pos) for GT > 0.8, their mean in between. target: (B*T, 1, H, W); a clip without positive
    pixels counts one (no division by zero)."""
    clips = target.reshape(-1, nframes * target[0].numel())
    num_pos = (clips > POSITIVE_THRESHOLD).sum(1, keepdim=True).clamp(min=1).to(target.dtype)
    num_neg = (clips < NEGATIVE_THRESHOLD).sum(1, keepdim=True).to(target.dtype)
    w_pos = num_neg / (beta * num_pos)
    weights = torch.where(clips > POSITIVE_THRESHOLD, w_pos, torch.where(clips < NEGATIVE_THRESHOLD, 1.0,
                                                                          (w_pos + 1) / 2))
    return weights.reshape(target.shape)


def bce_ssim_iou_loss(pred: torch.Tensor, target: torch.Tensor, frame_weights: torch.Tensor | None = None,
                      pixel_weights: torch.Tensor | None = None) -> torch.Tensor:
    """STDNet training loss (design §6.3): BCE (mean over all pixels) + (1 - SSIM) + IoU (mean over frames).

    pred, target: (B*T, 1, H, W) maps of all frames of the batch. Unweighted by default; the video ``--beta``
    options weight the BCE pixels (``pixel_weights``, shaped like ``target``) or every frame's BCE and IoU terms
    (``frame_weights``, (B*T,)).
    """
    weights = pixel_weights
    if frame_weights is not None:
        weights = frame_weights.view(-1, 1, 1, 1).expand_as(target)
    bce = F.binary_cross_entropy(pred, target, weight=weights, reduction="mean")
    if frame_weights is None:
        return bce + (1 - ssim(pred, target)) + iou_loss(pred, target)
    dims = tuple(range(1, pred.dim()))
    intersection = (pred * target).sum(dim=dims)
    iou = 1 - intersection / (target.sum(dim=dims) + pred.sum(dim=dims) - intersection)
    return bce + (1 - ssim(pred, target)) + (frame_weights * iou).mean()


def video_loss(pred, target, clip_weights=None, *, nframes: int, beta: float | None = None, iter_size: int = 1):
    """BCE + (1 - SSIM) + IoU of (B*T, 1, S, S) maps against (B, T, 1, S, S) targets (frame t of clip b at row
    b*T + t); ``beta``: per-clip pixel weights (``--beta BETA``); ``clip_weights`` (B,): the clips' weights
    (``--beta NAME BETA``). Each term is a mean over the batch (a sum divided by B), so dividing by ``iter_size``
    divides the sum by B x iter-size, as the image loss: ``iter_size`` accumulated batches give the gradient of
    one batch that many times larger."""
    target = target.reshape(pred.shape)
    pixels = clip_bce_weights(target, nframes, beta) if beta is not None else None
    frames = clip_weights.repeat_interleave(nframes) if clip_weights is not None else None
    return bce_ssim_iou_loss(pred, target, frame_weights=frames, pixel_weights=pixels) / iter_size


def image_training_loss(batch: int, *, beta: float, iter_size: int):
    """The loss of image training for ``batch`` images per process: weighted BCE divided by batch x iter-size
    (also for a smaller last batch, as in the release)."""
    return functools.partial(weighted_bce_loss, beta=beta, divisor=batch * iter_size)


def video_training_loss(batch: int, *, nframes: int, beta: float | None, iter_size: int):
    """The loss of video training (`video_loss`); ``batch`` is unused: each term is already a mean over clips."""
    return functools.partial(video_loss, nframes=nframes, beta=beta, iter_size=iter_size)
