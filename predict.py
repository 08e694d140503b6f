"""Saliency maps for any images, folders and videos with a trained SDNet / SDNet-A / STDNet / STDNet-A.

    python predict.py --model sdnet --checkpoint sdnet_from_scratch.pth photo.jpg holiday/ clip.mp4 --out maps

- an image ``x.jpg`` gives ``<out>/x.png`` (8-bit map at the image's size), with ``--overlay`` also
  ``<out>/x_overlay.jpg`` (map as a heat map over the photo) and with ``--cutout`` ``<out>/x_cutout.png`` (RGBA,
  the map as alpha); the images of a folder ``f`` (searched recursively) go to ``<out>/f/<relative path>``;
- a video ``v.mp4`` / ``.avi`` / ``.mov`` gives ``<out>/v.mp4``, the maps as a video at the same size and frame
  rate. Frames are streamed: an image model sees one frame at a time, a video model clips of ``--nframes`` frames
  (the last, shorter group is completed with the frames before it; a video shorter than one clip is played back
  and forth to fill it).

The model runs converted (DCR), as for the paper's speed numbers; each input is resized to ``--size`` squared
(default: the model's evaluation size) like the authors' test code, and the maps are upsampled back.
"""

from __future__ import annotations

import argparse
import os
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

import configs
import utils
from data.atomic import atomic_path
from data.lists import ping_pong
from data.readers import IMAGE_EXTENSIONS
from data.transforms import preprocess_test

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders and .mp4/.avi/.mov videos")
    parser.add_argument("--model", required=True, choices=sorted(configs.MODELS))
    parser.add_argument("--checkpoint", required=True, help="the authors' release or ours, training form or converted")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--size", type=int, default=None,
                        help="square network input size (default: sdnet 320, sdneta 384, video models 256)")
    parser.add_argument("--overlay", action="store_true", help="also write <name>_overlay.jpg for each image")
    parser.add_argument("--cutout", action="store_true", help="also write <name>_cutout.png (RGBA) for each image")
    parser.add_argument("-j", "--workers", type=int, default=2, help="image reading processes (0: in the main one)")
    utils.add_inference_args(parser)
    return parser


def collect_inputs(inputs: list[str], out: Path) -> tuple[list[tuple[Path, Path]], list[tuple[Path, Path]]]:
    """(image, output base) and (video, output base) pairs; the output base has no suffix. Usage errors exit 2."""
    images, videos = [], []
    out_resolved = out.resolve()
    for name in inputs:
        path = Path(name)
        if path.is_dir():
            base = out / path.resolve().name
            # Skip the output folder when it lies inside an input folder (maps of an earlier run are no inputs).
            found = [(p, base / p.relative_to(path).with_suffix("")) for p in sorted(path.rglob("*"))
                     if p.is_file() and not p.resolve().is_relative_to(out_resolved)]
        elif path.is_file():
            found = [(path, out / path.stem)]
        else:
            utils.fail(f"input {path}: no such file or folder")
        for file, target in found:
            suffix = file.suffix.lower()
            if suffix in VIDEO_EXTENSIONS:
                videos.append((file, target))
            elif suffix in IMAGE_EXTENSIONS or not path.is_dir():  # a named file is tried as an image
                images.append((file, target))
    outputs = [target.with_suffix(".png") for _, target in images] + [t.with_suffix(".mp4") for _, t in videos]
    clashes = sorted({str(p) for p in outputs if outputs.count(p) > 1})
    if clashes:
        utils.fail(f"several inputs would write {clashes[0]} (rename them or pass them separately)")
    sources = {file.resolve() for file, _ in images + videos}
    overwritten = [p for p in outputs if p.resolve() in sources]
    if overwritten:
        utils.fail(f"--out {out}: the map {overwritten[0]} would overwrite an input")
    if not images and not videos:
        utils.fail("no image or video found in the inputs")
    return images, videos


def open_video(path: Path) -> tuple[cv2.VideoCapture, float, int]:
    """Capture, frame rate (25 if the file has none) and frame count (0 if unknown); exits 2 if unreadable."""
    # Our one-line error replaces OpenCV's and FFmpeg's own messages about the file.
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    capture = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)  # not the image-sequence backend, which logs errors
    if not capture.isOpened() or not capture.grab():
        capture.release()
        utils.fail(f"cannot read video {path} (corrupt, empty or unsupported format)")
    capture.set(cv2.CAP_PROP_POS_FRAMES, 0)
    fps = capture.get(cv2.CAP_PROP_FPS)
    return capture, fps if fps > 0 else 25.0, max(int(capture.get(cv2.CAP_PROP_FRAME_COUNT)), 0)


class Predictor:
    """The inference runner (which moves inputs to its device and precision); turns preprocessed frames into 8-bit
    maps at a given size."""

    def __init__(self, model: utils.InferenceRunner, video: bool, nframes: int) -> None:
        self.model, self.video, self.nframes = model, video, nframes

    def image(self, image: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
        """(1, 3, S, S) -> (H, W) uint8; a video model sees the image as a still clip of nframes copies."""
        batch = image.repeat(1, self.nframes, 1, 1) if self.video else image
        return utils.saliency_to_uint8(self.model(batch)[-1:], size)[0]

    def clip(self, frames: list[torch.Tensor], size: tuple[int, int]) -> np.ndarray:
        """T frames (3, S, S) -> (T, H, W) uint8, predicted as one clip."""
        return utils.saliency_to_uint8(self.model(torch.cat(frames)[None]), size)


def overlay(rgb: np.ndarray, saliency: np.ndarray) -> np.ndarray:
    """(H, W, 3) RGB and (H, W) map -> BGR image: the map as a JET heat map blended half-and-half over the photo."""
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    return cv2.addWeighted(bgr, 0.5, cv2.applyColorMap(saliency, cv2.COLORMAP_JET), 0.5, 0)


def cutout(rgb: np.ndarray, saliency: np.ndarray) -> np.ndarray:
    """(H, W, 3) RGB and (H, W) map -> (H, W, 4) BGRA with the map as alpha."""
    return np.dstack([cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), saliency])


def predict_images(predictor: Predictor, images: list[tuple[Path, Path]], args, bar: tqdm, logger) -> int:
    """Write the maps (and visualisations) of ``images``; returns the number of unreadable images."""
    keep_rgb = args.overlay or args.cutout
    dataset = utils.ImageFiles([path for path, _ in images], args.size, keep_rgb=keep_rgb)
    failures = 0
    for item in utils.inference_loader(dataset, args.workers):
        bar.update()
        if item["error"]:
            logger.error(item["error"])
            failures += 1
            continue
        target = images[item["index"]][1]
        saliency = predictor.image(item["image"], item["size"])
        utils.write_image_atomic(target.with_suffix(".png"), saliency)
        if args.overlay:
            utils.write_image_atomic(target.with_name(target.name + "_overlay.jpg"), overlay(item["rgb"], saliency))
        if args.cutout:
            utils.write_image_atomic(target.with_name(target.name + "_cutout.png"), cutout(item["rgb"], saliency))
    return failures


def read_frames(capture: cv2.VideoCapture) -> Iterator[np.ndarray]:
    """The frames of a capture as RGB uint8 arrays, one at a time."""
    while True:
        ok, bgr = capture.read()
        if not ok:
            return
        yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def video_maps(predictor: Predictor, frames: Iterator[np.ndarray], size: int) -> Iterator[np.ndarray]:
    """One (H, W) uint8 map per frame, in order, holding at most one clip of frames in memory.

    A video model predicts consecutive groups of nframes; the leftover tail is predicted as the clip of the last
    nframes frames (only its new maps are kept) and a video shorter than a clip as one ping-pong padded clip
    (a frame's last occurrence is kept), as the test clips of SPEC §6.3 are built.
    """
    length = predictor.nframes if predictor.video else 1
    recent: deque[torch.Tensor] = deque(maxlen=length)
    pending = count = 0
    shape = None
    for rgb in frames:
        shape = rgb.shape[:2]
        recent.append(preprocess_test(rgb, size))
        pending, count = pending + 1, count + 1
        if not predictor.video:
            yield predictor.image(recent[0][None], shape)
            pending = 0
        elif pending == length:
            yield from predictor.clip(list(recent), shape)
            pending = 0
    if pending and count >= length:
        yield from predictor.clip(list(recent), shape)[length - pending:]
    elif pending:
        order = ping_pong(list(range(count)), length)
        maps = predictor.clip([recent[i] for i in order], shape)
        last = {frame: t for t, frame in enumerate(order)}
        yield from (maps[last[frame]] for frame in range(count))


def predict_video(predictor: Predictor, path: Path, target: Path, size: int, bar: tqdm) -> int:
    """Stream ``path`` into an .mp4 of maps at ``target``; returns the number of frames."""
    capture, fps, _ = open_video(path)
    writer, frames = None, 0
    try:
        # OpenCV picks the container by the extension, so the temporary file ends in .mp4 too.
        with atomic_path(target, suffix=".mp4") as temporary:
            for saliency in video_maps(predictor, read_frames(capture), size):
                if writer is None:
                    height, width = saliency.shape
                    writer = cv2.VideoWriter(str(temporary), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
                    if not writer.isOpened():
                        utils.fail(f"cannot write video {target} (no mp4v encoder in this OpenCV build)")
                writer.write(cv2.cvtColor(saliency, cv2.COLOR_GRAY2BGR))
                frames += 1
                bar.update()
            if writer is None:
                utils.fail(f"cannot read video {path}: no frame could be decoded")
            writer.release()
    finally:
        capture.release()
        if writer is not None:
            writer.release()
    return frames


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    logger = utils.setup_logger()
    spec = configs.MODELS[args.model]
    args.size = args.size or spec["size"]
    images, videos = collect_inputs(args.inputs, Path(args.out))
    frame_counts = []
    for path, _ in videos:  # unreadable videos end the run before anything is written
        capture, _, frame_count = open_video(path)
        capture.release()
        frame_counts.append(frame_count)
    model = utils.load_inference_model(args, args.checkpoint)
    device = utils.select_device(args.gpu)
    model = utils.prepare_for_inference(model, device, eager=args.eager, half=args.half)
    predictor = Predictor(model, spec["kind"] == "video", args.nframes)
    start = time.perf_counter()
    with tqdm(total=len(images) + sum(frame_counts), unit="img") as bar:
        failures = predict_images(predictor, images, args, bar, logger) if images else 0
        frames = sum(predict_video(predictor, path, target.with_suffix(".mp4"), args.size, bar)
                     for path, target in videos)
    count = len(images) - failures + frames
    elapsed = time.perf_counter() - start
    logger.info("%d images and video frames in %.2f s: %.1f images/s on %s", count, elapsed,
                count / max(elapsed, 1e-9), device)
    if failures:
        utils.fail(f"{failures} image(s) could not be read (listed above); their maps are missing", status=1)


if __name__ == "__main__":
    main()
