"""Faults: a kill at any write point loses nothing.

Each long-running command runs once uninterrupted with its writes logged (``SDNET_WRITE_LOG``, data/atomic.py),
then in a fresh folder is killed by SIGKILL at one of those writes (``SDNET_FAULT_AT_WRITE=N:before``: the
temporary file complete, the target untouched; ``N:after``: right after the rename) and run again as it was
(training with ``--resume``). What that leaves must be what the uninterrupted run left: no temporary file, every
image, video, JSON and checkpoint readable, maps and metrics byte for byte, training weights and optimizer state
bit for bit with one log line per epoch. By default one write point per command runs (its ``pick``); ``pytest -m
slow tests/test_faults.py`` runs every write point of every command, before and after the rename.
"""

from __future__ import annotations

import http.server
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from data.atomic import FAULT_VARIABLE, WRITE_LOG_VARIABLE
from data.synthetic import SyntheticSizes, generate
from models import build_model

REPO = Path(__file__).resolve().parents[1]
MOMENTS = ("before", "after")


@dataclass
class Inputs:
    """What the commands read, made once for the module: synthetic data, random checkpoints, a video, maps to
    evaluate, and a local server with a checkpoint to download."""

    root: Path
    server: str = ""

    @property
    def data(self) -> Path:
        return self.root / "data"


@dataclass
class Case:
    """A command: ``argv(inputs, folder)`` runs it with its outputs in ``folder``; ``setup`` puts what it reads
    there first; ``compare(expected, actual)`` checks two folders' results; ``pick(targets)`` the 1-based write point
    and moment of the default test."""

    argv: Callable[[Inputs, Path], list[str]]
    compare: Callable[[Path, Path], None]
    pick: Callable[[list[str]], tuple[int, str]] = field(default=lambda targets: ((len(targets) + 1) // 2, "before"))
    setup: Callable[[Inputs, Path], None] = field(default=lambda inputs, folder: None)


def environment(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK", FAULT_VARIABLE, WRITE_LOG_VARIABLE)}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(REPO), **extra)
    return env


def run(argv: list[str], **extra: str) -> subprocess.CompletedProcess:
    """``argv`` in a fresh process of its own session: whatever it started (data workers) dies with it."""
    process = subprocess.Popen(argv, cwd=REPO, env=environment(**extra), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = process.communicate(timeout=300)
    finally:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return subprocess.CompletedProcess(argv, process.returncode, out, err)


def python(*args: str | Path) -> list[str]:
    return [sys.executable, *map(str, args)]


def files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def same_files(*names: str) -> Callable[[Path, Path], None]:
    """Byte-for-byte equality of the files below the given subfolders of the two run folders."""
    def compare(expected: Path, actual: Path) -> None:
        for name in names:
            one, two = files(expected / name), files(actual / name)
            assert sorted(two) == sorted(one) and two == one, name
    return compare


def assert_nothing_half_written(folder: Path) -> None:
    """No temporary file; every image and video decodes, every JSON (line) parses, every checkpoint loads."""
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        assert ".tmp" not in path.name, f"temporary file left: {path}"
        if path.suffix in (".png", ".jpg"):
            assert cv2.imread(str(path), cv2.IMREAD_UNCHANGED) is not None, path
        elif path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".jsonl":
            for line in path.read_text().splitlines():
                json.loads(line)
        elif path.suffix == ".pth":
            torch.load(path, weights_only=True)
        elif path.suffix == ".mp4":
            capture = cv2.VideoCapture(str(path))
            assert capture.isOpened() and capture.read()[0], path
            capture.release()


def assert_same_tree(one, two, where: str) -> None:
    """Nested dicts / lists of tensors and plain values equal, tensors bit for bit."""
    if isinstance(one, torch.Tensor):
        assert torch.equal(one, two), where
    elif isinstance(one, dict):
        assert one.keys() == two.keys(), where
        for key in one:
            assert_same_tree(one[key], two[key], f"{where}.{key}")
    elif isinstance(one, (list, tuple)):
        assert len(one) == len(two), where
        for index, (a, b) in enumerate(zip(one, two)):
            assert_same_tree(a, b, f"{where}[{index}]")
    else:
        assert one == two or (isinstance(one, float) and math.isnan(one) and math.isnan(two)), where


TRAINING_FLAGS = ["--epochs", "2", "--batch-size", "2", "--max-steps", "1", "--seed", "5", "--warmup", "0", "-j", "0",
                  "--save-freq", "1", "--lr", "3e-3", "--size", "64", "--resume"]


def train_sod(inputs: Inputs, folder: Path) -> list[str]:
    return python("train_sod.py", *TRAINING_FLAGS, "--datadir", inputs.data / "sod", "--train-data", "SYN-TR",
                  "--val-data", "SYN-TE", "--pass-scales", "1.0", "--savedir", folder / "run")


def train_vsod(inputs: Inputs, folder: Path) -> list[str]:
    lists = inputs.data / "lists"
    return python("train_vsod.py", *TRAINING_FLAGS, "--datadir", inputs.data, "--train-lst",
                  lists / "train_video_lst.txt", "--val-lst", lists / "val_video_lst.txt", "--nframes", "4",
                  "--savedir", folder / "run")


def same_training(expected: Path, actual: Path) -> None:
    """Every checkpoint's epoch, best figures, weights and optimizer state bit for bit; one log line per epoch with
    the same losses and validation figures; the same args.json."""
    one, two = expected / "run", actual / "run"
    names = sorted(p.name for p in (one / "save_models").iterdir())
    assert sorted(p.name for p in (two / "save_models").iterdir()) == names
    for name in names:
        a, b = (torch.load(run_ / "save_models" / name, weights_only=True) for run_ in (one, two))
        assert (a["epoch"], a["best"]) == (b["epoch"], b["best"]), name
        assert_same_tree(a["state_dict"], b["state_dict"], f"{name} state_dict")
        assert_same_tree(a["optimizer"], b["optimizer"], f"{name} optimizer")
    logs = [[json.loads(line) for line in (run_ / "log.jsonl").read_text().splitlines()] for run_ in (one, two)]
    assert [line["epoch"] for line in logs[1]] == [line["epoch"] for line in logs[0]] == [0, 1]
    assert [(line["loss"], line["val_mae"]) for line in logs[1]] == [(line["loss"], line["val_mae"])
                                                                      for line in logs[0]]
    flags = [{key: value for key, value in json.loads((run_ / "args.json").read_text()).items() if key != "savedir"}
             for run_ in (one, two)]
    assert flags[1] == flags[0]  # the same flags but the run's own folder


def after_first_latest(targets: list[str]) -> tuple[int, str]:
    """Right after the first epoch's checkpoint_latest.pth is in place."""
    return next(i for i, t in enumerate(targets, 1) if t.endswith("checkpoint_latest.pth")), "after"


def maps_to_evaluate(inputs: Inputs, folder: Path) -> None:
    shutil.copytree(inputs.root / "maps", folder / "results" / "maps")


CASES = {
    "train_sod": Case(train_sod, same_training, after_first_latest),
    "train_vsod": Case(train_vsod, same_training, after_first_latest),
    "generate_salmaps_sod": Case(lambda inputs, folder: python(
        "generate_salmaps_sod.py", "--evaluate", inputs.root / "sdnet.pth", "--datadir", inputs.data / "sod",
        "--testdata", "SYN-TE+SYN-TR", "--savedir", folder / "maps", "--size", "32", "-j", "0", "--backend",
        "eager"), same_files("maps")),
    "generate_salmaps_vsod": Case(lambda inputs, folder: python(
        "generate_salmaps_vsod.py", "--evaluate", inputs.root / "stdnet.pth", "--datadir", inputs.data,
        "--testdata", "SYN-V-test", "--test-lst", inputs.data / "lists" / "test_video_lst.txt", "--savedir",
        folder / "maps", "--size", "32", "--nframes", "4", "--tid", "cv", "cd", "ad", "-j", "0", "--backend",
        "eager"), same_files("maps"), lambda targets: ((len(targets) + 1) // 2, "after")),
    "predict": Case(lambda inputs, folder: python(
        "predict.py", "--checkpoint", inputs.root / "sdnet.pth", inputs.data / "sod" / "SYN-TE" / "images",
        inputs.root / "clip.mp4", "--out", folder / "out", "--size", "32", "-j", "0", "--overlay", "--cache-dir",
        folder / "cache"), same_files("out"), lambda targets: (len(targets), "before")),  # the video, last
    "convert": Case(lambda inputs, folder: python(
        "convert.py", "--checkpoint", inputs.root / "sdnet.pth", "--out", folder / "out" / "sdnet.pth"),
        same_files("out")),
    "eval_sod": Case(lambda inputs, folder: [
        "bash", str(REPO / "Evaluation" / "eval_sod.sh"), "SYN-TE+SYN-TR", "maps", str(inputs.data / "sod"),
        "--results-dir", str(folder / "results"), "--workers", "0"], same_files("results"),
        lambda targets: (next(i for i, t in enumerate(targets, 1) if t.endswith(".json")), "after"),
        maps_to_evaluate),
    "hub_download": Case(lambda inputs, folder: python(
        "-m", "engine.hub", "download", "stdnet_from_scratch_DAVSOD", "--out", folder / "checkpoints",
        "--no-verify", "--base-url", inputs.server), same_files("checkpoints")),
}


def write_video(path: Path, frames: int = 6) -> None:
    rng = np.random.default_rng(frames)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 12, (48, 40))
    for t in range(frames):
        frame = rng.integers(0, 80, size=(40, 48, 3), dtype=np.uint8)
        cv2.rectangle(frame, (4 + 3 * t, 8), (24 + 3 * t, 30), (60, 220, 240), -1)
        writer.write(frame)
    writer.release()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    generate(root / "data", seed=0, sizes=SyntheticSizes(sod_train=6, sod_test=3, video_train=1, video_test=1,
                                                         min_frames=8, max_frames=9))
    for name in ("sdnet", "stdnet"):
        torch.manual_seed(0)
        model = build_model(name, bn=name == "stdnet")
        torch.save({f"module.{k}": v for k, v in model.state_dict().items()}, root / f"{name}.pth")
    write_video(root / "clip.mp4")
    for name in ("SYN-TE", "SYN-TR"):  # maps to evaluate: the GT, blurred
        (root / "maps" / name).mkdir(parents=True)
        for gt in sorted((root / "data" / "sod" / name / "GT").glob("*.png")):
            blurred = cv2.GaussianBlur(cv2.imread(str(gt), cv2.IMREAD_GRAYSCALE), (9, 9), 3)
            assert cv2.imwrite(str(root / "maps" / name / gt.name), blurred)
    served = root / "served"
    served.mkdir()
    shutil.copy(root / "stdnet.pth", served / "stdnet_from_scratch_DAVSOD.pth")
    handler = type("Quiet", (http.server.SimpleHTTPRequestHandler,), {"log_message": lambda *args: None})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), lambda *a: handler(*a, directory=str(served)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield Inputs(root, f"http://127.0.0.1:{httpd.server_address[1]}")
    httpd.shutdown()


@pytest.fixture(scope="module")
def uninterrupted(inputs: Inputs) -> Callable[[str], tuple[Path, list[str]]]:
    """``uninterrupted(name)``: the folder of the command's uninterrupted run and the targets of its writes."""
    done: dict[str, tuple[Path, list[str]]] = {}

    def get(name: str) -> tuple[Path, list[str]]:
        if name not in done:
            case, folder = CASES[name], inputs.root / name / "uninterrupted"
            shutil.rmtree(folder, ignore_errors=True)  # what a failed attempt left
            folder.mkdir(parents=True)
            case.setup(inputs, folder)
            log = inputs.root / name / "writes.log"
            result = run(case.argv(inputs, folder), **{WRITE_LOG_VARIABLE: str(log)})
            assert result.returncode == 0, result.stderr[-3000:]
            assert_nothing_half_written(folder)
            done[name] = folder, [line.split("\t", 1)[1] for line in log.read_text().splitlines()]
        return done[name]

    return get


def kill_and_rerun(name: str, inputs: Inputs, expected: Path, point: int, moment: str) -> None:
    case = CASES[name]
    folder = inputs.root / name / f"killed_{point}_{moment}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    case.setup(inputs, folder)
    result = run(case.argv(inputs, folder), **{FAULT_VARIABLE: f"{point}:{moment}"})
    assert result.returncode == -signal.SIGKILL, f"{name} not killed at write {point}: {result.stderr[-2000:]}"
    result = run(case.argv(inputs, folder))
    assert result.returncode == 0, result.stderr[-3000:]
    assert_nothing_half_written(folder)
    case.compare(expected, folder)


# One write point of each command (6-14 s each on 2 cores) is in the slow set, which .ci/run runs; by default only
# convert.py's, whose writer (data/atomic.py) every command shares.
@pytest.mark.parametrize("name", [name if name == "convert" else pytest.param(name, marks=pytest.mark.slow)
                                  for name in CASES])
def test_a_kill_at_a_write_loses_nothing(name: str, inputs: Inputs, uninterrupted) -> None:
    expected, targets = uninterrupted(name)
    assert targets, f"{name} wrote nothing through data/atomic.py"
    point, moment = CASES[name].pick(targets)
    kill_and_rerun(name, inputs, expected, point, moment)


@pytest.mark.exhaustive  # about 10 minutes on 2 cores: pytest -m exhaustive
@pytest.mark.parametrize("moment", MOMENTS)
@pytest.mark.parametrize("name", list(CASES))
def test_a_kill_at_every_write_loses_nothing(name: str, moment: str, inputs: Inputs, uninterrupted) -> None:
    expected, targets = uninterrupted(name)
    failures = []
    for point, target in enumerate(targets, 1):
        try:
            kill_and_rerun(name, inputs, expected, point, moment)
        except AssertionError as err:  # every point is tried; the report names each one that lost something
            failures.append(f"write {point} ({Path(target).name}) {moment}: {str(err).splitlines()[0]}")
    assert not failures, f"{len(failures)} of {len(targets)} write points:\n" + "\n".join(failures)


def test_the_harness_kills_where_it_is_told(tmp_path: Path) -> None:
    """Killed at the 2nd of three writes: before its rename the 2nd target is absent and its temporary file is
    complete; after it, the 2nd target is there and the 3rd is not."""
    script = ("import sys; from data.atomic import write_bytes_atomic as w\n"
              "for i in range(3): w(sys.argv[1] + f'/{i}.txt', b'x' * 1000)\n")
    for moment in MOMENTS:
        folder = tmp_path / moment
        folder.mkdir()
        log = tmp_path / f"{moment}.log"
        result = run(python("-c", script, folder), **{FAULT_VARIABLE: f"2:{moment}", WRITE_LOG_VARIABLE: str(log)})
        assert result.returncode == -signal.SIGKILL
        assert [line.split("\t")[0] for line in log.read_text().splitlines()] == ["1", "2"]
        names = sorted(p.name for p in folder.iterdir())
        if moment == "before":
            [temporary] = [n for n in names if ".tmp" in n]
            assert names == sorted(["0.txt", temporary]) and (folder / temporary).read_bytes() == b"x" * 1000
        else:
            assert names == ["0.txt", "1.txt"]
