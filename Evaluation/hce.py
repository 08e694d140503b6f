"""Human correction effort (HCE), equal to PySODMetrics 1.6.2 (``py_sod_metrics.HumanCorrectionEffortMeasure``).

Qin et al., "Highly Accurate Dichotomous Image Segmentation", ECCV 2022. The prediction is binarised (> 0.5);
false-positive and false-negative regions are relaxed by ``relax`` erosions and dilations (thin structures of the
GT's skeleton are kept), their contours split where correcting them needs no human point, and the effort is the
number of polygon control points (Ramer-Douglas-Peucker with ``epsilon``) plus the regions needing no boundary point
at all. Morphology and contours use OpenCV exactly as PySODMetrics does; the GT skeleton is Zhang-Suen thinning with
scikit-image's removal table; the per-contour-point bookkeeping is vectorised. CPU, NumPy.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
from scipy import ndimage

from Evaluation.batch import PerMapMean, PreparedBatch

__all__ = ["HumanCorrectionEffortMeasure", "skeletonize"]

# Zhang-Suen thinning as scikit-image runs it (skimage.morphology.skeletonize on 2-D images, the table it shares
# with ImageJ's BinaryProcessor): the neighbourhood code of a pixel (NW 1, N 2, NE 4, E 8, SE 16, S 32, SW 64,
# W 128) -> 1: removed in the first sub-iteration, 2: in the second, 3: in both, 0: kept.
_ZHANG_TABLE = np.array([
    0, 0, 0, 1, 0, 0, 1, 3, 0, 0, 3, 1, 1, 0, 1, 3, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 2, 0, 3, 0, 3, 3,
    0, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 3, 0, 2, 2,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    2, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 3, 0, 2, 0,
    0, 0, 3, 1, 0, 0, 1, 3, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1,
    3, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    2, 3, 1, 3, 0, 0, 1, 3, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    2, 3, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 3, 3, 0, 1, 0, 0, 0, 0, 2, 2, 0, 0, 2, 0, 0, 0,
], dtype=np.uint8)
_REMOVED = (np.isin(_ZHANG_TABLE, (1, 3)), np.isin(_ZHANG_TABLE, (2, 3)))  # per sub-iteration
_DISK = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], dtype=np.uint8)  # skimage.morphology.disk(1)
_EIGHT_CONNECTED = np.ones((3, 3), dtype=int)


def skeletonize(mask: np.ndarray) -> np.ndarray:
    """The Zhang-Suen skeleton of a 2-D bool mask, as ``skimage.morphology.skeletonize`` gives it: sub-iterations
    alternate, each removing in parallel the pixels its table marks, until a whole iteration removes nothing
    (the mask is zero-padded by one pixel). Each sub-iteration looks only at the pixels whose neighbourhood
    changed since it last looked at them (the others would stay), so a pass costs the object's border, not its
    area."""
    height, width = mask.shape
    image = np.zeros((height + 2, width + 2), dtype=np.uint8)
    image[1:-1, 1:-1] = mask
    flat = image.ravel()
    stride = width + 2
    offsets = np.array([-stride - 1, -stride, -stride + 1, 1, stride + 1, stride, stride - 1, -1])  # NW, N, ... W
    weights = 1 << np.arange(8)
    pending = [flat != 0, flat != 0]  # per sub-iteration: the pixels to look at
    while True:
        removed = False
        for index, removable in enumerate(_REMOVED):
            pixels = np.flatnonzero(pending[index])
            pending[index][:] = False
            code = (flat[pixels[:, None] + offsets] * weights).sum(1)
            drop = pixels[removable[code]]
            if drop.size:
                flat[drop] = 0
                removed = True
                for waiting in pending:
                    waiting[(drop[:, None] + offsets).ravel()] = True
                    waiting &= flat != 0
        if not removed:
            break
    return image[1:-1, 1:-1] != 0


def _boundaries(contours: tuple, mask: np.ndarray, condition: np.ndarray) -> tuple[list[np.ndarray], int]:
    """PySODMetrics' ``filter_conditional_boundary``: the runs of contour points that need correcting (where the
    dilated ``condition`` holds, each pixel once over all contours in order, the last run of a contour joined with
    its first where they touch) and the number of regions of ``mask`` (8-connected) none of whose contour points
    does."""
    condition = cv2.dilate(condition.astype(np.uint8), _DISK) != 0
    labels, count = ndimage.label(mask, structure=_EIGHT_CONNECTED)
    if not contours:
        return [], count
    points = np.concatenate([contour.reshape(-1, 2) for contour in contours])  # (x, y)
    flat = points[:, 1].astype(np.int64) * mask.shape[1] + points[:, 0]
    first = np.zeros(len(flat), dtype=bool)
    first[np.unique(flat, return_index=True)[1]] = True  # a pixel is taken at its first visit only
    accepted = first & condition.ravel()[flat]
    touched = np.unique(labels.ravel()[flat[accepted]])
    independent = count - np.count_nonzero(touched)
    boundaries = []
    start = 0
    for contour in contours:
        end = start + len(contour)
        ok = accepted[start:end]
        runs = []
        if ok.any():
            # runs of consecutive accepted points
            edges = np.flatnonzero(np.diff(np.concatenate([[0], ok.astype(np.int8), [0]])))
            runs = [points[start + a:start + b] for a, b in zip(edges[::2], edges[1::2])]
        if len(runs) > 1:
            dx, dy = np.abs(runs[0][0] - runs[-1][-1])
            if (dx, dy) in ((1, 0), (0, 1), (1, 1)):
                runs[-1] = np.concatenate([runs[-1], runs[0][::-1]])
                del runs[0]
        boundaries += [run[:, None, :].astype(np.int32) for run in runs]
        start = end
    return boundaries, independent


def human_correction_effort(pred: np.ndarray, gt: np.ndarray, relax: int = 5, epsilon: float = 2.0) -> int:
    """HCE of one map: ``pred`` (H, W) bool (the prediction > 0.5), ``gt`` (H, W) bool."""
    gt_skeleton = skeletonize(gt)
    union = gt | pred
    true_pos = gt & pred
    false_pos = pred ^ true_pos
    false_neg = gt ^ true_pos
    eroded_union = cv2.erode(union.astype(np.uint8), _DISK, iterations=relax) != 0

    relaxed_fp = false_pos & eroded_union
    for _ in range(relax):
        relaxed_fp = (cv2.dilate(relaxed_fp.astype(np.uint8), _DISK) != 0) & ~gt
    relaxed_fp &= false_pos
    relaxed_fn = false_neg & eroded_union
    for _ in range(relax):
        relaxed_fn = (cv2.dilate(relaxed_fn.astype(np.uint8), _DISK) != 0) & ~pred
    relaxed_fn &= false_neg
    relaxed_fn |= gt_skeleton & ~true_pos  # the GT's thin structures the prediction misses

    effort = 0
    for region, condition in ((relaxed_fp, true_pos | relaxed_fn),
                              (relaxed_fn, ~(true_pos | relaxed_fp | relaxed_fn))):
        contours, _ = cv2.findContours(region.astype(np.uint8), cv2.RETR_TREE, cv2.CHAIN_APPROX_NONE)
        boundaries, independent = _boundaries(contours, region, condition)
        effort += independent + sum(len(cv2.approxPolyDP(boundary, epsilon, False)) for boundary in boundaries)
    return effort


class HumanCorrectionEffortMeasure(PerMapMean):
    """HCE averaged over maps (PySODMetrics' class): ``relax`` erosion/dilation steps, RDP ``epsilon``;
    ``step(pred, gt)`` with uint8 maps, (H, W) or (B, H, W); ``get_results()`` -> {'hce': float}, the mean effort per
    map."""

    key = "hce"

    def __init__(self, relax: int = 5, epsilon: float = 2.0, device: torch.device | str = "cpu") -> None:
        super().__init__(device)
        self.relax, self.epsilon = relax, epsilon

    def update(self, batch: PreparedBatch) -> None:
        """Add a `PreparedBatch` (shared with the other metrics of an evaluation)."""
        above = (batch.values > 0.5).cpu()
        preds, fgs = batch.pred.long().cpu(), batch.fg.cpu()
        for b in range(preds.shape[0]):
            binary = above[b][preds[b]].numpy()
            self.total += human_correction_effort(binary, fgs[b].numpy(), self.relax, self.epsilon)
            self.count += 1
