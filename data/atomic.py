"""Writing output files so that none is ever half-written: the one mechanism every script and module uses.

A file is written under a hidden temporary name in its target folder, then renamed over the target
(``os.replace`` is atomic on one file system), so a reader, or a kill at any moment, sees the old file or the
complete new one. This module imports nothing of the project; every package that writes files uses it.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

__all__ = ["atomic_path", "write_bytes_atomic", "write_json_atomic", "write_image_atomic"]


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (parent folders created) for a writer that takes a file name; on a
    normal exit it is renamed over ``path``, on an exception (or a writer that wrote nothing) it is removed.
    ``suffix`` is appended for writers that choose the format by extension (e.g. '.mp4')."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp{suffix}")
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def write_bytes_atomic(path: str | os.PathLike, payload: bytes, *, fsync: bool = False) -> None:
    """Write ``payload`` to ``path`` atomically; ``fsync`` also flushes it to the disk before the rename (for
    checkpoints, which must survive a power cut; not for the thousands of maps a generation run writes)."""
    with atomic_path(path) as temporary, open(temporary, "wb") as handle:
        handle.write(payload)
        if fsync:
            handle.flush()
            os.fsync(handle.fileno())


def write_json_atomic(path: str | os.PathLike, data: object) -> None:
    """Write ``data`` as indented JSON (with a final newline) to ``path`` atomically."""
    write_bytes_atomic(path, (json.dumps(data, indent=2) + "\n").encode())


def write_image_atomic(path: str | os.PathLike, image: np.ndarray) -> None:
    """Encode ``image`` by the file suffix (.png, .jpg) and write it to ``path`` atomically (parents created).

    ``image``: (H, W) grey, (H, W, 3) BGR or (H, W, 4) BGRA, uint8 (OpenCV channel order).
    """
    ok, encoded = cv2.imencode(Path(path).suffix, image)
    if not ok:
        raise OSError(f"cannot encode {path}")
    write_bytes_atomic(path, encoded.tobytes())
