"""The five measures SOD papers print, in torch, equal to PySODMetrics 1.6.2 (``py_sod_metrics.sod_metrics``).

Each is a small accumulator with ``step(pred, gt)`` and ``get_results()`` (same result dictionaries as
PySODMetrics), running on any torch device and keeping only running sums, so memory does not grow with the number
of images; `SODMetrics` computes all five from one `Evaluation.batch.PreparedBatch` per batch. All but the weighted
F-measure come exactly from the batch's histograms; ``dtype`` (float32 by default) is the type of the per-pixel maps
of the weighted F-measure. Dataset sums are always float64.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from Evaluation.batch import EPS, ArrayLike, PreparedBatch, prepare_batch
from Evaluation.spatial import gaussian_filter, replace_with_nearest_foreground_, squared_distance_to_foreground

__all__ = [
    "MAE", "Fmeasure", "Emeasure", "Smeasure", "WeightedFmeasure",
    "SODMetrics", "average_over_videos", "SUMMARY_KEYS", "quadrant_ssim", "object_similarity",
]

SUMMARY_KEYS = ("MAE", "maxF", "meanF", "adpF", "wF", "Sm", "maxE", "meanE", "adpE")


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
