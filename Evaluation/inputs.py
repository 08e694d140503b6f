"""Which prediction/GT files to evaluate, and reading them.

Image datasets: GT ``<datadir>/<DATASET>/GT/<stem>.<ext>``, prediction ``<preddir>/<DATASET>/<stem>.png``.
Video datasets: the videos of a list file whose clip folder contains ``/<DATASET>`` (``data.lists``), GT = the
annotated frames of each video, prediction ``<preddir>/<DATASET>/<video>/<frame stem>.png``; the first and last
annotated frame of each video are skipped unless ``keep_ends`` (DAVSOD protocol).

Errors are `EvaluationError` with a one-line message naming the file, folder or dataset.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image

from data.lists import annotated_frames, image_name, read_video_list, select_videos
from data.readers import DEFAULT_MAX_PIXELS, IMAGE_EXTENSIONS, DataError, decode_image

GT_EXTENSIONS = (".png", ".bmp", ".jpg", ".jpeg")

# The authors' evaluation drops these five PASCAL-S images (design §7.1).
EXCLUDED = {"PASCAL-S": frozenset({"359", "408", "424", "460", "622"})}


class EvaluationError(ValueError):
    """Bad evaluation input; the message is one line and names the file, folder, flag or dataset."""


@dataclass(frozen=True)
class Pair:
    """One prediction/GT file pair; ``group`` is the video it belongs to ('' for image datasets); ``image`` the RGB
    image, where a measure needs it (the camouflage context measure)."""

    pred: Path
    gt: Path
    group: str = ""
    image: Path | None = None


@dataclass
class DatasetPairs:
    """The pairs of one dataset (in evaluation order, videos contiguous), the GT files without a prediction, notes
    for the log (e.g. excluded images, videos too short to keep after dropping the ends), and where the GT is (a
    folder, or a list file's annotation folders; recorded with the figures)."""

    name: str
    pairs: list[Pair]
    missing: list[Path]
    notes: list[str]
    gt_source: str = ""


def _listdir(folder: Path) -> list[str]:
    try:
        return sorted(os.listdir(folder))
    except OSError as err:
        raise EvaluationError(f"cannot list folder {folder}: {err.strerror or err}") from None


def _split_missing(pairs: list[Pair]) -> tuple[list[Pair], list[Path]]:
    existing, missing = [], []
    for pair in pairs:
        (existing if pair.pred.is_file() else missing).append(pair)
    return existing, [pair.pred for pair in missing]


def _image_of(folder: Path, stem: str) -> Path:
    """``folder/<stem>.<image extension>`` (the first that exists); EvaluationError naming the folder if none."""
    for extension in IMAGE_EXTENSIONS:
        for candidate in (folder / f"{stem}{extension}", folder / f"{stem}{extension.upper()}"):
            if candidate.is_file():
                return candidate
    raise EvaluationError(f"no RGB image {stem}.({'/'.join(e[1:] for e in IMAGE_EXTENSIONS)}) in {folder} (the "
                          "camouflage context measure, ccm, needs the images)")


def image_dataset_pairs(datadir: Path, preddir: Path, name: str, keep_excluded: bool = False,
                        with_images: bool = False) -> DatasetPairs:
    """Pairs of the image dataset ``name``: every GT file in ``datadir/name/GT`` with ``preddir/name/<stem>.png``
    (and with ``with_images`` its RGB image ``datadir/name/images/<stem>.*``)."""
    gt_dir = Path(datadir) / name / "GT"
    if not gt_dir.is_dir():
        known = sorted(p.parent.name for p in Path(datadir).glob("*/GT") if p.is_dir())
        known_text = f" (datasets there: {', '.join(known)})" if known else ""
        raise EvaluationError(f"unknown dataset {name!r}: no GT folder {gt_dir}{known_text}")
    pred_dir = Path(preddir) / name
    if not pred_dir.is_dir():
        raise EvaluationError(f"no predictions for {name}: folder {pred_dir} not found")
    gt_files = [gt_dir / f for f in _listdir(gt_dir) if f.lower().endswith(GT_EXTENSIONS)]
    if not gt_files:
        raise EvaluationError(f"no GT maps ({'/'.join(GT_EXTENSIONS)}) in {gt_dir}")
    if not any(f.lower().endswith(".png") for f in _listdir(pred_dir)):
        raise EvaluationError(f"no prediction maps (.png) in {pred_dir}")
    notes = []
    excluded = EXCLUDED.get(name, frozenset()) if not keep_excluded else frozenset()
    if excluded:
        dropped = [f for f in gt_files if f.stem in excluded]
        gt_files = [f for f in gt_files if f.stem not in excluded]
        if dropped:
            notes.append(f"{name}: {len(dropped)} images excluded as in the authors' evaluation "
                         f"({', '.join(f.stem for f in dropped)}); --keep-excluded keeps them")
    pairs, missing = _split_missing([Pair(pred_dir / f"{f.stem}.png", f) for f in gt_files])
    if with_images:
        pairs = [Pair(pair.pred, pair.gt, image=_image_of(Path(datadir) / name / "images", pair.gt.stem))
                 for pair in pairs]
    return DatasetPairs(name, pairs, missing, notes, str(gt_dir.resolve()))


def video_dataset_pairs(root: Path, list_file: Path, preddir: Path, name: str, keep_ends: bool = False,
                        with_images: bool = False) -> DatasetPairs:
    """Pairs of the video dataset ``name``: the annotated frames of the list's videos whose clip folder contains
    ``/name``, without the first and last frame of each video unless ``keep_ends``; videos contiguous, frames
    sorted."""
    try:
        videos = select_videos(read_video_list(list_file), name)
    except DataError as err:
        raise EvaluationError(str(err)) from None
    if not videos:
        raise EvaluationError(f"unknown video dataset {name!r}: no video line of {list_file} contains '/{name}'")
    pred_dir = Path(preddir) / name
    if not pred_dir.is_dir():
        raise EvaluationError(f"no predictions for {name}: folder {pred_dir} not found")
    pairs, notes = [], []
    for entry in videos:
        try:
            frames = annotated_frames(root, entry)
        except DataError as err:
            raise EvaluationError(str(err)) from None
        if not keep_ends:
            frames = frames[1:-1]
        if not frames:
            notes.append(f"{name}/{entry.video}: fewer than 3 annotated frames, nothing left after dropping the "
                         "first and last (--keep-ends keeps them)")
            continue
        for frame in frames:
            image = Path(root) / entry.clip_dir / image_name(frame, entry)
            if with_images and not image.is_file():
                raise EvaluationError(f"no RGB frame {image} (the camouflage context measure, ccm, needs it)")
            pairs.append(Pair(pred_dir / entry.video / f"{image.stem}.png", Path(root) / entry.anno_dir / frame,
                              entry.video, image if with_images else None))
    pairs, missing = _split_missing(pairs)
    gt_source = f"annotation folders of {Path(list_file).resolve()} under {Path(root).resolve()}"
    return DatasetPairs(name, pairs, missing, notes, gt_source)


def read_grey(path: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode an image file to (H, W) uint8 grey levels (OpenCV's grey conversion, as PySODMetrics' examples read
    maps; 16-bit files are scaled to 8 bits). Raises `EvaluationError` naming the file."""
    try:
        return decode_image(path, cv2.IMREAD_GRAYSCALE, max_pixels)
    except DataError as err:
        raise EvaluationError(str(err)) from None


def read_rgb_image(path: Path, shape: tuple[int, int], max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode an RGB image (H, W, 3) uint8 that must have the GT's ``shape``; EvaluationError naming the file."""
    try:
        image = decode_image(path, cv2.IMREAD_COLOR, max_pixels)
    except DataError as err:
        raise EvaluationError(str(err)) from None
    if image.shape[:2] != tuple(shape):
        raise EvaluationError(f"{path}: image of {image.shape[1]}x{image.shape[0]} for a GT of {shape[1]}x{shape[0]}")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def resize_bilinear(pred: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize a uint8 map to (height, width) with PIL's bilinear filter (the authors' evaluation does the same)."""
    return np.asarray(Image.fromarray(pred).resize((width, height), Image.BILINEAR))


class PairDataset(torch.utils.data.Dataset):
    """Reads pairs for a DataLoader: item ``i`` is ``(pred, gt, resized, error, image)``; ``pred``/``gt`` (H, W) uint8
    arrays at the GT size (the prediction is resized bilinearly if its size differs, ``resized`` says so), ``image``
    the (H, W, 3) RGB image where the pair names one (else None); on a read failure all are None and ``error`` is
    the one-line message (so it survives worker processes intact)."""

    def __init__(self, pairs: list[Pair], max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
        self.pairs, self.max_pixels = pairs, max_pixels

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> tuple[np.ndarray | None, np.ndarray | None, bool, str, np.ndarray | None]:
        pair = self.pairs[index]
        image = None
        try:
            gt = read_grey(pair.gt, self.max_pixels)
            pred = read_grey(pair.pred, self.max_pixels)
            if pair.image is not None:
                image = read_rgb_image(pair.image, gt.shape, self.max_pixels)
        except EvaluationError as err:
            return None, None, False, str(err), None
        resized = pred.shape != gt.shape
        if resized:
            pred = resize_bilinear(pred, *gt.shape)
        return pred, gt, resized, "", image
