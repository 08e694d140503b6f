"""Map generation on several processes: under torchrun with Gloo on the CPU, generate_salmaps_sod.py and
generate_salmaps_vsod.py write, between their processes, exactly the maps one process writes, videos whole."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from data.synthetic import SyntheticSizes, generate
from engine.inference.sharding import share
from models import build_model

REPO = Path(__file__).resolve().parents[1]


def test_shares_deal_keys_round_robin_and_keep_groups_whole() -> None:
    assert share(range(5), 0, 2) == [0, 2, 4] and share(range(5), 1, 2) == [1, 3]
    videos = ["a", "a", "b", "c", "c", "c", "d"]
    assert [share(videos, rank, 3) for rank in range(3)] == [[0, 1, 6], [2], [3, 4, 5]]
    assert share(videos, 0, 1) == list(range(7))


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("sharding")
    generate(root / "data", 0, SyntheticSizes(sod_train=1, sod_test=7, video_train=1, video_test=3, min_frames=9,
                                              max_frames=12), workers=0)
    torch.manual_seed(0)
    torch.save(build_model("sdnet").state_dict(), root / "sdnet.pth")
    torch.save({"state_dict": build_model("stdnet", bn=True).state_dict(), "args": {"model": "stdnet", "bn": True}},
               root / "stdnet.pth")
    return root


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# 7-9 s each (three generator runs, two of them under torchrun): in the slow set, which .ci/run runs.
@pytest.mark.slow
@pytest.mark.parametrize("script", ["generate_salmaps_sod.py", "generate_salmaps_vsod.py"])
def test_two_processes_write_what_one_writes(script: str, data: Path, tmp_path: Path) -> None:
    if script == "generate_salmaps_sod.py":
        flags = ["--evaluate", data / "sdnet.pth", "--datadir", data / "data" / "sod", "--testdata", "SYN-TE",
                 "--size", "64", "-j", "0"]
    else:
        shutil.copy(data / "data" / "lists" / "test_video_lst.txt", tmp_path / "test.txt")
        flags = ["--evaluate", data / "stdnet.pth", "--datadir", data / "data", "--test-lst", tmp_path / "test.txt",
                 "--testdata", "SYN-V-test", "--size", "64", "--nframes", "4", "-j", "0"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    single = subprocess.run([sys.executable, script, *map(str, flags), "--savedir", str(tmp_path / "one")], cwd=REPO,
                            env=env, capture_output=True, text=True)
    assert single.returncode == 0, single.stderr
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", "2",
                "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{free_port()}"]
    shared = subprocess.run([*torchrun, script, *map(str, flags), "--savedir", str(tmp_path / "two")], cwd=REPO,
                            env=env, capture_output=True, text=True)
    assert shared.returncode == 0, shared.stderr
    assert "by 2 processes" in shared.stderr
    maps = tree(tmp_path / "one")
    assert maps and tree(tmp_path / "two") == maps
