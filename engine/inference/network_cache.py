"""Compiled networks kept on disk between runs, so that a later run's first map needs no export and no compile.

A backend names an entry by a key, the hex digest of everything the compiled network depends on (`model_key` for
the model; the backend adds the input shape, precision, threads and its own version), gets its bytes or None, and
puts them after compiling. Each file holds a checksum of its payload: a truncated or damaged file is a miss (removed
and rebuilt), never a crash. Files are written atomically, so processes sharing the folder never read half an
entry. The folder is kept under ``max_bytes``, dropping the entries used longest ago.

The folder: ``--cache-dir``, else ``$SDNET_CACHE_DIR``, else ``$XDG_CACHE_HOME/sdnet`` (``~/.cache/sdnet``);
``--no-cache`` (or ``SDNET_CACHE_DIR=off``) keeps nothing.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch
from torch import nn

from data.atomic import write_bytes_atomic

__all__ = ["CACHE_MAX_BYTES", "default_cache_dir", "model_key", "NetworkCache"]

CACHE_MAX_BYTES = 1 << 30
_MAGIC = b"sdnet compiled network\n"
_REPO = Path(__file__).resolve().parents[2]
# The code that decides what a model computes and how it is exported: a change to any of it is a new key.
_SOURCES = (*sorted((_REPO / "models").glob("*.py")), _REPO / "configs.py", Path(__file__).with_name("export.py"))


def default_cache_dir() -> Path | None:
    """``$SDNET_CACHE_DIR`` ('' or 'off': None), else ``$XDG_CACHE_HOME/sdnet``, else ``~/.cache/sdnet``."""
    chosen = os.environ.get("SDNET_CACHE_DIR")
    if chosen is not None:
        return None if chosen.strip().lower() in ("", "off") else Path(chosen).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "sdnet"


def model_key(model: nn.Module) -> str:
    """A digest of what ``model`` computes: its architecture (class and module tree), every state entry's name,
    dtype, shape and bytes, the source of ``models/``, ``configs.py`` and the ONNX export, and torch's version."""
    digest = hashlib.sha256()
    digest.update(f"{type(model).__module__}.{type(model).__qualname__}\n{model!r}\n{torch.__version__}\n".encode())
    for path in _SOURCES:
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name} {tensor.dtype} {tuple(tensor.shape)}\n".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


class NetworkCache:
    """Entries of compiled networks in ``folder``, one file each (see the module's docstring)."""

    def __init__(self, folder: str | os.PathLike, max_bytes: int = CACHE_MAX_BYTES) -> None:
        self.folder, self.max_bytes = Path(folder), max_bytes

    def _path(self, key: str) -> Path:
        return self.folder / f"{key}.bin"

    def get(self, key: str) -> bytes | None:
        """The payload stored under ``key``, or None when there is none or it is damaged (then it is removed)."""
        path = self._path(key)
        try:
            data = path.read_bytes()
        except OSError:
            return None
        header = len(_MAGIC) + 32
        payload = data[header:]
        if data[:len(_MAGIC)] != _MAGIC or data[len(_MAGIC):header] != hashlib.sha256(payload).digest():
            self.discard(key)
            return None
        try:
            os.utime(path)  # recently used: kept longest
        except OSError:
            pass
        return payload

    def put(self, key: str, payload: bytes) -> str | None:
        """Store ``payload`` under ``key`` (atomically), then drop the oldest entries beyond ``max_bytes``. A folder
        that cannot be written (read-only, full, not a folder) keeps nothing: returns why, in one line, else None."""
        try:
            write_bytes_atomic(self._path(key), _MAGIC + hashlib.sha256(payload).digest() + payload)
        except OSError as err:
            return f"cannot write {self.folder}: {err.strerror or err}"
        self._trim()
        return None

    def discard(self, key: str) -> None:
        """Remove the entry ``key`` (a damaged one, or one its backend could not load), if the folder allows."""
        try:
            self._path(key).unlink(missing_ok=True)
        except OSError:
            pass

    def _trim(self) -> None:
        entries = []
        for path in self.folder.glob("*.bin"):  # glob of a missing or unreadable folder: nothing
            try:
                status = path.stat()
            except OSError:  # removed by another process meanwhile
                continue
            entries.append((status.st_mtime, status.st_size, path))
        total = sum(size for _, size, _ in entries)
        for _, size, path in sorted(entries):
            if total <= self.max_bytes:
                break
            try:
                path.unlink(missing_ok=True)
            except OSError:
                break
            total -= size
