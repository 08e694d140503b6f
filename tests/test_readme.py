"""Every command of README.md's shell blocks is run here or listed as covered elsewhere, so none of them rots.

Each command runs as written (``$ROOTDIR``, ``$exp``, ... substituted; `cd` lines followed, as a shell running
the block would) in a copy of the repository whose results/, checkpoints/ and dataset/ are temporary folders
(tests/readme_support.py), on a tiny fake data root in the real layouts (SPEC §9) built from
``python -m data.synthetic`` output. Long jobs are made tiny by flags appended after the README's text (argparse:
the last occurrence wins), e.g. one training step at 64 px; scripts run in this process through ``main(argv)``,
shell commands and torchrun in subprocesses. Released checkpoints are the reference files where present and
otherwise random weights of the right architecture. Each command's outputs are checked: maps per image at the
image's size, metrics equal to an independent computation, checkpoints, the spec's parameter and MAC counts, an
ONNX graph that computes PyTorch's maps. The Python blocks run too, with the inputs their comments describe.

A README command that matches neither `RUNNERS` nor `COVERED_ELSEWHERE` fails `test_readme_command`.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import socket
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from readme_support import (
    REFERENCE_CHECKPOINTS,
    REPO,
    SOD_TEST_SETS,
    Command,
    build_fake_root,
    expand,
    load_generate_lists,
    make_repo_copy,
    read_grey,
    readme_commands,
    run_synthetic,
    shell_blocks,
    shim_bin,
    write_small_lists,
)

import configs
import utils
from data.readers import list_images
from models import build_model

README = REPO / "README.md"
COMMANDS = readme_commands(README.read_text())

# What the README's `$exp` stands for when its block does not say: the authors' checkpoint names (SPEC §6.3, §6.4).
EXPERIMENTS = {"sdnet": "sdnet_from_scratch", "sdneta": "sdneta_from_pretrained", "stdnet": "stdnet_from_scratch",
               "stdneta": "stdneta_from_pretrained"}
# SPEC §13: parameters after DCR, and MACs (G, per frame for video models) at the sizes the spec gives.
SPEC_PARAMS = {"sdnet": 705_725, "sdneta": 818_531, "stdnet": 874_469, "stdneta": 987_275}
SPEC_GMACS = {("sdnet", 320): 1.835, ("sdnet", 384): 2.642, ("sdneta", 384): 2.882, ("sdneta", 320): 2.001,
              ("stdnet", 256): 2.219, ("stdneta", 256): 2.325}
# Appended to long jobs (the README's text stays as written before them).
TRAIN_IMAGE_OVERRIDES = ["--epochs", "1", "--max-steps", "1", "--batch-size", "2", "--size", "64", "-j", "0",
                         "--pass-scales", "1.0", "--seed", "0"]
TRAIN_VIDEO_OVERRIDES = ["--epochs", "1", "--max-steps", "1", "--batch-size", "1", "--size", "64", "-j", "0",
                         "--seed", "0"]
INFERENCE_OVERRIDES = ["--size", "64", "-j", "0"]


# ----------------------------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="session")
def readme_data(tmp_path_factory) -> dict:
    """The fake data root and the small list files, built once."""
    base = tmp_path_factory.mktemp("readme")
    root = base / "ROOTDIR"
    build_fake_root(root)
    lists = base / "lists"
    write_small_lists(root, lists)
    return {"root": root, "lists": lists, "bin": shim_bin(base / "bin")}


@dataclass
class Context:
    """Where a README command runs: ``repo`` (the repository copy), ``root`` (the fake ROOTDIR), ``tmp``."""

    repo: Path
    root: Path
    tmp: Path
    env: dict[str, str]
    monkeypatch: pytest.MonkeyPatch
    capsys: pytest.CaptureFixture

    def variables(self, command: Command) -> dict[str, str]:
        """Values of the README's shell variables for ``command``: its block's assignments, ``$exp`` after the
        command's ``--model`` (the released checkpoint names), ``$testdata``, and always the fake ``$ROOTDIR``."""
        model = re.search(r"--model[= ](\w+)", command.text)
        video = bool(model) and configs.MODELS.get(model.group(1), {}).get("kind") == "video"
        values = {"exp": EXPERIMENTS.get(model.group(1), "readme") if model else "readme",
                  "testdata": "DAVSOD" if video or "vsod" in command.text else "+".join(SOD_TEST_SETS),
                  "HOST": "127.0.0.1", "MASTER_ADDR": "127.0.0.1"}
        values.update(dict(command.variables))
        values["ROOTDIR"] = str(self.root)
        return values

    def argv(self, command: Command, skip: int) -> list[str]:
        """The command's words after its first ``skip`` ones (``python script.py``), variables substituted."""
        return shlex.split(expand(command.text, self.variables(command)))[skip:]

    def cwd(self, command: Command) -> Path:
        return self.repo / command.cwd

    def run_main(self, main: Callable, command: Command, argv: list[str]) -> None:
        """``main(argv)`` in this process, in the command's folder of the repository copy."""
        with self.monkeypatch.context() as patch:
            patch.chdir(self.cwd(command))
            result = main(argv)
        assert result is None or isinstance(result, dict)

    def run_shell(self, command: Command, appended: list[str] = (), timeout: int = 300,
                  env: dict[str, str] | None = None) -> str:
        """The command's text (plus ``appended`` words) by bash in its folder of the repository copy, with the
        README's variables in the environment; returns stdout, fails with stderr on a non-zero status."""
        env = dict(env or self.env, **self.variables(command), PWD=str(self.cwd(command)))
        text = command.text + "".join(f" {shlex.quote(word)}" for word in appended)
        result = subprocess.run(["bash", "-c", text], cwd=self.cwd(command), env=env, capture_output=True, text=True,
                                timeout=timeout)
        assert result.returncode == 0, f"{command}\nexit {result.returncode}\n{result.stderr[-3000:]}"
        return result.stdout


@pytest.fixture
def ctx(readme_data, tmp_path, monkeypatch, capsys) -> Context:
    """A fresh repository copy per command."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "WORLD_SIZE", "RANK", "LOCAL_RANK")}
    env.update(PATH=f"{readme_data['bin']}{os.pathsep}{env.get('PATH', '')}", OMP_NUM_THREADS="1")
    return Context(make_repo_copy(tmp_path, readme_data["lists"]), readme_data["root"], tmp_path, env, monkeypatch,
                   capsys)


def places_in_repository(command: Command, ctx: Context) -> set[Path]:
    """Where in the real repository the command's outputs would land if it ran there: each of its words as a path
    from its folder, and under results/, checkpoints/ and dataset/ (list files)."""
    words = [word for word in ctx.argv(command, 0) if not word.startswith("-") and not os.path.isabs(word)]
    places = {REPO / command.cwd / word for word in words}
    places |= {REPO / folder / word for word in words for folder in ("results", "checkpoints")}
    places |= {REPO / "dataset" / f"{split}_video_lst.txt" for split in ("train", "val", "test")}
    return {place for place in places if not place.exists()}


# ----------------------------------------------------------------------------------------------- checkpoints

def released_layout(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state dict as the authors released theirs: DataParallel's ``module.`` prefix on every key."""
    return {f"module.{key}": value for key, value in state_dict.items()}


def provide_checkpoint(path: Path, model: str, *, config: str | None = None, bn: bool | None = None,
                       tid: tuple[str, ...] = ("cv", "cd", "ad"), backbone: bool = False) -> str:
    """Make the checkpoint a command reads exist: a link to the reference file of that name where there is one,
    else random weights (seeded) of the described training-form model in the authors' layout (only the backbone,
    entries named '*block*', for ``backbone``). Returns what it is, for messages."""
    if path.exists():
        return "existing"
    path.parent.mkdir(parents=True, exist_ok=True)
    reference = REFERENCE_CHECKPOINTS / path.name
    if reference.is_file():
        path.symlink_to(reference)
        return "reference"
    spec = configs.MODELS[model]
    torch.manual_seed(0)
    network = build_model(model, config or spec["config"], bn=spec["kind"] == "video" if bn is None else bn,
                          tid=tuple(tid))
    state_dict = {k: v for k, v in network.state_dict().items() if not backbone or "block" in k}
    torch.save(released_layout(state_dict), path)
    return "random"


def model_for_file(name: str) -> str:
    """The model a checkpoint file name starts with (longest match: stdneta before stdnet)."""
    matches = [model for model in configs.MODELS if name.startswith(model)]
    assert matches, f"cannot tell the model of checkpoint {name}"
    return max(matches, key=len)


# ----------------------------------------------------------------------------------------------- checks

def check_map(path: Path, size: tuple[int, int]) -> np.ndarray:
    assert path.is_file(), f"missing map {path}"
    saliency = read_grey(path)
    assert saliency.dtype == np.uint8 and saliency.shape == size, (path, saliency.shape, size)
    return saliency


def video_name(clip_dir: str) -> str:
    """Output folder of a test video (SPEC §7.2): the folder above Imgs (DAVSOD, DAVIS), else the id folder (VOS)."""
    parts = Path(clip_dir).parts
    return parts[-2] if parts[-1] == "Imgs" else parts[-1]


def listed_videos(list_file: Path, dataset: str) -> list[tuple[str, str, str, str]]:
    """(clip_dir, image_ext, anno_dir, label_ext) of the list's videos whose clip folder contains /<dataset>."""
    lines = [line.split() for line in list_file.read_text().splitlines() if line.strip()]
    return [tuple(words) for words in lines if len(words) == 4 and f"/{dataset}" in f"/{words[0]}"]


def annotated(root: Path, video: tuple[str, str, str, str]) -> list[str]:
    return sorted(name for name in os.listdir(root / video[2]) if video[3] in name)


def normalised_mae(pred: np.ndarray, gt: np.ndarray) -> float:
    """PySODMetrics' MAE of one map: prediction /255, min-max normalised (if not constant); GT binarised at 128."""
    p = pred.astype(np.float64) / 255
    if p.max() != p.min():
        p = (p - p.min()) / (p.max() - p.min())
    return float(np.abs(p - (gt > 128)).mean())


def fake_prediction(gt: np.ndarray, seed: int) -> np.ndarray:
    """A plausible saliency map: the GT blurred, plus noise (deterministic)."""
    rng = np.random.default_rng(seed)
    blurred = cv2.GaussianBlur(gt.astype(np.float32), (0, 0), 3) + rng.normal(0, 25, gt.shape)
    return np.clip(blurred, 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------------------------- runners

def run_generate_sod(command: Command, ctx: Context) -> None:
    import generate_salmaps_sod as script

    argv = ctx.argv(command, 2) + INFERENCE_OVERRIDES
    args = script.build_parser().parse_args(argv)
    cwd = ctx.cwd(command)
    provide_checkpoint(cwd / args.evaluate, args.model, config=args.train_config, bn=args.bn)
    ctx.run_main(script.main, command, argv)
    savedir = cwd / args.savedir
    for dataset in args.testdata.split("+"):
        images = list_images(Path(args.datadir) / dataset / "images")
        assert images, dataset
        assert sorted(p.name for p in (savedir / dataset).iterdir()) == sorted(f"{p.stem}.png" for p in images)
        for image in images:
            saliency = check_map(savedir / dataset / f"{image.stem}.png", cv2.imread(str(image)).shape[:2])
            assert saliency.max() > saliency.min(), f"constant map for {image}"


def run_generate_vsod(command: Command, ctx: Context) -> None:
    import generate_salmaps_vsod as script

    argv = ctx.argv(command, 2) + INFERENCE_OVERRIDES
    args = script.build_parser().parse_args(argv)
    cwd = ctx.cwd(command)
    provide_checkpoint(cwd / args.evaluate, args.model, config=args.train_config, bn=args.bn, tid=args.tid)
    ctx.run_main(script.main, command, argv)
    root, savedir = Path(args.datadir), cwd / args.savedir
    for dataset in args.testdata.split("+"):
        videos = listed_videos(cwd / args.test_lst, dataset)
        assert videos, f"no {dataset} video in {args.test_lst}"
        for video in videos:
            frames = annotated(root, video)
            size = cv2.imread(str(root / video[0] / frames[0].replace(video[3], video[1]))).shape[:2]
            folder = savedir / dataset / video_name(video[0])
            assert sorted(p.name for p in folder.iterdir()) == [f"{Path(f).stem}.png" for f in frames]
            for frame in frames:
                check_map(folder / f"{Path(frame).stem}.png", size)


def write_video(path: Path, frames: list[np.ndarray], fps: float = 10.0) -> None:
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    assert writer.isOpened(), f"cannot write {path}"
    for frame in frames:
        writer.write(frame)
    writer.release()


def video_frames(path: Path) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    return frames


def run_predict(command: Command, ctx: Context) -> None:
    """Inputs named by the command (images, folders, videos) are made from the synthetic test set first."""
    import predict as script

    argv = ctx.argv(command, 2) + INFERENCE_OVERRIDES
    args = script.build_parser().parse_args(argv)
    cwd = ctx.cwd(command)
    provide_checkpoint(cwd / args.checkpoint, args.model, config=args.train_config, bn=args.bn, tid=args.tid)
    photos = sorted((ctx.root / "sod" / "SYN-TE" / "images").iterdir())
    frames = [cv2.resize(cv2.imread(str(photos[0])), (64, 48))] * 6 + [cv2.resize(cv2.imread(str(photos[1])),
                                                                                    (64, 48))] * 5
    expected = {}  # output path -> (H, W) of a map image, or (frames, H, W) of a map video
    out = cwd / args.out
    for name in args.inputs:
        source = cwd / name
        if source.suffix.lower() in script.VIDEO_EXTENSIONS:
            write_video(source, frames)
            expected[out / f"{source.stem}.mp4"] = (len(frames), 48, 64)
        elif source.suffix:
            source.write_bytes(photos[0].read_bytes()) if source.suffix == photos[0].suffix else cv2.imwrite(
                str(source), cv2.imread(str(photos[0])))
            expected[out / f"{source.stem}.png"] = cv2.imread(str(source)).shape[:2]
        else:  # a folder, searched recursively
            for index, photo in enumerate(photos[1:3]):
                target = source / ("nested" if index else "") / photo.name
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(photo.read_bytes())
                expected[out / source.name / target.relative_to(source).with_suffix(".png")] = cv2.imread(
                    str(photo)).shape[:2]
    ctx.run_main(script.main, command, argv)
    for path, shape in expected.items():
        if path.suffix == ".mp4":
            maps = video_frames(path)
            assert (len(maps), *maps[0].shape[:2]) == shape, path
            continue
        saliency = check_map(path, shape)
        if args.overlay:
            assert cv2.imread(str(path.with_name(f"{path.stem}_overlay.jpg"))).shape[:2] == shape
        if args.cutout:
            cutout = read_grey(path.with_name(f"{path.stem}_cutout.png"))
            assert cutout.shape == (*shape, 4) and np.array_equal(cutout[:, :, 3], saliency)


def run_export_onnx(command: Command, ctx: Context) -> None:
    """Exported at 64 px; onnxruntime's output equals PyTorch's eager converted model (1e-4)."""
    import export_onnx as script

    onnxruntime = pytest.importorskip("onnxruntime")
    argv = ctx.argv(command, 2) + ["--size", "64"]
    args = script.build_parser().parse_args(argv)
    cwd = ctx.cwd(command)
    provide_checkpoint(cwd / args.evaluate, args.model, config=args.train_config, bn=args.bn, tid=args.tid)
    ctx.run_main(script.main, command, argv)
    with ctx.monkeypatch.context() as patch:
        patch.chdir(cwd)
        model = utils.load_inference_model(args, args.evaluate)
    video = configs.MODELS[args.model]["kind"] == "video"
    x = torch.randn(1, 3 * args.nframes if video else 3, 64, 64, generator=torch.Generator().manual_seed(1))
    session = onnxruntime.InferenceSession(str(cwd / args.out), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["image"]
    assert [o.name for o in session.get_outputs()] == ["saliency"]
    (result,) = session.run(["saliency"], {"image": x.numpy()})
    with torch.no_grad():
        expected = model(x).numpy()
    assert result.shape == ((args.nframes if video else 1), 1, 64, 64)
    np.testing.assert_allclose(result, expected, atol=1e-4, rtol=0)


def run_speed(command: Command, ctx: Context) -> None:
    """One timed pass without warm-up (no compilation) at the README's size: the spec's parameters and MACs."""
    import speed_sod
    import speed_vsod

    script = speed_vsod if command.program.endswith("vsod.py") else speed_sod
    figures = ctx.tmp / "speed.json"
    argv = ctx.argv(command, 2) + ["-n", "1", "--warmup", "0", "--json", str(figures)]
    args = script.build_parser().parse_args(argv)
    ctx.run_main(script.main, command, argv)
    result = json.loads(figures.read_text())
    assert (result["model"], result["config"], result["passes"]) == (args.model, args.config, 1)
    assert result["fps"] > 0
    if args.config == "baseline":
        assert result["params"] == SPEC_PARAMS[args.model]
        if (args.model, args.size) in SPEC_GMACS:
            assert round(result["macs_per_frame"] / 1e9, 3) == SPEC_GMACS[(args.model, args.size)]


def check_training_run(savedir: Path, args, kind: str) -> dict:
    latest = torch.load(savedir / "save_models" / "checkpoint_latest.pth", weights_only=True)
    assert (latest["model"], latest["epoch"], latest["deploy"]) == (args.model, 0, False)
    assert latest["config"] == (args.config or configs.MODELS[args.model]["config"])
    log = [json.loads(line) for line in (savedir / "log.jsonl").read_text().splitlines()]
    assert [entry["epoch"] for entry in log] == [0]
    assert json.loads((savedir / "args.json").read_text())["model"] == args.model
    groups = {group["name"]: group["lr"] for group in latest["optimizer"]["param_groups"]}
    if kind == "video" and args.preload:
        assert groups["backbone"] == pytest.approx(args.lr * args.lr_reduce)
    return latest


def run_train_sod(command: Command, ctx: Context) -> None:
    import train_sod as script

    argv = ctx.argv(command, 2) + TRAIN_IMAGE_OVERRIDES
    args = script.build_parser().parse_args(argv)
    cwd = ctx.cwd(command)
    for path in (args.preload, args.finetune):
        if path:
            provide_checkpoint(cwd / path, model_for_file(Path(path).name), backbone=path == args.preload,
                               bn=args.bn or model_for_file(Path(path).name) == "sdneta")
    ctx.run_main(script.main, command, argv)
    savedir = cwd / args.savedir
    latest = check_training_run(savedir, args, "image")
    assert latest["bn"] == args.bn
    assert (savedir / "save_models" / "checkpoint_best.pth").is_file()


def run_train_vsod(command: Command, ctx: Context) -> None:
    import train_vsod as script

    argv = ctx.argv(command, 2) + TRAIN_VIDEO_OVERRIDES
    args = script.build_parser().parse_args(argv)
    cwd = ctx.cwd(command)
    if args.preload:
        provide_checkpoint(cwd / args.preload, model_for_file(Path(args.preload).name), backbone=True,
                           bn=Path(args.preload).name.startswith("sdneta") or "stage1" in args.preload)
    ctx.run_main(script.main, command, argv)
    savedir = cwd / args.savedir
    latest = check_training_run(savedir, args, "video")
    assert (latest["bn"], latest["tid"], latest["nframes"]) == (args.bn, list(args.tid), args.nframes)
    val_sets = sorted({name for name in ("DAVSOD", "VOS", "DAVIS")
                       if any(f"/{name}" in line for line in (cwd / args.val_lst).read_text().splitlines())})
    assert val_sets
    for name in val_sets:
        assert (savedir / "save_models" / f"checkpoint_best_{name}.pth").is_file()


def _positionals(words: list[str], count: int) -> list[str]:
    return [word for word in words if not word.startswith("-")][:count]


def run_eval(command: Command, ctx: Context) -> None:
    """``bash eval_sod.sh|eval_vsod.sh TESTDATA EXP DIR ...`` (a subprocess) or ``python -m Evaluation sod|vsod
    TESTDATA EXP DIR ...`` (in this process, with the copy's results/ and list appended: its defaults are the
    repository's). Maps made from the GT (blurred, noisy) are written where the generators write theirs; the JSON
    has one entry per dataset with the right map count and the MAE of an independent computation."""
    from Evaluation.__main__ import main

    words = ctx.argv(command, 0)
    shell = command.program.startswith("bash")
    task_word = next(w for w in words if w.startswith("eval_")) if shell else words[words.index("Evaluation") + 1]
    video = task_word in ("eval_vsod.sh", "vsod")
    flags = words[words.index(task_word) + 1:]
    testdata, exp, datadir = _positionals(flags, 3)
    cwd = ctx.cwd(command)
    results_dir = (cwd / ".." / "results") if shell else ctx.repo / "results"
    appended = [] if shell else ["--results-dir", str(results_dir)]
    if "--results-dir" in flags:
        results_dir = cwd / flags[flags.index("--results-dir") + 1]
    results = results_dir / exp
    datadir = Path(datadir)
    list_file = ctx.repo / "dataset" / "test_video_lst.txt"
    if "--test-lst" in flags:  # a list of the user's: the default list's lines of the datasets evaluated
        list_file = cwd / flags[flags.index("--test-lst") + 1]
        if not list_file.exists():
            lines = [" ".join(video_) for name in testdata.split("+")
                     for video_ in listed_videos(ctx.repo / "dataset" / "test_video_lst.txt", name)]
            list_file.write_text("\n".join(lines) + "\n")
    elif video and not shell:
        appended += ["--test-lst", str(list_file)]
    expected = {}
    for number, dataset in enumerate(testdata.split("+")):
        if not video:
            gts = sorted((datadir / dataset / "GT").glob("*.png"))
            maes = []
            for index, gt_path in enumerate(gts):
                gt = read_grey(gt_path)
                pred = fake_prediction(gt, seed=number * 1000 + index)
                (results / dataset).mkdir(parents=True, exist_ok=True)
                assert cv2.imwrite(str(results / dataset / gt_path.name), pred)
                maes.append(normalised_mae(pred, gt))
            expected[dataset] = (len(gts), float(np.mean(maes)))
            continue
        per_video, frames_counted = [], 0
        for v, video_ in enumerate(listed_videos(list_file, dataset)):
            names = annotated(datadir, video_)
            folder = results / dataset / video_name(video_[0])
            folder.mkdir(parents=True, exist_ok=True)
            maes = []
            for index, name in enumerate(names):
                gt = read_grey(datadir / video_[2] / name)
                pred = fake_prediction(gt, seed=number * 1000 + v * 100 + index)
                assert cv2.imwrite(str(folder / f"{Path(name).stem}.png"), pred)
                if 0 < index < len(names) - 1:  # DAVSOD protocol: first and last annotated frame skipped
                    maes.append(normalised_mae(pred, gt))
            per_video.append(np.mean(maes))
            frames_counted += len(maes)
        expected[dataset] = (frames_counted, float(np.mean(per_video)))
    if shell:
        stdout = ctx.run_shell(command)
    else:
        capsys = ctx.capsys
        capsys.readouterr()
        ctx.run_main(main, command, words[words.index("Evaluation") + 1:] + appended)
        stdout = capsys.readouterr().out
    task = "vsod" if video else "sod"
    metrics = json.loads((results / f"metrics_{task}.json").read_text())
    assert set(metrics) == set(expected)
    for dataset, (count, mae) in expected.items():
        assert metrics[dataset]["images"] == count, dataset
        assert metrics[dataset]["MAE"] == pytest.approx(mae, abs=1e-6), dataset
        assert set(metrics[dataset]) >= {"maxF", "meanF", "adpF", "wF", "Sm", "maxE", "meanE", "adpE"}
        assert (results / f"curves_{task}_{dataset}.png").is_file()
        assert dataset in stdout
    assert all(dataset in (results / f"metrics_{task}.md").read_text() for dataset in expected)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _flag(words: list[str], *names: str) -> int | None:
    """Index of the value of the first of ``names`` in ``words`` (``--name value`` or ``--name=value``)."""
    for index, word in enumerate(words):
        for name in names:
            if word == name:
                return index + 1
            if word.startswith(f"{name}="):
                words[index:index + 1] = [name, word.split("=", 1)[1]]
                return index + 1
    return None


def run_torchrun_training(command: Command, ctx: Context) -> None:
    """torchrun as written, Gloo on the CPU, one tiny step per process (the static rendezvous on a free port,
    through torchrun's PET_MASTER_PORT). A multi-node command (``--nnodes 2``) runs as its two nodes on this
    machine at once (``$HOST`` = 127.0.0.1), with one process per node and a free rendezvous port instead of the
    README's ``--nproc_per_node`` and port: the single-machine equivalent that 2 cores afford."""
    words = ctx.argv(command, 0)
    script = next(word for word in words if word.endswith(".py"))
    launcher, script_args = words[:words.index(script)], words[words.index(script) + 1:]
    video = script == "train_vsod.py"
    overrides = TRAIN_VIDEO_OVERRIDES if video else TRAIN_IMAGE_OVERRIDES
    module = __import__(Path(script).stem)
    args = module.build_parser().parse_args(script_args + overrides)
    nodes = _flag(launcher, "--nnodes")
    nnodes = int(launcher[nodes].split(":")[-1]) if nodes else 1
    env = dict(ctx.env, **ctx.variables(command), PET_MASTER_PORT=str(free_port()))
    if nnodes == 1:
        ctx.run_shell(command, overrides, env=env)
        expected_processes = int(launcher[_flag(launcher, "--nproc_per_node", "--nproc-per-node")])
    else:
        assert nnodes == 2, f"{command}: {nnodes} nodes are more than this test starts"
        launcher[_flag(launcher, "--nproc_per_node", "--nproc-per-node")] = "1"
        endpoint = _flag(launcher, "--rdzv_endpoint", "--rdzv-endpoint")
        assert endpoint, f"{command}: a multi-node launch without --rdzv_endpoint"
        launcher[endpoint] = f"{launcher[endpoint].rsplit(':', 1)[0]}:{free_port()}"
        text = shlex.join(launcher + [script] + script_args + overrides)
        nodes_ = [subprocess.Popen(["bash", "-c", text], cwd=ctx.cwd(command), env=env, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True) for _ in range(nnodes)]
        for node in nodes_:
            output, _ = node.communicate(timeout=300)
            assert node.returncode == 0, f"{command}\n{output[-3000:]}"
        expected_processes = nnodes
    savedir = ctx.cwd(command) / args.savedir
    check_training_run(savedir, args, "video" if video else "image")
    processes = re.search(r"(\d+) process\(es\)", (savedir / "log.txt").read_text())
    assert processes and int(processes.group(1)) == expected_processes, "torchrun did not start every process"


def run_convert(command: Command, ctx: Context) -> None:
    """The converted weights load into the inference architecture and give the training form's maps."""
    import convert as script

    argv = ctx.argv(command, 2)
    args = script.build_parser().parse_args(argv)
    cwd = ctx.cwd(command)
    provide_checkpoint(cwd / args.checkpoint, args.model, config=args.train_config, bn=args.bn, tid=args.tid)
    ctx.run_main(script.main, command, argv)
    saved = torch.load(cwd / args.out, weights_only=True)
    assert (saved["model"], saved["deploy"]) == (args.model, True)
    video = configs.MODELS[args.model]["kind"] == "video"
    with ctx.monkeypatch.context() as patch:
        patch.chdir(cwd)
        training = utils.build_inference_model(args.model, args.checkpoint, train_config=args.train_config,
                                               inference_config=args.train_config or configs.MODELS[args.model][
                                                   "config"], bn=args.bn, tid=tuple(args.tid))
        converted = utils.build_inference_model(args.model, args.out, train_config=args.train_config, bn=args.bn,
                                                tid=tuple(args.tid))
    x = torch.randn(1, 3 * args.nframes if video else 3, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(converted(x), training(x), atol=1e-4, rtol=0)


def run_synthetic_command(command: Command, ctx: Context) -> None:
    """With `tiny_synthetic_sizes` (the bundled sizes take 20 s here; test_synthetic.py checks the generator)."""
    argv = ctx.argv(command, 3)
    with ctx.monkeypatch.context() as patch:
        patch.chdir(ctx.cwd(command))
        run_synthetic(argv)
        root = Path(argv[argv.index("--root") + 1]).resolve()
    for name in ("SYN-TR", "SYN-TE"):
        assert list_images(root / "sod" / name / "images")
    for split in ("train", "val", "test"):
        assert (root / "lists" / f"{split}_video_lst.txt").read_text()


def run_generate_lists(command: Command, ctx: Context) -> None:
    """On the fake root, which has every video of dataset/splits.json: the three lists in the repository copy's
    dataset/, with the numbers of lines of SPEC §13.8 for VOS and DAVIS."""
    argv = ctx.argv(command, 2)
    out = ctx.repo / "dataset"
    for split in ("train", "val", "test"):
        (out / f"{split}_video_lst.txt").unlink()
    ctx.run_main(load_generate_lists(ctx.repo).main, command, argv)
    definitions = json.loads((ctx.repo / "dataset" / "splits.json").read_text())
    for split in ("train", "val", "test"):
        lines = (out / f"{split}_video_lst.txt").read_text().splitlines()
        for dataset in definitions["video"]:
            if "videos" in dataset["splits"].get(split, {}):
                prefix = dataset["image_dir"].split("{")[0]
                assert sum(line.startswith(prefix) for line in lines) == len(dataset["splits"][split]["videos"])
        stills = [line for line in lines if len(line.split()) == 2]
        assert len(stills) == (len(list_images(ctx.root / "sod" / "DUTS-TR" / "images")) if split == "train" else 0)


RUNNERS: dict[str, Callable[[Command, Context], None]] = {
    "python generate_salmaps_sod.py": run_generate_sod,
    "python generate_salmaps_vsod.py": run_generate_vsod,
    "python predict.py": run_predict,
    "python export_onnx.py": run_export_onnx,
    "python speed_sod.py": run_speed,
    "python speed_vsod.py": run_speed,
    "python train_sod.py": run_train_sod,
    "python train_vsod.py": run_train_vsod,
    "bash eval_sod.sh": run_eval,
    "bash eval_vsod.sh": run_eval,
    "python -m Evaluation": run_eval,
    "torchrun train_sod.py": run_torchrun_training,
    "torchrun train_vsod.py": run_torchrun_training,
    "python convert.py": run_convert,
    "python -m data.synthetic": run_synthetic_command,
    "python dataset/generate_lists.py": run_generate_lists,
}


def makefile_target(target: str) -> Callable[[], None]:
    def check() -> None:
        assert re.search(rf"^{target}:", (REPO / "Makefile").read_text(), re.M), f"no `{target}` target in Makefile"
    return check


def makefile_runs(*fragments: str) -> Callable[[], None]:
    def check() -> None:
        text = (REPO / "Makefile").read_text()
        assert all(fragment in text for fragment in fragments), f"Makefile no longer runs {fragments}"
    return check


# Commands that this file does not run, why, and a check that what covers them exists.
COVERED_ELSEWHERE: dict[str, tuple[str, Callable[[], None]]] = {
    "make demo": ("the demo itself (issue 9: run on a fresh clone); its steps are these scripts, run here",
                  makefile_target("demo")),
    "make test": ("runs ruff and this test suite", makefile_target("test")),
    "python -m venv": ("installation: `make demo` and `make test` create .venv the same way",
                       makefile_runs("python3 -m venv")),
    "source .venv/bin/activate": ("installation: activates the .venv of the line before; nothing to test",
                                  makefile_runs("python3 -m venv")),
    "pip install": ("installation: `make demo` and `make test` install both requirement files the same way",
                    makefile_runs("-m pip install", "-r requirements.txt", "-r requirements-dev.txt")),
    "python -m pytest": ("the test suite itself; `make test` runs it", makefile_runs("-m pytest -q")),
}


def _id(command: Command) -> str:
    return f"L{command.line}-{command.program.replace(' ', '-')}"


@pytest.mark.parametrize("command", COMMANDS, ids=[_id(c) for c in COMMANDS])
def test_readme_command(command: Command, request) -> None:
    if command.program in COVERED_ELSEWHERE:
        COVERED_ELSEWHERE[command.program][1]()
        return
    runner = RUNNERS.get(command.program)
    assert runner, (f"{command}\nis neither run by tests/test_readme.py (RUNNERS) nor listed as covered elsewhere "
                    "(COVERED_ELSEWHERE): add it to one of them")
    folder = REPO / command.cwd
    assert folder.is_dir(), (f"{command}\nruns in {command.cwd}/ (after the `cd` of an earlier command of its "
                             "block, as a shell running the block would), which does not exist")
    script = command.program.split()[-1]
    if script.endswith((".py", ".sh")):
        assert (folder / script).is_file(), (f"{command}\nruns in {command.cwd or '.'}/ (after the `cd` of earlier "
                                             f"commands of its block), where there is no {script}")
    context = request.getfixturevalue("ctx")
    absent = places_in_repository(command, context)
    runner(command, context)
    assert not {place for place in absent if place.exists()}, "the command wrote into the repository"


PYTHON_BLOCKS = shell_blocks(README.read_text(), {"python", "py"})


def snippet_inputs() -> dict:
    """Values for the names README snippets use without defining them (their comments say what they are)."""
    generator = torch.Generator().manual_seed(0)
    gts = [(torch.rand(40, 60, generator=generator) > 0.7).to(torch.uint8) * 255 for _ in range(3)]
    return {"images": torch.randn(2, 3, 64, 64, generator=generator),
            "clip": torch.randn(1, 24, 64, 64, generator=generator),
            "pairs": [(fake_prediction(gt.numpy(), seed=i), gt.numpy()) for i, gt in enumerate(gts)]}


def check_snippet_results(namespace: dict) -> None:
    """What the snippets' comments promise about the names they define."""
    if "saliency" in namespace:
        assert namespace["saliency"].shape == (2, 1, 64, 64)
    if "maps" in namespace:
        assert namespace["maps"].shape == (8, 1, 64, 64)
    if "deploy" in namespace and "model" in namespace:
        with torch.no_grad():
            torch.testing.assert_close(namespace["deploy"](namespace["images"]), namespace["model"](
                namespace["images"]), atol=1e-5, rtol=0)
    if "results" in namespace:
        assert namespace["results"]["images"] == len(namespace["pairs"])
        expected = np.mean([normalised_mae(pred, gt) for pred, gt in namespace["pairs"]])
        assert namespace["results"]["MAE"] == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("block", PYTHON_BLOCKS, ids=[f"L{start}" for start, _ in PYTHON_BLOCKS])
def test_readme_python_snippet(block: tuple[int, list[str]], ctx: Context) -> None:
    """Each Python block runs in the repository copy, with the checkpoints it names and the inputs its comments
    describe (`snippet_inputs`), and gives what its comments say."""
    start, lines = block
    code = "\n".join(lines)
    provided = {}
    for path in re.findall(r"[\"'](checkpoints/[\w.-]+\.pth)[\"']", code):
        name = Path(path).name
        provided[name] = provide_checkpoint(ctx.repo / path, model_for_file(name), backbone="backbone" in name,
                                            bn=name.startswith("sdneta") or "stage1" in name)
    namespace = snippet_inputs()
    with ctx.monkeypatch.context() as patch:
        patch.chdir(ctx.repo)
        threads = torch.get_num_threads()
        try:
            exec(compile(code, f"README.md:{start}", "exec"), namespace)
        finally:
            torch.set_num_threads(threads)
    check_snippet_results(namespace)
    if provided.get("sdnet_stage1_backbone.pth") == "reference" and "copied" in namespace:
        assert namespace["copied"] == 426 and not namespace["skipped"]  # the README's comment


def test_readme_has_commands_and_no_stale_listing() -> None:
    programs = {command.program for command in COMMANDS}
    assert {"make demo", "make test"} <= programs, "the README lost its two commands"
    stale = set(COVERED_ELSEWHERE) - programs
    assert not stale, f"COVERED_ELSEWHERE lists commands the README no longer has: {sorted(stale)}"


def test_readme_parsing() -> None:
    """Continuations joined, comments dropped, `&&` split, `cd` and assignments carried to later commands."""
    text = "\n".join(["```bash", "exp=abc  # name", "cd Evaluation", "bash eval_sod.sh X $exp \\",
                      "    ${ROOTDIR}/sod   # comment", "```", "```python", "python nothing.py", "```",
                      "```bash", "python a.py --x '#not a comment'",
                      "python3 -m venv .venv && .venv/bin/pip3 install -r requirements.txt",
                      "(cd Evaluation && bash eval_vsod.sh Y e r)", "python b.py", "```"])
    commands = readme_commands(text)
    assert [(c.line, c.text, c.cwd, c.variables) for c in commands] == [
        (4, "bash eval_sod.sh X $exp ${ROOTDIR}/sod", "Evaluation", (("exp", "abc"),)),
        (11, "python a.py --x '#not a comment'", "", ()),
        (12, "python3 -m venv .venv", "", ()),
        (12, ".venv/bin/pip3 install -r requirements.txt", "", ()),
        (13, "bash eval_vsod.sh Y e r", "Evaluation", ()),
        (14, "python b.py", "", ())]
    assert [c.program for c in commands] == ["bash eval_sod.sh", "python a.py", "python -m venv", "pip install",
                                             "bash eval_vsod.sh", "python b.py"]
    assert expand("a ${ROOTDIR}/sod $exp", {"ROOTDIR": "/r", "exp": "e"}) == "a /r/sod e"
