"""Saliency maps for any images, folders and videos with a trained SDNet / SDNet-A / STDNet / STDNet-A.

    python predict.py --checkpoint checkpoints/sdnet_from_scratch.pth photo.jpg holiday/ clip.mp4 --out maps

- an image ``x.jpg`` gives ``<out>/x.png`` (8-bit map at the image's size, upright as a photo viewer shows it: a
  phone photo's EXIF orientation is applied first), with ``--overlay`` also
  ``<out>/x_overlay.jpg`` (map as a heat map over the photo) and with ``--cutout`` ``<out>/x_cutout.png`` (RGBA,
  the map as alpha); the images of a folder ``f`` (searched recursively) go to ``<out>/f/<relative path>``;
- a video ``v.mp4`` / ``.avi`` / ``.mov`` gives ``<out>/v.mp4``, the maps as a video at the same size and frame
  rate, with ``--overlay`` also ``<out>/v_overlay.mp4`` (the maps over the frames; ``--cutout`` is for images: an
  .mp4 keeps no alpha, so it is refused with a video). Frames are streamed: an image model sees one frame at a
  time, a video model clips of ``--nframes`` frames (the last, shorter group is completed with the frames before
  it; a video shorter than one clip is played back and forth to fill it).

The model is what the checkpoint holds (``--model``, ``--bn`` etc. may be given and must then agree with it). It
runs converted (DCR), as for the paper's speed numbers; each input is resized to ``--size`` squared (default: the
model's evaluation size) like the authors' test code, and the maps are upsampled back.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

import utils
from data import DataError
from data.atomic import unwritable, write_bytes_atomic
from data.datasets import SODDataset, test_loader
from data.guard import max_pixels_of
from data.readers import IMAGE_EXTENSION_TEXT, IMAGE_EXTENSIONS
from data.transforms import overlay
from data.video import VIDEO_EXTENSIONS, VideoStream, open_video, read_frames, silence_decoder_logs, video_writer
from engine.inference.loading import ModelFlags, add_model_args, model_from_flags
from engine.inference.predictor import FILE_KINDS, ModelInput, Predictor
from engine.inference.runner import BackendError, RunnerFlags, add_device_args, runner_from_flags


def build_parser() -> argparse.ArgumentParser:
    parser = utils.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders and .mp4/.avi/.mov videos")
    parser.add_argument("--checkpoint", required=True, help="the authors' release or ours, training form or converted")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--size", type=utils.input_size, default=None,
                        help="square network input size in pixels (default: sdnet 320, sdneta 384, video models "
                             "256)")
    parser.add_argument("--overlay", action="store_true",
                        help="also write <name>_overlay.jpg for each image, <name>_overlay.mp4 for each video")
    parser.add_argument("--cutout", action="store_true",
                        help="also write <name>_cutout.png (RGBA) for each image (not for videos: refused)")
    parser.add_argument("-j", "--workers", type=utils.data_processes, default=2,
                        help="image reading processes (0: in the main one)")
    utils.add_max_megapixels_arg(parser)
    add_model_args(parser)
    add_device_args(parser)
    return parser


# Skipped entries named in the closing warning (the rest are counted).
SKIPPED_SHOWN = 10


@dataclass
class Inputs:
    """What the inputs hold: (image, output base) and (video, output base) pairs, the output base without a
    suffix, and the entries of input folders that are skipped, each as 'path (why)'."""

    images: list[tuple[Path, Path]] = field(default_factory=list)
    videos: list[tuple[Path, Path]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def _link_problem(path: Path) -> str | None:
    """'symbolic link loop' / 'broken symbolic link' for a link that leads nowhere, else None."""
    if not path.is_symlink():
        return None
    try:
        path.resolve(strict=True)
    except RuntimeError:  # Python 3.11's word for a loop
        return "symbolic link loop"
    except OSError as err:
        return "symbolic link loop" if err.errno == errno.ELOOP else "broken symbolic link"
    return None


def _walk(folder: Path, left_out: Callable[[Path], str | None], found: list[Path], skipped: list[str]) -> None:
    """The files of ``folder`` and its subfolders into ``found`` (sorted, links to folders not followed, the
    subfolders ``left_out`` gives a reason for left out); links leading nowhere, links to folders, unreadable and
    empty folders, and what is not a regular file into ``skipped``."""
    for root, folders, names in os.walk(folder, onerror=lambda err: skipped.append(
            f"{err.filename} (unreadable folder: {err.strerror})")):
        root_path = Path(root)
        if root_path != folder and (why := left_out(root_path.resolve())):
            skipped.append(f"{root_path} ({why})")
            folders.clear()
            continue
        folders.sort()
        for name in folders:
            if (root_path / name).is_symlink():
                skipped.append(f"{root_path / name} (link to a folder, not followed)")
        if not names and not folders:
            skipped.append(f"{root_path} (empty folder)")
        for name in sorted(names):
            path = root_path / name
            problem = _link_problem(path)
            if problem:
                skipped.append(f"{path} ({problem})")
            elif path.is_file():
                found.append(path)
            else:  # a FIFO, a socket, a device: reading one could block or never end
                skipped.append(f"{path} (not a regular file)")


def _outputs(file: Path, target: Path, kinds: Iterable[str] = FILE_KINDS) -> dict[Path, str]:
    """The files predict.py writes for the input ``file`` at ``target`` (no suffix) with ``kinds`` (keys of
    `FILE_KINDS`; a video: its map video, and its overlay video with 'overlay'), resolved, each with what it is."""
    kinds = set(kinds)
    if file.suffix.lower() in VIDEO_EXTENSIONS:
        endings = {".mp4": "map video"} | ({"_overlay.mp4": "overlay video"} if "overlay" in kinds else {})
    else:
        endings = {tail + suffix: "map" if kind == "map" else f"{kind} image"
                   for kind, (tail, suffix) in FILE_KINDS.items() if kind in kinds}
    parent = target.parent.resolve()
    return {parent / (target.name + ending): what for ending, what in endings.items()}


def collect_inputs(inputs: list[str], out: Path, kinds: Iterable[str] = ("map",)) -> Inputs:
    """The images and videos the inputs name (folders searched recursively), written with ``kinds``; usage errors
    are one line, exit 2.

    A file named on the command line is always read. In a folder, what predict.py writes is no input: the folder
    that receives an input folder's maps, anything under ``--out`` when the folder itself is not, and, where
    ``--out`` is at or above the folder (maps written beside the photos), a file that is the map, overlay or cut-out
    of another input of the folder (from an earlier run); each is named as skipped. An output that would overwrite
    an input is refused."""
    collected = Inputs()
    readable = f"image ({IMAGE_EXTENSION_TEXT}) or video ({'/'.join(VIDEO_EXTENSIONS)})"
    paths = [Path(name) for name in inputs]
    for path in paths:
        if problem := _link_problem(path):
            utils.fail(f"input {path}: {problem}")
        if not path.exists():
            utils.fail(f"input {path}: no such file or folder")
        if not (path.is_dir() or path.is_file()):
            utils.fail(f"input {path}: not a file or folder")
    destinations = {(out / path.resolve().name).resolve(): path for path in paths if path.is_dir()}
    for path in paths:
        if path.is_file():
            found = [(path, out / path.stem)]  # tried as an image unless it is named as a video
        else:
            found, left_out = _folder_inputs(path, out, destinations, collected.skipped)
            if not found:
                utils.fail(f"input {path}: a folder with no {readable} in it"
                           + (f" but what predict.py writes: {left_out[0]}" if left_out else ""))
        for file, target in found:
            (collected.videos if file.suffix.lower() in VIDEO_EXTENSIONS else collected.images).append((file, target))
    outputs = ([target.with_suffix(".png") for _, target in collected.images]
               + [t.with_suffix(".mp4") for _, t in collected.videos])
    clashes = sorted({str(p) for p in outputs if outputs.count(p) > 1})
    if clashes:
        utils.fail(f"several inputs would write {clashes[0]} (rename them or pass them separately)")
    pairs = collected.images + collected.videos
    written = {output: (file, what) for file, target in pairs
               for output, what in _outputs(file, target, kinds).items()}
    for file, _ in pairs:
        if (writer := written.get(file.resolve())) is not None:
            utils.fail(f"--out {out}: the {writer[1]} of {writer[0]} would overwrite the input {file} "
                       "(choose another --out)")
    return collected


def _folder_inputs(folder: Path, out: Path, destinations: dict[Path, Path], skipped: list[str]
                   ) -> tuple[list[tuple[Path, Path]], list[str]]:
    """The (image or video, output base) pairs of an input folder, what is skipped added to ``skipped``; and the
    entries left out as what predict.py writes (`collect_inputs`)."""
    out_resolved = out.resolve()
    inside_out = folder.resolve().is_relative_to(out_resolved)

    def left_out(subfolder: Path) -> str | None:
        if subfolder in destinations:
            return f"the maps of {destinations[subfolder]} are written there"
        if subfolder.is_relative_to(out_resolved) and not inside_out:
            return f"under --out {out}: maps of an earlier run"
        return None

    files, entries = [], []
    _walk(folder, left_out, files, entries)
    base = out / folder.resolve().name
    candidates = []
    for file in files:
        if file.suffix.lower() in IMAGE_EXTENSIONS + VIDEO_EXTENSIONS:
            candidates.append((file, base / file.relative_to(folder).with_suffix("")))
        else:
            entries.append(f"{file} (not an image ({IMAGE_EXTENSION_TEXT}) or video ({'/'.join(VIDEO_EXTENSIONS)}) "
                           "by its name)")
    left = [entry for entry in entries if entry.endswith((" are written there)", "maps of an earlier run)"))]
    claims: dict[Path, list[tuple[Path, str]]] = {}
    for file, target in candidates:
        for output, what in _outputs(file, target).items():
            if output != file.resolve():  # a file that would be its own map is refused later, not left out
                claims.setdefault(output, []).append((file, what))
    found = []
    for file, target in candidates:
        if writers := claims.get(file.resolve()):  # named by the writer that is itself an input: a.jpg, not a.png
            writer = next((one for one in writers if one[0].resolve() not in claims), writers[0])
            left.append(f"{file} (the {writer[1]} of {writer[0]}, from an earlier run: not an input)")
            entries.append(left[-1])
        else:
            found.append((file, target))
    skipped += entries
    return found, left


def predict_images(predictor: Predictor, images: list[tuple[Path, Path]], args, bar: tqdm, logger) -> list[Path]:
    """Write the files of ``images`` (`Predictor.files`: the map, and with --overlay / --cutout those too), images
    read and preprocessed by ``--workers`` processes; returns the images refused (each logged in one line)."""
    kinds = ["map"] + ["overlay"] * args.overlay + ["cutout"] * args.cutout
    dataset = SODDataset.files([path for path, _ in images], predictor.input.size, keep_rgb=len(kinds) > 1,
                               orient=True, max_pixels=max_pixels_of(args.max_megapixels))
    failures = []
    items = ((item, None if item["error"] else item["image"], item["size"])
             for item in test_loader(dataset, args.workers))
    for item, saliency in predictor.images(items):
        bar.update()
        if item["error"]:
            logger.error("%s", item["error"])
            failures.append(images[item["index"]][0])
            continue
        target = images[item["index"]][1]
        for kind, data in predictor.files(item.get("rgb"), saliency, kinds).items():
            tail, suffix = FILE_KINDS[kind]
            write_bytes_atomic(target.with_name(target.name + tail + suffix), data)
    return failures


def predict_video(predictor: Predictor, path: Path, target: Path, bar: tqdm, max_pixels: int, overlay_too: bool
                  ) -> tuple[int, VideoStream]:
    """Stream ``path`` into an .mp4 of maps at ``target`` and, with ``overlay_too``, one of the maps over the frames
    at ``<target>_overlay.mp4``; returns the number of frames written and the video, which says what could not be
    decoded (its ``bad_frames``, whose maps are black, and whether it was ``cut_short``: `data.video.read_frames`)."""
    video = open_video(path, max_pixels)
    waiting: deque[np.ndarray] = deque()  # frames read whose maps are not out yet: a clip and the passes in flight

    def kept(frames):
        for frame in frames:
            waiting.append(frame)
            yield frame

    count = 0
    try:
        with contextlib.ExitStack() as files:
            add_map = files.enter_context(video_writer(target, video.fps))
            add_overlay = (files.enter_context(video_writer(target.with_name(target.stem + "_overlay.mp4"), video.fps))
                           if overlay_too else None)
            for index, saliency in enumerate(predictor.video(kept(read_frames(video)))):
                frame = waiting.popleft()
                if index in video.bad_frames:  # filled as frames are read, always before their maps come out
                    saliency = np.zeros_like(saliency)
                add_map(saliency)
                if add_overlay is not None:
                    add_overlay(overlay(frame, saliency))
                bar.update()
                count += 1
    finally:
        video.release()
    return count, video


def _positions(numbers: list[int]) -> str:
    shown = ", ".join(map(str, numbers[:SKIPPED_SHOWN]))
    return shown + (f" and {len(numbers) - SKIPPED_SHOWN} more" if len(numbers) > SKIPPED_SHOWN else "")


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    logger = utils.setup_logger()
    silence_decoder_logs()  # damaged videos get our one-line error, not FFmpeg's messages
    if (why := unwritable(args.out, folder=True)) is not None:
        utils.fail(f"--out {args.out}: {why}")
    kinds = ["map"] + ["overlay"] * args.overlay + ["cutout"] * args.cutout
    inputs = collect_inputs(args.inputs, Path(args.out), kinds)
    if args.cutout and inputs.videos:
        utils.fail(f"--cutout: a video has no cut-out (an .mp4 keeps no alpha channel), and {inputs.videos[0][0]} is "
                   "one: give the videos without --cutout")
    max_pixels = max_pixels_of(args.max_megapixels)
    refused, videos, frame_counts = [], [], []
    for path, target in inputs.videos:  # refused videos are named now; the others are counted for the progress bar
        try:
            video = open_video(path, max_pixels)
        except DataError as err:
            logger.error("%s", err)
            refused.append(path)
            continue
        video.release()
        videos.append((path, target))
        frame_counts.append(video.frame_count)
    model, description = model_from_flags(ModelFlags.from_args(args), args.checkpoint)
    device = utils.inference_device(args.gpu, args.threads)
    runner = runner_from_flags(model, RunnerFlags.from_args(args), device)
    predictor = Predictor(runner, ModelInput.of(description, args.size))
    start, frames = time.perf_counter(), 0
    with tqdm(total=len(inputs.images) + sum(frame_counts), unit="img") as bar:
        try:
            failed_images = predict_images(predictor, inputs.images, args, bar, logger) if inputs.images else []
            refused += failed_images
            for path, target in videos:
                count, video = predict_video(predictor, path, target.with_suffix(".mp4"), bar, max_pixels,
                                             overlay_too=args.overlay)
                frames += count
                if video.bad_frames:
                    logger.error("%s: %d of %d frames could not be decoded (frames %s, counted from 0): their maps "
                                 "in %s are black", path, len(video.bad_frames), count, _positions(video.bad_frames),
                                 target.with_suffix(".mp4"))
                if video.cut_short:
                    logger.error("%s: cut short: its header declares %d frames, %d could be read (nothing decodes "
                                 "after them); %s holds their %d maps", path, video.frame_count, count,
                                 target.with_suffix(".mp4"), count)
                if video.bad_frames or video.cut_short:
                    refused.append(path)
        except (DataError, BackendError) as err:
            utils.fail(str(err))
        except OSError as err:  # a full disk, a folder made read-only meanwhile
            utils.fail(f"--out {args.out}: cannot write: {err}")
    count = len(inputs.images) - len(failed_images) + frames
    elapsed = time.perf_counter() - start
    running = elapsed - runner.prepare_seconds  # a first run of a shape compiles its network: not a rate
    logger.info("%d images and video frames in %.2f s (%.2f s of it preparing networks): %.1f images/s on %s", count,
                elapsed, runner.prepare_seconds, count / max(running, 1e-9), device)
    if inputs.skipped:
        shown = "; ".join(inputs.skipped[:SKIPPED_SHOWN])
        more = f"; and {len(inputs.skipped) - SKIPPED_SHOWN} more" if len(inputs.skipped) > SKIPPED_SHOWN else ""
        logger.warning("skipped %d entries of the input folders: %s%s", len(inputs.skipped), shown, more)
    if refused:
        utils.fail(f"{len(refused)} of {len(inputs.images) + len(inputs.videos)} inputs refused or incomplete "
                   "(listed above); every other map was written", status=1)


if __name__ == "__main__":
    main()
