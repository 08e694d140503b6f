"""Image and ground-truth decoding with OpenCV, and the one error type of the data package.

Every reader returns RGB (never BGR) and converts every PNG/JPEG/BMP/WebP/TIFF mode: grey, grey+alpha, RGB, RGBA,
palette (OpenCV expands palettes on decode) and 16-bit. Pixels are read as stored, as the authors' scikit-image
reading does (dataset maps stay exact); `read_rgb` with ``orient=True`` (predict.py) turns them upright as photo
viewers do, by the file's EXIF orientation. Every file passes the guard of `data.guard` before it is decoded (a pixel
cap, whole files of the formats we read). Failures raise `DataError` with a one-line message naming the file, so
scripts can log it and skip the file or exit with status 2.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from data.guard import DataError, ImageHeader, check_image, max_pixels_of, read_guarded

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
IMAGE_EXTENSION_TEXT = "/".join(IMAGE_EXTENSIONS)  # for messages

# skimage.color.rgb2gray weights (ITU-R BT.709), which the authors' `as_gray` GT reading used.
_GREY_WEIGHTS = np.array([0.2125, 0.7154, 0.0721])
DEFAULT_MAX_PIXELS = max_pixels_of(None)


def decode_image(path: str | os.PathLike, flags: int = cv2.IMREAD_UNCHANGED, max_pixels: int = DEFAULT_MAX_PIXELS,
                 ) -> np.ndarray:
    """Decode an image file with OpenCV ``flags``: (H, W) or (H, W, C) in OpenCV channel order, uint8 or uint16
    (``cv2.IMREAD_GRAYSCALE`` gives (H, W) uint8). The file passes `data.guard.read_guarded` first (at most
    ``max_pixels``, whole, a format we read). Raises `DataError` naming the file if it is refused or cannot be
    decoded."""
    return _decode(path, flags, max_pixels)[0]


def _decode(path: str | os.PathLike, flags: int, max_pixels: int) -> tuple[np.ndarray, ImageHeader]:
    data, header = read_guarded(path, max_pixels)
    return _decode_bytes(data, header, flags, path), header


def _decode_bytes(data: bytes, header: ImageHeader, flags: int, path: str | os.PathLike) -> np.ndarray:
    try:
        array = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), flags)
    except cv2.error:
        array = None
    if array is None:
        raise DataError(f"cannot decode image file {path} ({header.format.upper()} data damaged)")
    if array.dtype not in (np.uint8, np.uint16):
        raise DataError(f"unsupported pixel type {array.dtype} in {path}")
    return array


def _max_value(array: np.ndarray) -> float:
    return 65535.0 if array.dtype == np.uint16 else 255.0


def read_rgb(path: str | os.PathLike, orient: bool = False, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode an image file to RGB, (H, W, 3) uint8 or uint16 (16-bit files keep their depth).

    Grey images are replicated to three channels; alpha channels are dropped (as a plain RGB read does). With
    ``orient`` the pixels are turned upright by the file's EXIF orientation (`exif_orientation`), so (H, W) is the
    size a photo viewer shows; without it they are as stored. ``max_pixels``: as for `decode_image`.
    """
    array, header = _decode(path, cv2.IMREAD_UNCHANGED, max_pixels)
    return _as_rgb(array, header, orient, path)


def rgb_from_bytes(data: bytes, name: str, orient: bool = False, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """`read_rgb` of an image file's bytes (an upload; ``name`` names it in messages): the same guard
    (`data.guard.check_image`), the same decoding, the same pixels."""
    header = check_image(data, name, max_pixels)
    return _as_rgb(_decode_bytes(data, header, cv2.IMREAD_UNCHANGED, name), header, orient, name)


def _as_rgb(array: np.ndarray, header: ImageHeader, orient: bool, path: str | os.PathLike) -> np.ndarray:
    if array.ndim == 2:
        array = array[:, :, None]
    channels = array.shape[2]
    if channels in (1, 2):  # grey, grey + alpha
        rgb = np.repeat(array[:, :, :1], 3, axis=2)
    elif channels == 3:
        rgb = cv2.cvtColor(array, cv2.COLOR_BGR2RGB)
    elif channels == 4:
        rgb = cv2.cvtColor(array, cv2.COLOR_BGRA2RGB)
    else:
        raise DataError(f"unsupported channel count {channels} in {path}")
    return np.ascontiguousarray(upright(rgb, header.orientation)) if orient else rgb


def exif_orientation(path: str | os.PathLike) -> int:
    """The EXIF orientation tag (1-8) of an image file, from its header (`data.guard`); 1 (as stored) when it has
    none or the file is refused."""
    try:
        return read_guarded(path, DEFAULT_MAX_PIXELS)[1].orientation
    except DataError:
        return 1


def upright(array: np.ndarray, orientation: int) -> np.ndarray:
    """An (H, W[, C]) image stored with EXIF ``orientation`` (1-8) as it is meant to be seen (a view, no copy):
    2 mirrored, 3 turned 180 degrees, 4 flipped, 5 transposed, 6 turned 90 degrees clockwise, 7 transversed, 8 turned
    90 degrees counter-clockwise to show it upright."""
    transforms = {
        1: lambda a: a,
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1],
        5: lambda a: a.swapaxes(0, 1),
        6: lambda a: np.rot90(a, -1),
        7: lambda a: a[::-1, ::-1].swapaxes(0, 1),
        8: lambda a: np.rot90(a, 1),
    }
    return transforms[orientation](array)


def read_gt(path: str | os.PathLike, dtype: type = np.float32, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Ground-truth map in [0, 1], (H, W) float ``dtype``, from a file of any mode.

    Single-channel files are scaled by their maximum code value (255 or 65535). Colour files whose channels
    are equal use one channel; otherwise the luminance with skimage's rgb2gray weights is used, as the authors'
    grey-level GT reading did. Alpha is ignored. ``max_pixels``: as for `decode_image`.
    """
    array = decode_image(path, max_pixels=max_pixels)
    scale = _max_value(array)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim == 3:
        colour = array[:, :, :3] if array.shape[2] >= 3 else array[:, :, :1]
        if colour.shape[2] == 1 or (np.array_equal(colour[:, :, 0], colour[:, :, 1])
                                    and np.array_equal(colour[:, :, 0], colour[:, :, 2])):
            array = colour[:, :, 0]
        else:
            rgb = colour[:, :, ::-1].astype(np.float64)
            return (rgb @ _GREY_WEIGHTS / scale).astype(dtype)
    return (array.astype(np.float64) / scale).astype(dtype)


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Sorted image files (`IMAGE_EXTENSIONS`, any case) directly inside ``folder``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"image folder not found: {folder}")
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
