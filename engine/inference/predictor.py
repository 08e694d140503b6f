"""The one way from an image to its map files: `Predictor` turns images (bytes, a file, an RGB array, or inputs
preprocessed by a data set's reading processes), clips and videos into 8-bit saliency maps and the files predict.py
writes, through a runner (`engine.inference.runner`). predict.py, both map generators and serve.py use it.

`ModelInput` is the one place fixing what a network takes: the input size, whether it is a video model and its
frames per clip (a video model sees a still image as a clip of copies, and its last map is kept).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

import configs
from data.atomic import encode_image
from data.readers import DEFAULT_MAX_PIXELS, read_rgb, rgb_from_bytes
from data.transforms import cutout, display_rgb, overlay, preprocess_test, saliency_to_uint8
from data.video import clip_groups
from engine.inference.runner import prepare_for_inference
from models import ModelDescription, load_model

__all__ = ["ModelInput", "Prepared", "Predictor", "FILE_KINDS"]

# The files of an image: kind -> (what follows the image's name, suffix), as predict.py names them.
FILE_KINDS = {"map": ("", ".png"), "overlay": ("_overlay", ".jpg"), "cutout": ("_cutout", ".png")}


@dataclass(frozen=True)
class ModelInput:
    """What a network takes: square inputs of ``size`` pixels (None: each image at its own size), and for a video
    model (``video``) clips of ``nframes`` frames, frame t in channels 3t..3t+2."""

    size: int | None
    video: bool
    nframes: int

    @classmethod
    def of(cls, description: ModelDescription, size: int | None = None, *, full_resolution: bool = False
           ) -> ModelInput:
        """The input of the model ``description`` describes: ``size`` given, else the model's evaluation size
        (sdnet 320, sdneta 384, video models 256), or each image's own with ``full_resolution``."""
        video = description.kind == "video"
        if size is None and not full_resolution:
            size = configs.MODELS[description.model]["size"]
        return cls(size, video, (description.nframes or 1) if video else 1)

    @property
    def channels(self) -> int:
        return 3 * self.nframes

    def shape(self) -> tuple[int, int, int, int]:
        """The (1, 3T, S, S) shape of one input (a full-resolution input has none: ValueError)."""
        if self.size is None:
            raise ValueError("a full-resolution input has no fixed shape")
        return (1, self.channels, self.size, self.size)


@dataclass
class Prepared:
    """One image ready for the network: ``input`` (1, 3T, S, S), ``rgb`` the upright image (H, W, 3) uint8 for the
    visualisations, ``shape`` its (H, W)."""

    input: torch.Tensor
    rgb: np.ndarray
    shape: tuple[int, int]


class Predictor:
    """A runner and the input it takes: images, clips and videos to (H, W) uint8 maps, and an image's files.

    Every path runs each input through the runner's `stream` (several in flight where the backend has streams), so a
    map depends on its own input only and is the same bytes whichever front door asked for it.
    """

    def __init__(self, runner: nn.Module, model_input: ModelInput) -> None:
        self.runner, self.input = runner, model_input

    @classmethod
    def from_checkpoint(cls, checkpoint: str | Path, device: torch.device | str = "cpu", *, size: int | None = None,
                        backend: str = "auto", precision: str = "fp32", threads: int | None = None,
                        cache: str | Path | None = None, **model_options: Any) -> Predictor:
        """The predictor of a checkpoint (the authors' or ours) on ``device``, its inputs at ``size`` (default:
        the model's evaluation size): the model as `models.load_model` reads it (``model_options``: what the
        checkpoint cannot say, e.g. ``tid`` and ``nframes`` of the authors' video files), the runner as
        `engine.inference.prepare_for_inference` makes it (``backend``, ``precision``, ``threads``, ``cache``)."""
        model, description = load_model(checkpoint, **model_options)
        runner = prepare_for_inference(model, device, backend=backend, precision=precision, threads=threads,
                                       cache=cache)
        return cls(runner, ModelInput.of(description, size))

    def network_input(self, image: torch.Tensor) -> torch.Tensor:
        """A preprocessed image (3, S, S) -> the network's input (1, 3T, S, S): a video model's still clip."""
        return image[None].repeat(1, self.input.nframes, 1, 1) if self.input.video else image[None]

    def prepare(self, source: bytes | str | Path | np.ndarray, *, name: str = "upload",
                max_pixels: int = DEFAULT_MAX_PIXELS) -> Prepared:
        """An image file's bytes (``name`` names it in messages), a file's path, or an RGB array (H, W, 3) uint8
        or uint16, ready for the network: decoded through the guard and upright by EXIF orientation (as a photo
        viewer shows it), then preprocessed. `data.DataError` for what cannot be read."""
        if isinstance(source, bytes):
            rgb = rgb_from_bytes(source, name, orient=True, max_pixels=max_pixels)
        elif isinstance(source, (str, Path)):
            rgb = read_rgb(source, orient=True, max_pixels=max_pixels)
        else:
            rgb = source
        return Prepared(self.network_input(preprocess_test(rgb, self.input.size)), display_rgb(rgb), rgb.shape[:2])

    def saliency(self, output: torch.Tensor, shape: tuple[int, int]) -> np.ndarray:
        """The network's output for one input ((1, 1, S, S), or (T, 1, S, S) for a clip) -> the (H, W) uint8 map of
        the image (a clip's last), upsampled to ``shape`` (design §7.2)."""
        return saliency_to_uint8(output, shape)[-1]

    def images(self, items: Iterable[tuple[Any, torch.Tensor | None, tuple[int, int]]]
               ) -> Iterator[tuple[Any, np.ndarray | None]]:
        """(tag, preprocessed image (3, S, S) or None, (H, W)) -> (tag, (H, W) uint8 map or None), in order."""
        inputs = (((tag, shape), None if image is None else self.network_input(image)) for tag, image, shape in items)
        for (tag, shape), output in self.runner.stream(inputs):
            yield tag, None if output is None else self.saliency(output, shape)

    def clips(self, items: Iterable[tuple[Any, torch.Tensor | None, tuple[int, int]]]
              ) -> Iterator[tuple[Any, np.ndarray | None]]:
        """(tag, preprocessed clip (3T, S, S) or None, (H, W)) -> (tag, (T, H, W) uint8 maps or None), in order:
        every frame's map, each upsampled to (H, W)."""
        inputs = (((tag, shape), None if clip is None else clip[None]) for tag, clip, shape in items)
        for (tag, shape), output in self.runner.stream(inputs):
            yield tag, None if output is None else saliency_to_uint8(output, shape)

    def map_of(self, source: bytes | str | Path | np.ndarray, **options: Any) -> np.ndarray:
        """The (H, W) uint8 map of one image (`prepare`'s sources and options)."""
        prepared = self.prepare(source, **options)
        [(_, output)] = self.runner.stream([(None, prepared.input)])
        return self.saliency(output, prepared.shape)

    def video(self, frames: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """One (H, W) uint8 map per RGB frame of a stream, in order, holding at most a few clips of frames in
        memory. An image model sees one frame at a time; a video model clips of ``nframes`` consecutive frames,
        grouped by `data.video.clip_groups` (the tail and short videos as the test clips of design §6.3 are
        built)."""
        shape: tuple[int, int] | None = None

        def preprocessed() -> Iterator[torch.Tensor]:
            nonlocal shape
            for rgb in frames:
                shape = rgb.shape[:2]
                yield preprocess_test(rgb, self.input.size)

        def inputs() -> Iterator[tuple[tuple[list[int], tuple[int, int]], torch.Tensor]]:
            for clip, keep in clip_groups(preprocessed(), self.input.nframes):
                yield (keep, shape), torch.cat(clip)[None]

        for (keep, size), output in self.runner.stream(inputs()):
            maps = saliency_to_uint8(output, size)
            yield from (maps[position] for position in keep)

    @staticmethod
    def files(rgb: np.ndarray, saliency: np.ndarray, kinds: Iterable[str] = ("map",)) -> dict[str, bytes]:
        """The files predict.py writes for an image (RGB (H, W, 3) uint8 and its map), those of ``kinds`` (keys of
        `FILE_KINDS`): 'map' the 8-bit PNG, 'overlay' the map as a heat map over the photo (JPEG), 'cutout' the
        photo with the map as alpha (RGBA PNG)."""
        drawn = {"map": lambda: saliency, "overlay": lambda: overlay(rgb, saliency),
                 "cutout": lambda: cutout(rgb, saliency)}
        return {kind: encode_image(drawn[kind](), FILE_KINDS[kind][1]) for kind in kinds}
