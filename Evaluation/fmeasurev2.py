"""FmeasureV2 and its eleven handlers, equal to PySODMetrics 1.6.2 (``py_sod_metrics.fmeasurev2``).

A handler turns the confusion counts of a binarised prediction (tp, fp, tn, fn) into one measure: IoU, Dice, BER,
Kappa, overall accuracy, precision, recall (= sensitivity = TPR), specificity (= TNR), FPR and the F-measure.
`FmeasureV2` computes the counts for three binarisations of each map: ``dynamic`` (every uint8 threshold, the
curve of 256 values, index 0 = threshold 255), ``adaptive`` (threshold min(2 * mean, 1)) and ``binary`` (pred >
0.5, the effect of an argmax), all from the histograms `Evaluation.batch.PreparedBatch` shares with the other
metrics, and keeps running sums only: memory does not grow with the number of maps. A handler made with
``sample_based=False`` computes its binary measure once from the dataset's summed counts instead of averaging
per-map measures. Handlers compute in float64 with PySODMetrics' operations (a zero denominator gives 0).
"""

from __future__ import annotations

import numpy as np
import torch

from Evaluation.batch import ArrayLike, PreparedBatch, adaptive_counts, prepare_batch, threshold_counts

__all__ = ["FmeasureV2", "IOUHandler", "DICEHandler", "BERHandler", "KappaHandler", "OverallAccuracyHandler",
           "PrecisionHandler", "RecallHandler", "SpecificityHandler", "TNRHandler", "TPRHandler",
           "SensitivityHandler", "FPRHandler", "FmeasureHandler", "ConfusionCounts", "confusion_counts",
           "region_counts", "form_means"]


def _float(value) -> torch.Tensor:
    return value.to(torch.float64) if isinstance(value, torch.Tensor) else torch.as_tensor(value, dtype=torch.float64)


class _BaseHandler:
    """A measure of the confusion counts, with PySODMetrics' switches: ``with_dynamic`` (the 256-threshold curve),
    ``with_adaptive``, ``with_binary`` and ``sample_based`` (average per-map values, or, for the binary form, one
    value from the dataset's counts). Running float64 sums, one per form."""

    def __init__(self, with_dynamic: bool, with_adaptive: bool, *, with_binary: bool = False,
                 sample_based: bool = True) -> None:
        self.with_dynamic, self.with_adaptive, self.with_binary = with_dynamic, with_adaptive, with_binary
        self.sample_based = sample_based
        self.reset()

    def reset(self) -> None:
        """Forget every map seen so far."""
        self.sums: dict[str, torch.Tensor] = {}
        self.count = 0  # maps
        self.objects = 0  # objects (the size-invariant FmeasureV2 averages over them)
        self.binary_counts = {"tp": 0, "fp": 0, "tn": 0, "fn": 0}

    @staticmethod
    def divide(numerator, denominator) -> torch.Tensor:
        """numerator / denominator in float64, 0 where the denominator is 0 (PySODMetrics' ``divide``)."""
        denominator = _float(denominator)
        numerator = _float(numerator)
        return torch.where(denominator != 0, numerator / torch.where(denominator != 0, denominator, 1), 0.0)

    def __call__(self, tp, fp, tn, fn) -> torch.Tensor:
        """The measure of the counts (any shape; float64 tensor of that shape)."""
        raise NotImplementedError

    def add(self, form: str, values: torch.Tensor) -> None:
        """Add per-map values (B, ...) of ``form`` ('dynamic', 'adaptive', 'binary') to the running sums."""
        total = values.sum(0)
        self.sums[form] = self.sums[form] + total if form in self.sums else total

    def results(self) -> dict:
        """PySODMetrics' result dictionary of this handler: 'dynamic' (256,), 'adaptive', 'binary'."""
        res = form_means(self.sums, self.count, self.with_dynamic, self.with_adaptive, self.with_binary, 256)
        if self.with_binary and not self.sample_based:
            counts = {key: torch.tensor(value, dtype=torch.float64) for key, value in self.binary_counts.items()}
            res["binary"] = np.float64(self(**counts).item())
        return res


def form_means(sums: dict[str, torch.Tensor], count: int, dynamic: bool, adaptive: bool, binary: bool,
               curve: int) -> dict:
    """PySODMetrics' dictionary of the forms asked for from running sums over ``count`` maps: 'dynamic' ((curve,)
    float64), 'adaptive' and 'binary' (np.float64); NaN where no map was seen."""
    def mean(form: str):
        if form not in sums or count == 0:
            return np.full(curve, np.nan) if form == "dynamic" else np.float64("nan")
        value = (sums[form] / count).cpu().numpy().astype(np.float64)
        return value if form == "dynamic" else np.float64(value)

    return {form: mean(form) for form, wanted in (("dynamic", dynamic), ("adaptive", adaptive),
                                                  ("binary", binary)) if wanted}


class IOUHandler(_BaseHandler):
    """Intersection over union: tp / (tp + fp + fn)."""

    def __call__(self, tp, fp, tn, fn):
        return self.divide(tp, _float(tp) + fp + fn)


class SpecificityHandler(_BaseHandler):
    """Specificity, true negative rate: tn / (tn + fp)."""

    def __call__(self, tp, fp, tn, fn):
        return self.divide(tn, _float(tn) + fp)


TNRHandler = SpecificityHandler


class DICEHandler(_BaseHandler):
    """Dice: 2 tp / (tp + fn + tp + fp)."""

    def __call__(self, tp, fp, tn, fn):
        tp = _float(tp)
        return self.divide(2 * tp, tp + fn + tp + fp)


class OverallAccuracyHandler(_BaseHandler):
    """Overall accuracy: (tp + tn) / (tp + fp + tn + fn)."""

    def __call__(self, tp, fp, tn, fn):
        tp = _float(tp)
        return self.divide(tp + tn, tp + fp + tn + fn)


class KappaHandler(_BaseHandler):
    """Cohen's kappa as PySODMetrics writes it: (oa - p) / (1 - p), p = [(tp + fp)(tp + fn) + (tn + fn)(tn + tp)] /
    (tp + fp + tn + fn)^2 (its second product pairs tn + fn with tn + tp)."""

    def __call__(self, tp, fp, tn, fn):
        tp, fp, tn, fn = map(_float, (tp, fp, tn, fn))
        accuracy = self.divide(tp + tn, tp + fp + tn + fn)
        chance = self.divide((tp + fp) * (tp + fn) + (tn + fn) * (tn + tp), (tp + fp + tn + fn) ** 2)
        return self.divide(accuracy - chance, 1 - chance)


class PrecisionHandler(_BaseHandler):
    """Precision: tp / (tp + fp)."""

    def __call__(self, tp, fp, tn, fn):
        return self.divide(tp, _float(tp) + fp)


class RecallHandler(_BaseHandler):
    """Recall, sensitivity, true positive rate: tp / (tp + fn)."""

    def __call__(self, tp, fp, tn, fn):
        return self.divide(tp, _float(tp) + fn)


TPRHandler = RecallHandler
SensitivityHandler = RecallHandler


class FPRHandler(_BaseHandler):
    """False positive rate: fp / (tn + fp)."""

    def __call__(self, tp, fp, tn, fn):
        return self.divide(fp, _float(tn) + fp)


class BERHandler(_BaseHandler):
    """Balanced error rate: 1 - (tp / (tp + fn) + tn / (tn + fp)) / 2, each ratio 0 where its denominator is."""

    def __call__(self, tp, fp, tn, fn):
        tp, fp, tn, fn = map(_float, (tp, fp, tn, fn))
        return 1 - 0.5 * (self.divide(tp, tp + fn) + self.divide(tn, tn + fp))


class FmeasureHandler(_BaseHandler):
    """F-measure (beta^2 = ``beta``, 0.3 by default): (1 + beta) p r / (beta p + r) of precision p and recall r."""

    def __init__(self, with_dynamic: bool, with_adaptive: bool, *, with_binary: bool = False,
                 sample_based: bool = True, beta: float = 0.3) -> None:
        super().__init__(with_dynamic, with_adaptive, with_binary=with_binary, sample_based=sample_based)
        self.beta = beta

    def __call__(self, tp, fp, tn, fn):
        tp = _float(tp)
        precision, recall = self.divide(tp, tp + fp), self.divide(tp, tp + fn)
        return self.divide((self.beta + 1) * precision * recall, self.beta * precision + recall)


class ConfusionCounts:
    """The confusion counts of one batch of maps for the three binarisations, (B, 256) ``dynamic`` (index 0 =
    threshold 255), (B,) ``adaptive`` and ``binary``: each a dict of int64 tp, fp, tn, fn."""

    def __init__(self, dynamic: dict, adaptive: dict, binary: dict) -> None:
        self.dynamic, self.adaptive, self.binary = dynamic, adaptive, binary


def _counts(fg_hits: torch.Tensor, bg_hits: torch.Tensor, fg: torch.Tensor, bg: torch.Tensor) -> dict:
    return {"tp": fg_hits, "fp": bg_hits, "tn": bg - bg_hits, "fn": fg - fg_hits}


def confusion_counts(batch: PreparedBatch) -> ConfusionCounts:
    """`ConfusionCounts` of a batch, from its shared histograms (no per-pixel work)."""
    return region_counts(batch.joint_histogram(), batch.values, batch.bins, batch.numel)


def region_counts(joint: torch.Tensor, values: torch.Tensor, bins: torch.Tensor, numel: int) -> ConfusionCounts:
    """`ConfusionCounts` of N maps of ``numel`` pixels from their counts (N, 2, L) by GT class and level, and the
    normalised value (N, L) float64 and uint8 bin (N, L) int64 of each level (L levels: the 256 grey levels, or
    more, e.g. a level for the zeroed pixels outside a region)."""
    fg = joint[:, 1].sum(1)
    bg = numel - fg
    true_pos, false_pos = threshold_counts(joint, bins)
    hit_fg, hit_bg = adaptive_counts(joint, values, numel)
    above = (values > 0.5).long()  # pred > 0.5, level by level
    return ConfusionCounts(_counts(true_pos, false_pos, fg[:, None], bg[:, None]), _counts(hit_fg, hit_bg, fg, bg),
                           _counts((joint[:, 1] * above).sum(1), (joint[:, 0] * above).sum(1), fg, bg))


class FmeasureV2:
    """Several measures of binarised maps at once, each by a handler added under a name (PySODMetrics'
    ``FmeasureV2``): ``step(pred, gt)`` with uint8 maps, (H, W) or (B, H, W); ``get_results()`` -> {name: {'dynamic':
    (256,), 'adaptive': float, 'binary': float}} with the forms the handler records."""

    def __init__(self, metric_handlers: dict | None = None, device: torch.device | str = "cpu") -> None:
        self._metric_handlers: dict[str, _BaseHandler] = dict(metric_handlers or {})
        self.device = torch.device(device)

    def add_handler(self, handler_name: str, metric_handler: _BaseHandler) -> None:
        self._metric_handlers[handler_name] = metric_handler

    def step(self, pred: ArrayLike, gt: ArrayLike, normalize: bool = True) -> None:
        """Add one pair (H, W) or a batch (B, H, W) of uint8 prediction / GT maps (``normalize`` must be True:
        the maps are normalised as PySODMetrics does)."""
        if not self._metric_handlers:
            raise ValueError("Please add your metric handler before using `step()`.")
        self.update(prepare_batch(pred, gt, self.device, normalize))

    def update(self, batch: PreparedBatch) -> None:
        """Add a `PreparedBatch` (shared with the other metrics of an evaluation)."""
        self.add_counts(confusion_counts(batch))

    def add_counts(self, counts: ConfusionCounts) -> None:
        """Add the `ConfusionCounts` of B maps to every handler."""
        batch = counts.adaptive["tp"].shape[0]
        for handler in self._metric_handlers.values():
            if handler.with_dynamic:
                handler.add("dynamic", handler(**counts.dynamic))
            if handler.with_adaptive:
                handler.add("adaptive", handler(**counts.adaptive))
            if handler.with_binary:
                if handler.sample_based:
                    handler.add("binary", handler(**counts.binary))
                else:
                    for key, value in counts.binary.items():
                        handler.binary_counts[key] += int(value.sum())
            handler.count += batch

    def merge(self, other: FmeasureV2) -> None:
        """Add the maps of ``other`` (the same handlers, e.g. evaluated in another process)."""
        for name, handler in self._metric_handlers.items():
            theirs = other._metric_handlers[name]
            for form, total in theirs.sums.items():
                handler.add(form, total.to(self.device)[None])
            for key, value in theirs.binary_counts.items():
                handler.binary_counts[key] += value
            handler.count += theirs.count
            handler.objects += theirs.objects

    def get_results(self) -> dict:
        return {name: handler.results() for name, handler in self._metric_handlers.items()}
