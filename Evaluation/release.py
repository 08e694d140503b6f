"""The figures the authors' released evaluation scripts print (design §7.3), computed their way.

Images: MAE, maxF, meanF and AP; videos: MAE, S-measure and maxF. Unlike PySODMetrics (`Evaluation.metrics`) the
release keeps the grey GT as a soft GT (P = PNG / 255 and G = GT / 255, both float32), min-max normalises the map
for the F-measure and S-measure (``(P - min) / (max - min + 1e-20)``), uses 255 thresholds ``linspace(0, 1 - 1e-10,
255)`` (float32: the last one is 1.0), does not normalise P for the MAE, and guards divisions with 1e-20.

How it is fast: a PNG map has at most 256 grey levels, so the F-measure curves come from two per-level sums per map
(the pixel count and the sum of G of each prediction level, one ``bincount`` each per batch), binned by how many
thresholds each level passes; the video S-measure from counts per (quadrant, binarised GT, level). The per-level
values (``level / 255`` and its normalisation) use the release's float32 operations; the sums over pixels are
float64 (the release sums float32 over the pixels, so the two differ by float rounding, about 1e-7).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from Evaluation.batch import PreparedBatch, prepare_batch
from Evaluation.metrics import object_similarity, quadrant_ssim

__all__ = ["THRESHOLDS", "ReleaseMetrics", "average_precision", "average_release_over_videos"]

LEVELS = 256
BETA2 = 0.3
THRESHOLDS = torch.linspace(0, 1 - 1e-10, 255)  # float32, as the release: 1 - 1e-10 rounds to 1.0


def _normalised_levels(joint_pred: torch.Tensor) -> torch.Tensor:
    """(B, 256) counts per prediction level -> (B, 256) float32 value of each level after the release's min-max
    normalisation: P = level / 255, (P - min P) / (max P - min P + 1e-20) (0 everywhere for a constant map)."""
    levels = torch.arange(LEVELS, device=joint_pred.device, dtype=torch.float32) / 255
    present = joint_pred > 0
    low = torch.where(present, levels, torch.inf).amin(1, keepdim=True)
    high = torch.where(present, levels, -torch.inf).amax(1, keepdim=True)
    return (levels - low) / (high - low + 1e-20)


class ReleaseMetrics:
    """Accumulator of the release's figures over maps: ``step(pred, gt)`` with uint8 (H, W) or (B, H, W) maps of equal
    size; ``get_results()``. ``smeasure`` adds the video script's S-measure.

    Per map: MAE = mean |P - G|; precision / recall / F curves over the 255 thresholds (B = [Pn >= t], tp = sum B G,
    precision = tp / (sum B + 1e-20), recall = tp / (sum G + 1e-20), F = 1.3 P R / (0.3 P + R), NaN -> 0); the
    S-measure of design §7.3 (alpha 0.5; empty GT 1 - mean Pn, full GT mean Pn; else G binarised at 0.5, object and
    four-quadrant region terms around the 0-based rounded centroid, clamped at 0).
    """

    def __init__(self, device: torch.device | str = "cpu", smeasure: bool = False) -> None:
        self.device, self.smeasure = torch.device(device), smeasure
        self.thresholds = THRESHOLDS.to(self.device)
        self.count = 0
        self.sums: dict[str, torch.Tensor] = {}

    def _add(self, name: str, per_map: torch.Tensor) -> None:
        total = per_map.double().sum(0)
        self.sums[name] = self.sums[name] + total if name in self.sums else total

    def step(self, pred, gt) -> None:
        """Add one pair (H, W) or a batch (B, H, W) of uint8 prediction / GT maps."""
        self.update(prepare_batch(pred, gt, self.device))

    def update(self, batch: PreparedBatch) -> None:
        """Add a `PreparedBatch` (shared with `Evaluation.metrics.SODMetrics`: its pixel index and histogram)."""
        pred, gt = batch.pred, batch.gt
        size, pixels = pred.shape[0], batch.numel
        # |P - G| of 8-bit levels is |p - g| / 255: the release's float32 values, summed exactly
        self._add("MAE", (pred.short() - gt.short()).abs().view(size, -1).sum(1, dtype=torch.int64) / 255 / pixels)
        counts = batch.joint_histogram().sum(1).double()  # (B, 256) pixels per prediction level
        # sum of G over the pixels of each prediction level (integer levels summed exactly, then / 255), through the
        # shared pixel index, whose cells refine the prediction levels
        index = batch.pixel_index()
        cells = torch.bincount(index.view(-1), weights=gt.view(-1).double(), minlength=size * batch.cells)
        gt_mass = cells.view(size, -1, LEVELS).sum(1) / 255
        normalised = _normalised_levels(counts)
        # Pn >= t_k for the first `passed` thresholds of each level: tp_k and sum B_k are the sums over the levels
        # whose `passed` exceeds k, i.e. reversed cumulative sums of the per-level values binned by `passed`.
        passed = torch.searchsorted(self.thresholds, normalised.contiguous(), right=True)
        binned = torch.zeros(size, 2, len(self.thresholds) + 1, dtype=torch.float64, device=self.device)
        binned.scatter_add_(2, passed[:, None, :].expand(size, 2, LEVELS), torch.stack([gt_mass, counts], 1))
        above = binned.flip(2).cumsum(2).flip(2)[:, :, 1:]  # (B, 2, 255): over levels passing threshold k
        true_positive, predicted = above[:, 0], above[:, 1]
        precision = true_positive / (predicted + 1e-20)
        recall = true_positive / (gt_mass.sum(1, keepdim=True) + 1e-20)
        fmeasure = torch.nan_to_num((1 + BETA2) * precision * recall / (BETA2 * precision + recall), nan=0.0)
        self._add("precision", precision)
        self._add("recall", recall)
        self._add("fmeasure", fmeasure)
        if self.smeasure:
            self._add("Sm", self._smeasure(pred, gt, counts, normalised.double()))
        self.count += size

    def _smeasure(self, pred: torch.Tensor, gt: torch.Tensor, counts: torch.Tensor,
                  values: torch.Tensor) -> torch.Tensor:
        batch, height, width = pred.shape
        pixels = height * width
        foreground = gt >= 128  # G / 255 >= 0.5
        mean_pred = (counts * values).sum(1) / pixels
        flat = gt.view(batch, -1)
        empty, full = flat.amax(1) == 0, flat.amin(1) == 255
        region_score, hist = self._region(pred, foreground, values)
        fg_counts = hist[:, :, 1].sum(1)
        ratio = fg_counts.sum(1) / pixels
        # the release's torch: 1e-20, and an unbiased std of one pixel is 0 / 0 = NaN
        object_score = (ratio * object_similarity(fg_counts, values, 1e-20, math.nan)
                        + (1 - ratio) * object_similarity(counts - fg_counts, 1 - values, 1e-20, math.nan))
        # clamp keeps a NaN (a one-pixel or empty region, as the release's torch gives): such a map's Sm is NaN
        score = torch.clamp(0.5 * object_score + 0.5 * region_score, min=0)
        return torch.where(empty, 1 - mean_pred, torch.where(full, mean_pred, score))

    def _region(self, pred: torch.Tensor, foreground: torch.Tensor,
                values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The release's region term: SSIM-like score of the four quadrants split at the 0-based rounded centroid of
        the binarised GT (the image centre if it is empty), weighted by their areas; and the counts (B, 4, 2, 256)
        by quadrant, binarised GT and prediction level."""
        batch, height, width = pred.shape
        fg = foreground.float()
        total = fg.sum((1, 2))
        columns = (fg.sum(1) * torch.arange(width, device=fg.device)).sum(1)
        rows = (fg.sum(2) * torch.arange(height, device=fg.device)).sum(1)
        x = torch.where(total > 0, torch.round(columns / total + 1e-20), float(round(width / 2))).long()
        y = torch.where(total > 0, torch.round(rows / total + 1e-20), float(round(height / 2))).long()
        right = torch.arange(width, device=fg.device)[None, None, :] >= x[:, None, None]
        lower = torch.arange(height, device=fg.device)[None, :, None] >= y[:, None, None]
        quadrant = lower.long() * 2 + right.long()  # 0 LT, 1 RT, 2 LB, 3 RB
        image = torch.arange(batch, device=fg.device)[:, None, None]
        index = ((image * 4 + quadrant) * 2 + foreground.long()) * LEVELS + pred.long()
        hist = torch.bincount(index.view(-1), minlength=batch * 4 * 2 * LEVELS).view(batch, 4, 2, LEVELS).double()
        score = quadrant_ssim(hist, values, 1e-20, constant_exact=True)
        x32, y32 = x.float(), y.float()  # the release's weights, float32
        area = height * width
        w1, w2, w3 = x32 * y32 / area, (width - x32) * y32 / area, x32 * (height - y32) / area
        weights = torch.stack([w1, w2, w3, 1 - w1 - w2 - w3], 1).double()
        return (score * weights).sum(1), hist

    def merge(self, other: ReleaseMetrics) -> None:
        """Add the maps of ``other`` (e.g. evaluated in another process) to this accumulator."""
        for name, total in other.sums.items():
            self._add(name, total.to(self.device)[None])
        self.count += other.count

    def curves(self) -> dict[str, np.ndarray]:
        """The dataset-averaged precision, recall and F curves, (255,) float64, index k = threshold k."""
        return {name: (self.sums[name] / self.count).cpu().numpy() for name in ("precision", "recall", "fmeasure")}

    def get_results(self) -> dict:
        """``{'MAE', 'maxF', 'meanF', 'AP', 'Sm' (with smeasure), 'images', 'curves'}`` over the maps so far."""
        if self.count == 0:
            raise ValueError("no maps to evaluate")
        curves = self.curves()
        results = {"MAE": float(self.sums["MAE"] / self.count), "maxF": float(curves["fmeasure"].max()),
                   "meanF": float(curves["fmeasure"].mean()),
                   "AP": average_precision(curves["precision"], curves["recall"]), "images": self.count,
                   "curves": curves}
        if self.smeasure:
            results["Sm"] = float(self.sums["Sm"] / self.count)
        return results


def average_precision(precision: np.ndarray, recall: np.ndarray) -> float:
    """VOC-style AP of averaged curves (design §7.3), float64: r = [0, recall, 1], p = [0, precision, 0] sorted by r;
    from the end p[i-1] = max(p[i], p[i-1]); AP = sum over i with r[i+1] != r[i] of (r[i+1] - r[i]) p[i+1]."""
    r = np.concatenate([[0.0], np.asarray(recall, dtype=np.float64), [1.0]])
    p = np.concatenate([[0.0], np.asarray(precision, dtype=np.float64), [0.0]])
    order = np.argsort(r, kind="stable")
    r, p = r[order], p[order]
    p = np.maximum.accumulate(p[::-1])[::-1]
    steps = np.flatnonzero(r[1:] != r[:-1])
    return float(np.sum((r[steps + 1] - r[steps]) * p[steps + 1]))


def average_release_over_videos(per_video: list[dict]) -> dict:
    """The video script's dataset figures: MAE and Sm averaged over videos (each a mean over its frames), maxF the max
    of the video-averaged F curve."""
    curves = {key: np.mean([r["curves"][key] for r in per_video], axis=0) for key in per_video[0]["curves"]}
    return {"MAE": float(np.mean([r["MAE"] for r in per_video])), "Sm": float(np.mean([r["Sm"] for r in per_video])),
            "maxF": float(curves["fmeasure"].max()), "videos": len(per_video),
            "images": sum(r["images"] for r in per_video), "curves": curves}
