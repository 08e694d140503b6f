"""Every command of the shell blocks of README.md and docs/*.md runs here as written (or is listed as covered
elsewhere): in a copy of the repository on a tiny fake data root in the real layouts (design §9;
tests/readme_support.py), variables substituted, the ``cd`` of its block followed, long jobs made tiny by flags
appended (argparse: the last occurrence wins). A command passes when it exits with status 0 and has written the
files it must write; what they hold is each script's tests' business. Every Python block runs too, and asserts what
it shows."""

from __future__ import annotations

import argparse
import importlib
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
from functools import partial
from pathlib import Path

import cv2
import numpy as np
import pytest
import readme_support as rs
import torch

import configs
from data import synthetic
from data.lists import annotated_frames, image_name, read_video_list, select_videos
from data.readers import list_images
from data.video import VIDEO_EXTENSIONS, write_map_video

PAGES = rs.documented_pages()
COMMANDS = rs.documented_commands()
PYTHON_BLOCKS = [(page, line, lines) for page, text in PAGES.items()
                 for line, lines in rs.shell_blocks(text, ("python",))]
# What `$exp` stands for after a command's --model: the authors' checkpoint names.
EXPERIMENTS = {"sdnet": "sdnet_from_scratch", "sdneta": "sdneta_from_pretrained", "stdnet": "stdnet_from_scratch",
               "stdneta": "stdneta_from_pretrained"}
TRAIN, INFERENCE = ["--epochs", "1", "--max-steps", "1", "--size", "64", "-j", "0", "--seed", "0"], ["--size", "64"]
# Programs run in this process (main(argv)): their module and the flags that make them tiny.
IN_PROCESS = {
    "python train_sod.py": ("train_sod", [*TRAIN, "--batch-size", "2", "--pass-scales", "1.0"]),
    "python train_vsod.py": ("train_vsod", [*TRAIN, "--batch-size", "1"]),
    "python generate_salmaps_sod.py": ("generate_salmaps_sod", [*INFERENCE, "-j", "0"]),
    "python generate_salmaps_vsod.py": ("generate_salmaps_vsod", [*INFERENCE, "-j", "0"]),
    "python predict.py": ("predict", [*INFERENCE, "-j", "0"]),
    "python export_onnx.py": ("export_onnx", INFERENCE),
    "python convert.py": ("convert", []),
    "python speed_sod.py": ("speed_sod", ["-n", "1", "--warmup", "0"]),
    "python speed_vsod.py": ("speed_vsod", ["-n", "1", "--warmup", "0"]),
    "python -m data.synthetic": ("data.synthetic", []),
    "python -m Evaluation": ("Evaluation.__main__", []),  # its default results/ is the repository's: replaced
}
SUBPROCESS = ("bash eval_sod.sh", "bash eval_vsod.sh", "python dataset/generate_lists.py", "torchrun")
# Installation and the suite: `make demo` / `make test` / `make test-isa` (.ci/run) do the same; downloads and
# SLURM: tests/test_{hub,train}.py; the server and its clients (a long-running process, a browser, curl):
# tests/test_serve.py, tests/test_serve_page.py; the static site: tests/test_page_device.py.
COVERED_ELSEWHERE = {"make demo", "make test", "make test-isa", "make test-ci-slow", "make venv", "python -m venv",
                     "source .venv/bin/activate", "pip install", "python -m pytest", "python -m engine.hub",
                     "srun python", "python serve.py", "python -m webbrowser", "curl",
                     "python -m engine.serving.site"}


@pytest.fixture(scope="session")
def readme_data(tmp_path_factory) -> dict:
    """The fake data root and the small list files, built once."""
    base = tmp_path_factory.mktemp("readme")
    rs.build_fake_root(base / "ROOTDIR", base / "lists")
    return {"root": base / "ROOTDIR", "lists": base / "lists"}


class Context:
    """Where one README command runs (a fresh repository copy), its words (variables substituted) and environment."""

    def __init__(self, command: rs.Command, data: dict, tmp: Path) -> None:
        self.root, self.repo = data["root"], rs.make_repo_copy(tmp, data["lists"])
        self.cwd, text = self.repo / command.cwd, " ".join(command.words)
        model = re.search(r"--model[= ](\w+)", text)
        video = "vsod" in text or (model and configs.MODELS[model.group(1)]["kind"] == "video")
        variables = {"exp": EXPERIMENTS[model.group(1)] if model else "readme", "HOST": "127.0.0.1",
                     "testdata": "DAVSOD" if video else "+".join(rs.SOD_TEST_SETS), **dict(command.variables),
                     "ROOTDIR": str(self.root)}
        self.words = [rs.expand(word, variables) for word in command.words]
        self.env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "WORLD_SIZE", "RANK", "LOCAL_RANK")}
        # python and torchrun of this interpreter's environment first; PWD: bash's logical folder in the copy
        self.env.update(variables, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
                        OMP_NUM_THREADS="1", PWD=str(self.cwd))

    def run(self, words: list[str], nodes: int = 1) -> None:
        """``words`` run by bash in the command's folder (``nodes`` times at once); each must exit with 0."""
        runs = [subprocess.Popen(["bash", "-c", shlex.join(words)], cwd=self.cwd, env=self.env, text=True,
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for _ in range(nodes)]
        for run in runs:
            output = run.communicate(timeout=300)[0]
            assert run.returncode == 0, f"{shlex.join(words)}\nexit {run.returncode}\n{output[-3000:]}"


def video_maps(root: Path, list_file: Path, dataset: str, folder: Path) -> list[tuple[Path, Path]]:
    """(``folder/<video>/<frame>.png``, its GT file) for every annotated frame of the list's videos of ``dataset``."""
    return [(folder / entry.video / f"{Path(image_name(frame, entry)).stem}.png", root / entry.anno_dir / frame)
            for entry in select_videos(read_video_list(list_file), dataset) for frame in annotated_frames(root, entry)]


def media_inputs(ctx: Context, names: list[str], out: Path, overlay: bool, cutout: bool) -> list[Path]:
    """Write the images, folders and videos a predict.py command names; returns the files it must write."""
    photos = sorted((ctx.root / "sod" / "SYN-TE" / "images").iterdir())
    outputs = []
    for source in (ctx.cwd / name for name in names):
        if source.suffix.lower() in VIDEO_EXTENSIONS:
            write_map_video(source, [cv2.resize(cv2.imread(str(photos[i % 2]), 0), (64, 48)) for i in range(10)], 10)
            outputs.append(out / f"{source.stem}.mp4")
            continue
        for target in [source] if source.suffix else [source / photos[1].name, source / "nested" / photos[2].name]:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(photos[0], target)
            base = out / (target.name if source.suffix else target.relative_to(source.parent))
            outputs += [base.with_suffix(".png")] + [base.with_name(f"{base.stem}_overlay.jpg")] * overlay
            outputs += [base.with_name(f"{base.stem}_cutout.png")] * cutout
    return outputs


def evaluation_inputs(ctx: Context) -> list[Path]:
    """Write the maps an evaluation command reads (copies of the GT); returns the files it must write."""
    words, results, lst = ctx.words, ctx.repo / "results", ctx.repo / "dataset" / "test_video_lst.txt"
    flags = {word: i + 1 for i, word in enumerate(words[:-1]) if word.startswith("--")}
    if "compare" in words:  # python -m Evaluation compare EXP... --testdata T --datadir D
        task, testdata, datadir = "sod", words[flags["--testdata"]], words[flags["--datadir"]]
        exps = words[4:min(flags.values()) - 1]
    else:  # bash eval_TASK.sh TESTDATA EXP DIR [flags]
        task, (testdata, exp, datadir), exps = words[1][5:-3], words[2:5], words[3:4]
    if "--test-lst" in flags:  # a list of the user's (Evaluation/ is linked): a copy of the default one, in the copy
        words[flags["--test-lst"]] = str(shutil.copy(lst, ctx.repo / words[flags["--test-lst"]]))
    for exp, dataset in ((exp, dataset) for exp in exps for dataset in testdata.split("+")):
        pairs = video_maps(Path(datadir), lst, dataset, results / exp / dataset) if task == "vsod" else [
            (results / exp / dataset / gt.name, gt) for gt in (Path(datadir) / dataset / "GT").glob("*.png")]
        for prediction, gt in pairs:
            prediction.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(gt, prediction)
    if "compare" in words:
        return [results / "compare" / f"compare_{task}{suffix}" for suffix in (".md", "_paper.csv", "_paper.tex")]
    return [results / exps[0] / f"metrics_{task}.json", results / exps[0] / f"metrics_{task}.md"]


def expected_outputs(ctx: Context, program: str, argv: list[str]) -> list[Path]:
    """Make the inputs the command reads (checkpoints, media, maps) and return the files it must write."""
    if program in ("bash eval_sod.sh", "bash eval_vsod.sh", "python -m Evaluation"):
        return evaluation_inputs(ctx)
    if program == "python -m data.synthetic":
        return [ctx.cwd / argv[argv.index("--root") + 1] / "lists" / f"{s}_video_lst.txt" for s in ("train", "test")]
    if program == "python dataset/generate_lists.py":  # the copy's lists, to be written anew
        for path in (lists := [ctx.repo / "dataset" / f"{split}_video_lst.txt" for split in ("train", "val", "test")]):
            path.unlink()
        return lists
    args = importlib.import_module(IN_PROCESS[program][0]).build_parser().parse_args(argv)
    for flag in ("evaluate", "checkpoint", "preload", "finetune"):
        if getattr(args, flag, None) and not program.startswith("python speed"):
            rs.provide_checkpoint(ctx.cwd / getattr(args, flag))
    if program.startswith("python train"):
        return [ctx.cwd / args.savedir / name for name in ("args.json", "log.jsonl", "log.txt",
                                                           "save_models/checkpoint_latest.pth")]
    if program == "python generate_salmaps_sod.py":
        return [ctx.cwd / args.savedir / dataset / f"{image.stem}.png" for dataset in args.testdata.split("+")
                for image in list_images(Path(args.datadir) / dataset / "images")]
    if program == "python generate_salmaps_vsod.py":
        return [out for dataset in args.testdata.split("+") for out, _ in video_maps(
            Path(args.datadir), ctx.cwd / args.test_lst, dataset, ctx.cwd / args.savedir / dataset)]
    if program == "python predict.py":
        return media_inputs(ctx, args.inputs, ctx.cwd / args.out, args.overlay, args.cutout)
    return [Path(args.json) if program.startswith("python speed") else ctx.cwd / args.out]


def free_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        return probe.getsockname()[1]


def run_torchrun(ctx: Context) -> list[Path]:
    """torchrun as written (Gloo, a free port); 2 nodes run here at once, one process each; all must join."""
    script = next(i for i, word in enumerate(ctx.words) if word.endswith(".py"))
    launcher, program = ctx.words[:script], f"python {ctx.words[script]}"
    argv = ctx.words[script + 1:] + IN_PROCESS[program][1]
    outputs = expected_outputs(ctx, program, argv)
    nodes = int(launcher[launcher.index("--nnodes") + 1]) if "--nnodes" in launcher else 1
    processes = int(launcher[launcher.index("--nproc_per_node") + 1])
    if nodes > 1:  # 2 cores afford one process per node
        launcher[launcher.index("--nproc_per_node") + 1], processes = "1", nodes
        launcher[launcher.index("--rdzv_endpoint") + 1] = f"127.0.0.1:{free_port()}"
    ctx.env["PET_MASTER_PORT"] = str(free_port())
    ctx.run(launcher + [ctx.words[script]] + argv, nodes)
    assert f"{processes} process(es)" in outputs[2].read_text(), "torchrun did not start every process"
    return outputs


# torchrun's commands start 2 + 4 processes each (13 s): in the slow set, which .ci/run runs.
@pytest.mark.parametrize("command", [pytest.param(c, marks=pytest.mark.slow) if c.program == "torchrun" else c
                                     for c in COMMANDS],
                         ids=[f"{c.page}:L{c.line}-{c.program.replace(' ', '-')}" for c in COMMANDS])
def test_documented_command(command: rs.Command, readme_data, tmp_path, monkeypatch) -> None:
    program = command.program
    if program in COVERED_ELSEWHERE:
        return
    where = f"{command.page}:{command.line}"
    assert program in IN_PROCESS or program in SUBPROCESS, f"{where}: {shlex.join(command.words)}\n" \
        "is neither run here nor in COVERED_ELSEWHERE: add it"
    ctx = Context(command, readme_data, tmp_path)
    if program == "torchrun":
        outputs = run_torchrun(ctx)
    elif program in SUBPROCESS:
        outputs = expected_outputs(ctx, program, ctx.words)
        ctx.run(ctx.words)
    else:
        module, tiny = IN_PROCESS[program]
        argv = ctx.words[3 if program.startswith("python -m") else 2:] + tiny
        argv += ["--json", str(tmp_path / "speed.json")] if program.startswith("python speed") else []
        argv += ["--results-dir", str(ctx.repo / "results")] if module == "Evaluation.__main__" else []
        outputs = expected_outputs(ctx, program, argv)
        monkeypatch.chdir(ctx.cwd)
        if program == "python -m data.synthetic":  # the bundled sizes take 20 s
            monkeypatch.setattr(synthetic, "generate", partial(synthetic.generate,
                                                               sizes=synthetic.SyntheticSizes(**rs.TINY)))
        importlib.import_module(module).main(argv)
    missing = [str(path) for path in outputs if not path.is_file()]
    assert outputs and not missing, f"{where}: {shlex.join(ctx.words)}\ndid not write {missing[:5]}"


@pytest.mark.parametrize("block", PYTHON_BLOCKS, ids=[f"{page}:L{line}" for page, line, _ in PYTHON_BLOCKS])
def test_documented_python_block(block: tuple[str, int, list[str]], readme_data, tmp_path, monkeypatch) -> None:
    """Each Python block asserts what it shows and runs in a repository copy, with the checkpoints it names and
    the inputs its comments describe."""
    page, line, lines = block
    code, repo = "\n".join(lines), rs.make_repo_copy(tmp_path, readme_data["lists"])
    assert re.search(r"^\s*assert ", code, re.M), f"{page}:{line}: a Python block that asserts nothing"
    for path in re.findall(r"[\"'](checkpoints/[\w.-]+\.pth)[\"']", code):
        if "pretrained=True" in code and not (rs.REFERENCE_CHECKPOINTS / Path(path).name).is_file():
            # torch.hub checks a released file against its recorded SHA-256: random stand-in weights would be
            # refused and fetched from the network instead
            pytest.skip(f"needs the released {Path(path).name} (../shared/reference/checkpoints), absent here")
        rs.provide_checkpoint(repo / path)
    pairs = [(torch.randint(0, 256, (40, 60), dtype=torch.uint8).numpy(),) * 2 for _ in range(3)]
    namespace = {"images": torch.randn(2, 3, 64, 64), "clip": torch.randn(1, 24, 64, 64), "pairs": pairs}
    photo = np.random.default_rng(0).integers(0, 256, (90, 120, 3), dtype=np.uint8)
    cv2.imwrite(str(repo / "photo.jpg"), photo)  # the photo the snippets name
    monkeypatch.chdir(repo)
    exec(compile(code, f"{page}:{line}", "exec"), namespace)


def test_readme_parsing() -> None:
    """Continuations joined, comments dropped, `&&` split, `cd` and assignments carried to later commands."""
    text = "```bash\nexp=a # x\ncd Evaluation\nbash e.sh $exp \\\n  ${R}/s # y\n```\n```bash\n(cd E && b x)\n"
    text += "python3 -m p\n```"
    assert [(c.line, c.words, c.cwd, c.variables) for c in rs.readme_commands(text)] == [
        (4, ("bash", "e.sh", "$exp", "${R}/s"), "Evaluation", (("exp", "a"),)), (8, ("b", "x"), "E", ()),
        (9, ("python3", "-m", "p"), "", ())]
    assert rs.expand("a ${ROOTDIR}/sod $exp", {"ROOTDIR": "/r", "exp": "e"}) == "a /r/sod e"
    programs = {command.program for command in COMMANDS}
    assert {"make demo", "make test"} <= programs and COVERED_ELSEWHERE <= programs, "stale COVERED_ELSEWHERE"


def test_every_flag_of_every_script_has_its_line_in_the_readme() -> None:
    """Each long flag of the scripts (and of python -m Evaluation) is named in the README or a page of docs/."""
    from Evaluation.__main__ import build_parser as evaluation_parser

    text = "".join(PAGES.values())
    parsers = [importlib.import_module(name).build_parser() for name in (
        "train_sod", "train_vsod", "predict", "serve", "generate_salmaps_sod", "generate_salmaps_vsod", "speed_sod",
        "speed_vsod", "export_onnx", "convert", "demo")]
    parsers += list(evaluation_parser()._subparsers._group_actions[0].choices.values())
    missing = sorted({f"{parser.prog} {flag}" for parser in parsers for action in parser._actions
                      for flag in action.option_strings if flag.startswith("--") and flag != "--help"
                      and action.help != argparse.SUPPRESS and not re.search(re.escape(flag) + r"(?![\w-])", text)})
    assert not missing
