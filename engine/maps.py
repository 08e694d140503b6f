"""Predicting 8-bit saliency maps with a runner (`engine.inference`): `stream_maps` turns a stream of preprocessed
inputs into maps at their images' sizes, which the map generators, predict.py (`Predictor`) and `video_maps` use.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

from data.transforms import preprocess_test, saliency_to_uint8
from data.video import clip_groups

__all__ = ["stream_maps", "Predictor", "video_maps"]


def stream_maps(runner: nn.Module, items: Iterable[tuple[Any, torch.Tensor | None, tuple[int, int]]]
                ) -> Iterator[tuple[Any, np.ndarray | None]]:
    """(tag, input or None, (H, W)) -> (tag, (N, H, W) uint8 maps or None), in order, through the runner's `stream`
    (several inputs in flight where the backend has streams). An input is a (1, 3, S, S) image or a (1, 3T, S, S)
    clip; each of its N maps (1, or T for a clip) is upsampled bilinearly to (H, W) and quantised (design §7.2)."""
    inputs = (((tag, size), x) for tag, x, size in items)
    for (tag, size), out in runner.stream(inputs):
        yield tag, None if out is None else saliency_to_uint8(out, size)


class Predictor:
    """A runner turning preprocessed images into 8-bit maps; a video model sees an image as a still clip."""

    def __init__(self, runner: nn.Module, video: bool, nframes: int) -> None:
        self.runner, self.video, self.nframes = runner, video, nframes

    def images(self, items: Iterable[tuple[Any, torch.Tensor | None, tuple[int, int]]]
               ) -> Iterator[tuple[Any, np.ndarray | None]]:
        """(tag, (1, 3, S, S) image or None, (H, W)) -> (tag, (H, W) uint8 map or None), in order; a video model
        sees each image as a clip of nframes copies, and its last map is kept."""
        clips = ((tag, image.repeat(1, self.nframes, 1, 1) if self.video and image is not None else image, size)
                 for tag, image, size in items)
        for tag, maps in stream_maps(self.runner, clips):
            yield tag, None if maps is None else maps[-1]


def video_maps(predictor: Predictor, frames: Iterator[np.ndarray], size: int | None) -> Iterator[np.ndarray]:
    """One (H, W) uint8 map per RGB frame of a stream, in order, holding at most a few clips of frames in memory.

    An image model sees one frame at a time; a video model clips of ``nframes`` consecutive frames, grouped by
    `data.video.clip_groups` (the tail and short videos as the test clips of design §6.3 are built).
    """
    shape: tuple[int, int] | None = None

    def preprocessed() -> Iterator[torch.Tensor]:
        nonlocal shape
        for rgb in frames:
            shape = rgb.shape[:2]
            yield preprocess_test(rgb, size)

    def inputs() -> Iterator[tuple[list[int], torch.Tensor, tuple[int, int]]]:
        for clip, keep in clip_groups(preprocessed(), predictor.nframes if predictor.video else 1):
            yield keep, torch.cat(clip)[None] if predictor.video else clip[0][None], shape

    for keep, maps in stream_maps(predictor.runner, inputs()):
        yield from (maps[position] for position in keep)
