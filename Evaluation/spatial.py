"""Per-pixel spatial operations of the weighted F-measure, exact and batched: the squared Euclidean distance to the
nearest foreground pixel, the nearest foreground pixel of background pixels next to the object (with SciPy's
tie-breaking), and MATLAB's 7x7 Gaussian filter with zero padding.

On the CPU the distance transform and the filter run in OpenCV (an exact EDT; a separable filter); on other devices
in torch (a column pass plus a brute-force row pass, exact in integers; ``conv2d``). Both give the same integers and
agree with ``scipy.ndimage`` to rounding.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["squared_distance_to_foreground", "replace_with_nearest_foreground_", "matlab_gaussian_kernel",
           "gaussian_filter"]

# OpenCV returns float32 distances d = sqrt(n) (1 + e), |e| <= 2^-24; rint(d * d) in float32 recovers the integer n
# while n < 2^21 (total error < n * 2^-22 < 0.5). Larger images fall back to SciPy, which is exact in float64.
_CV2_MAX_SQUARED = 2**21

# A background pixel at Chebyshev distance <= 3 from the object (the only ones whose value reaches the 7x7 filter at
# foreground pixels) has its nearest foreground pixel at squared distance <= 3^2 + 3^2 = 18. Since the exact squared
# distance d2 of every pixel is known, its nearest foreground pixel is one of the (at most 8) offsets (dy, dx) with
# dy^2 + dx^2 = d2. They are tried in SciPy's tie-breaking order: distance_transform_edt's row-wise (second) pass
# keeps the lowest column among equally near candidates, and its column-wise (first) pass the lowest row.
BAND_SQUARED_RADIUS = 18
_PAD = 4  # the largest offset component (4^2 + 1^2 = 17 <= 18)
_OFFSETS_BY_SQUARED_DISTANCE = [
    sorted((dx, dy) for dy in range(-_PAD, _PAD + 1) for dx in range(-_PAD, _PAD + 1) if dy * dy + dx * dx == d2)
    for d2 in range(BAND_SQUARED_RADIUS + 1)
]
_MAX_CANDIDATES = max(len(offsets) for offsets in _OFFSETS_BY_SQUARED_DISTANCE)


def _use_opencv(tensor: torch.Tensor) -> bool:
    return tensor.device.type == "cpu"


def squared_distance_to_foreground(fg: torch.Tensor) -> torch.Tensor:
    """Exact squared Euclidean distance from every pixel to the nearest ``True`` pixel, (B, H, W) bool ->
    (B, H, W) int32 (0 on the foreground). It is 0 everywhere in an image without foreground.
    """
    if _use_opencv(fg):
        return _squared_distance_cv2(fg)
    return _squared_distance_torch(fg)


def _squared_distance_cv2(fg: torch.Tensor) -> torch.Tensor:
    batch, height, width = fg.shape
    out = np.zeros((batch, height, width), dtype=np.int32)
    masks = fg.numpy()
    for index in range(batch):
        mask = masks[index]
        if not mask.any():
            continue
        if height * height + width * width < _CV2_MAX_SQUARED:
            background = np.ascontiguousarray(~mask).view(np.uint8)
            distance = cv2.distanceTransform(background, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
            np.multiply(distance, distance, out=distance)
            out[index] = np.rint(distance, out=distance)
        else:
            from scipy.ndimage import distance_transform_edt

            nearest = distance_transform_edt(~mask, return_distances=False, return_indices=True)
            rows, cols = np.indices((height, width))
            out[index] = (nearest[0] - rows) ** 2 + (nearest[1] - cols) ** 2
    return torch.from_numpy(out)


def _squared_distance_torch(fg: torch.Tensor, max_elements: int = 2**24) -> torch.Tensor:
    """Column pass (distance to the nearest foreground row in each column, by running max) and a brute-force row
    pass ``min_k g(i, k)^2 + (j - k)^2`` along the shorter axis, in int32 chunks of ``max_elements`` (exact: every
    sum is below (H + W)^2 + W^2 < 2^31)."""
    transpose = fg.shape[2] > fg.shape[1]
    if transpose:
        fg = fg.transpose(1, 2)
    batch, height, width = fg.shape
    rows = torch.arange(height, device=fg.device, dtype=torch.int32).view(1, height, 1).expand(batch, height, width)
    far = height + width  # more than any real distance
    above = torch.where(fg, rows, -far).cummax(dim=1).values
    below = height - 1 - torch.where(fg, height - 1 - rows, -far).flip(1).cummax(dim=1).values.flip(1)
    vertical = torch.minimum(rows - above, below - rows).clamp(max=far)
    vertical_sq = vertical * vertical
    cols = torch.arange(width, device=fg.device, dtype=torch.int32)
    horizontal_sq = (cols.view(-1, 1) - cols.view(1, -1)) ** 2  # (j, k)
    out = torch.empty_like(vertical_sq)
    chunk = max(1, max_elements // max(1, batch * width * width))
    for start in range(0, height, chunk):
        out[:, start:start + chunk] = (vertical_sq[:, start:start + chunk, None, :] + horizontal_sq).amin(dim=-1)
    out = out.masked_fill(~fg.flatten(1).any(1)[:, None, None], 0)
    return out.transpose(1, 2).contiguous() if transpose else out


def _candidate_tables(width: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat offsets of the candidates of each squared distance 0..18, (19, 8) int64, in the image padded by 4 and in
    the unpadded image. Unused entries are 0: the pixel itself, which is background, so never a hit."""
    padded_width = width + 2 * _PAD
    padded, plain = [], []
    for offsets in _OFFSETS_BY_SQUARED_DISTANCE:
        extra = [0] * (_MAX_CANDIDATES - len(offsets))
        padded.append([dy * padded_width + dx for dx, dy in offsets] + extra)
        plain.append([dy * width + dx for dx, dy in offsets] + extra)
    return torch.tensor(padded, device=device), torch.tensor(plain, device=device)


def _band_pixels(fg: torch.Tensor, squared_distance: torch.Tensor) -> torch.Tensor:
    """Flat indices (N,) int64 of the pixels with squared distance 1..18: background pixels near the object (d2 is 0
    on the foreground and in images without foreground)."""
    if _use_opencv(fg):
        # One pass: d2 - 1 viewed as unsigned is below 18 exactly for 1 <= d2 <= 18.
        shifted = (squared_distance.numpy() - 1).view(np.uint32)
        return torch.from_numpy(np.flatnonzero(shifted < BAND_SQUARED_RADIUS))
    return ((squared_distance > 0) & (squared_distance <= BAND_SQUARED_RADIUS)).view(-1).nonzero().squeeze(1)


def replace_with_nearest_foreground_(values: torch.Tensor, fg: torch.Tensor,
                                     squared_distance: torch.Tensor) -> torch.Tensor:
    """In place: each background pixel within squared distance 18 of the foreground takes the value at its nearest
    foreground pixel, ties broken as SciPy's feature transform does (lowest column, then lowest row); (B, H, W)
    float, bool, int32. This is MATLAB's ``Et(~GT) = Et(IDXT(~GT))`` wherever a 7x7 filter read at foreground
    pixels can see it. Returns ``values``.
    """
    height, width = fg.shape[1:]
    band = _band_pixels(fg, squared_distance)
    if band.numel() == 0:
        return values
    padded_offsets, plain_offsets = _candidate_tables(width, fg.device)
    level = squared_distance.view(-1).index_select(0, band)
    global_row = band // width  # image * height + row
    column = band - global_row * width
    padded_row = global_row + (global_row // height) * (2 * _PAD) + _PAD
    padded_position = padded_row * (width + 2 * _PAD) + column + _PAD
    padded_fg = F.pad(fg.view(torch.uint8), (_PAD,) * 4).view(-1)
    candidates = padded_position[:, None] + padded_offsets.index_select(0, level)
    # index_select rather than take/advanced indexing: those start a thread pool even for small inputs.
    hits = padded_fg.index_select(0, candidates.view(-1)).view(candidates.shape)
    first = hits.argmax(dim=1, keepdim=True)  # the first candidate on the foreground, in tie-breaking order
    source = band + plain_offsets.index_select(0, level).gather(1, first).squeeze(1)
    flat = values.view(-1)
    flat.index_copy_(0, band, flat.index_select(0, source))
    return values


def matlab_gaussian_kernel(size: int = 7, sigma: float = 5.0) -> np.ndarray:
    """MATLAB ``fspecial('gaussian', size, sigma)``, (size, size) float64, normalised to sum 1."""
    half = (size - 1) / 2
    y, x = np.ogrid[-half:half + 1, -half:half + 1]
    kernel = np.exp(-(x * x + y * y) / (2 * sigma * sigma))
    kernel[kernel < np.finfo(kernel.dtype).eps * kernel.max()] = 0
    return kernel / kernel.sum()


def _matlab_gaussian_1d(size: int = 7, sigma: float = 5.0) -> np.ndarray:
    half = (size - 1) / 2
    x = np.arange(-half, half + 1)
    kernel = np.exp(-(x * x) / (2 * sigma * sigma))
    return kernel / kernel.sum()


def gaussian_filter(values: torch.Tensor) -> torch.Tensor:
    """``imfilter(values, fspecial('gaussian', 7, 5))`` with zero padding, (B, H, W) float -> (B, H, W).

    On the CPU the separable form is used (the outer product of the 1-D kernel equals the 2-D kernel to rounding).
    """
    if _use_opencv(values):
        images = values.numpy()
        kernel = _matlab_gaussian_1d().astype(images.dtype)
        out = np.empty_like(images)
        for index, image in enumerate(images):
            out[index] = cv2.sepFilter2D(image, -1, kernel, kernel, borderType=cv2.BORDER_CONSTANT)
        return torch.from_numpy(out)
    kernel = torch.from_numpy(matlab_gaussian_kernel()).to(values)
    return F.conv2d(values[:, None], kernel[None, None], padding=3)[:, 0]
