"""Image SOD and video SOD datasets (design §6.1, §6.3, §7.2, §9): the one reading path of each kind of data, for
training, validation and inference.

Randomness: a training item's augmentation comes only from ``np.random.default_rng([seed, epoch, size, index])``,
so a batch is bitwise identical for any number of workers, in any process and after a resume. Call
``set_epoch(epoch)`` (and, for multi-scale image training, ``set_size(size)``) before creating each epoch's
DataLoader iterator (do not use ``persistent_workers``: workers hold a copy of the dataset).

Test-time items (``mode='test'`` / ``'val'``, and `SODDataset.files` for any image files) are dicts meant for
`test_loader`; an unreadable file does not raise but gives an item whose ``'error'`` is a one-line message naming
the file, so the caller logs it, skips the item and counts it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from data.lists import (
    StillEntry,
    VideoEntry,
    annotated_frames,
    build_clips,
    dataset_names,
    image_name,
    read_video_list,
)
from data.readers import DEFAULT_MAX_PIXELS, IMAGE_EXTENSION_TEXT, DataError, list_images, read_gt, read_rgb
from data.transforms import Augmentation, display_rgb, preprocess_test, resize_test_gt, train_gt, train_image

__all__ = ["SODDataset", "VSODDataset", "test_loader", "sod_validation_sets", "vsod_validation_sets"]

TRAIN_GAP_TARGETS = (1, 4, 8)


def _keep(item: dict) -> dict:
    return item


def test_loader(dataset: Dataset, workers: int) -> DataLoader:
    """Ordered, unbatched loader over a dataset's test-time items, ``workers`` processes reading ahead (bounded
    memory); items arrive as the dataset made them (numpy arrays stay arrays)."""
    return DataLoader(dataset, batch_size=None, shuffle=False, num_workers=workers, collate_fn=_keep)


def _split_names(names: str | list[str] | tuple[str, ...]) -> list[str]:
    if isinstance(names, str):
        names = names.split("+")
    names = [n for n in names if n]
    if not names:
        raise DataError("no dataset name given")
    return names


def find_sod_folder(root: str | os.PathLike, name: str) -> Path:
    """The folder of image dataset ``name``: ``root/name`` or else ``root/sod/name`` (the §9 layout)."""
    candidates = [Path(root) / name, Path(root) / "sod" / name]
    for folder in candidates:
        if (folder / "images").is_dir():
            return folder
    raise DataError(f"dataset {name} not found: no images/ folder in {candidates[0]} or {candidates[1]}")


class _Seeded:
    """Epoch/size bookkeeping shared by both datasets."""

    seed: int
    epoch: int
    size: int | None

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation draws of ``epoch`` (call before creating the epoch's iterator)."""
        self.epoch = int(epoch)

    def set_size(self, size: int | None) -> None:
        """Square network input size of the next pass (multi-scale training sets it before each pass)."""
        self.size = None if size is None else int(size)

    def _rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch, self.size or 0, index])


def _check_pair(image: np.ndarray, gt: np.ndarray, image_path: Path, gt_path: Path) -> None:
    if image.shape[:2] != gt.shape[:2]:
        (ih, iw), (gh, gw) = image.shape[:2], gt.shape[:2]
        raise DataError(f"GT size {gh}x{gw} differs from image size {ih}x{iw}: {image_path} / {gt_path}")


class SODDataset(_Seeded, Dataset):
    """Image SOD data from ``ROOT/<NAME>/images/*`` and ``ROOT/<NAME>/GT/<stem>.png`` (or ``ROOT/sod/<NAME>``).

    ``names`` is one name or several joined by ``+``. Images may be of any of `data.readers.IMAGE_EXTENSIONS`, mixed.

    - ``mode='train'``: every image needs a GT (checked at construction; a missing GT raises `DataError` naming
      the pair). ``ds[i]`` -> ``(image, gt)``: float32 tensors (3, S, S) ImageNet-normalised and (1, S, S) in
      [0, 1], S = ``size``, after the random crop/flip of (seed, epoch, size, i).
    - ``mode='test'``: images without GT are allowed. ``ds[i]`` -> dict with ``index`` (i), ``image`` (3, S, S)
      float32 by the authors' test preprocessing (full resolution if ``size`` is None), ``gt`` (1, H, W) float32
      at the original size or None (loaded only with ``with_gt=True``), ``name`` (file stem), ``dataset`` (its
      name), ``path`` (image path), ``size`` ((H, W) of the image), ``rgb`` ((H, W, 3) uint8, only with
      ``keep_rgb``, e.g. for overlays) and ``error`` (None, or a one-line message; then ``image``, ``gt`` and
      ``rgb`` are None).

    `SODDataset.files` gives the same test items for any list of image files.
    """

    def __init__(self, root: str | os.PathLike | None, names: str | list[str], *, mode: str = "train",
                 size: int | None = 320, seed: int = 0, with_gt: bool = False, keep_rgb: bool = False,
                 max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
        if mode not in ("train", "test"):
            raise ValueError(f"mode must be 'train' or 'test', not {mode!r}")
        self.mode, self.size, self.seed, self.epoch = mode, size, int(seed), 0
        self.with_gt, self.keep_rgb, self.max_pixels = with_gt or mode == "train", keep_rgb, max_pixels
        self.orient = False  # datasets are read as stored, as the authors read them (design §7.2)
        self.samples: list[tuple[str, Path, Path | None]] = []  # (dataset name, image path, GT path or None)
        if root is None:  # `files`
            return
        for name in _split_names(names):
            folder = find_sod_folder(root, name)
            images = list_images(folder / "images")
            if not images:
                raise DataError(f"no images ({IMAGE_EXTENSION_TEXT}) in {folder / 'images'}")
            gt_dir = folder / "GT"
            if mode == "train" and not gt_dir.is_dir():
                raise DataError(f"GT folder not found: {gt_dir}")
            gts = {p.name for p in gt_dir.iterdir()} if gt_dir.is_dir() else set()
            for image in images:
                gt_name = image.stem + ".png"
                if gt_name not in gts and mode == "train":
                    raise DataError(f"missing GT for training image {image}: expected {gt_dir / gt_name}")
                self.samples.append((name, image, gt_dir / gt_name if gt_name in gts else None))

    @classmethod
    def files(cls, paths: list[Path], size: int | None, keep_rgb: bool = False, orient: bool = False,
              max_pixels: int = DEFAULT_MAX_PIXELS) -> SODDataset:
        """Test items (no GT, ``dataset`` '') of any image files, in the given order; with ``orient`` each image
        is turned upright by its EXIF orientation first (`data.readers.read_rgb`), ``size`` then its upright size."""
        dataset = cls(None, "", mode="test", size=size, keep_rgb=keep_rgb, max_pixels=max_pixels)
        dataset.samples = [("", Path(path), None) for path in paths]
        dataset.orient = orient
        return dataset

    def __len__(self) -> int:
        return len(self.samples)

    def sample_pairs(self, index: int) -> list[tuple[Path, Path]]:
        """The (image, GT) files sample ``index`` reads (training: `data.pair_check`)."""
        _, image_path, gt_path = self.samples[index]
        return [(image_path, gt_path)]

    def __getitem__(self, index: int) -> Any:
        name, image_path, gt_path = self.samples[index]
        if self.mode == "train":
            image, gt = read_rgb(image_path, max_pixels=self.max_pixels), read_gt(gt_path, max_pixels=self.max_pixels)
            _check_pair(image, gt, image_path, gt_path)
            augmentation = Augmentation.draw(self._rng(index))
            return train_image(image, augmentation, self.size), train_gt(gt, augmentation, self.size)
        item = {"index": index, "image": None, "gt": None, "name": image_path.stem, "dataset": name,
                "path": image_path, "size": None, "error": None}
        try:
            image = read_rgb(image_path, orient=self.orient, max_pixels=self.max_pixels)
            item["size"] = image.shape[:2]
            if self.with_gt and gt_path is not None:
                gt = read_gt(gt_path, max_pixels=self.max_pixels)
                _check_pair(image, gt, image_path, gt_path)
                item["gt"] = torch.from_numpy(gt)[None]
            item["image"] = preprocess_test(image, self.size)
            if self.keep_rgb:
                item["rgb"] = display_rgb(image)
        except DataError as err:
            item.update(image=None, gt=None, rgb=None, error=str(err))
        return item


class VSODDataset(_Seeded, Dataset):
    """Video SOD clips from a list file (design §6.3, §7.2); paths in the list are relative to ``root``.

    Clips come from the sorted annotated frames of each video (`data.lists.build_clips`), T = ``nframes``.

    - ``mode='train'``: every video line gives clips for gap targets 1, 4 and 8 (``framegap`` only for lines
      containing ``/VOS``); every still-image line gives one static clip (the image repeated T times).
      ``ds[i]`` -> ``(clip, gt)``: float32 tensors (3T, S, S) (frame t in channels 3t..3t+2, normalised) and
      (T, 1, S, S) in [0, 1], one random crop/flip of (seed, epoch, size, i) shared by all frames.
    - ``mode='val'`` / ``'test'``: video lines only (optionally only those containing ``/<dataset>``), gap target
      ``framegap``, the first ``int(N * cut)`` annotated frames when ``cut < 1`` (the release applies ``--val-cut`` to
      the DAVSOD val set only). ``ds[i]`` -> dict with ``clip`` (3T, S, S) float32 by the authors' test
      preprocessing, ``gt`` ('val' only: (T, 1, H, W) float32 at the original size, or (T, 1, S, S) resized like
      the images when ``resize_gt``; its default None resizes only VOS GT, as the authors' validation did),
      ``frames`` (annotation file names), ``names`` (output PNG names: the image name's stem + .png, where the
      evaluation looks for the maps), ``video`` (`VideoEntry.video`), ``dataset`` (the selected ``dataset``
      name, else `VideoEntry.dataset`), ``size`` ((H, W) of the clip's last frame) and ``error`` (None, or a
      one-line message naming the unreadable file; then ``clip``/``gt`` are None).
    """

    def __init__(self, root: str | os.PathLike, list_file: str | os.PathLike, *, mode: str = "train",
                 nframes: int = 8, size: int | None = 256, framegap: float = 4, cut: float = 1.0,
                 dataset: str | None = None, seed: int = 0, resize_gt: bool | None = None,
                 weighted: tuple[str, float] | None = None, max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
        if mode not in ("train", "val", "test"):
            raise ValueError(f"mode must be 'train', 'val' or 'test', not {mode!r}")
        self.root, self.mode, self.nframes, self.size = Path(root), mode, int(nframes), size
        self.seed, self.epoch, self.resize_gt, self.dataset = int(seed), 0, resize_gt, dataset
        self.weighted, self.max_pixels = weighted, max_pixels
        entries = read_video_list(list_file)
        if dataset is not None:
            entries = [e for e in entries if isinstance(e, VideoEntry) and e.belongs_to(dataset)]
        elif mode != "train":
            entries = [e for e in entries if isinstance(e, VideoEntry)]
        if not entries:
            where = f" for dataset {dataset}" if dataset else ""
            raise DataError(f"no usable lines{where} in list file {list_file}")
        # A sample is (entry, annotation names of the clip) or (still entry, None).
        self.samples: list[tuple[VideoEntry | StillEntry, list[str] | None]] = []
        for entry in entries:
            if isinstance(entry, StillEntry):
                self._check_still(entry)
                self.samples.append((entry, None))
                continue
            frames = annotated_frames(self.root, entry, cut if mode != "train" else 1.0)
            if mode == "train":
                self._check_images(entry, frames)
            targets = TRAIN_GAP_TARGETS if mode == "train" and not entry.belongs_to("VOS") else (framegap,)
            for target in targets:
                self.samples.extend((entry, clip) for clip in build_clips(frames, self.nframes, target))

    def _check_still(self, entry: StillEntry) -> None:
        for path in (self.root / entry.image, self.root / entry.gt):
            if not path.is_file():
                raise DataError(f"missing file {path} of training pair {entry.image} {entry.gt}")

    def _check_images(self, entry: VideoEntry, frames: list[str]) -> None:
        folder = self.root / entry.clip_dir
        if not folder.is_dir():
            raise DataError(f"frame folder not found: {folder}")
        present = set(os.listdir(folder))
        for frame in frames:
            if image_name(frame, entry) not in present:
                raise DataError(f"missing image {folder / image_name(frame, entry)} for annotation "
                                f"{self.root / entry.anno_dir / frame}")

    def __len__(self) -> int:
        return len(self.samples)

    def _paths(self, entry: VideoEntry, frame: str) -> tuple[Path, Path]:
        return self.root / entry.clip_dir / image_name(frame, entry), self.root / entry.anno_dir / frame

    def sample_pairs(self, index: int) -> list[tuple[Path, Path]]:
        """The (image, GT) files sample ``index`` reads: a still pair, or a clip's frames (`data.pair_check`)."""
        entry, clip = self.samples[index]
        if isinstance(entry, StillEntry):
            return [(self.root / entry.image, self.root / entry.gt)]
        return [self._paths(entry, frame) for frame in clip]

    def __getitem__(self, index: int) -> Any:
        if self.mode == "train":
            return self._train_item(index)
        return self._test_item(index)

    def _train_item(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        entry, clip = self.samples[index]
        augmentation = Augmentation.draw(self._rng(index))
        pairs = self.sample_pairs(index)
        images, gts = [], []
        for image_path, gt_path in pairs:
            image, gt = read_rgb(image_path, max_pixels=self.max_pixels), read_gt(gt_path, max_pixels=self.max_pixels)
            _check_pair(image, gt, image_path, gt_path)
            images.append(train_image(image, augmentation, self.size))
            gts.append(train_gt(gt, augmentation, self.size))
        if len(pairs) == 1:  # a still image: a static clip
            images, gts = images * self.nframes, gts * self.nframes
        if self.weighted is None:
            return torch.cat(images, dim=0), torch.stack(gts, dim=0)
        first = "/" + pairs[0][0].relative_to(self.root).as_posix()
        weight = self.weighted[1] if f"/{self.weighted[0]}/" in first else 1.0
        return torch.cat(images, dim=0), torch.stack(gts, dim=0), torch.tensor(weight)

    def _test_item(self, index: int) -> dict[str, Any]:
        entry, clip = self.samples[index]
        names = [Path(image_name(frame, entry)).stem + ".png" for frame in clip]
        item = {"clip": None, "gt": None, "frames": list(clip), "names": names, "video": entry.video,
                "dataset": self.dataset or entry.dataset, "size": None, "error": None}
        resize_gt = entry.dataset == "VOS" if self.resize_gt is None else self.resize_gt
        try:
            frames, gts = [], []
            for frame in clip:
                image_path, gt_path = self._paths(entry, frame)
                image = read_rgb(image_path, max_pixels=self.max_pixels)
                frames.append(preprocess_test(image, self.size))
                if self.mode == "val":
                    gt = read_gt(gt_path, dtype=np.float64, max_pixels=self.max_pixels)
                    _check_pair(image, gt, image_path, gt_path)
                    if resize_gt and self.size is not None:
                        gt = resize_test_gt(gt, self.size)
                    gts.append(torch.from_numpy(gt.astype(np.float32))[None])
            item["size"] = image.shape[:2]
            if len({t.shape for t in frames}) > 1 or len({t.shape for t in gts}) > 1:
                raise DataError(f"frames of one clip differ in size in {self.root / entry.clip_dir}")
            item["clip"] = torch.cat(frames, dim=0)
            if gts:
                item["gt"] = torch.stack(gts, dim=0)
        except DataError as err:
            item.update(clip=None, gt=None, error=str(err))
        return item


def sod_validation_sets(root: str | os.PathLike, val_data: str, size: int, max_pixels: int = DEFAULT_MAX_PIXELS
                        ) -> dict[str, SODDataset]:
    """Image training's validation set by name: test-mode ``val_data`` with its GT at ``size`` ({} for '')."""
    if not val_data:
        return {}
    return {val_data: SODDataset(root, val_data, mode="test", size=size, with_gt=True, max_pixels=max_pixels)}


def vsod_validation_sets(root: str | os.PathLike, val_lst: str | os.PathLike, *, nframes: int, size: int,
                         framegap: float, val_cut: float, max_pixels: int = DEFAULT_MAX_PIXELS
                         ) -> dict[str, VSODDataset]:
    """Video training's validation sets: one per dataset name of the list file (DAVSOD, VOS, DAVIS, ...), in list
    order; only DAVSOD is cut to its first ``val_cut`` of annotated frames (>= 1: all; design §6.3). {} without a
    list."""
    if not val_lst:
        return {}
    cut = val_cut if val_cut < 1 else 1.0
    return {name: VSODDataset(root, val_lst, mode="val", nframes=nframes, size=size, framegap=framegap,
                              cut=cut if name == "DAVSOD" else 1.0, dataset=name, max_pixels=max_pixels)
            for name in dataset_names(read_video_list(val_lst))}
