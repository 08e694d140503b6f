"""Training pairs checked before the first step: every distinct (image, GT) file pair of a training set in one pass,
so that a bad file stops a run before anything is written instead of in the middle of an epoch.

A pair is refused when its image file is refused by the guard of `data.guard` (unreadable, empty, cut short, not an
image, over the pixel cap: the header only), its GT cannot be decoded, the GT's size differs from the image's, or
the GT is no mask: more than `MAX_GREY_FRACTION` of its pixels lie strictly between 10% and 90% grey (ground-truth
maps are binary up to their anti-aliased edges; a photo saved as GT is not). Image pixels are decoded only while
training: a file whose header is whole but whose compressed data is damaged is still found then.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from data.guard import read_guarded
from data.readers import DataError, read_gt

__all__ = ["MAX_GREY_FRACTION", "PairCheck", "check_pairs", "distinct_pairs", "drop_samples"]

MAX_GREY_FRACTION = 0.25
Pair = tuple[Path, Path]


def check_pair(image: Path, gt: Path, max_pixels: int) -> str | None:
    """None for a good training pair, else a one-line reason naming the file at fault."""
    try:
        header = read_guarded(image, max_pixels)[1]
        mask = read_gt(gt, max_pixels=max_pixels)
    except DataError as err:
        return str(err)
    if mask.shape != (header.height, header.width):
        return (f"GT size {mask.shape[0]}x{mask.shape[1]} differs from image size {header.height}x{header.width}: "
                f"{image} / {gt}")
    grey = float(np.count_nonzero((mask > 0.1) & (mask < 0.9))) / mask.size
    if grey > MAX_GREY_FRACTION:
        return (f"GT {gt} is not a mask: {grey:.0%} of its pixels are grey (between 10% and 90%; a GT is black and "
                "white up to its edges)")
    return None


class PairCheck(Dataset):
    """Item ``i``: ``(i, reason or None)`` for pair ``i`` of ``pairs`` (`check_pair`), for a DataLoader's workers."""

    def __init__(self, pairs: list[Pair], max_pixels: int) -> None:
        self.pairs, self.max_pixels = pairs, max_pixels

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> tuple[int, str | None]:
        return index, check_pair(*self.pairs[index], self.max_pixels)


def _keep(item):
    return item


def check_pairs(pairs: list[Pair], max_pixels: int, workers: int) -> Iterator[tuple[Pair, str | None]]:
    """``(pair, reason or None)`` for every pair, in order, checked by ``workers`` processes (0: this one)."""
    # A generator of its own: the loader's seed draw must not move the caller's global random state (the seeded
    # initialisation that follows).
    loader = DataLoader(PairCheck(pairs, max_pixels), batch_size=None, num_workers=workers, collate_fn=_keep,
                        generator=torch.Generator())
    for index, reason in loader:
        yield pairs[index], reason


def distinct_pairs(dataset) -> list[Pair]:
    """The distinct (image, GT) file pairs of a training dataset's samples (``dataset.sample_pairs(i)``), in order
    of first use."""
    return list(dict.fromkeys(pair for index in range(len(dataset)) for pair in dataset.sample_pairs(index)))


def drop_samples(dataset, bad: Iterable[Pair]) -> int:
    """Remove from ``dataset.samples`` every sample that uses a pair of ``bad``; returns how many were removed."""
    bad = set(bad)
    keep = [sample for index, sample in enumerate(dataset.samples)
            if not any(pair in bad for pair in dataset.sample_pairs(index))]
    dropped = len(dataset.samples) - len(keep)
    dataset.samples = keep
    return dropped
