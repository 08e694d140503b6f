"""The context measures, equal to PySODMetrics 1.6.2 (``py_sod_metrics.context_measure``).

Wang et al., "Context-measure: Contextualizing Metric for Camouflage", arXiv 2512.07076, 2025. `ContextMeasure`
weighs, with a Gaussian kernel shaped by the spread of the GT's pixels, how much of the prediction lies in the GT's
context (forward inference) and how much of the GT the prediction's context covers (reverse deduction), and combines
them F-measure-like (``beta2``). `CamouflageContextMeasure` also weighs each GT pixel by how well the object blends
with the background around it (the camouflage degree): every 7x7 patch of the object is matched to its nearest
background patch within 20 pixels of the object (Lab colours and scaled positions), the object is rebuilt from the
matches, and the CIEDE2000 colour difference between the rebuilt and the real object sets the degree. The filters
are OpenCV's, as in PySODMetrics; the nearest patches are an exact search in float64 with scikit-learn's distance
arithmetic; the Lab conversion and CIEDE2000 follow scikit-image's formulas. CPU, NumPy.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import torch

from Evaluation.batch import EPS, ArrayLike, PerMapMean, PreparedBatch, prepare_batch

__all__ = ["ContextMeasure", "CamouflageContextMeasure", "rgb_to_lab", "ciede2000"]


def _kernel_parameters(gt: np.ndarray, alpha: float) -> tuple[np.ndarray, int, int]:
    """The kernel's covariance (2, 2) and half-sizes (rows, columns) from the GT pixels' covariance, scaled to a
    total standard deviation of ``alpha``."""
    points = np.argwhere(gt > 0)
    if len(points) <= 1:
        return np.diag([0.25, 0.25]), 1, 1
    cov = np.cov(points, rowvar=False)
    cov[0, 0] = cov[0, 0] or EPS  # a line of pixels: keep the matrix invertible
    cov[1, 1] = cov[1, 1] or EPS
    sigma_rows, sigma_cols, total = np.sqrt(cov[0, 0]), np.sqrt(cov[1, 1]), np.sqrt(cov[0, 0] + cov[1, 1])
    return (alpha**2 * cov / total**2, round(3 * (alpha * sigma_rows / total)),
            round(3 * (alpha * sigma_cols / total)))


def _gaussian_kernel(cov: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """The normalised Gaussian (2 rows + 1, 2 cols + 1) of covariance ``cov`` (rows first)."""
    x, y = np.meshgrid(np.arange(-rows, rows + 1), np.arange(-cols, cols + 1), indexing="ij")
    offsets = np.stack([x, y], axis=-1)
    exponent = np.einsum("...i,ij,...j->...", offsets, np.linalg.inv(cov), offsets)
    kernel = np.exp(-0.5 * exponent) / (2 * np.pi * np.sqrt(np.linalg.det(cov)))
    return kernel / kernel.sum()


def context_score(pred: np.ndarray, gt: np.ndarray, degree: np.ndarray, beta2: float, alpha: float) -> float:
    """The context measure of one map: ``pred`` (H, W) float64 in [0, 1], ``gt`` (H, W) float64 0/1, ``degree``
    (H, W) float64 camouflage degree (zeros for `ContextMeasure`)."""
    kernel = _gaussian_kernel(*_kernel_parameters(gt, alpha))
    relevance = cv2.filter2D(gt.astype(np.float32), cv2.CV_32F, kernel)  # float32, as PySODMetrics
    forward = (pred > 0) * relevance
    mean_forward = np.sum(forward * pred) / (np.sum(pred) + EPS)
    completeness = 1 - np.exp(-1 * cv2.filter2D(pred, -1, kernel))
    reverse = math.e / (math.e - 1) * gt * completeness
    weighted_reverse = np.sum(reverse * (gt + degree)) / (np.sum(gt) + np.sum(degree) + EPS)
    return (1 + beta2) * mean_forward * weighted_reverse / (beta2 * mean_forward + weighted_reverse + EPS)


class ContextMeasure(PerMapMean):
    """The context measure averaged over maps (PySODMetrics' class): ``beta2`` weighs forward inference against
    reverse deduction, ``alpha`` the kernel's spread; ``step(pred, gt)`` with uint8 maps, (H, W) or (B, H, W);
    ``get_results()`` -> {'cm': float}."""

    key = "cm"

    def __init__(self, beta2: float = 1.0, alpha: float = 6.0, device: torch.device | str = "cpu") -> None:
        super().__init__(device)
        self.beta2, self.alpha = beta2, alpha

    def update(self, batch: PreparedBatch, images: list[np.ndarray] | None = None) -> None:
        """Add a `PreparedBatch` (shared with the other metrics of an evaluation); ``images``: the RGB images,
        for the camouflage measure."""
        values, preds, fgs = batch.values.cpu().numpy(), batch.pred.long().cpu().numpy(), batch.fg.cpu().numpy()
        for b in range(preds.shape[0]):
            gt = fgs[b].astype(np.float64)
            degree = self._degree(images[b], gt) if images is not None else np.zeros_like(gt)
            self.total += context_score(values[b][preds[b]], gt, degree, self.beta2, self.alpha)
            self.count += 1

    def _degree(self, image: np.ndarray, gt: np.ndarray) -> np.ndarray:
        return np.zeros_like(gt)


# --- the camouflage degree -------------------------------------------------------------------------------------------

# scikit-image's sRGB (D65) -> XYZ matrix and the D65 2-degree white point
_XYZ_FROM_RGB = np.array([[0.412453, 0.357580, 0.180423], [0.212671, 0.715160, 0.072169],
                          [0.019334, 0.119193, 0.950227]])
_WHITE = np.array([0.95047, 1.0, 1.08883])


def rgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """CIE Lab (..., 3) float64 of uint8 sRGB colours (..., 3), with scikit-image's constants (``rgb2lab``)."""
    linear = rgb.astype(np.float64) / 255
    linear = np.where(linear > 0.04045, ((linear + 0.055) / 1.055) ** 2.4, linear / 12.92)
    xyz = linear @ _XYZ_FROM_RGB.T / _WHITE
    f = np.where(xyz > 0.008856, np.cbrt(xyz), 7.787 * xyz + 16.0 / 116.0)
    x, y, z = f[..., 0], f[..., 1], f[..., 2]
    return np.stack([116.0 * y - 16.0, 500.0 * (x - y), 200.0 * (y - z)], axis=-1)


def ciede2000(lab1: np.ndarray, lab2: np.ndarray) -> np.ndarray:
    """The CIEDE2000 colour difference (...) of Lab colours (..., 3), kL = kC = kH = 1 (Sharma et al. 2005, as
    scikit-image's ``deltaE_ciede2000`` computes it)."""
    l1, a1, b1 = np.moveaxis(lab1, -1, 0)
    l2, a2, b2 = np.moveaxis(lab2, -1, 0)
    chroma = 0.5 * (np.hypot(a1, b1) + np.hypot(a2, b2))
    c7 = chroma**7
    scale = 1 + 0.5 * (1 - np.sqrt(c7 / (c7 + 25**7)))
    c1, c2 = np.hypot(a1 * scale, b1), np.hypot(a2 * scale, b2)
    h1, h2 = np.arctan2(b1, a1 * scale) % (2 * np.pi), np.arctan2(b2, a2 * scale) % (2 * np.pi)

    mean_l = 0.5 * (l1 + l2)
    l_term = (l2 - l1) / (1 + 0.015 * (mean_l - 50) ** 2 / np.sqrt(20 + (mean_l - 50) ** 2))
    mean_c = 0.5 * (c1 + c2)
    c_term = (c2 - c1) / (1 + 0.045 * mean_c)

    product = c1 * c2
    h_diff, h_sum = h2 - h1, h1 + h2
    dh = np.where(h_diff > np.pi, h_diff - 2 * np.pi, np.where(h_diff < -np.pi, h_diff + 2 * np.pi, h_diff))
    dh = np.where(product == 0, 0.0, dh)
    dh_term = 2 * np.sqrt(product) * np.sin(dh / 2)
    wrap = (product != 0) & (np.abs(h_diff) > np.pi)
    mean_h = np.where(wrap & (h_sum < 2 * np.pi), h_sum + 2 * np.pi, np.where(wrap, h_sum - 2 * np.pi, h_sum))
    mean_h = np.where(product == 0, mean_h * 2, mean_h) * 0.5
    t = (1 - 0.17 * np.cos(mean_h - np.deg2rad(30)) + 0.24 * np.cos(2 * mean_h)
         + 0.32 * np.cos(3 * mean_h + np.deg2rad(6)) - 0.20 * np.cos(4 * mean_h - np.deg2rad(63)))
    h_term = dh_term / (1 + 0.015 * mean_c * t)

    c7 = mean_c**7
    rotation = 2 * np.sqrt(c7 / (c7 + 25**7))
    dtheta = np.deg2rad(30) * np.exp(-(((np.rad2deg(mean_h) - 275) / 25) ** 2))
    r_term = -np.sin(2 * dtheta) * rotation * c_term * h_term
    return np.sqrt(np.maximum(l_term**2 + c_term**2 + h_term**2 + r_term, 0))


def _patches(image: np.ndarray, mask: np.ndarray, size: int, step: int) -> tuple[np.ndarray, np.ndarray]:
    """The top-left corners (N, 2) and flattened pixels (N, size * size * C) of the ``size`` x ``size`` patches,
    every ``step`` pixels, lying wholly inside ``mask``; the image reflected (and the mask zero-padded) at the
    bottom and right to fit whole steps."""
    h, w, channels = image.shape
    pad_h, pad_w = (step - (h - size) % step) % step, (step - (w - size) % step) % step
    image = np.pad(image, ((0, pad_h), (0, pad_w), (0, 0)), mode="reflect")
    mask = np.pad(mask, ((0, pad_h), (0, pad_w)), mode="constant")
    windows = np.lib.stride_tricks.sliding_window_view(image, (size, size, channels))[::step, ::step, 0]
    mask_windows = np.lib.stride_tricks.sliding_window_view(mask, (size, size))[::step, ::step]
    rows, cols = np.meshgrid(np.arange(0, image.shape[0] - size + 1, step),
                             np.arange(0, image.shape[1] - size + 1, step), indexing="ij")
    corners = np.column_stack((rows.ravel(), cols.ravel()))
    inside = np.all(mask_windows.reshape(-1, size, size) > 0, axis=(1, 2))
    return corners[inside], windows.reshape(-1, size * size * channels)[inside]


def _nearest(candidates: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """Index of the nearest candidate row for every query row (euclidean), float64 with scikit-learn's arithmetic
    (squared norms minus twice the dot product), first index on ties."""
    candidates, queries = candidates.astype(np.float64), queries.astype(np.float64)
    squared = (queries**2).sum(1)[:, None] - 2 * queries @ candidates.T + (candidates**2).sum(1)[None]
    return np.argmin(squared, axis=1)


class CamouflageContextMeasure(ContextMeasure):
    """The camouflage context measure averaged over maps (PySODMetrics' class): ``beta2`` (1.2), ``alpha``,
    ``gamma`` (the degree's exponential scale), ``lambda_spatial`` (the weight of position in the patch search);
    ``step(pred, gt, img=rgb)`` with uint8 maps and the (H, W, 3) uint8 RGB image; ``get_results()`` ->
    {'ccm': float}."""

    key = "ccm"

    def __init__(self, beta2: float = 1.2, alpha: float = 6.0, gamma: int = 8, lambda_spatial: float = 20,
                 device: torch.device | str = "cpu") -> None:
        super().__init__(beta2, alpha, device)
        self.gamma, self.lambda_spatial = gamma, lambda_spatial

    def step(self, pred: ArrayLike, gt: ArrayLike, *, img: np.ndarray, normalize: bool = True) -> None:
        self.update(prepare_batch(pred, gt, self.device, normalize), [np.asarray(img)])

    def update(self, batch: PreparedBatch, images: list[np.ndarray] | None = None) -> None:
        if images is None or len(images) != batch.pred.shape[0]:
            raise ValueError("CamouflageContextMeasure needs the RGB image of every map")
        super().update(batch, images)

    def _degree(self, image: np.ndarray, gt: np.ndarray, size: int = 7) -> np.ndarray:
        """The camouflage degree (H, W) float64 of the object ``gt`` in the RGB ``image``."""
        fg = (gt > 0).astype(np.uint8)
        bg = cv2.dilate(fg, np.ones((20, 20), np.uint8), iterations=1) - fg  # the background around the object
        lab = cv2.cvtColor(image, cv2.COLOR_RGB2LAB)
        fg_corners, fg_patches = _patches(lab * fg[:, :, None], fg, size, size // 2)
        bg_corners, bg_patches = _patches(lab * bg[:, :, None], bg, size, size // 2)
        if len(fg_corners) == 0 or len(bg_corners) == 0:
            return np.zeros_like(gt)
        coords = np.vstack([bg_corners, fg_corners]).astype(np.float64)
        spread = coords.std(0)
        scaled = (coords - coords.mean(0)) / np.where(spread == 0, 1.0, spread)  # StandardScaler
        spatial = (self.lambda_spatial * scaled).astype(np.float32)
        candidates = np.hstack([bg_patches, spatial[:len(bg_corners)]]).astype(np.float32)
        queries = np.hstack([fg_patches, spatial[len(bg_corners):]]).astype(np.float32)
        match = bg_corners[_nearest(candidates, queries)]

        # the object rebuilt from the matched background patches (RGB), averaged where patches overlap
        h, w = gt.shape
        background = bg[:, :, None] * image
        rebuilt = np.zeros(image.shape, dtype=np.int64)
        counts = np.zeros((h, w)) + EPS
        to_rows, to_cols = np.clip(fg_corners[:, 0], 0, h - size), np.clip(fg_corners[:, 1], 0, w - size)
        from_rows, from_cols = np.clip(match[:, 0], 0, h - size), np.clip(match[:, 1], 0, w - size)
        for r, c, fr, fc in zip(to_rows, to_cols, from_rows, from_cols):
            rebuilt[r:r + size, c:c + size] += background[fr:fr + size, fc:fc + size]
            counts[r:r + size, c:c + size] += 1
        rebuilt = np.round(rebuilt / counts[:, :, None]).astype(np.uint8)

        # the degree is 0 off the object whatever the similarity there, so the colours are compared on it only
        inside = fg != 0
        similarity = np.zeros(gt.shape)
        similarity[inside] = 1 - np.clip(ciede2000(rgb_to_lab(rebuilt[inside]), rgb_to_lab(image[inside])) / 100, 0, 1)
        return (np.exp(self.gamma * similarity * fg) - 1) / (np.exp(self.gamma) - 1)
