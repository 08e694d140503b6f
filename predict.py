"""Saliency maps for any images, folders and videos with a trained SDNet / SDNet-A / STDNet / STDNet-A.

    python predict.py --checkpoint checkpoints/sdnet_from_scratch.pth photo.jpg holiday/ clip.mp4 --out maps

- an image ``x.jpg`` gives ``<out>/x.png`` (8-bit map at the image's size, upright as a photo viewer shows it: a
  phone photo's EXIF orientation is applied first), with ``--overlay`` also
  ``<out>/x_overlay.jpg`` (map as a heat map over the photo) and with ``--cutout`` ``<out>/x_cutout.png`` (RGBA,
  the map as alpha); the images of a folder ``f`` (searched recursively) go to ``<out>/f/<relative path>``;
- a video ``v.mp4`` / ``.avi`` / ``.mov`` gives ``<out>/v.mp4``, the maps as a video at the same size and frame
  rate. Frames are streamed: an image model sees one frame at a time, a video model clips of ``--nframes`` frames
  (the last, shorter group is completed with the frames before it; a video shorter than one clip is played back
  and forth to fill it).

The model is what the checkpoint holds (``--model``, ``--bn`` etc. may be given and must then agree with it). It
runs converted (DCR), as for the paper's speed numbers; each input is resized to ``--size`` squared (default: the
model's evaluation size) like the authors' test code, and the maps are upsampled back.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from tqdm import tqdm

import configs
import utils
from data import DataError
from data.atomic import unwritable, write_image_atomic
from data.datasets import SODDataset, test_loader
from data.readers import IMAGE_EXTENSIONS
from data.transforms import cutout, overlay
from data.video import VIDEO_EXTENSIONS, open_video, read_frames, silence_decoder_logs, write_map_video
from engine.inference import BackendError, runner_from_flags
from engine.loading import model_from_flags
from engine.maps import Predictor, video_maps


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders and .mp4/.avi/.mov videos")
    parser.add_argument("--checkpoint", required=True, help="the authors' release or ours, training form or converted")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--size", type=utils.positive_int, default=None,
                        help="square network input size (default: sdnet 320, sdneta 384, video models 256)")
    parser.add_argument("--overlay", action="store_true", help="also write <name>_overlay.jpg for each image")
    parser.add_argument("--cutout", action="store_true", help="also write <name>_cutout.png (RGBA) for each image")
    parser.add_argument("-j", "--workers", type=int, default=2, help="image reading processes (0: in the main one)")
    utils.add_model_args(parser)
    utils.add_device_args(parser)
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


def predict_images(predictor: Predictor, images: list[tuple[Path, Path]], size: int, args, bar: tqdm,
                   logger) -> int:
    """Write the maps (and visualisations) of ``images``; returns the number of unreadable images."""
    dataset = SODDataset.files([path for path, _ in images], size, keep_rgb=args.overlay or args.cutout, orient=True)
    failures = 0
    items = ((item, None if item["error"] else item["image"][None], item["size"])
             for item in test_loader(dataset, args.workers))
    for item, saliency in predictor.images(items):
        bar.update()
        if item["error"]:
            logger.error(item["error"])
            failures += 1
            continue
        target = images[item["index"]][1]
        write_image_atomic(target.with_suffix(".png"), saliency)
        if args.overlay:
            write_image_atomic(target.with_name(target.name + "_overlay.jpg"), overlay(item["rgb"], saliency))
        if args.cutout:
            write_image_atomic(target.with_name(target.name + "_cutout.png"), cutout(item["rgb"], saliency))
    return failures


def predict_video(predictor: Predictor, path: Path, target: Path, size: int, bar: tqdm) -> int:
    """Stream ``path`` into an .mp4 of maps at ``target``; returns the number of frames."""
    def counted(maps):
        for saliency in maps:
            bar.update()
            yield saliency

    capture, fps, _ = open_video(path)
    try:
        return write_map_video(target, counted(video_maps(predictor, read_frames(capture), size)), fps)
    finally:
        capture.release()


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    logger = utils.setup_logger()
    silence_decoder_logs()  # damaged videos get our one-line error, not FFmpeg's messages
    if (why := unwritable(args.out, folder=True)) is not None:
        utils.fail(f"--out {args.out}: {why}")
    images, videos = collect_inputs(args.inputs, Path(args.out))
    frame_counts = []
    try:
        for path, _ in videos:  # unreadable videos end the run before anything is written
            capture, _, frame_count = open_video(path)
            capture.release()
            frame_counts.append(frame_count)
    except DataError as err:
        utils.fail(str(err))
    model, description = model_from_flags(args, args.checkpoint)
    size = args.size or configs.MODELS[description.model]["size"]
    video = description.kind == "video"
    device = utils.select_device(args.gpu)
    logger.info(utils.tune_process(device, args.threads))
    runner = runner_from_flags(model, args, device)
    predictor = Predictor(runner, video, description.nframes or 1)
    start = time.perf_counter()
    with tqdm(total=len(images) + sum(frame_counts), unit="img") as bar:
        try:
            failures = predict_images(predictor, images, size, args, bar, logger) if images else 0
            frames = sum(predict_video(predictor, path, target.with_suffix(".mp4"), size, bar)
                         for path, target in videos)
        except (DataError, BackendError) as err:
            utils.fail(str(err))
        except OSError as err:  # a full disk, a folder made read-only meanwhile
            utils.fail(f"--out {args.out}: cannot write: {err}")
    count = len(images) - failures + frames
    elapsed = time.perf_counter() - start
    logger.info("%d images and video frames in %.2f s: %.1f images/s on %s", count, elapsed,
                count / max(elapsed, 1e-9), device)
    if failures:
        utils.fail(f"{failures} image(s) could not be read (listed above); their maps are missing", status=1)


if __name__ == "__main__":
    main()
