"""tests/test_readme.py's help: the commands of README.md and docs/, a fake data root, a repository copy, and
checkpoints to read."""

from __future__ import annotations

import json
import os
import re
import shlex
from itertools import groupby
from pathlib import Path
from typing import NamedTuple

import cv2
import torch
from reference import REFERENCE

import configs
from data import synthetic
from dataset import generate_lists
from models import build_model

REPO = Path(__file__).resolve().parents[1]
REFERENCE_CHECKPOINTS = REFERENCE / "checkpoints"
SOD_TEST_SETS = ("ECSSD", "PASCAL-S", "SOD", "DUT-O", "HKU-IS", "DUTS-TE")
# The synthetic data's sizes (the bundled ones take 20 s); folders made anew in the repository copy, entries left out.
TINY = {"sod_train": 6, "sod_test": 3, "video_train": 1, "video_test": 1, "min_frames": 8, "max_frames": 9}
OUTPUT_FOLDERS, UNLINKED = ("results", "checkpoints", "dataset"), (".git", "__pycache__", "demo_data", "maps")


class Command(NamedTuple):
    """One command of a shell block, as words, with the folder and variables its block's earlier lines set."""

    line: int
    words: tuple[str, ...]
    cwd: str = ""
    variables: tuple[tuple[str, str], ...] = ()
    page: str = "README.md"

    @property
    def program(self) -> str:
        """What runs: 'python train_sod.py', 'python -m Evaluation', 'bash eval_sod.sh', 'torchrun', 'make demo'..."""
        words = self.words
        name = re.sub(r"^(python|pip)[\d.]*$", r"\1", Path(words[0]).name)
        if name == "python" and words[1] == "-m":
            return f"python -m {words[2]}"
        return name if name == "torchrun" or words[1].startswith("-") else f"{name} {words[1]}"


def shell_blocks(text: str, languages: tuple[str, ...] = ("bash",)) -> list[tuple[int, list[str]]]:
    """(first line number, lines) of every fenced code block in one of ``languages``."""
    blocks, current, start, fenced = [], None, 0, False
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip().startswith("```"):
            if fenced and current is not None:
                blocks.append((start, current))
            fenced, current, start = not fenced, None, number + 1
            current = [] if fenced and line.strip()[3:].strip() in languages else None
        elif current is not None:
            current.append(line)
    return blocks


def documented_pages() -> dict[str, str]:
    """README.md and every page of docs/, by their path in the repository."""
    pages = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    return {str(page.relative_to(REPO)): page.read_text() for page in pages}


def documented_commands() -> list[Command]:
    """Every distinct command of README.md and docs/ (one shown on two pages runs once, where it appears first)."""
    seen, commands = set(), []
    for page, text in documented_pages().items():
        for command in readme_commands(text, page):
            if (key := (command.words, command.cwd, command.variables)) not in seen:
                seen.add(key)
                commands.append(command)
    return commands


def readme_commands(text: str, page: str = "README.md") -> list[Command]:
    """The commands of the shell blocks: lines joined, comments dropped, ``&&`` split, ``cd``/``X=y`` carried on."""
    commands = []
    for start, lines in shell_blocks(text):
        cwd, variables, pending, first = "", {}, "", 0
        for offset, line in enumerate(lines):
            first = first if pending else start + offset
            if line.rstrip().endswith("\\"):
                pending += line.rstrip()[:-1] + " "
                continue
            words, pending = shlex.split(pending + line, comments=True), ""
            subshell = bool(words) and words[0].startswith("(") and words[-1].endswith(")")
            if subshell:
                words = [words[0][1:], *words[1:-1], words[-1][:-1]]
            folder = cwd
            for part in (list(group) for is_and, group in groupby(words, "&&".__eq__) if not is_and):
                if part[0] == "cd":
                    folder = os.path.relpath(os.path.normpath(os.path.join(folder or ".", part[1])))
                    folder = "" if folder == "." else folder
                elif all("=" in word for word in part):
                    variables.update(word.split("=", 1) for word in part)
                else:
                    commands.append(Command(first, tuple(part), folder, tuple(variables.items()), page))
            cwd = cwd if subshell else folder
    return commands


def expand(text: str, variables: dict[str, str]) -> str:
    """``$NAME`` and ``${NAME}`` replaced by their values (a KeyError names an unknown one)."""
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: variables[m.group(1) or m.group(2)], text)


def _link(path: Path, target: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.symlink_to(os.path.relpath(target, path.parent), target_is_directory=target.is_dir())


def build_fake_root(root: Path, lists: Path) -> None:
    """ROOTDIR (design §9) as links to synthetic data, with every DAVIS/VOS video of splits.json; its small lists."""
    synthetic.generate(root, seed=0, sizes=synthetic.SyntheticSizes(**TINY), workers=1)
    sod, vsod, jpg = root / "sod", root / "vsod", root / "vsod" / "jpg-video"
    for image in sorted((sod / "SYN-TR" / "images").glob("*.jpg")):
        _link(sod / "DUTS-TR" / "images" / image.name, image)
        _link(sod / "DUTS-TR" / "GT" / f"{image.stem}.png", sod / "SYN-TR" / "GT" / f"{image.stem}.png")
    for name in SOD_TEST_SETS:
        _link(sod / name, sod / "SYN-TE")
    for name, target in (("DAVSOD_Training_Set", "SYN-V-train"), ("DAVSOD_Validation_Set", "SYN-V-test"),
                         ("DAVSOD_Test_Set_Easy_35", "SYN-V-test")):
        _link(vsod / name, vsod / target)
    source = next(p for p in sorted((vsod / "SYN-V-test").iterdir()) if p.is_dir())
    for gt in sorted((source / "GT_object_level").glob("*.png")):
        (jpg / "Imgs").mkdir(parents=True, exist_ok=True)
        assert cv2.imwrite(str(jpg / "Imgs" / f"{gt.stem}.jpg"), cv2.imread(str(source / "Imgs" / gt.name)))
        _link(jpg / "ground-truth" / gt.name, gt)
    for dataset in json.loads((REPO / "dataset" / "splits.json").read_text())["video"]:
        for video in (v for split in dataset["splits"].values() for v in split.get("videos", [])):
            if dataset["name"] == "VOS":
                _link(vsod / "VOS" / "JPEGImages" / str(video), jpg / "Imgs")
                _link(vsod / "VOS" / "Annotations" / str(video), jpg / "ground-truth")
            elif dataset["name"] == "DAVIS" and not (vsod / "DAVIS" / video).exists():
                _link(vsod / "DAVIS" / video, jpg)
    write_small_lists(root, lists)


def write_small_lists(root: Path, out: Path) -> None:
    """The three list files of ``root`` with one video per VOS and DAVIS split (by dataset/generate_lists.py)."""
    definitions = json.loads((REPO / "dataset" / "splits.json").read_text())
    for split in (s for dataset in definitions["video"] for s in dataset["splits"].values() if "videos" in s):
        split["videos"] = split["videos"][:1]
    lines, problems = generate_lists.generate(root, definitions)
    assert not problems, problems
    out.mkdir(parents=True, exist_ok=True)
    for split, split_lines in lines.items():
        (out / f"{split}_video_lst.txt").write_text("".join(f"{line}\n" for line in split_lines))


def make_repo_copy(base: Path, lists: Path) -> Path:
    """The repository as links, but with empty results/ and checkpoints/, and dataset/ holding the small lists."""
    repo = base / "repo"
    for entry in sorted(REPO.iterdir()):
        skip = entry.name in OUTPUT_FOLDERS + UNLINKED or (entry.name.startswith(".") and entry.name != ".venv")
        if not skip and entry.suffix != ".onnx":
            _link(repo / entry.name, entry)
    for name in OUTPUT_FOLDERS:
        (repo / name).mkdir(parents=True, exist_ok=True)
    for entry in [*(REPO / "dataset").iterdir(), *lists.iterdir()]:
        if entry.is_file():
            (repo / "dataset" / entry.name).write_bytes(entry.read_bytes())
    return repo


def provide_checkpoint(path: Path) -> None:
    """A checkpoint the README names: the reference file, else random weights of the model its name starts with."""
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    if (REFERENCE_CHECKPOINTS / path.name).is_file():
        path.symlink_to(REFERENCE_CHECKPOINTS / path.name)
        return
    model = max((name for name in configs.MODELS if path.name.startswith(name)), key=len)
    torch.manual_seed(0)
    weights = build_model(model, bn=model != "sdnet" or "stage1" in path.name).state_dict()
    torch.save({f"module.{k}": v for k, v in weights.items() if "backbone" not in path.name or "block" in k}, path)
