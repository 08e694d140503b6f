"""Videos at test time: decoding a stream of frames, grouping it into clips for video models, and writing a video
of saliency maps.

OpenCV's FFmpeg backend reads and writes the files (.mp4, .avi, .mov read; .mp4 with the mp4v codec written).
Failures raise `DataError` with a one-line message naming the file.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TypeVar

import cv2
import numpy as np

from data.atomic import atomic_path
from data.lists import ping_pong
from data.readers import DEFAULT_MAX_PIXELS, DataError

__all__ = ["VIDEO_EXTENSIONS", "silence_decoder_logs", "VideoStream", "open_video", "read_frames", "clip_groups",
           "video_writer", "write_map_video"]

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov")
Frame = TypeVar("Frame")


def silence_decoder_logs() -> None:
    """Process-wide: stop OpenCV and FFmpeg from printing their own messages about damaged files (a script that
    reports its own one-line errors calls this once)."""
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)


@dataclass
class VideoStream:
    """An open video: the capture at its first frame, the frame rate (25 if the file has none), the frame count
    (0 if unknown), the frame size its header declares, the positions of the frames that could not be decoded
    so far and whether the file ended early, cut short (both filled while `read_frames` runs)."""

    capture: cv2.VideoCapture
    fps: float
    frame_count: int
    width: int
    height: int
    bad_frames: list[int] = field(default_factory=list)
    cut_short: bool = False

    def release(self) -> None:
        self.capture.release()


def open_video(path: str | os.PathLike, max_pixels: int = DEFAULT_MAX_PIXELS) -> VideoStream:
    """The video ``path`` opened at its first frame. Raises `DataError` naming the file if it cannot be decoded or
    its header declares frames of more than ``max_pixels`` pixels (checked before any frame is decoded)."""
    capture = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)  # not the image-sequence backend, which logs errors
    width, height = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
    if capture.isOpened() and width * height > max_pixels:
        capture.release()
        raise DataError(f"refused {path}: frames of {width}x{height} = {width * height / 1e6:.1f} megapixels are "
                        f"over the cap of {max_pixels / 1e6:g} (--max-megapixels raises it)")
    if not capture.isOpened() or not capture.grab():
        capture.release()
        raise DataError(f"cannot read video {path} (corrupt, cut short, empty or unsupported format)")
    # Opened again rather than sought back to frame 0: seeking loses the only frame of a one-frame video and can
    # land elsewhere than the first frame in other files.
    capture.release()
    capture = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    fps = capture.get(cv2.CAP_PROP_FPS)
    return VideoStream(capture, fps if fps > 0 else 25.0, max(int(capture.get(cv2.CAP_PROP_FRAME_COUNT)), 0),
                       width, height)


# Consecutive undecodable frames after which a video counts as cut short there.
MAX_BAD_RUN = 25


def read_frames(video: VideoStream) -> Iterator[np.ndarray]:
    """The frames of a video as RGB (H, W, 3) uint8 arrays, one at a time. A frame that cannot be decoded (a
    damaged packet) is replaced by a black frame of the declared size and its position recorded in
    ``video.bad_frames``, so that the frames after it keep their positions; the stream ends where reading fails at or
    past the declared frame count, or after `MAX_BAD_RUN` bad frames in a row (a file cut short: those are not
    yielded)."""
    position, run = 0, []
    while True:
        ok, bgr = video.capture.read()
        if ok:
            for missing in run:
                video.bad_frames.append(missing)
                yield np.zeros((video.height, video.width, 3), np.uint8)
            run = []
            yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        elif position >= video.frame_count or len(run) >= MAX_BAD_RUN:
            video.cut_short = len(run) >= MAX_BAD_RUN and position < video.frame_count
            return
        else:
            run.append(position)
        position += 1


def clip_groups(frames: Iterable[Frame], length: int) -> Iterator[tuple[list[Frame], list[int]]]:
    """Group a stream into clips of ``length`` frames, holding at most one clip: yields ``(clip, keep)``, where
    ``keep`` lists the clip positions whose maps belong to frames not yet covered, in frame order.

    Consecutive groups of ``length``; a leftover tail is the clip of the last ``length`` frames (only its new
    frames kept); a stream shorter than one clip is one ping-pong padded clip (a frame's last occurrence kept),
    as design §6.3 builds test clips at frame rate 1.
    """
    recent: list[Frame] = []
    pending = count = 0
    for frame in frames:
        recent = (recent + [frame])[-length:]
        pending, count = pending + 1, count + 1
        if pending == length:
            yield list(recent), list(range(length))
            pending = 0
    if pending and count >= length:
        yield list(recent), list(range(length - pending, length))
    elif pending:
        order = ping_pong(list(range(count)), length)
        last = {frame: position for position, frame in enumerate(order)}
        yield [recent[i] for i in order], [last[frame] for frame in range(count)]


@contextlib.contextmanager
def video_writer(path: str | os.PathLike, fps: float) -> Iterator[Callable[[np.ndarray], None]]:
    """An .mp4 (mp4v) at ``fps`` written frame by frame and atomically: the context gives ``add(image)`` for (H, W)
    grey or (H, W, 3) BGR uint8 frames of one size; the file appears whole when the context ends without an
    error, and not at all otherwise. The encoder's 4:2:0 colour planes need an even height and width: an odd one
    loses its last row or column (the pixels that remain stay aligned with the video's). Raises `DataError` if
    there is no frame, no mp4v encoder or a frame of under 2 pixels a side."""
    writer: cv2.VideoWriter | None = None
    height = width = 0

    def add(image: np.ndarray) -> None:
        nonlocal writer, height, width
        if writer is None:
            height, width = image.shape[0] // 2 * 2, image.shape[1] // 2 * 2
            if not height or not width:
                raise DataError(f"cannot write video {path}: frames of {image.shape[1]}x{image.shape[0]} pixels are "
                                "too small to encode")
            writer = cv2.VideoWriter(str(temporary), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
            if not writer.isOpened():
                raise DataError(f"cannot write video {path} (no mp4v encoder in this OpenCV build)")
        frame = np.ascontiguousarray(image[:height, :width])
        writer.write(cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR) if frame.ndim == 2 else frame)

    try:
        # OpenCV picks the container by the extension, so the temporary file ends in .mp4 too.
        with atomic_path(path, suffix=".mp4") as temporary:
            yield add
            if writer is None:
                raise DataError(f"cannot write {path}: no frame to write")
            writer.release()
    finally:
        if writer is not None:
            writer.release()


def write_map_video(path: str | os.PathLike, maps: Iterable[np.ndarray], fps: float) -> int:
    """Write (H, W) uint8 maps as the frames of an .mp4 at ``fps`` (`video_writer`); returns the frame count."""
    frames = 0
    with video_writer(path, fps) as add:
        for saliency in maps:
            add(saliency)
            frames += 1
    return frames
