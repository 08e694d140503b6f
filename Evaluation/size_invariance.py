"""The size-invariant measures, equal to PySODMetrics 1.6.2 (``py_sod_metrics.size_invariance``).

Li et al., "Size-invariance Matters: Rethinking Metrics and Losses for Imbalanced Multi-object Salient Object
Detection", ICML 2024. The GT's objects are its 4-connected components of at least 50 pixels (where there is none,
the largest ones, ties included); each object is judged inside its bounding box, so that a small object counts as
much as a large one. `SizeInvarianceMAE` weighs the boxes' errors and the error outside them;
`SizeInvarianceFmeasureV2` runs the `Evaluation.fmeasurev2` handlers on each box (the prediction zeroed outside
it) and averages over objects. A GT without objects (empty) is judged as a whole. A GT without background (no pixel
outside every box) has no size-invariant value: PySODMetrics fails on it, and so do these (ValueError).
PySODMetrics keeps the boxes as bits of float64 sums, which for more than 52 objects loses some (and fails past 63);
these keep every box exactly.

Per map, one histogram of (GT class, grey level) per box, from the shared `PreparedBatch` tables; the per-map
curves that ``sample_based`` handlers return (one (objects, 256) array per map) are kept as int32 confusion counts,
8 bytes per object and threshold whatever the number of handlers, and turned into each handler's values on demand.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage

from Evaluation.batch import LEVELS, PreparedBatch
from Evaluation.fmeasurev2 import ConfusionCounts, FmeasureV2, region_counts
from Evaluation.metrics import MAE

__all__ = ["SizeInvarianceMAE", "SizeInvarianceFmeasureV2", "object_boxes", "NO_BACKGROUND", "has_background"]

AREA_THRESHOLD = 50
_FOUR_CONNECTED = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]])


def object_boxes(fg: torch.Tensor) -> list[tuple[slice, slice]]:
    """The bounding boxes (row slice, column slice) of the GT's objects, in raster order of their first pixel
    (``fg``: (H, W) bool): 4-connected components of at least 50 pixels, else the largest components; [] for an
    empty GT."""
    labels, count = ndimage.label(fg.cpu().numpy(), structure=_FOUR_CONNECTED)
    if count == 0:
        return []
    areas = np.bincount(labels.ravel(), minlength=count + 1)[1:]
    chosen = np.flatnonzero(areas >= AREA_THRESHOLD)
    if chosen.size == 0:
        chosen = np.flatnonzero(areas == areas.max())
    boxes = ndimage.find_objects(labels)
    return [boxes[index] for index in chosen]


def _box_histograms(batch: PreparedBatch, b: int, boxes: list[tuple[slice, slice]]) -> torch.Tensor:
    """(len(boxes), 2, 256) int64 counts by GT class and grey level of the pixels inside each box of map ``b``."""
    pred, fg = batch.pred[b], batch.fg[b]
    hists = [torch.bincount((pred[box].long() + fg[box].long() * LEVELS).view(-1), minlength=2 * LEVELS)
             for box in boxes]
    return torch.stack(hists).view(len(boxes), 2, LEVELS)


NO_BACKGROUND = ("the GT's objects cover the whole map (no background), which has no size-invariant value "
                 "(PySODMetrics fails on it too)")


def has_background(gt: np.ndarray) -> bool:
    """Whether a GT map ((H, W) uint8, foreground > 128 as `PreparedBatch.fg`) has a size-invariant value: some pixel
    outside every object box, or no object at all."""
    fg = torch.from_numpy(np.ascontiguousarray(gt) > 128)
    boxes = object_boxes(fg)
    return not boxes or not bool(_covered(boxes, fg).all())


def _covered(boxes: list[tuple[slice, slice]], fg: torch.Tensor) -> torch.Tensor:
    covered = torch.zeros_like(fg)
    for box in boxes:
        covered[box] = True
    return covered


def _check_background(boxes: list[tuple[slice, slice]], fg: torch.Tensor, name: str) -> torch.Tensor:
    """The (H, W) bool union of the boxes (on ``fg``'s device); ValueError when it covers the whole map."""
    covered = _covered(boxes, fg)
    if bool(covered.all()):
        raise ValueError(f"{name}: {NO_BACKGROUND}")
    return covered


class SizeInvarianceMAE(MAE):
    """Size-invariant MAE: the mean absolute error of each object's box, and of the pixels outside every box
    weighted by their share, averaged over the objects (plain MAE for an empty GT), then over maps.
    ``get_results()`` -> {'si_mae': float}."""

    def update(self, batch: PreparedBatch) -> None:
        values = batch.values
        joint = batch.joint_histogram().to(torch.float64)
        for b in range(batch.pred.shape[0]):
            def error(hist: torch.Tensor, value: torch.Tensor = values[b]) -> torch.Tensor:
                return (hist[..., 0, :] * value + hist[..., 1, :] * (1 - value)).sum(-1)  # summed |pred - gt|

            boxes = object_boxes(batch.fg[b])
            if not boxes:
                mae = error(joint[b]) / batch.numel
            else:
                covered = _check_background(boxes, batch.fg[b], "SizeInvarianceMAE")
                inside = torch.bincount(batch.pred[b][covered].long() + batch.fg[b][covered].long() * LEVELS,
                                        minlength=2 * LEVELS).view(2, LEVELS).to(torch.float64)
                bg_area = batch.numel - int(covered.sum())
                ratio = bg_area / (batch.numel - bg_area)
                factor = 1 / (len(boxes) + ratio)
                mae = ratio * (error(joint[b]) - error(inside)) / bg_area * factor
                areas = torch.tensor([(box[0].stop - box[0].start) * (box[1].stop - box[1].start) for box in boxes],
                                     dtype=torch.float64, device=values.device)
                mae = mae + (error(_box_histograms(batch, b, boxes).to(torch.float64)) / areas * factor).sum()
            self._add("mae", mae[None])
            self.count += 1

    def get_results(self) -> dict:
        """``{'si_mae': float}``."""
        return {"si_mae": self._mean("mae")}


class SizeInvarianceFmeasureV2(FmeasureV2):
    """`FmeasureV2` judged object by object: each handler's measure of every object's box (the prediction zeroed
    outside it), averaged over the map's objects and then over maps; with ``sample_based=False`` the dynamic curve is
    averaged over all objects of all maps and the binary measure computed from their summed counts.
    ``get_results()``: PySODMetrics' dictionary; a ``sample_based`` handler's 'dynamic' is the list of per-map
    (objects, 256) arrays."""

    def __init__(self, metric_handlers: dict | None = None, device: torch.device | str = "cpu",
                 keep_maps: bool = True) -> None:
        super().__init__(metric_handlers, device)
        # keep_maps=False (ours, for evaluations of many maps in constant memory): a sample_based handler's
        # 'dynamic' is the mean over maps of each map's object-averaged curve, (256,), instead of the list
        self.keep_maps = keep_maps
        self._per_map: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def update(self, batch: PreparedBatch) -> None:
        for b in range(batch.pred.shape[0]):
            boxes = object_boxes(batch.fg[b])
            if boxes:
                _check_background(boxes, batch.fg[b], "SizeInvarianceFmeasureV2")
                counts = self._box_counts(batch, b, boxes)
            else:
                counts = region_counts(batch.joint_histogram()[b:b + 1], batch.values[b:b + 1],
                                       batch.bins[b:b + 1], batch.numel)
            self._add_map(counts)

    @staticmethod
    def _box_counts(batch: PreparedBatch, b: int, boxes: list[tuple[slice, slice]]) -> ConfusionCounts:
        """The confusion counts of each box with the prediction zeroed outside it: the outside pixels are
        background at value 0 (bin 0), a 257th level."""
        hists = _box_histograms(batch, b, boxes)
        outside = batch.numel - hists.sum((1, 2))
        joint = torch.cat([hists, torch.stack([outside, torch.zeros_like(outside)], 1)[:, :, None]], 2)
        zero = torch.zeros(1, dtype=batch.values.dtype, device=batch.values.device)
        values = torch.cat([batch.values[b], zero]).expand(len(boxes), -1)
        bins = torch.cat([batch.bins[b], zero.long()]).expand(len(boxes), -1)
        return region_counts(joint, values, bins, batch.numel)

    def _add_map(self, counts: ConfusionCounts) -> None:
        """One map's per-object counts: each handler's per-map value (mean over objects) or per-object values."""
        objects = counts.adaptive["tp"].shape[0]
        keep = False
        for handler in self._metric_handlers.values():
            if handler.with_dynamic:
                if handler.sample_based and self.keep_maps:
                    keep = True
                elif handler.sample_based:
                    handler.add("dynamic", handler(**counts.dynamic).mean(0)[None])
                else:  # every object of every map alike
                    handler.add("dynamic", handler(**counts.dynamic))
                    handler.objects += objects
            if handler.with_adaptive:
                handler.add("adaptive", handler(**counts.adaptive).mean()[None])
            if handler.with_binary:
                if handler.sample_based:
                    handler.add("binary", handler(**counts.binary).mean()[None])
                else:
                    for key, value in counts.binary.items():
                        handler.binary_counts[key] += int(value.sum())
            handler.count += 1
        if keep:
            dynamic = counts.dynamic
            self._per_map.append((dynamic["tp"].int().cpu(), dynamic["fp"].int().cpu(),
                                  (dynamic["tp"] + dynamic["fn"])[:, 0].cpu(),
                                  (dynamic["fp"] + dynamic["tn"])[:, 0].cpu()))

    def merge(self, other: SizeInvarianceFmeasureV2) -> None:
        super().merge(other)
        self._per_map.extend(other._per_map)

    def get_results(self) -> dict:
        results = {}
        for name, handler in self._metric_handlers.items():
            res = handler.results()
            if handler.with_dynamic and handler.sample_based and self.keep_maps:
                res["dynamic"] = [handler(tp=tp.long(), fp=fp.long(), tn=bg[:, None] - fp, fn=fg[:, None] - tp).numpy()
                                  for tp, fp, fg, bg in self._per_map]
            elif handler.with_dynamic and not handler.sample_based:
                res["dynamic"] = ((handler.sums["dynamic"] / handler.objects).cpu().numpy() if handler.objects
                                  else np.full(256, np.nan))
            results[name] = res
        return results
