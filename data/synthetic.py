"""Bundled synthetic SOD / VSOD data in the real layouts (design §9): ``python -m data.synthetic --root DIR``.

Writes ``DIR/sod/SYN-TR`` and ``DIR/sod/SYN-TE`` (``images/*.jpg|png`` + ``GT/*.png``), ``DIR/vsod/SYN-V-train``
and ``DIR/vsod/SYN-V-test`` (DAVSOD layout: ``<video>/Imgs/<video>_00001.png`` and ``<video>/GT_object_level/``)
and ``DIR/lists/{train,val,test}_video_lst.txt`` (train: the SYN-TR still images + the training videos; val and
test: the test videos), all paths relative to DIR.

What makes an object salient here, as in natural photos: it is in focus (sharp, with soft anti-aliased edges)
in front of a defocused, cluttered background; it is large and usually of a colour that stands out. The task is
not solvable by one cue alone: backgrounds are textured and cluttered, non-salient distractors are sometimes
saturated (but small and out of focus), about a quarter of the objects have a low contrast to the background
(similar hue and brightness; only focus, texture and shape tell them apart), objects have varied shapes, sizes
and positions (anywhere in the frame, possibly cut by the border, sometimes two objects), so a centre prior
scores poorly. Videos add object motion, rotation, scaling and a camera pan over a larger background.

Every item is generated from its own seed ``[seed, part, index]``, so the output is identical for a given
seed whatever the number of worker processes.
"""

from __future__ import annotations

import argparse
import colorsys
import os
import shutil
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from utils import ArgumentParser, data_processes, seed_number, setup_logger

PARTS = {"sod-train": 1, "sod-test": 2, "video-train": 3, "video-test": 4}


@dataclass(frozen=True)
class SyntheticSizes:
    """How much data to write (defaults: a CPU-sized demo)."""

    sod_train: int = 300
    sod_test: int = 100
    video_train: int = 8
    video_test: int = 4
    min_frames: int = 24
    max_frames: int = 40


# ----------------------------------------------------------------------------------------------- appearance

def _hsv(hue: float, saturation: float, value: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(hue % 1.0, float(np.clip(saturation, 0, 1)), float(np.clip(value, 0, 1))),
                    dtype=np.float32)


def _smooth_field(rng: np.random.Generator, height: int, width: int, cells: int, channels: int = 1) -> np.ndarray:
    """Low-frequency noise in [0, 1], (H, W[, C]) float32, from a coarse random grid upsampled bicubically."""
    grid = rng.random((cells, max(2, round(cells * width / height)), channels)).astype(np.float32)
    field = cv2.resize(grid, (width, height), interpolation=cv2.INTER_CUBIC)
    return np.clip(field, 0, 1).reshape(height, width, channels) if channels > 1 else np.clip(field, 0, 1)


def _pattern(kind: str, xs: np.ndarray, ys: np.ndarray, frequency: float, angle: float) -> np.ndarray:
    """A zero-mean texture in [-1, 1] over coordinates (xs, ys)."""
    u = xs * np.cos(angle) + ys * np.sin(angle)
    v = -xs * np.sin(angle) + ys * np.cos(angle)
    if kind == "stripes":
        return np.sin(u * frequency)
    if kind == "checks":
        return np.sign(np.sin(u * frequency) * np.sin(v * frequency)) * 0.8
    if kind == "spots":
        return np.clip(np.cos(u * frequency) * np.cos(v * frequency) * 2 - 1, -1, 1)
    return np.zeros_like(u)


@dataclass(frozen=True)
class Scene:
    """Colours shared by a background and the objects placed on it."""

    hue: float
    palette: tuple[np.ndarray, ...]


def _scene(rng: np.random.Generator) -> Scene:
    hue = rng.random()
    palette = tuple(_hsv(hue + rng.normal(0, 0.06), rng.uniform(0.08, 0.5), rng.uniform(0.25, 0.9))
                    for _ in range(3))
    return Scene(hue, palette)


def _clutter_colour(rng: np.random.Generator, scene: Scene) -> np.ndarray:
    if rng.random() < 0.3:  # a saturated distractor: colour alone does not make an object salient
        return _hsv(rng.random(), rng.uniform(0.5, 1.0), rng.uniform(0.4, 1.0))
    base = scene.palette[rng.integers(len(scene.palette))]
    return np.clip(base + rng.normal(0, 0.08, 3), 0, 1).astype(np.float32)


def _background(rng: np.random.Generator, scene: Scene, height: int, width: int) -> np.ndarray:
    """Textured, cluttered, defocused background (H, W, 3) float32 in [0, 1]."""
    mix = _smooth_field(rng, height, width, int(rng.integers(2, 6)), channels=3)
    mix /= mix.sum(axis=2, keepdims=True) + 1e-6
    image = sum(mix[:, :, i: i + 1] * scene.palette[i] for i in range(3))
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    kind = ["stripes", "checks", "spots", "noise"][rng.integers(4)]
    if kind == "noise":
        texture = _smooth_field(rng, height, width, max(4, min(height, width) // int(rng.integers(3, 8)))) * 2 - 1
    else:
        texture = _pattern(kind, xs, ys, rng.uniform(0.15, 0.6), rng.uniform(0, np.pi))
    image = image + texture[:, :, None] * rng.uniform(0.03, 0.15)
    side = min(height, width)
    for _ in range(int(rng.integers(12, 40))):
        colour = _clutter_colour(rng, scene)
        centre = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        size = int(side * rng.uniform(0.02, 0.12))
        layer = np.zeros((height, width), np.uint8)
        shape = rng.integers(3)
        if shape == 0:
            cv2.ellipse(layer, centre, (size, max(1, int(size * rng.uniform(0.3, 1)))), rng.uniform(0, 180), 0, 360,
                        255, -1, cv2.LINE_AA)
        elif shape == 1:
            end = (centre[0] + int(rng.normal(0, side * 0.2)), centre[1] + int(rng.normal(0, side * 0.2)))
            cv2.line(layer, centre, end, 255, int(rng.integers(1, 5)), cv2.LINE_AA)
        else:
            corner = (centre[0] + size, centre[1] + int(size * rng.uniform(0.3, 1.5)))
            cv2.rectangle(layer, centre, corner, 255, -1, cv2.LINE_AA)
        alpha = layer.astype(np.float32)[:, :, None] / 255 * rng.uniform(0.5, 1.0)
        image = image * (1 - alpha) + colour * alpha
    sigma = rng.uniform(1.0, 2.5)  # defocus: the background is never as sharp as the salient object
    return np.clip(cv2.GaussianBlur(image.astype(np.float32), (0, 0), sigma), 0, 1)


# ----------------------------------------------------------------------------------------------- objects

@dataclass(frozen=True)
class ObjectStyle:
    """Shape and appearance of one object, drawn once (re-rendered at each pose in videos)."""

    parts: tuple[tuple[float, float, float, float, tuple[float, ...], tuple[float, ...]], ...]
    colour: np.ndarray
    texture: str
    texture_amount: float
    frequency: float
    texture_angle: float
    shading: float
    edge_blur: float


def _object_style(rng: np.random.Generator, scene: Scene, low_contrast: bool) -> ObjectStyle:
    """Random shape (one to three radial-harmonic parts) and colour (far from, or close to, the scene's hue)."""
    parts = []
    for index in range(1 if rng.random() < 0.5 else int(rng.integers(2, 4))):
        offset = (0.0, 0.0) if index == 0 else tuple(rng.normal(0, 0.55, 2))
        scale = 1.0 if index == 0 else rng.uniform(0.3, 0.7)
        aspect = rng.uniform(0.35, 1.0)
        amplitudes = tuple(rng.uniform(0, 0.25 if rng.random() < 0.7 else 0.45) / (k - 1) for k in range(2, 7))
        phases = tuple(rng.uniform(0, 2 * np.pi, 5))
        parts.append((offset[0], offset[1], scale, aspect, amplitudes, phases))
    reference = scene.palette[0]
    if low_contrast:
        h, s, v = colorsys.rgb_to_hsv(*reference)
        value = v + rng.choice([-1, 1]) * rng.uniform(0.05, 0.15)
        colour = _hsv(h + rng.normal(0, 0.04), s + rng.uniform(-0.1, 0.2), value)
    else:
        colour = _hsv(scene.hue + rng.uniform(0.2, 0.8), rng.uniform(0.45, 1.0), rng.uniform(0.35, 1.0))
    return ObjectStyle(tuple(parts), colour, ["stripes", "checks", "spots", "smooth"][rng.integers(4)],
                       rng.uniform(0.05, 0.2), rng.uniform(0.2, 0.7), rng.uniform(0, np.pi),
                       rng.uniform(0.05, 0.25), rng.uniform(0.5, 1.5))


def _polygons(style: ObjectStyle, cx: float, cy: float, radius: float, angle: float) -> list[np.ndarray]:
    theta = np.linspace(0, 2 * np.pi, 72, endpoint=False)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    polygons = []
    for ox, oy, scale, aspect, amplitudes, phases in style.parts:
        r = np.ones_like(theta)
        for k, (amplitude, phase) in enumerate(zip(amplitudes, phases), start=2):
            r += amplitude * np.cos(k * theta + phase)
        r = np.maximum(r, 0.25)  # keep the outline simple (no self-intersection)
        points = np.stack([r * np.cos(theta), aspect * r * np.sin(theta)], axis=1) * scale + (ox, oy)
        points = points @ rotation.T * radius + (cx, cy)
        polygons.append(np.round(points * 16).astype(np.int32))  # 4 fractional bits
    return polygons


def _render_object(style: ObjectStyle, height: int, width: int, cx: float, cy: float, radius: float,
                   angle: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(colour layer (H, W, 3), soft alpha (H, W), anti-aliased mask (H, W)) of an object at a pose."""
    mask = np.zeros((height, width), np.uint8)
    for polygon in _polygons(style, cx, cy, radius, angle):  # one by one: overlapping parts form a union
        part = np.zeros_like(mask)
        cv2.fillPoly(part, [polygon], 255, cv2.LINE_AA, shift=4)
        np.maximum(mask, part, out=mask)
    mask = mask.astype(np.float32) / 255
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    xs, ys = xs - cx, ys - cy
    texture = _pattern(style.texture, xs, ys, style.frequency, style.texture_angle + angle)
    shade = 1 + style.shading * (xs * np.cos(angle) + ys * np.sin(angle)) / max(radius, 1.0)
    layer = style.colour * np.clip(shade, 0.5, 1.5)[:, :, None] + texture[:, :, None] * style.texture_amount
    alpha = cv2.GaussianBlur(mask, (0, 0), style.edge_blur)
    return np.clip(layer, 0, 1), alpha, mask


def _composite(image: np.ndarray, layer: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    return image * (1 - alpha[:, :, None]) + layer * alpha[:, :, None]


def _to_uint8(array: np.ndarray) -> np.ndarray:
    return np.round(np.clip(array, 0, 1) * 255).astype(np.uint8)


# ----------------------------------------------------------------------------------------------- items

def _image_size(rng: np.random.Generator, long_side: tuple[int, int] = (220, 300)) -> tuple[int, int]:
    long = int(rng.integers(*long_side))
    short = int(long * rng.uniform(0.6, 1.0))
    return (short, long) if rng.random() < 0.6 else (long, short)


def _place(rng: np.random.Generator, height: int, width: int, radius: float) -> tuple[float, float]:
    """Object centre anywhere; up to half the radius may leave the frame."""
    return (rng.uniform(0.5 * radius, width - 0.5 * radius), rng.uniform(0.5 * radius, height - 0.5 * radius))


def make_image(seed: int, index: int, part: str) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic SOD image and GT: (H, W, 3) uint8 RGB, (H, W) uint8 in {0..255}."""
    rng = np.random.default_rng([seed, PARTS[part], index])
    height, width = _image_size(rng)
    scene = _scene(rng)
    image = _background(rng, scene, height, width)
    gt = np.zeros((height, width), np.float32)
    side = min(height, width)
    for number in range(1 if rng.random() < 0.8 else 2):
        radius = side * (rng.uniform(0.13, 0.35) if number == 0 else rng.uniform(0.1, 0.2))
        style = _object_style(rng, scene, low_contrast=rng.random() < 0.25)
        layer, alpha, mask = _render_object(style, height, width, *_place(rng, height, width, radius), radius,
                                            rng.uniform(0, 2 * np.pi))
        image = _composite(image, layer, alpha)
        gt = np.maximum(gt, mask)
    image = image + rng.normal(0, rng.uniform(0.005, 0.02), image.shape).astype(np.float32)  # sensor noise
    return _to_uint8(image), _to_uint8(gt)


def make_video(seed: int, index: int, part: str, sizes: SyntheticSizes) -> list[tuple[np.ndarray, np.ndarray]]:
    """One synthetic video: a list of (frame (H, W, 3) uint8 RGB, GT (H, W) uint8); moving objects, camera pan."""
    rng = np.random.default_rng([seed, PARTS[part], index])
    frames = int(rng.integers(sizes.min_frames, sizes.max_frames + 1))
    height, width = int(rng.integers(200, 257)), int(rng.integers(280, 353))
    pan = rng.uniform(-3, 3, 2)  # camera velocity (px / frame)
    margin = np.ceil(np.abs(pan) * frames).astype(int) + 8
    scene = _scene(rng)
    world = _background(rng, scene, height + int(margin[1]), width + int(margin[0]))
    start = np.where(pan >= 0, 4, margin - 4).astype(float)
    movers = []
    for number in range(1 if rng.random() < 0.75 else 2):
        radius = min(height, width) * (rng.uniform(0.14, 0.3) if number == 0 else rng.uniform(0.1, 0.18))
        movers.append({
            "style": _object_style(rng, scene, low_contrast=rng.random() < 0.25), "radius": radius,
            "position": np.array(_place(rng, height, width, radius)), "velocity": rng.uniform(-4, 4, 2),
            "angle": rng.uniform(0, 2 * np.pi), "spin": rng.normal(0, 0.03), "pulse": rng.uniform(0, 0.15)})
    distractor = {"style": _object_style(rng, scene, low_contrast=False), "radius": min(height, width) * 0.08,
                  "position": np.array(_place(rng, height, width, 20)), "velocity": rng.uniform(-3, 3, 2)}
    output = []
    for t in range(frames):
        x0, y0 = (start + pan * t + rng.normal(0, 0.5, 2)).round().astype(int)  # pan with a little shake
        x0, y0 = int(np.clip(x0, 0, margin[0])), int(np.clip(y0, 0, margin[1]))
        image = world[y0: y0 + height, x0: x0 + width].copy()
        layer, alpha, _ = _render_object(distractor["style"], height, width, *distractor["position"],
                                         distractor["radius"], 0.0)
        image = _composite(image, cv2.GaussianBlur(layer, (0, 0), 2.0), cv2.GaussianBlur(alpha, (0, 0), 2.0) * 0.8)
        _advance(distractor, height, width)
        gt = np.zeros((height, width), np.float32)
        for mover in movers:
            radius = mover["radius"] * (1 + mover["pulse"] * np.sin(t / 6))
            layer, alpha, mask = _render_object(mover["style"], height, width, *mover["position"], radius,
                                                mover["angle"] + mover["spin"] * t)
            image = _composite(image, layer, alpha)
            gt = np.maximum(gt, mask)
            _advance(mover, height, width)
        image = image + rng.normal(0, 0.01, image.shape).astype(np.float32)
        output.append((_to_uint8(image), _to_uint8(gt)))
    return output


def _advance(mover: dict, height: int, width: int) -> None:
    """Move by the velocity, bouncing off the frame border."""
    mover["position"] = mover["position"] + mover["velocity"]
    for axis, limit in ((0, width), (1, height)):
        if not 0 <= mover["position"][axis] <= limit:
            mover["velocity"][axis] *= -1
            mover["position"][axis] = np.clip(mover["position"][axis], 0, limit)


# ----------------------------------------------------------------------------------------------- writing

def _imwrite(path: Path, array: np.ndarray) -> None:
    if array.ndim == 3:
        array = cv2.cvtColor(array, cv2.COLOR_RGB2BGR)
    params = [cv2.IMWRITE_JPEG_QUALITY, 95] if path.suffix == ".jpg" else [cv2.IMWRITE_PNG_COMPRESSION, 1]
    ok, buffer = cv2.imencode(path.suffix, array, params)
    if not ok:
        raise OSError(f"cannot encode {path}")
    path.write_bytes(buffer.tobytes())


def _write_image(args: tuple[Path, str, int, int]) -> str:
    folder, part, seed, index = args
    image, gt = make_image(seed, index, part)
    stem = f"{part.split('-')[1]}_{index:04d}"
    ext = ".png" if index % 10 == 9 else ".jpg"  # mixed extensions in one folder, as allowed
    _imwrite(folder / "images" / f"{stem}{ext}", image)
    _imwrite(folder / "GT" / f"{stem}.png", gt)
    return f"{stem}{ext}"


def _write_video(args: tuple[Path, str, int, int, SyntheticSizes]) -> str:
    folder, part, seed, index, sizes = args
    video = f"{'tr' if part == 'video-train' else 'te'}{index:03d}"
    (folder / video / "Imgs").mkdir(parents=True)
    (folder / video / "GT_object_level").mkdir()
    for t, (frame, gt) in enumerate(make_video(seed, index, part, sizes), start=1):
        _imwrite(folder / video / "Imgs" / f"{video}_{t:05d}.png", frame)
        _imwrite(folder / video / "GT_object_level" / f"{video}_{t:05d}.png", gt)
    return video


def generate(root: str | os.PathLike, seed: int = 0, sizes: SyntheticSizes = SyntheticSizes(),
             workers: int = 1) -> None:
    """Write the synthetic datasets and list files under ``root`` (see the module docstring).

    Everything is written into a temporary folder inside ``root`` first and moved into place at the end, so an
    interrupted run leaves no half-written dataset; existing synthetic folders are replaced.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".synthetic-", dir=root))
    try:
        jobs_images, jobs_videos = [], []
        for part, name, count in (("sod-train", "SYN-TR", sizes.sod_train), ("sod-test", "SYN-TE", sizes.sod_test)):
            folder = staging / "sod" / name
            (folder / "images").mkdir(parents=True)
            (folder / "GT").mkdir()
            jobs_images += [(folder, part, seed, i) for i in range(count)]
        for part, name, count in (("video-train", "SYN-V-train", sizes.video_train),
                                  ("video-test", "SYN-V-test", sizes.video_test)):
            (staging / "vsod" / name).mkdir(parents=True)
            jobs_videos += [(staging / "vsod" / name, part, seed, i, sizes) for i in range(count)]
        if workers > 1:
            with ProcessPoolExecutor(workers) as pool:
                stills = list(pool.map(_write_image, jobs_images, chunksize=8))
                videos = list(pool.map(_write_video, jobs_videos))
        else:
            stills = [_write_image(job) for job in jobs_images]
            videos = [_write_video(job) for job in jobs_videos]
        _write_lists(staging / "lists", stills[: sizes.sod_train], videos[: sizes.video_train],
                     videos[sizes.video_train:])
        for relative in ("sod/SYN-TR", "sod/SYN-TE", "vsod/SYN-V-train", "vsod/SYN-V-test", "lists"):
            target = root / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.exists():
                shutil.rmtree(target)
            os.replace(staging / relative, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _write_lists(folder: Path, stills: list[str], train_videos: list[str], test_videos: list[str]) -> None:
    def video_line(dataset: str, video: str) -> str:
        base = f"vsod/{dataset}/{video}"
        return f"{base}/Imgs .png {base}/GT_object_level .png\n"

    folder.mkdir(parents=True)
    train = [f"sod/SYN-TR/images/{name} sod/SYN-TR/GT/{Path(name).stem}.png\n" for name in stills]
    train += [video_line("SYN-V-train", video) for video in train_videos]
    test = [video_line("SYN-V-test", video) for video in test_videos]
    (folder / "train_video_lst.txt").write_text("".join(train))
    (folder / "val_video_lst.txt").write_text("".join(test))
    (folder / "test_video_lst.txt").write_text("".join(test))


def centre_prior(height: int, width: int) -> np.ndarray:
    """A centre-prior saliency map (H, W) uint8: a centred Gaussian blob, sigma a quarter of each side (the baseline
    the synthetic data is made to defeat)."""
    ys, xs = np.mgrid[0:height, 0:width]
    dx, dy = (xs - (width - 1) / 2) / (0.25 * width), (ys - (height - 1) / 2) / (0.25 * height)
    return np.round(np.exp(-(dx**2 + dy**2) / 2) * 255).astype(np.uint8)


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="python -m data.synthetic",
                                     description="Write the bundled synthetic SOD/VSOD datasets and list files.")
    parser.add_argument("--root", required=True, help="output data root (gets sod/, vsod/ and lists/)")
    parser.add_argument("--seed", type=seed_number, default=0, help="random seed (same seed: identical files)")
    parser.add_argument("-j", "--workers", type=data_processes, default=min(2, os.cpu_count() or 1),
                        help="worker processes (the output does not depend on it)")
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.seed < 0:
        parser.error(f"--seed must be >= 0, got {args.seed}")
    logger = setup_logger()
    start = time.perf_counter()
    generate(args.root, args.seed, workers=max(1, args.workers))
    logger.info("synthetic data written to %s in %.1f s (lists in %s)", args.root, time.perf_counter() - start,
                Path(args.root) / "lists")


if __name__ == "__main__":
    main()
