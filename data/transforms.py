"""Test-time preprocessing and map output (exactly the authors', design §7.2) and the training augmentation (design
§6.1, §6.3).

Test time: float64 in [0, 1], scikit-image ``resize(order=1, mode='reflect', anti_aliasing=False)`` semantics
(re-implemented here: bilinear with half-pixel centres, mirror padding x[-1] = x[1], x[n] = x[n-2] for samples
beyond the outer pixel centres), ImageNet mean/std in float64, then float32.

Training: random border crop (0-14 px per side), a flip (left-right or up-down) with p = 0.5, square resize in
float32 with OpenCV bilinear (half-pixel centres, no anti-aliasing; differs from the test resize only in the
outermost rows/columns when upsampling, where OpenCV replicates the edge), ImageNet normalisation. One draw of
the random parameters is applied to every frame of a clip and to its GT.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406])
IMAGENET_STD = np.array([0.229, 0.224, 0.225])
MAX_CROP = 14


def to_float01(image: np.ndarray) -> np.ndarray:
    """(H, W) or (H, W, C) uint8/uint16/float array -> float64 in [0, 1] with 3 channels for grey input."""
    image = np.asarray(image)
    if image.dtype == np.uint8:
        image = image / 255.0
    elif image.dtype == np.uint16:
        image = image / 65535.0
    else:
        image = image.astype(np.float64)
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    return image


def _axis_taps(size_in: int, size_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source indices (low, high) and the high-tap weight for each output sample along one axis."""
    coord = (np.arange(size_out) + 0.5) * (size_in / size_out) - 0.5
    low = np.floor(coord).astype(np.int64)
    weight = coord - low
    high = low + 1
    if size_in == 1:
        return np.zeros_like(low), np.zeros_like(high), weight
    last = size_in - 1
    # Mirror (numpy 'reflect') padding: index -1 -> 1, index n -> n - 2.
    low = np.where(low < 0, -low, low)
    high = np.where(high > last, 2 * last - high, high)
    return low, high, weight


def resize_bilinear_reflect(image: np.ndarray, height: int, width: int,
                            as_float: Callable[[np.ndarray], np.ndarray] | None = None) -> np.ndarray:
    """Resize (H, W) or (H, W, C) float64 like ``skimage.transform.resize(order=1, mode='reflect',
    anti_aliasing=False)`` to (height, width[, C]); all channels at once (clips: 3T channels). ``as_float`` turns
    the source into float64 (default: a cast). Only the pixels the output samples are taken and converted, then
    interpolated along rows and then columns as skimage does: the same values as converting the whole image, which
    for a 62-megapixel photo would take 1.5 GB."""
    as_float = as_float or (lambda array: np.asarray(array, dtype=np.float64))
    if image.shape[:2] == (height, width):
        return np.array(as_float(image), dtype=np.float64)
    low, high, row_weight = _axis_taps(image.shape[0], height)
    low_columns, high_columns, column_weight = _axis_taps(image.shape[1], width)
    columns, where = np.unique(np.concatenate([low_columns, high_columns]), return_inverse=True)
    low_rows, high_rows = as_float(image[np.ix_(low, columns)]), as_float(image[np.ix_(high, columns)])
    row_weight = row_weight.reshape((-1,) + (1,) * (low_rows.ndim - 1))
    rows = low_rows * (1 - row_weight) + high_rows * row_weight
    column_weight = column_weight.reshape((1, -1) + (1,) * (rows.ndim - 2))
    return rows[:, where[:width]] * (1 - column_weight) + rows[:, where[width:]] * column_weight


def _normalise_chw(image: np.ndarray) -> torch.Tensor:
    """(H, W, 3k) float64 in [0, 1] -> ImageNet-normalised (3k, H, W) float32 tensor (float64 arithmetic)."""
    frames = image.shape[2] // 3
    mean, std = np.tile(IMAGENET_MEAN, frames), np.tile(IMAGENET_STD, frames)
    normalised = (image - mean) / std
    return torch.from_numpy(np.ascontiguousarray(normalised.transpose(2, 0, 1), dtype=np.float32))


def preprocess_test(image: np.ndarray, size: int | tuple[int, int] | None) -> torch.Tensor:
    """The authors' test preprocessing of one RGB image: (H, W, 3) or (H, W) uint8/uint16/float in [0, 1]
    -> float32 tensor (3, size, size) (or (3, *size) for a (height, width) pair, or (3, H, W) when ``size`` is None:
    full resolution).
    """
    height, width = (size, size) if isinstance(size, int) else size or (None, None)
    image = to_float01(image) if size is None else resize_bilinear_reflect(image, height, width, to_float01)
    return _normalise_chw(image)


def saliency_to_uint8(saliency: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """Sigmoid maps (N, 1, h, w) -> 8-bit maps (N, H, W) at ``size`` = (H, W), as the authors wrote them (design §7.2).

    Bilinear upsampling (align_corners=False) in float32, times 255 in float32, cast to uint8 by truncation
    (no rounding, 1.0 -> 255). Runs on the maps' device; only the uint8 result is copied to the host.
    """
    maps = saliency.float()
    if tuple(maps.shape[-2:]) == tuple(size):
        return (maps[:, 0] * 255).to(torch.uint8).cpu().numpy()
    # Scaled in place: the same float32 products, and one full-size float array instead of two (a 62-megapixel map).
    maps = F.interpolate(maps, size=tuple(size), mode="bilinear", align_corners=False)
    return maps[:, 0].mul_(255).to(torch.uint8).cpu().numpy()


def display_rgb(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) RGB of 8 or 16 bits -> 8 bits (16-bit values divided by 257), for overlays and cut-outs."""
    return rgb if rgb.dtype == np.uint8 else (rgb // 257).astype(np.uint8)


def overlay(rgb: np.ndarray, saliency: np.ndarray) -> np.ndarray:
    """(H, W, 3) RGB and (H, W) map -> BGR image: the map as a JET heat map blended half-and-half over the photo."""
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    # Blended into the photo's copy: element by element, the same values, one image-sized array fewer.
    return cv2.addWeighted(bgr, 0.5, cv2.applyColorMap(saliency, cv2.COLORMAP_JET), 0.5, 0, dst=bgr)


def cutout(rgb: np.ndarray, saliency: np.ndarray) -> np.ndarray:
    """(H, W, 3) RGB and (H, W) map -> (H, W, 4) BGRA with the map as alpha."""
    return np.dstack([cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), saliency])


def resize_test_gt(gt: np.ndarray, size: int) -> np.ndarray:
    """GT map (H, W) float in [0, 1] resized like the test images (float64, skimage semantics)."""
    return resize_bilinear_reflect(np.asarray(gt, dtype=np.float64), size, size)


@dataclass(frozen=True)
class Augmentation:
    """One draw of the training augmentation: pixels removed from each border, then an optional flip."""

    top: int
    bottom: int
    left: int
    right: int
    flip: str | None  # None, 'lr' (left-right) or 'ud' (up-down)

    @classmethod
    def draw(cls, rng: np.random.Generator) -> Augmentation:
        """Crop 0-14 px independently per side; flip with p = 0.5, left-right or up-down with equal odds."""
        top, bottom, left, right = (int(v) for v in rng.integers(0, MAX_CROP + 1, size=4))
        do_flip, left_right = rng.random(2)
        flip = None if do_flip >= 0.5 else ("lr" if left_right < 0.5 else "ud")
        return cls(top, bottom, left, right, flip)

    def apply(self, array: np.ndarray) -> np.ndarray:
        """Crop and flip an (H, W[, C]) array; crops are capped so at least one row/column stays."""
        height, width = array.shape[:2]
        top, bottom = _cap(self.top, self.bottom, height)
        left, right = _cap(self.left, self.right, width)
        array = array[top: height - bottom, left: width - right]
        if self.flip == "lr":
            array = array[:, ::-1]
        elif self.flip == "ud":
            array = array[::-1]
        return array


def _cap(first: int, second: int, length: int) -> tuple[int, int]:
    keep = length - first - second
    if keep >= 1:
        return first, second
    first = min(first, (length - 1) // 2)
    return first, min(second, length - 1 - first)


def resize_train(array: np.ndarray, size: int) -> np.ndarray:
    """Square bilinear resize (OpenCV, half-pixel centres, no anti-aliasing) of a float32 (H, W[, C]) array."""
    array = np.ascontiguousarray(array, dtype=np.float32)
    if array.shape[:2] == (size, size):
        return array
    return cv2.resize(array, (size, size), interpolation=cv2.INTER_LINEAR)


def train_image(image: np.ndarray, augmentation: Augmentation, size: int) -> torch.Tensor:
    """RGB image (H, W, 3) uint8/uint16 -> augmented, resized, normalised float32 tensor (3, size, size)."""
    cropped = augmentation.apply(image)
    scale = 65535.0 if cropped.dtype == np.uint16 else 255.0
    resized = resize_train(cropped, size)  # float32 copy of the code values, resized (linear, so scale later)
    # One OpenCV pass: out_c = x_c / (scale * std_c) - mean_c / std_c.
    affine = np.zeros((3, 4))
    affine[[0, 1, 2], [0, 1, 2]] = 1.0 / (scale * IMAGENET_STD)
    affine[:, 3] = -IMAGENET_MEAN / IMAGENET_STD
    normalised = cv2.transform(resized, affine)
    return torch.from_numpy(np.ascontiguousarray(normalised.transpose(2, 0, 1)))


def train_gt(gt: np.ndarray, augmentation: Augmentation, size: int) -> torch.Tensor:
    """GT map (H, W) float in [0, 1] -> augmented, resized float32 tensor (1, size, size), still continuous."""
    resized = resize_train(augmentation.apply(gt), size)
    return torch.from_numpy(np.clip(resized, 0.0, 1.0))[None]
