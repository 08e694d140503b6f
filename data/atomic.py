"""Writing output files so that none is ever half-written: the one mechanism every script and module uses.

A file is written under a hidden temporary name in its target folder, then renamed over the target
(``os.replace`` is atomic on one file system), so a reader, or a kill at any moment, sees the old file or the
complete new one. A temporary name is unique per host, process and thread; what a killed writer left is removed by
the next process that writes into the same folder (its first write there). ``fsync=True`` (checkpoints) also
flushes the file and then its folder to the disk, so a power cut cannot lose the rename. `locked` serialises a
read-change-write of one file across processes. This module imports nothing of the project; every package that
writes files uses it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

__all__ = ["unwritable", "atomic_path", "write_bytes_atomic", "write_json_atomic", "encode_image",
           "write_image_atomic", "append_line_atomic", "locked", "FAULT_VARIABLE", "WRITE_LOG_VARIABLE"]

_HOST = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname()) or "host"
# .<name>.<host>.<pid>.<thread>.tmp[<suffix>]
_TEMPORARY = re.compile(r"^\..+\.(?P<host>[A-Za-z0-9-]+)\.(?P<pid>\d+)\.(?P<thread>\d+)\.tmp(\.[^.]*)?$")
_swept: set[Path] = set()
_swept_lock = threading.Lock()


def unwritable(path: str | os.PathLike, folder: bool) -> str | None:
    """Why ``path`` (a folder if ``folder``, else a file) cannot be written, in a few words, or None if it can.
    Nothing is created: the nearest existing folder on the way must be a folder this process may write into, and a
    file's path must not be a folder. Scripts check their outputs with it before doing any work."""
    path = Path(path).absolute()
    if not folder and path.is_dir():
        return "is a folder, not a file"
    probe = path if folder else path.parent
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        return f"{probe} is not a folder"
    if not os.access(probe, os.W_OK | os.X_OK):
        return f"cannot write into {probe}"
    return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _sweep(folder: Path) -> None:
    """Once per folder and process: remove the temporary files of writers on this host that are dead (killed)."""
    with _swept_lock:
        if folder in _swept:
            return
        _swept.add(folder)
    try:
        names = os.listdir(folder)
    except OSError:
        return
    for name in names:
        match = _TEMPORARY.match(name)
        if match and match["host"] == _HOST and not _alive(int(match["pid"])):
            (folder / name).unlink(missing_ok=True)


def _fsync_folder(folder: Path) -> None:
    try:
        handle = os.open(folder, os.O_RDONLY)
    except OSError:  # a platform without directory handles
        return
    try:
        os.fsync(handle)
    except OSError:
        pass
    finally:
        os.close(handle)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "", *, fsync: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (parent folders created) for a writer that takes a file name; on a
    normal exit it is renamed over ``path`` (``fsync``: and the folder flushed to the disk after the rename), on an
    exception (or a writer that wrote nothing) it is removed. ``suffix`` is appended for writers that choose the
    format by extension (e.g. '.mp4')."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _sweep(path.parent.resolve())
    temporary = path.with_name(f".{path.name}.{_HOST}.{os.getpid()}.{threading.get_ident()}.tmp{suffix}")
    try:
        yield temporary
        moment = _write_point(path)
        if moment == "before":
            _die()
        os.replace(temporary, path)
        if fsync:
            _fsync_folder(path.parent)
        if moment == "after":
            _die()
    finally:
        temporary.unlink(missing_ok=True)


def write_bytes_atomic(path: str | os.PathLike, payload: bytes, *, fsync: bool = False) -> None:
    """Write ``payload`` to ``path`` atomically; ``fsync`` also flushes it, and then the rename, to the disk (for
    checkpoints and run logs, which must survive a power cut; not for the thousands of maps a generation run
    writes)."""
    with atomic_path(path, fsync=fsync) as temporary, open(temporary, "wb") as handle:
        handle.write(payload)
        if fsync:
            handle.flush()
            os.fsync(handle.fileno())


def write_json_atomic(path: str | os.PathLike, data: object) -> None:
    """Write ``data`` as indented JSON (with a final newline) to ``path`` atomically."""
    write_bytes_atomic(path, (json.dumps(data, indent=2) + "\n").encode())


def encode_image(image: np.ndarray, suffix: str) -> bytes:
    """``image`` as the bytes of a ``suffix`` (.png, .jpg) file: the bytes `write_image_atomic` writes, and those
    the server sends. ``image``: (H, W) grey, (H, W, 3) BGR or (H, W, 4) BGRA, uint8 (OpenCV channel order)."""
    ok, encoded = cv2.imencode(suffix, image)
    if not ok:
        raise OSError(f"cannot encode a {suffix} image")
    return encoded.tobytes()


def write_image_atomic(path: str | os.PathLike, image: np.ndarray) -> None:
    """Encode ``image`` by the file suffix (`encode_image`) and write it to ``path`` atomically (parents
    created)."""
    write_bytes_atomic(path, encode_image(image, Path(path).suffix))


def append_line_atomic(path: str | os.PathLike, line: str, *, fsync: bool = False) -> None:
    """Append ``line`` (no newline in it) to the text file ``path`` by writing the whole new file atomically: a
    kill leaves the file with or without the line, never a part of it. For small files (a run's epoch log)."""
    path = Path(path)
    try:
        old = path.read_bytes()
    except FileNotFoundError:
        old = b""
    if old and not old.endswith(b"\n"):
        old += b"\n"
    write_bytes_atomic(path, old + line.encode() + b"\n", fsync=fsync)


@contextlib.contextmanager
def locked(path: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive lock for ``path`` (``flock`` on the hidden ``.<name>.lock`` beside it) while a process reads,
    changes and rewrites it, so that two processes updating one file (two evaluations of one experiment) never
    lose each other's change. Where flock is missing (not POSIX) nothing is locked."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:
        yield
        return
    with open(path.with_name(f".{path.name}.lock"), "a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


# Fault injection, for tests only (tests/test_faults.py): with SDNET_FAULT_AT_WRITE=N:before (or N:after) the
# process SIGKILLs itself at its N-th write, before the rename (the temporary file complete, the target untouched)
# or right after it; SDNET_WRITE_LOG=PATH appends "N<TAB>target" to PATH for every write. Unset, they cost a lookup.
FAULT_VARIABLE, WRITE_LOG_VARIABLE = "SDNET_FAULT_AT_WRITE", "SDNET_WRITE_LOG"
_writes = {"count": 0}
_writes_lock = threading.Lock()


def _write_point(path: Path) -> str | None:
    """Count this write; the moment ('before' / 'after' the rename) at which the fault variable asks to die."""
    fault, log = os.environ.get(FAULT_VARIABLE), os.environ.get(WRITE_LOG_VARIABLE)
    if not fault and not log:
        return None
    with _writes_lock:
        _writes["count"] += 1
        count = _writes["count"]
        if log:
            with open(log, "a") as handle:
                handle.write(f"{count}\t{path}\n")
    if fault:
        at, _, moment = fault.partition(":")
        if int(at) == count:
            return moment or "before"
    return None


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)
