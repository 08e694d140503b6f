"""Videos at test time: decoding a stream of frames, grouping it into clips for video models, and writing a video
of saliency maps.

OpenCV's FFmpeg backend reads the files (.mp4, .avi, .mov); PyAV's writes the map videos (.mp4, H.264, which
browsers play).
Failures raise `DataError` with a one-line message naming the file.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
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


# The map videos play in every browser: H.264 (High profile, 4:2:0) in an .mp4 with its index at the front, by the
# libx264 that PyAV's wheel ships (OpenCV's can write only MPEG-4 Part 2, which browsers do not play). CRF 17
# keeps a map within a few grey levels. The same frames give the same bytes on a machine, however busy: a fixed
# thread count (x264's output depends on it), frames in buffers of ours with every byte set (`_yuv420_frame`),
# colour converted in integers (`_bgr_to_yuv420`), and no macroblock tree (its assembly read memory nobody set: the
# bytes changed with the heap's past). Another CPU may take other assembly, whose rounding differs from x264's C
# code in places: the decoded maps then differ within the codec's error. Frames go in as BT.601 at video range, as
# web video is (browsers ignore the full-range flag: Chromium stretched a full-range map's greys by 255/219).
H264_OPTIONS = {"crf": "17", "preset": "fast", "threads": "2", "x264-params": "no-mbtree=1"}
VIDEO_RANGE, BT601 = 1, 6  # FFmpeg's AVCOL_RANGE_MPEG (16-235) and AVCOL_SPC_SMPTE170M
# BT.601 at video range in 16-bit fixed point (Y = 16 + 219/255 of grey): rows Y, Cb, Cr of weights for B, G, R;
# each chroma row sums to 0, so grey has neutral chroma.
_YCBCR = np.array([[6416, 33039, 16829], [28784, -19070, -9714], [-4681, -24103, 28784]], np.int64)


def _bgr_to_yuv420(image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(H, W, 3) BGR or (H, W) grey uint8 (H, W even) -> the Y (H, W), Cb and Cr (H/2, W/2) planes of BT.601 at
    video range, in integers (the chroma of each 2 x 2 block averaged), so that the bytes are the same on every CPU
    (swscale's SIMD paths round otherwise, and read past a row's end). Grey: Cr None, the same neutral plane."""
    height, width = image.shape[:2]
    if image.ndim == 2:
        luma = ((image.astype(np.int64) * int(_YCBCR[0].sum()) + 2**15) >> 16) + 16
        return luma.astype(np.uint8), np.full((height // 2, width // 2), 128, np.uint8), None
    ycbcr = image.astype(np.int64) @ _YCBCR.T  # (H, W, 3), times 2^16
    luma = (((ycbcr[:, :, 0] + 2**15) >> 16) + 16).astype(np.uint8)
    blocks = ycbcr[:, :, 1:].reshape(height // 2, 2, width // 2, 2, 2).sum(axis=(1, 3))  # times 2^18
    chroma = (((blocks + 2**17) >> 18) + 128).astype(np.uint8)
    return luma, chroma[:, :, 0], chroma[:, :, 1]


def _yuv420_frame(av, luma: np.ndarray, u: np.ndarray, v: np.ndarray | None):
    """A yuv420p frame over a buffer of ours whose every byte is set: the planes at a row stride of a multiple of 64,
    zeros in the padding and in 64 KiB after the last row. (x264 reads past a row's end and past the last row;
    in FFmpeg's own frames those bytes are uninitialised, and the encoded bytes changed with the heap's past.)
    ``v`` None: the same as ``u``."""
    height, width = luma.shape
    stride, rows = -(-width // 64) * 64, height * 3 // 2
    buffer = np.zeros(rows * stride + 2**16, np.uint8)
    array = buffer[:rows * stride].reshape(rows, stride)
    array[:height, :width] = luma
    chroma = array[height:].reshape(height, stride // 2)  # the U plane's rows, then the V plane's
    chroma[:height // 2, :width // 2] = u
    chroma[height // 2:, :width // 2] = u if v is None else v
    return av.VideoFrame.from_numpy_buffer(array, format="yuv420p", width=width)


@contextlib.contextmanager
def video_writer(path: str | os.PathLike, fps: float) -> Iterator[Callable[[np.ndarray], None]]:
    """An .mp4 (H.264, `H264_OPTIONS`) at ``fps`` written frame by frame and atomically: the context gives
    ``add(image)`` for (H, W) grey or (H, W, 3) BGR uint8 frames of one size; the file appears whole when the
    context ends without an error, and not at all otherwise. The encoder's 4:2:0 colour planes need an even height
    and width: an odd one loses its last row or column (the pixels that remain stay aligned with the video's).
    Raises `DataError` if there is no frame, no H.264 encoder (PyAV missing), a frame under 2 x 4 pixels or an
    error of the encoder."""
    try:
        import av
    except ImportError:
        raise DataError(f"cannot write video {path}: PyAV is missing (pip install -r requirements.txt)") from None
    container = stream = None
    height = width = 0
    frames = 0

    def add(image: np.ndarray) -> None:
        nonlocal stream, height, width, frames
        if stream is None:
            height, width = image.shape[0] // 2 * 2, image.shape[1] // 2 * 2
            if height < 4 or width < 2:  # x264 refuses fewer rows
                raise DataError(f"cannot write video {path}: frames of {image.shape[1]}x{image.shape[0]} pixels are "
                                "too small to encode (2 x 4 at least)")
            stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            stream.codec_context.color_range = VIDEO_RANGE
            stream.codec_context.colorspace = BT601  # else a player takes BT.709 for HD sizes
            stream.options = dict(H264_OPTIONS)
        frame = np.ascontiguousarray(image[:height, :width])
        picture = _yuv420_frame(av, *_bgr_to_yuv420(frame))
        picture.color_range = VIDEO_RANGE
        picture.pts = frames
        frames += 1
        try:
            for packet in stream.encode(picture):
                container.mux(packet)
        except av.FFmpegError as err:
            raise DataError(f"cannot write video {path}: {err}") from None

    with atomic_path(path, suffix=".mp4") as temporary:
        container = av.open(str(temporary), "w", format="mp4", options={"movflags": "+faststart"})
        try:
            yield add
            if stream is None:
                raise DataError(f"cannot write {path}: no frame to write")
            for packet in stream.encode():
                container.mux(packet)
        finally:
            container.close()


def write_map_video(path: str | os.PathLike, maps: Iterable[np.ndarray], fps: float) -> int:
    """Write (H, W) uint8 maps as the frames of an .mp4 at ``fps`` (`video_writer`); returns the frame count."""
    frames = 0
    with video_writer(path, fps) as add:
        for saliency in maps:
            add(saliency)
            frames += 1
    return frames
