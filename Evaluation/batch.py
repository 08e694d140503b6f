"""A batch of prediction / GT pairs prepared once for every measure (`prepare_batch` -> `PreparedBatch`).

Inputs are uint8 grey maps, (H, W) or a batch (B, H, W) of equal size; as in PySODMetrics the GT is binarised at
``gt > 128`` and the prediction min-max normalised after ``/ 255`` (unless constant). A uint8 prediction has at most
256 distinct values, so most measures are computed exactly from per-image histograms of (grey level, GT class[,
S-measure quadrant]) (one ``bincount`` per batch) and a 256-entry table of the normalised value of each grey level,
computed in float64 with the same IEEE operations as NumPy, so that thresholds and curves are bit-identical to
PySODMetrics'. `threshold_counts` / `adaptive_counts` / `mean_prediction` are the histogram arithmetic the measures
share.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

__all__ = ["EPS", "LEVELS", "ArrayLike", "PreparedBatch", "prepare_batch", "mean_prediction", "threshold_counts",
           "adaptive_counts", "PerMapMean"]

# MATLAB's eps, as PySODMetrics uses it (np.spacing(1)).
EPS = float(np.spacing(1))
LEVELS = 256

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


class PerMapMean:
    """A measure scored map by map and averaged over maps (the context measures, HCE): a subclass's ``update(batch)``
    adds each map's score of a `PreparedBatch` to ``total`` and counts it in ``count``; ``step(pred, gt)`` takes uint8
    maps, (H, W) or (B, H, W); ``get_results()`` -> ``{key: float64 mean}`` (NaN before any map)."""

    key: str

    def __init__(self, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self.total, self.count = 0.0, 0

    def step(self, pred: ArrayLike, gt: ArrayLike, normalize: bool = True) -> None:
        self.update(prepare_batch(pred, gt, self.device, normalize))

    def update(self, batch: PreparedBatch) -> None:
        raise NotImplementedError

    def merge(self, other: PerMapMean) -> None:
        """Add the maps of ``other`` (the same measure, e.g. from another process)."""
        self.total += other.total
        self.count += other.count

    def get_results(self) -> dict:
        return {self.key: np.float64(self.total / self.count) if self.count else np.float64("nan")}
