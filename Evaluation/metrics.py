"""Salient object detection metrics in torch, equal to PySODMetrics 1.6.2 (``py_sod_metrics.sod_metrics``).

Each metric is a small accumulator with ``step(pred, gt)`` and ``get_results()`` (same result dictionaries as
PySODMetrics), running on any torch device and keeping only running sums, so memory does not grow with the number
of images. Inputs are uint8 grey maps, (H, W) or a batch (B, H, W) of equal size; as in PySODMetrics the GT is
binarised at ``gt > 128`` and the prediction min-max normalised after ``/ 255`` (unless constant).

How it is fast: a uint8 prediction has at most 256 distinct values, so every metric except the weighted F-measure
is computed exactly from per-image histograms of (grey level, GT class[, S-measure quadrant]) — one ``bincount``
per batch — and a 256-entry table of the normalised value of each grey level. That table and every statistic
derived from the histograms are computed in float64 with the same IEEE operations as NumPy, so the uint8
quantisation of the curves and the adaptive thresholds are bit-identical to PySODMetrics; ``dtype`` (float32 by
default) is the type of the per-pixel maps of the weighted F-measure. Dataset sums are always float64.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from Evaluation.spatial import gaussian_filter, replace_with_nearest_foreground_, squared_distance_to_foreground

__all__ = [
    "PreparedBatch", "prepare_batch", "MAE", "Fmeasure", "Emeasure", "Smeasure", "WeightedFmeasure",
    "SODMetrics", "average_over_videos", "SUMMARY_KEYS", "quadrant_ssim", "object_similarity",
]

# MATLAB's eps, as PySODMetrics uses it (np.spacing(1)).
EPS = float(np.spacing(1))
LEVELS = 256
SUMMARY_KEYS = ("MAE", "maxF", "meanF", "adpF", "wF", "Sm", "maxE", "meanE", "adpE")

ArrayLike = np.ndarray | torch.Tensor


def _as_batch(array: ArrayLike, name: str, device: torch.device) -> torch.Tensor:
    tensor = torch.from_numpy(np.ascontiguousarray(array)) if isinstance(array, np.ndarray) else array
    if tensor.dtype != torch.uint8:
        raise TypeError(f"{name} must be uint8 (grey levels 0-255), got {tensor.dtype}")
    if tensor.dim() == 2:
        tensor = tensor[None]
    if tensor.dim() != 3:
        raise ValueError(f"{name} must be (H, W) or (B, H, W), got shape {tuple(tensor.shape)}")
    return tensor.to(device, non_blocking=True).contiguous()


@dataclass
class PreparedBatch:
    """A batch of prediction/GT pairs with the per-image tables that all metrics share.

    ``pred`` and ``gt`` (B, H, W) uint8 raw grey levels; ``fg`` (B, H, W) bool GT (``gt > 128``); ``values``
    (B, 256) float64: the normalised prediction value of each grey level (PySODMetrics' ``mapminmax(pred / 255)``);
    ``bins`` (B, 256) int64: the uint8 bin of each grey level after normalisation (``(pred * 255).astype(uint8)``,
    truncation); ``fg_count`` (B,) int64. Histograms are computed on first use and cached.
    """

    pred: torch.Tensor
    gt: torch.Tensor
    fg: torch.Tensor
    values: torch.Tensor
    bins: torch.Tensor
    fg_count: torch.Tensor
    _index: torch.Tensor | None = field(default=None, repr=False)
    _quadrants: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = field(default=None, repr=False)
    _joint: torch.Tensor | None = field(default=None, repr=False)

    @property
    def numel(self) -> int:
        return self.pred.shape[1] * self.pred.shape[2]

    @property
    def cells(self) -> int:
        """Histogram cells per image of the current `pixel_index` (quadrants x GT classes x grey levels)."""
        return (8 if self._quadrants is not None else 2) * LEVELS

    def pixel_index(self, quadrants: bool = False) -> torch.Tensor:
        """(B, H, W) int32 flat index of each pixel's histogram cell: ((image * Q + quadrant) * 2 + GT class) * 256 +
        grey level, with Q = 4 S-measure quadrants if ``quadrants`` (then the split is the GT centroid) else Q = 1.
        A quadrant index, once built, is reused (its cells refine the plain ones)."""
        if self._index is not None and (self._quadrants is not None or not quadrants):
            return self._index
        batch, height, width = self.pred.shape
        device = self.pred.device
        cells = (8 if quadrants else 2) * LEVELS
        image_base = (torch.arange(batch, device=device, dtype=torch.int32) * cells)[:, None]
        row_part, col_part = image_base, torch.zeros((batch, 1), device=device, dtype=torch.int32)
        if quadrants:
            cy, cx = self._centroid()
            row_part = image_base + (torch.arange(height, device=device)[None] >= cy[:, None]).int() * (4 * LEVELS)
            col_part = (torch.arange(width, device=device)[None] >= cx[:, None]).int() * (2 * LEVELS)
            self._quadrants = (None, cy, cx)
        index = row_part[:, :, None] + col_part[:, None, :]
        index = index.expand(batch, height, width).contiguous() if index.shape[1:] != (height, width) else index
        index.add_(self.pred).add_(self.fg, alpha=LEVELS)
        self._index = index
        return index

    def _centroid(self) -> tuple[torch.Tensor, torch.Tensor]:
        height, width = self.pred.shape[1:]
        device = self.pred.device
        fg_count = self.fg_count.to(torch.float64)
        fg = self.fg.view(torch.uint8)  # uint8 sums with an int32 accumulator are much faster than bool sums
        row_sum = (fg.sum(2, dtype=torch.int32) * torch.arange(height, device=device)).sum(1)
        col_sum = (fg.sum(1, dtype=torch.int32) * torch.arange(width, device=device)).sum(1)
        # np.round (half to even) of the mean foreground coordinate; +1 because MATLAB's 1:X includes X.
        cy = torch.where(self.fg_count > 0, torch.round(row_sum / fg_count), round(height / 2)).long() + 1
        cx = torch.where(self.fg_count > 0, torch.round(col_sum / fg_count), round(width / 2)).long() + 1
        return cy, cx

    def quadrant_histogram(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Counts (B, 4, 2, 256) by S-measure quadrant (top-left, top-right, bottom-left, bottom-right), GT class
        and grey level, with the quadrant split (B,) row ``cy`` and column ``cx`` (MATLAB's 1-based centroid)."""
        if self._quadrants is None or self._quadrants[0] is None:
            index = self.pixel_index(quadrants=True)
            batch = index.shape[0]
            hist = torch.bincount(index.view(-1), minlength=batch * 8 * LEVELS).view(batch, 4, 2, LEVELS)
            self._quadrants = (hist, *self._quadrants[1:])
        return self._quadrants

    def joint_histogram(self) -> torch.Tensor:
        """Counts (B, 2, 256) by GT class (0 background, 1 foreground) and raw grey level."""
        if self._joint is None:
            if self._quadrants is not None:
                self._joint = self.quadrant_histogram()[0].sum(1)
            else:
                index = self.pixel_index()
                batch = index.shape[0]
                self._joint = torch.bincount(index.view(-1), minlength=batch * 2 * LEVELS).view(batch, 2, LEVELS)
        return self._joint

    def cell_table(self, per_level: torch.Tensor) -> torch.Tensor:
        """Expand a (B, 2, 256) table (by GT class and grey level) to the cells of `pixel_index`, flattened, so
        that ``cell_table(t).index_select(0, pixel_index().view(-1))`` maps it onto the pixels."""
        batch = per_level.shape[0]
        quadrants = 4 if self._quadrants is not None else 1
        return per_level[:, None].expand(batch, quadrants, 2, LEVELS).reshape(-1)

    def mean_prediction(self) -> torch.Tensor:
        """Mean normalised prediction per image, (B,) float64."""
        return mean_prediction(self.joint_histogram(), self.values, self.numel)

    def threshold_counts(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Foreground and background pixel counts with uint8 bin >= t, (B, 256) int64 each, in PySODMetrics' order
        (index 0 is threshold 255, index 255 threshold 0)."""
        return threshold_counts(self.joint_histogram(), self.bins)

    def adaptive_counts(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Foreground and background pixel counts (B,) at or above the adaptive threshold min(2 * mean, 1)."""
        return adaptive_counts(self.joint_histogram(), self.values, self.numel)


def mean_prediction(joint: torch.Tensor, values: torch.Tensor, numel: int) -> torch.Tensor:
    """Mean prediction (N,) float64 of N maps of ``numel`` pixels from their counts (N, 2, L) by GT class and level
    and the value (N, L) float64 of each level."""
    return (joint.sum(1).to(torch.float64) * values).sum(1) / numel


def threshold_counts(joint: torch.Tensor, bins: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Foreground and background counts (N, 256) int64 of the pixels whose uint8 bin is >= t, index 0 = threshold
    255 (PySODMetrics' order), from counts (N, 2, L) by GT class and level and the bin (N, L) int64 of each level."""
    binned = torch.zeros(joint.shape[:2] + (LEVELS,), dtype=joint.dtype, device=joint.device)
    binned.scatter_add_(2, bins[:, None, :].expand_as(joint), joint)
    cumulative = binned.flip(2).cumsum(2)
    return cumulative[:, 1], cumulative[:, 0]


def adaptive_counts(joint: torch.Tensor, values: torch.Tensor, numel: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Foreground and background counts (N,) of the pixels at or above the adaptive threshold min(2 * mean, 1)."""
    threshold = torch.clamp(2 * mean_prediction(joint, values, numel), max=1.0)
    above = (values >= threshold[:, None]).long()
    return (joint[:, 1] * above).sum(1), (joint[:, 0] * above).sum(1)


def prepare_batch(pred: ArrayLike, gt: ArrayLike, device: torch.device | str | None = None,
                  normalize: bool = True) -> PreparedBatch:
    """Validate a pair (or batch of pairs) of uint8 maps, (H, W) or (B, H, W), and build their `PreparedBatch` on
    ``device`` (default: the device of ``pred`` if it is a tensor, else the CPU). ``normalize`` is PySODMetrics'
    switch, which must stay True here: the maps are normalised as PySODMetrics does, float maps are not taken."""
    if not normalize:
        raise ValueError("Evaluation's measures take uint8 maps and normalise them as PySODMetrics does "
                         "(normalize=True)")
    if device is None:
        device = pred.device if isinstance(pred, torch.Tensor) else torch.device("cpu")
    device = torch.device(device)
    pred_t, gt_t = _as_batch(pred, "pred", device), _as_batch(gt, "gt", device)
    if pred_t.shape != gt_t.shape:
        raise ValueError(f"shape mismatch between prediction {tuple(pred_t.shape)} and ground truth "
                         f"{tuple(gt_t.shape)}")
    fg = gt_t > 128
    flat = pred_t.view(pred_t.shape[0], -1)
    low = flat.amin(1).to(torch.float64)[:, None] / 255
    high = flat.amax(1).to(torch.float64)[:, None] / 255
    grey = torch.arange(LEVELS, device=device, dtype=torch.float64)[None] / 255
    # The exact NumPy operation sequence of prepare_data: pred / 255, then (pred - min) / (max - min).
    values = torch.where(high != low, (grey - low) / (high - low), grey)
    bins = (values * 255).to(torch.uint8).long()
    fg_count = fg.view(torch.uint8).sum(2, dtype=torch.int32).sum(1, dtype=torch.int64)
    return PreparedBatch(pred_t, gt_t, fg, values, bins, fg_count)


class _Accumulator:
    """Shared plumbing: device, dtype, image count, running float64 sums."""

    def __init__(self, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> None:
        if dtype not in (torch.float32, torch.float64):
            raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
        self.device = torch.device(device)
        self.dtype = dtype
        self.count = 0
        self._sums: dict[str, torch.Tensor] = {}

    def step(self, pred: ArrayLike, gt: ArrayLike, normalize: bool = True) -> None:
        """Add one pair (H, W) or a batch (B, H, W) of uint8 prediction / GT maps (`prepare_batch`)."""
        self.update(prepare_batch(pred, gt, self.device, normalize))

    def update(self, batch: PreparedBatch) -> None:
        raise NotImplementedError

    def _add(self, name: str, per_image: torch.Tensor) -> None:
        total = per_image.to(torch.float64).sum(0)
        self._sums[name] = self._sums[name] + total if name in self._sums else total

    def merge(self, other: _Accumulator) -> None:
        """Add the maps of ``other`` (the same metric, e.g. from another process) to this accumulator."""
        for name, total in other._sums.items():
            self._add(name, total.to(self.device)[None])
        self.count += other.count

    def _mean(self, name: str) -> np.ndarray | float:
        if self.count == 0 or name not in self._sums:
            return float("nan")
        mean = (self._sums[name] / self.count).cpu().numpy()
        return float(mean) if mean.ndim == 0 else mean


class MAE(_Accumulator):
    """Mean absolute error between the normalised prediction and the binary GT, averaged over images.

    Perazzi et al., "Saliency filters: Contrast based filtering for salient region detection", CVPR 2012.
    """

    def update(self, batch: PreparedBatch) -> None:
        joint = batch.joint_histogram().to(torch.float64)
        error = (joint[:, 0] * batch.values + joint[:, 1] * (1 - batch.values)).sum(1) / batch.numel
        self._add("mae", error)
        self.count += error.shape[0]

    def get_results(self) -> dict:
        """``{'mae': float}``."""
        return {"mae": self._mean("mae")}


class Fmeasure(_Accumulator):
    """F-measure (beta^2 = ``beta`` = 0.3): adaptive (threshold min(2 * mean, 1)) and the curve over the 256 uint8
    thresholds, with the precision and recall curves; per-image values averaged over images.

    Achanta et al., "Frequency-tuned salient region detection", CVPR 2009. Index 0 of the curves is threshold 255.
    """

    def __init__(self, beta: float = 0.3, device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32) -> None:
        super().__init__(device, dtype)
        self.beta = beta

    def update(self, batch: PreparedBatch) -> None:
        fg_count = batch.fg_count.to(torch.float64)
        true_pos, false_pos = (counts.to(torch.float64) for counts in batch.threshold_counts())
        positives = true_pos + false_pos
        precision = true_pos / torch.where(positives == 0, 1, positives)
        recall = true_pos / torch.clamp(fg_count, min=1)[:, None]
        numerator = (1 + self.beta) * precision * recall
        curve = numerator / torch.where(numerator == 0, 1.0, self.beta * precision + recall)

        hit_fg, hit_bg = (counts.to(torch.float64) for counts in batch.adaptive_counts())
        pre = hit_fg / torch.clamp(hit_fg + hit_bg, min=1)
        rec = hit_fg / torch.clamp(fg_count, min=1)
        adaptive = torch.where(hit_fg == 0, 0.0, (1 + self.beta) * pre * rec / (self.beta * pre + rec))

        self._add("adp", adaptive)
        self._add("curve", curve)
        self._add("p", precision)
        self._add("r", recall)
        self.count += curve.shape[0]

    def get_results(self) -> dict:
        """``{'fm': {'adp': float, 'curve': (256,)}, 'pr': {'p': (256,), 'r': (256,)}}``."""
        return {"fm": {"adp": self._mean("adp"), "curve": self._mean("curve")},
                "pr": {"p": self._mean("p"), "r": self._mean("r")}}


def _enhanced_alignment(fg_fg: torch.Tensor, fg_bg: torch.Tensor, fg_count: torch.Tensor, numel: int) -> torch.Tensor:
    """E-measure of a binarised prediction from its pixel counts; ``fg_fg``/``fg_bg``: predicted-foreground pixels
    on GT foreground/background, (B, K) int; ``fg_count``: (B, 1) int. PySODMetrics' formula, term by term."""
    fg_fg, fg_bg = fg_fg.to(torch.float64), fg_bg.to(torch.float64)
    gt_fg = fg_count.to(torch.float64)
    pred_fg = fg_fg + fg_bg
    pred_bg = numel - pred_fg
    bg_fg = gt_fg - fg_fg
    bg_bg = pred_bg - bg_fg
    mean_pred = pred_fg / numel
    mean_gt = gt_fg / numel
    pred_terms = (1 - mean_pred, 1 - mean_pred, 0 - mean_pred, 0 - mean_pred)
    gt_terms = (1 - mean_gt, 0 - mean_gt, 1 - mean_gt, 0 - mean_gt)
    total = torch.zeros_like(pred_fg)
    for part, a, b in zip((fg_fg, fg_bg, bg_fg, bg_bg), pred_terms, gt_terms, strict=True):
        align = 2 * (a * b) / (a**2 + b**2 + EPS)
        total = total + (align + 1) ** 2 / 4 * part
    total = torch.where(fg_count == 0, pred_bg, torch.where(fg_count == numel, pred_fg, total))
    return total / (numel - 1 + EPS)


class Emeasure(_Accumulator):
    """E-measure (enhanced alignment): adaptive (threshold min(2 * mean, 1)) and the curve over the 256 uint8
    thresholds; per-image values averaged over images.

    Fan et al., "Enhanced-alignment Measure for Binary Foreground Map Evaluation", IJCAI 2018. Index 0 of the curve
    is threshold 255.
    """

    def update(self, batch: PreparedBatch) -> None:
        fg_count = batch.fg_count[:, None]
        true_pos, false_pos = batch.threshold_counts()
        curve = _enhanced_alignment(true_pos, false_pos, fg_count, batch.numel)
        hit_fg, hit_bg = batch.adaptive_counts()
        adaptive = _enhanced_alignment(hit_fg[:, None], hit_bg[:, None], fg_count, batch.numel)[:, 0]
        self._add("adp", adaptive)
        self._add("curve", curve)
        self.count += curve.shape[0]

    def get_results(self) -> dict:
        """``{'em': {'adp': float, 'curve': (256,)}}``."""
        return {"em": {"adp": self._mean("adp"), "curve": self._mean("curve")}}


def object_similarity(counts: torch.Tensor, values: torch.Tensor, eps: float = EPS,
                      one_pixel_std: float = 0.0) -> torch.Tensor:
    """The S-measure's object similarity 2 * mean / (mean^2 + 1 + std + eps) of a region, (B,) float64, from its
    grey-level counts (B, 256) and level values (B, 256) float64; std with ddof 1, ``one_pixel_std`` for a region
    of one pixel (PySODMetrics: 0; the release's torch: NaN, 0 / 0); the mean of an empty region is NaN. Both
    S-measures use it: PySODMetrics' (`Smeasure`, eps = MATLAB's eps) and the paper's (`Evaluation.release`,
    eps = 1e-20)."""
    counts = counts.to(torch.float64)
    size = counts.sum(1)
    mean = (counts * values).sum(1) / size
    variance = (counts * (values - mean[:, None]) ** 2).sum(1) / torch.clamp(size - 1, min=1)
    std = torch.where(size > 1, variance.sqrt(), one_pixel_std)
    return 2 * mean / (mean**2 + 1 + std + eps)


def quadrant_ssim(counts: torch.Tensor, values: torch.Tensor, eps: float,
                  constant_exact: bool = False) -> torch.Tensor:
    """The S-measure's region similarity of each quadrant, (B, 4) float64, from its counts (B, 4, 2, 256) float64 by
    binary GT class and prediction level and the level values (B, 256) float64: alpha / (beta + eps) with alpha =
    4 mean_x mean_y sigma_xy, beta = (mean_x^2 + mean_y^2)(sigma_x + sigma_y), sigmas over size - 1 + eps; 1 where
    alpha = beta = 0, 0 where only alpha = 0. ``constant_exact``: the deviations of absent levels and of a region of
    one level are exactly 0 (the release's float arithmetic; PySODMetrics' constant regions are `Smeasure`'s)."""
    pixels = counts.sum(2)
    size = pixels.sum(2)
    fg = counts[:, :, 1].sum(2)
    values = values[:, None, :]
    x = (pixels * values).sum(2) / size
    y = fg / size
    deviation = values - x[..., None]
    if constant_exact:
        present = pixels > 0
        deviation = torch.where(present & (present.sum(2, keepdim=True) > 1), deviation, 0.0)
    denominator = size - 1 + eps
    sigma_x = (pixels * deviation**2).sum(2) / denominator
    sigma_y = (fg * (1 - y) ** 2 + (size - fg) * y**2) / denominator
    sigma_xy = ((counts[:, :, 1] * deviation).sum(2) * (1 - y)
                - (counts[:, :, 0] * deviation).sum(2) * y) / denominator
    alpha = 4 * x * y * sigma_xy
    beta = (x**2 + y**2) * (sigma_x + sigma_y)
    return torch.where(alpha != 0, alpha / (beta + eps), torch.where(beta == 0, 1.0, 0.0))


def _numpy_mean_is_exact(value: float, rows: int, width: int, cols: slice) -> bool:
    """Whether NumPy's mean of a constant block equals the constant, for the same block shape and strides as
    PySODMetrics' quadrant view ``pred[r0:r1, c0:c1]`` of a C-contiguous (H, ``width``) float64 map."""
    return bool(np.full((rows, width), value)[:, cols].mean() == value)


class Smeasure(_Accumulator):
    """S-measure (structure measure), alpha = 0.5: object-aware plus region-aware (four quadrants around the GT
    centroid) similarity, averaged over images.

    Fan et al., "Structure-measure: A new way to evaluate foreground maps", ICCV 2017. As in PySODMetrics (and
    MATLAB) the score is NaN when the centroid rounds onto the last row or column (an empty quadrant); such images
    are counted in ``nan_count``.
    """

    def __init__(self, alpha: float = 0.5, device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32) -> None:
        super().__init__(device, dtype)
        self.alpha = alpha
        self.nan_count = 0

    def update(self, batch: PreparedBatch) -> None:
        joint = batch.joint_histogram()
        fg_ratio = batch.fg_count.to(torch.float64) / batch.numel
        mean_pred = batch.mean_prediction()
        object_score = (object_similarity(joint[:, 1], batch.values) * fg_ratio
                        + object_similarity(joint[:, 0], 1 - batch.values) * (1 - fg_ratio))
        region_score = self._region(batch)
        combined = torch.clamp(object_score * self.alpha + region_score * (1 - self.alpha), min=0)
        score = torch.where(fg_ratio == 0, 1 - mean_pred, torch.where(fg_ratio == 1, mean_pred, combined))
        self.nan_count += int(torch.isnan(score).sum())
        self._add("sm", score)
        self.count += score.shape[0]

    def _region(self, batch: PreparedBatch) -> torch.Tensor:
        hist, cy, cx = batch.quadrant_histogram()
        height, width = batch.pred.shape[1:]
        counts = hist.to(torch.float64)  # (B, 4, 2, 256)
        pixels = counts.sum(2)
        size = pixels.sum(2)
        fg = counts[:, :, 1].sum(2)
        score = quadrant_ssim(counts, batch.values, EPS)
        score = self._constant_quadrants(score, pixels, fg, size, batch, cy, cx)

        area = height * width
        cy64, cx64 = cy.to(torch.float64), cx.to(torch.float64)
        w_lt = cx64 * cy64 / area
        w_rt = cy64 * (width - cx64) / area
        w_lb = (height - cy64) * cx64 / area
        w_rb = 1 - w_lt - w_rt - w_lb
        return score[:, 0] * w_lt + score[:, 1] * w_rt + score[:, 2] * w_lb + score[:, 3] * w_rb

    @staticmethod
    def _constant_quadrants(score: torch.Tensor, pixels: torch.Tensor, fg: torch.Tensor, size: torch.Tensor,
                            batch: PreparedBatch, cy: torch.Tensor, cx: torch.Tensor) -> torch.Tensor:
        """MATLAB-parity branch: a quadrant with a constant GT and a constant prediction c scores 1 if its mean
        computes to exactly c (sigma_x = 0, so alpha = beta = 0) and 0 otherwise (sigma_x is a tiny positive
        rounding residue). Whether NumPy's pairwise sum hits c exactly depends on the block shape, so for
        c not in {0, 1} (always exact) we ask NumPy, with the same block shape and strides."""
        constant_gt = (size > 0) & ((fg == 0) | (fg == size))
        single_level = (pixels > 0).sum(2) == 1
        level = pixels.argmax(2)
        value = batch.values.gather(1, level)
        flagged = constant_gt & single_level & (value != 0) & (value != 1)
        flagged &= ((batch.fg_count > 0) & (batch.fg_count < batch.numel))[:, None]
        if not bool(flagged.any()):
            return score
        height, width = batch.pred.shape[1:]
        score = score.clone()
        for b, q in flagged.nonzero().tolist():
            split_row, split_col = int(cy[b]), int(cx[b])
            rows = split_row if q < 2 else height - split_row
            cols = slice(0, split_col) if q % 2 == 0 else slice(split_col, width)
            exact = _numpy_mean_is_exact(float(value[b, q]), rows, width, cols)
            score[b, q] = 1.0 if exact else 0.0
        return score

    def merge(self, other: Smeasure) -> None:
        super().merge(other)
        self.nan_count += other.nan_count

    def get_results(self) -> dict:
        """``{'sm': float}``."""
        return {"sm": self._mean("sm")}


class WeightedFmeasure(_Accumulator):
    """Weighted F-measure (beta = 1), averaged over images; 0 for an image without GT foreground.

    Margolin et al., "How to evaluate foreground maps?", CVPR 2014. Per-pixel maps are in ``dtype``. The
    background pixels' errors are taken at their nearest foreground pixel (MATLAB's ``bwdist`` index, SciPy's
    tie-breaking) only where it matters: within the 7x7 Gaussian window of a foreground pixel.
    """

    def __init__(self, beta: float = 1.0, device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32) -> None:
        super().__init__(device, dtype)
        self.beta = beta
        self._importance_table: torch.Tensor | None = None

    def update(self, batch: PreparedBatch) -> None:
        fg = batch.fg
        size = fg.shape[0], -1
        values = batch.values.to(self.dtype)
        # E = |pred - gt| per pixel, looked up from its histogram cell (one gather, no per-pixel arithmetic).
        index = batch.pixel_index()
        error = batch.cell_table(torch.stack([values, 1 - values], 1)).index_select(0, index.view(-1))
        error = error.view(fg.shape)
        squared_distance = squared_distance_to_foreground(fg)
        # Background: E * B with B = 2 - exp(log(0.5) / 5 * dist), which is 1 on the foreground, so the background
        # sum is the total minus the foreground errors (known exactly from the histogram).
        joint = batch.joint_histogram().to(torch.float64)
        fg_plain_error = (joint[:, 1] * (1 - batch.values)).sum(1)
        importance = self._importance(squared_distance)
        bg_error = torch.linalg.vecdot(error.view(size), importance.view(size)).to(torch.float64) - fg_plain_error
        # Foreground: min(E, EA), EA = the Gaussian-filtered E with background pixels taking their nearest
        # foreground pixel's error (MATLAB's Et); the foreground E is unchanged by that replacement.
        blurred = gaussian_filter(replace_with_nearest_foreground_(error, fg, squared_distance))
        min_error = torch.minimum(error, blurred, out=blurred)
        fg_error = torch.linalg.vecdot(min_error.view(size), fg.view(torch.uint8).to(self.dtype).view(size))
        fg_error = fg_error.to(torch.float64)
        fg_count = batch.fg_count.to(torch.float64)
        recall = 1 - fg_error / torch.clamp(fg_count, min=1)
        true_pos = fg_count - fg_error
        precision = true_pos / (true_pos + bg_error + EPS)
        score = (1 + self.beta) * recall * precision / (recall + self.beta * precision + EPS)
        score = torch.where(batch.fg_count == 0, 0.0, score)
        self._add("wfm", score)
        self.count += score.shape[0]

    def _importance(self, squared_distance: torch.Tensor) -> torch.Tensor:
        """B = 2 - exp(log(0.5) / 5 * sqrt(d2)) per pixel, from a table over the integer d2, kept between calls."""
        needed = int(squared_distance.max()) + 1
        if self._importance_table is None or self._importance_table.numel() < needed:
            levels = torch.arange(1 << max(8, (needed - 1).bit_length()), device=self.device, dtype=torch.float64)
            self._importance_table = (2 - torch.exp(math.log(0.5) / 5 * levels.sqrt())).to(self.dtype)
        return self._importance_table.index_select(0, squared_distance.view(-1)).view(squared_distance.shape)

    def get_results(self) -> dict:
        """``{'wfm': float}``."""
        return {"wfm": self._mean("wfm")}


class SODMetrics:
    """All metrics at once, sharing the per-batch histograms: MAE, F-measure (max, mean, adaptive), weighted
    F-measure, S-measure, E-measure (max, mean, adaptive), and the precision-recall curve.

    ``get_results()`` gives the summary keys `SUMMARY_KEYS` (max/mean over the dataset-averaged 256-threshold
    curves, as PySODMetrics' examples report them), ``images``, ``sm_nan`` and ``curves`` (``precision``,
    ``recall``, ``fmeasure``, ``emeasure``: (256,) float64 arrays, index 0 = threshold 255).
    """

    def __init__(self, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> None:
        self.device = torch.device(device)
        self.mae = MAE(device, dtype)
        self.fm = Fmeasure(0.3, device, dtype)
        self.em = Emeasure(device, dtype)
        self.sm = Smeasure(0.5, device, dtype)
        self.wfm = WeightedFmeasure(1.0, device, dtype)

    def step(self, pred: ArrayLike, gt: ArrayLike, normalize: bool = True) -> None:
        """Add one pair (H, W) or a batch (B, H, W) of uint8 prediction / GT maps (`prepare_batch`)."""
        self.update(prepare_batch(pred, gt, self.device, normalize))

    def merge(self, other: SODMetrics) -> None:
        """Add the maps of ``other`` (e.g. evaluated in another process) to these accumulators."""
        for mine, theirs in zip((self.mae, self.fm, self.em, self.sm, self.wfm),
                                (other.mae, other.fm, other.em, other.sm, other.wfm), strict=True):
            mine.merge(theirs)

    def update(self, batch: PreparedBatch) -> None:
        """Add a `PreparedBatch` (which other accumulators, such as `Evaluation.release.ReleaseMetrics`, share)."""
        batch.quadrant_histogram()  # one pixel index and one bincount serve every metric
        for metric in (self.mae, self.fm, self.em, self.sm, self.wfm):
            metric.update(batch)

    def get_results(self) -> dict:
        """Summary dict (see the class docstring)."""
        fm, em = self.fm.get_results(), self.em.get_results()
        fm_curve, em_curve = np.asarray(fm["fm"]["curve"]), np.asarray(em["em"]["curve"])
        return {
            "MAE": self.mae.get_results()["mae"],
            "maxF": float(fm_curve.max()), "meanF": float(fm_curve.mean()), "adpF": fm["fm"]["adp"],
            "wF": self.wfm.get_results()["wfm"], "Sm": self.sm.get_results()["sm"],
            "maxE": float(em_curve.max()), "meanE": float(em_curve.mean()), "adpE": em["em"]["adp"],
            "images": self.mae.count, "sm_nan": self.sm.nan_count,
            "curves": {"precision": fm["pr"]["p"], "recall": fm["pr"]["r"], "fmeasure": fm_curve,
                       "emeasure": em_curve},
        }


def average_over_videos(per_video: list[dict]) -> dict:
    """Dataset result from per-video `SODMetrics.get_results()` dicts (DAVSOD protocol): scalar metrics are averaged
    over videos, except that maxF/meanF and maxE/meanE are the max/mean of the video-averaged curves; the curves
    are averaged over videos; ``images`` and ``sm_nan`` are summed; ``videos`` is the count."""
    if not per_video:
        raise ValueError("no videos to average")
    curves = {key: np.mean([r["curves"][key] for r in per_video], axis=0) for key in per_video[0]["curves"]}
    result = {key: float(np.mean([r[key] for r in per_video])) for key in ("MAE", "adpF", "wF", "Sm", "adpE")}
    result.update(maxF=float(curves["fmeasure"].max()), meanF=float(curves["fmeasure"].mean()),
                  maxE=float(curves["emeasure"].max()), meanE=float(curves["emeasure"].mean()))
    result = {key: result[key] for key in SUMMARY_KEYS}
    result.update(images=sum(r["images"] for r in per_video), sm_nan=sum(r["sm_nan"] for r in per_video),
                  videos=len(per_video), curves=curves)
    return result
