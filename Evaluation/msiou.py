"""Multi-scale IoU (MSIoU), equal to PySODMetrics 1.6.2 (``py_sod_metrics.MSIoU``).

Ahmadzadeh et al., "Multiscale IOU: A Metric for Evaluation of Salient Object Detection with Fine Structures",
ICIP 2021. The edges of the binarised prediction and of the GT (where SciPy's Sobel filters of the boolean mask are
non-zero) are box-counted on
grids of 1, 2, 4, ..., 512 pixels (zero padding at the top and left); the ratio (shared cells + 1) / (GT cells + 1)
at each of the 10 scales is integrated over the scales (trapezoids, step 1/9). As in PySODMetrics the GT cell count
is held in float16 (its edge maps are float16 there), so counts above 2048 round. ``dynamic``: the 257 thresholds
0..256 on the uint8 prediction (index 0 = threshold 0), all of them at once as the bits of five 64-bit words per
pixel; ``adaptive``: min(2 * mean, 1); ``binary``: pred > 0.5.
"""

from __future__ import annotations

import functools
import sys

import numpy as np
import torch

from Evaluation.batch import ArrayLike, PreparedBatch, prepare_batch
from Evaluation.fmeasurev2 import form_means

__all__ = ["MSIoU", "edges"]

WORDS = 5  # 64-bit words holding one bit per threshold 0..256
if sys.byteorder != "little":  # `_bit_counts` reads the words' bytes
    raise ImportError("Evaluation.msiou assumes a little-endian machine")


@functools.cache
def _thermometer_table(device: torch.device) -> torch.Tensor:
    """(256, WORDS) int64: the words of each uint8 bin, bits 0..bin set (as signed int64)."""
    table = []
    for level in range(256):
        bits = (1 << (level + 1)) - 1  # thresholds 0..level
        words = [(bits >> (64 * k)) & ((1 << 64) - 1) for k in range(WORDS)]
        table.append([w - (1 << 64) if w >= 1 << 63 else w for w in words])
    return torch.tensor(table, dtype=torch.int64, device=device)


def _thermometer(bins: torch.Tensor) -> torch.Tensor:
    """(H, W) uint8 bins (long) -> (H, W, WORDS) int64: bit t (word t // 64, bit t % 64) set where bin >= t, i.e.
    the binarised maps of all 257 thresholds at once."""
    return _thermometer_table(bins.device)[bins]


def edges(words: torch.Tensor) -> torch.Tensor:
    """(H, W, K) int64 bit-planes of binary masks -> (H, W, K) int64: the bits where ``scipy.ndimage.sobel`` of
    the mask along either axis (mode 'constant') is non-zero.

    SciPy keeps the bytes of its boolean intermediate (a derivative of -1 is stored as 255) and sums them modulo
    256, which for these small sums is the integer Sobel filter: across rows a - b with a = ul + 2 u + ur and b =
    dl + 2 d + dr over the rows above and below; a = b exactly when u = d and ul + ur = dl + dr, or u = 1, d = 0,
    ul = ur = 0, dl = dr = 1, or the mirror case; across columns alike. Bitwise, so 64 thresholds per operation."""
    h, w, k = words.shape
    p = torch.zeros((h + 2, w + 2, k), dtype=torch.int64, device=words.device)
    p[1:-1, 1:-1] = words
    ul, u, ur = p[:-2, :-2], p[:-2, 1:-1], p[:-2, 2:]
    left, right = p[1:-1, :-2], p[1:-1, 2:]
    dl, d, dr = p[2:, :-2], p[2:, 1:-1], p[2:, 2:]

    def equal_sides(a1, a, a2, b1, b, b2):  # a1 + 2 a + a2 == b1 + 2 b + b2, bit by bit
        same_pairs = ~((a1 ^ a2) ^ (b1 ^ b2)) & ~((a1 & a2) ^ (b1 & b2))
        return (~(a ^ b) & same_pairs) | (a & ~b & ~a1 & ~a2 & b1 & b2) | (~a & b & a1 & a2 & ~b1 & ~b2)

    flat = equal_sides(ul, u, ur, dl, d, dr) & equal_sides(ul, left, dl, ur, right, dr)
    return ~flat


def _levels(words: torch.Tensor, cell_sizes: tuple[int, ...]) -> list[torch.Tensor]:
    """(H, W, K) bit-planes -> one (ceil(H / c), ceil(W / c), K) grid per cell size c (powers of 2, ascending):
    the OR over each cell, cells aligned to the bottom right (PySODMetrics pads at the top and left), each grid
    made from the one before (a cell of 2c is 2 x 2 cells of c)."""
    grids, grid, size = [], words, 1
    for cell in cell_sizes:
        while size < cell:
            h, w, k = grid.shape
            if h % 2 or w % 2:
                padded = torch.zeros((h + h % 2, w + w % 2, k), dtype=grid.dtype, device=grid.device)
                padded[h % 2:, w % 2:] = grid
                grid = padded
            h, w = grid.shape[:2]
            quads = grid.view(h // 2, 2, w // 2, 2, k)
            grid = quads[:, 0, :, 0] | quads[:, 0, :, 1] | quads[:, 1, :, 0] | quads[:, 1, :, 1]
            size *= 2
        grids.append(grid)
    return grids


def _bit_counts(words: torch.Tensor) -> torch.Tensor:
    """(N, K) int64 -> (64 K,) int64: how many of the N words have each bit set. By bytes: one histogram of the
    byte values at each of the 8 K byte positions (little-endian: byte j of a word holds its bits 8 j .. 8 j + 7),
    times the bits of each byte value."""
    n, k = words.shape
    data = words.contiguous().view(torch.uint8).view(n, 8 * k).long()
    index = data + torch.arange(8 * k, device=words.device) * 256
    hist = torch.bincount(index.view(-1), minlength=8 * k * 256).view(8 * k, 256)
    bits = (torch.arange(256, device=words.device)[:, None] >> torch.arange(8, device=words.device)) & 1
    return (hist @ bits).view(-1)


class MSIoU:
    """MSIoU with PySODMetrics' switches (``with_dynamic``, ``with_adaptive``, ``with_binary``, ``num_levels``);
    ``step(pred, gt)`` with uint8 maps, (H, W) or (B, H, W); ``get_results()`` -> {'dynamic': (257,), 'adaptive':
    float, 'binary': float} with the forms asked for. Running sums only."""

    def __init__(self, with_dynamic: bool, with_adaptive: bool, *, with_binary: bool = False, num_levels: int = 10,
                 device: torch.device | str = "cpu") -> None:
        self.with_dynamic, self.with_adaptive, self.with_binary = with_dynamic, with_adaptive, with_binary
        self.cell_sizes = tuple(int(c) for c in np.power(2, np.linspace(0, 9, num=num_levels, dtype=int)))
        self.device = torch.device(device)
        self.sums: dict[str, torch.Tensor] = {}
        self.count = 0

    def step(self, pred: ArrayLike, gt: ArrayLike, normalize: bool = True) -> None:
        """Add one pair (H, W) or a batch (B, H, W) of uint8 prediction / GT maps."""
        self.update(prepare_batch(pred, gt, self.device, normalize))

    def update(self, batch: PreparedBatch) -> None:
        """Add a `PreparedBatch` (shared with the other metrics of an evaluation)."""
        threshold = torch.clamp(2 * batch.mean_prediction(), max=1.0)
        for b in range(batch.pred.shape[0]):
            gt_cells = [grid[:, :, 0] != 0 for grid in _levels(edges(batch.fg[b, :, :, None].long()),
                                                               self.cell_sizes)]
            # the GT cell count + 1 in float16, as PySODMetrics' float16 edge maps sum it
            denominators = torch.stack([cells.sum().to(torch.float16) + 1 for cells in gt_cells]).double()
            pred = batch.pred[b].long()
            if self.with_dynamic:
                self._add("dynamic", self._scores(_thermometer(batch.bins[b][pred]), gt_cells, denominators)[:257])
            for form, above in (("adaptive", batch.values[b] >= threshold[b]), ("binary", batch.values[b] > 0.5)):
                if getattr(self, f"with_{form}"):
                    self._add(form, self._scores(above[pred][:, :, None].long(), gt_cells, denominators)[0])
            self.count += 1

    def _scores(self, words: torch.Tensor, gt_cells: list[torch.Tensor], denominators: torch.Tensor
                ) -> torch.Tensor:
        """MSIoU (64 K,) float64 of the binarised maps in the bit-planes (H, W, K) against the GT's cells."""
        shared = torch.stack([_bit_counts(grid[cells]) for grid, cells in
                              zip(_levels(edges(words), self.cell_sizes), gt_cells)], 1)
        ratios = (shared + 1).double() / denominators
        step = 1 / (len(self.cell_sizes) - 1)
        return (step * (ratios[:, 1:] + ratios[:, :-1]) / 2.0).sum(1)

    def _add(self, form: str, value: torch.Tensor) -> None:
        self.sums[form] = self.sums[form] + value if form in self.sums else value.clone()

    def merge(self, other: MSIoU) -> None:
        """Add the maps of ``other`` (e.g. evaluated in another process)."""
        for form, total in other.sums.items():
            self._add(form, total.to(self.device))
        self.count += other.count

    def get_results(self) -> dict:
        """PySODMetrics' dictionary: 'dynamic' (257,), 'adaptive', 'binary' (the forms asked for)."""
        return form_means(self.sums, self.count, self.with_dynamic, self.with_adaptive, self.with_binary, 257)
