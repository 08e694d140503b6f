"""List files of the video training/validation/test splits and the clip builder (design §6.3, §9).

A list file has one entry per line, paths relative to the data root:
- ``image gt`` (two columns): a still image and its GT (DUTS-TR in the training list; used as static clips);
- ``clip_dir image_ext anno_dir label_ext`` (four columns): one video.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from data.readers import DataError

# Names a video path is matched against, in this order (a list line "belongs" to NAME if it contains "/NAME").
KNOWN_VIDEO_DATASETS = ("DAVSOD", "VOS", "DAVIS")


@dataclass(frozen=True)
class StillEntry:
    """A two-column list line: image path and GT path, relative to the data root."""

    image: str
    gt: str


@dataclass(frozen=True)
class VideoEntry:
    """A four-column list line: frame folder, image extension, annotation folder, label extension.

    ``video`` is the folder above ``Imgs`` (DAVSOD/DAVIS layout) or the id folder itself (VOS layout, where the
    frames sit directly in ``JPEGImages/<id>``). ``dataset`` is DAVSOD, VOS or DAVIS when the path contains
    ``/DAVSOD``, ``/VOS`` or ``/DAVIS``; otherwise the name of the folder that holds the videos (e.g.
    ``SYN-V-test`` for ``vsod/SYN-V-test/<video>/Imgs``).
    """

    clip_dir: str
    image_ext: str
    anno_dir: str
    label_ext: str

    @property
    def video(self) -> str:
        parts = Path(self.clip_dir).parts
        if len(parts) >= 2 and parts[-1] == "Imgs":
            return parts[-2]
        return parts[-1]

    @property
    def dataset(self) -> str:
        path = "/" + self.clip_dir
        for name in KNOWN_VIDEO_DATASETS:
            if "/" + name in path:
                return name
        parts = Path(self.clip_dir).parts
        return parts[-3] if len(parts) >= 3 else parts[0]

    def belongs_to(self, name: str) -> bool:
        """True if this line is selected by the dataset name ``name`` (the line contains ``/name``)."""
        return f"/{name}" in "/" + self.clip_dir


ListEntry = StillEntry | VideoEntry


def read_video_list(path: str | os.PathLike) -> list[ListEntry]:
    """Parse a list file into `StillEntry` (2 columns) and `VideoEntry` (4 columns) items, in file order.

    Blank lines and lines starting with ``#`` are ignored; any other column count raises `DataError` naming the
    file and line number.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise DataError(f"cannot read list file {path}: {err.strerror or err}") from None
    entries: list[ListEntry] = []
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        if len(fields) == 2:
            entries.append(StillEntry(*fields))
        elif len(fields) == 4:
            entries.append(VideoEntry(*fields))
        else:
            raise DataError(f"{path}:{number}: expected 2 or 4 columns, got {len(fields)}: {line.strip()!r}")
    return entries


def select_videos(entries: list[ListEntry], name: str | None = None) -> list[VideoEntry]:
    """The video entries (optionally only those whose clip_dir contains ``/name``), in list order."""
    return [e for e in entries if isinstance(e, VideoEntry) and (name is None or e.belongs_to(name))]


def dataset_names(entries: list[ListEntry]) -> list[str]:
    """Names of the video datasets in a list (`VideoEntry.dataset`), in order of first appearance."""
    return list(dict.fromkeys(e.dataset for e in entries if isinstance(e, VideoEntry)))


def annotated_frames(root: str | os.PathLike, entry: VideoEntry, cut: float = 1.0) -> list[str]:
    """Annotation file names of a video (design §6.3): names in ``root/anno_dir`` containing ``label_ext``,
    sorted lexicographically (plain string order); with ``cut < 1`` only the first ``int(N * cut)`` are kept.

    Raises `DataError` naming the folder if it is missing or has no annotated frame.
    """
    folder = Path(root) / entry.anno_dir
    if not folder.is_dir():
        raise DataError(f"annotation folder not found: {folder}")
    names = sorted(name for name in os.listdir(folder) if entry.label_ext in name)
    if cut < 1:
        names = names[: int(len(names) * cut)]
    if not names:
        after_cut = f" after cut {cut}" if cut < 1 else ""
        raise DataError(f"no annotated frames (*{entry.label_ext}) in {folder}{after_cut}")
    return names


def image_name(frame: str, entry: VideoEntry) -> str:
    """Image file name of an annotated frame: its name with ``label_ext`` replaced by ``image_ext``."""
    return frame.replace(entry.label_ext, entry.image_ext)


def frame_number(name: str) -> int | None:
    """The integer after the last ``_`` of the stem (the whole stem if there is no ``_``), or None."""
    stem = os.path.splitext(name)[0]
    try:
        return int(stem.rsplit("_", 1)[-1])
    except ValueError:
        return None


def clip_rate(frames: list[str], gap_target: float) -> int:
    """Sampling rate r = max(1, int(gap_target // g)) with g the mean frame-number gap of the first and last frame.

    Where the rate is undefined (fewer than two frames, frame numbers that are not integers, or g <= 0) the
    frames are taken as consecutive with r = 1 for g <= 0 and g = 1 for non-integer names.
    """
    if len(frames) < 2:
        return 1
    first, last = frame_number(frames[0]), frame_number(frames[-1])
    gap = 1.0 if first is None or last is None else (last - first) / (len(frames) - 1)
    if gap <= 0:
        return 1
    return max(1, int(gap_target // gap))


def ping_pong(frames: list[str], nframes: int) -> list[str]:
    """Pad a short frame list to ``nframes`` by playing it back and forth: a b c -> a b c b a b c b."""
    sequence = list(frames)
    if len(sequence) == 1:
        return sequence * nframes
    while len(sequence) < nframes:
        sequence += sequence[-2::-1]
    return sequence[:nframes]


def build_clips(frames: list[str], nframes: int, gap_target: float) -> list[list[str]]:
    """Split a video's sorted annotated frames into clips of ``nframes`` frames (design §6.3).

    Fewer than ``nframes`` frames: one ping-pong padded clip. Otherwise r = min(clip_rate, N // nframes);
    consecutive chunks of ``nframes * r`` frames from the start, each giving r interleaved clips
    (clip i = chunk[i], chunk[i + r], ..., chunk[i + (nframes - 1) r]); if frames remain, one more chunk made of
    the last ``nframes * r`` frames (overlapping the previous chunk), split the same way. Every clip has exactly
    ``nframes`` names, in temporal order.
    """
    count = len(frames)
    if count == 0:
        raise ValueError("build_clips needs at least one frame")
    if count < nframes:
        return [ping_pong(frames, nframes)]
    rate = min(clip_rate(frames, gap_target), count // nframes)
    chunk = nframes * rate
    starts = list(range(0, count - chunk + 1, chunk))
    if count % chunk:
        starts.append(count - chunk)
    return [frames[start + i: start + chunk: rate] for start in starts for i in range(rate)]
