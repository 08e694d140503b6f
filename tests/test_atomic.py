"""Atomic writes (data/atomic.py): an interrupted write keeps the old file, concurrent writers never mix, a killed
writer's temporary is swept, checkpoints are flushed to the disk."""

from __future__ import annotations

import os

import pytest

from data import atomic


def test_write_bytes_atomic_keeps_old_file_when_interrupted(tmp_path, monkeypatch):
    target = tmp_path / "save_models" / "checkpoint_latest.pth"
    atomic.write_bytes_atomic(target, b"old")

    def crash(*_):
        raise KeyboardInterrupt  # a kill between writing the temporary file and renaming it

    monkeypatch.setattr(atomic.os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        atomic.write_bytes_atomic(target, b"new")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in target.parent.iterdir()) == ["checkpoint_latest.pth"]


def test_atomic_path_renames_on_success_and_removes_the_temporary_on_error(tmp_path):
    from data.atomic import atomic_path

    target = tmp_path / "out" / "curves.png"
    with atomic_path(target) as temporary:
        assert temporary.parent == target.parent and temporary.name.startswith(".curves.png.")
        temporary.write_bytes(b"first")
    with pytest.raises(RuntimeError), atomic_path(target, suffix=".mp4") as temporary:
        assert temporary.suffix == ".mp4"
        temporary.write_bytes(b"half")
        raise RuntimeError("writer failed")
    assert target.read_bytes() == b"first" and [p.name for p in target.parent.iterdir()] == ["curves.png"]


def test_threads_writing_one_file_at_once_never_mix(tmp_path):
    """Temporary names are unique per thread: eight threads writing one target at once each finish, and the target
    is one of their complete payloads."""
    import threading

    target = tmp_path / "shared.bin"
    payloads = [bytes([index]) * 200_000 for index in range(8)]
    barrier = threading.Barrier(len(payloads))
    errors = []

    def write(payload: bytes) -> None:
        barrier.wait()
        try:
            atomic.write_bytes_atomic(target, payload)
        except Exception as err:  # any failure is the test's to report
            errors.append(err)

    threads = [threading.Thread(target=write, args=(payload,)) for payload in payloads]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and target.read_bytes() in payloads
    assert [p.name for p in tmp_path.iterdir()] == ["shared.bin"]


def test_a_killed_writers_temporary_is_removed_a_live_ones_kept(tmp_path):
    """The first write of a process into a folder removes the temporary files of dead writers of this host, not
    those of live ones (another process writing there now) nor other files."""
    import subprocess
    import sys

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    folder = tmp_path / "maps"
    folder.mkdir()
    host = atomic._HOST
    names = {"stale": f".a.png.{host}.{dead.pid}.1.tmp", "live": f".b.png.{host}.{os.getpid()}.1.tmp",
             "video": f".c.mp4.{host}.{dead.pid}.7.tmp.mp4", "other host": f".d.png.elsewhere.{dead.pid}.1.tmp",
             "not ours": ".e.png.tmp"}
    for name in names.values():
        (folder / name).write_bytes(b"x")
    atomic.write_bytes_atomic(folder / "new.png", b"y")
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["new.png", names["live"], names["other host"], names["not ours"]])


def test_checkpoints_flush_the_file_and_then_its_folder(tmp_path, monkeypatch):
    """fsync=True (checkpoints, the run log): the file's data before the rename, its folder's entry after it."""
    synced = []
    original = os.fsync

    def spy(handle: int) -> None:
        synced.append("folder" if os.path.isdir(f"/proc/self/fd/{handle}") else "file")
        original(handle)

    monkeypatch.setattr(atomic.os, "fsync", spy)
    atomic.write_bytes_atomic(tmp_path / "checkpoint.pth", b"weights", fsync=True)
    assert synced == ["file", "folder"]
    synced.clear()
    atomic.write_bytes_atomic(tmp_path / "map.png", b"pixels")
    assert synced == []
