"""Support of tests/test_readme.py: the README's shell commands, a fake data root in the real layouts, and a
repository copy (a folder of symbolic links) whose output folders are temporary, so the README commands run as
written without touching the repository's checkpoints/, dataset/ or results/."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import sys
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
REFERENCE_CHECKPOINTS = REPO.parent / "shared" / "reference" / "checkpoints"

# SPEC §9: the image datasets under ROOTDIR/sod (DUTS-TR for training, the others for testing).
SOD_TEST_SETS = ("ECSSD", "PASCAL-S", "SOD", "DUT-O", "HKU-IS", "DUTS-TE")
# Folders of the repository that commands write into: replaced by empty (or prepared) folders in the copy.
OUTPUT_FOLDERS = ("results", "checkpoints", "dataset", "Evaluation")
# Not linked into the copy: version control, caches, and output folders of the demo and of README examples.
UNLINKED = (".git", "__pycache__", "demo_data", "data_root", "maps")
SHELL_LANGUAGES = {"bash", "sh", "shell", "console"}
ASSIGNMENTS = re.compile(r"^(export\s+)?([A-Za-z_]\w*=\S*\s*)+$")


# ----------------------------------------------------------------------------------------------- README parsing

@dataclass(frozen=True)
class Command:
    """One shell command of a README code block: continuation lines joined, comments dropped."""

    line: int  # README line where it starts
    text: str
    cwd: str = ""  # folder, relative to the repository, that earlier `cd` lines of its block moved to
    variables: tuple[tuple[str, str], ...] = field(default=())  # assignments made earlier in its block

    @property
    def words(self) -> list[str]:
        return shlex.split(self.text)

    @property
    def program(self) -> str:
        """What runs, for classification: 'python train_sod.py', 'python -m Evaluation', 'bash eval_sod.sh',
        'torchrun train_sod.py', 'make demo', 'pip install', ..."""
        words = self.words
        name = Path(words[0]).name
        if re.fullmatch(r"python[\d.]*", name):
            rest = words[1:]
            if rest[:1] == ["-m"] and len(rest) > 1:
                return f"python -m {rest[1]}"
            return f"python {rest[0]}" if rest else "python"
        if name == "torchrun":
            scripts = [word for word in words[1:] if word.endswith(".py")]
            return f"torchrun {scripts[0]}" if scripts else "torchrun"
        name = re.sub(r"^pip[\d.]*$", "pip", name)
        return f"{name} {words[1]}" if len(words) > 1 and not words[1].startswith("-") else name

    def __str__(self) -> str:
        return f"README.md:{self.line}: {self.text}"


def _strip_comment(line: str) -> str:
    """``line`` without a shell comment (a '#' starting a word outside quotes)."""
    quote = None
    for i, char in enumerate(line):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip()
    return line.rstrip()


def shell_blocks(text: str, languages: set[str] = SHELL_LANGUAGES) -> list[tuple[int, list[str]]]:
    """(first line number, lines) of every fenced code block in one of ``languages`` (default: a shell)."""
    blocks, current, start, fence = [], None, 0, None
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if fence is None:
            match = re.match(r"^(`{3,}|~{3,})\s*([\w+-]*)", stripped)
            if match:
                fence = match.group(1)
                current = [] if match.group(2).lower() in languages else None
                start = number + 1
        elif stripped.startswith(fence) and stripped.strip(fence[0]) == "":
            if current is not None:
                blocks.append((start, current))
            fence, current = None, None
        elif current is not None:
            current.append(line)
    return blocks


def readme_commands(text: str) -> list[Command]:
    """The commands of the README's shell blocks, in order; ``a && b`` gives two commands. ``cd DIR`` and variable
    assignments are not commands: they set the folder and the variables of the block's later commands."""
    commands = []
    for start, lines in shell_blocks(text):
        cwd, variables = "", {}
        pending, pending_line = "", 0
        for offset, raw in enumerate(lines):
            line = _strip_comment(raw.strip())
            if not pending:
                pending_line = start + offset
            if line.endswith("\\"):
                pending += line[:-1].strip() + " "
                continue
            joined, pending = (pending + line).strip(), ""
            if joined.startswith("$ "):  # a prompt
                joined = joined[2:].strip()
            subshell = joined.startswith("(") and joined.endswith(")")  # its `cd` does not last
            folder = cwd
            for part in re.split(r"\s+&&\s+", joined[1:-1].strip() if subshell else joined) if joined else []:
                words = shlex.split(part)
                if words[0] == "cd" and len(words) == 2:
                    folder = _moved(folder, words[1])
                elif ASSIGNMENTS.match(part):
                    variables.update(word.split("=", 1) for word in words if "=" in word)
                else:
                    commands.append(Command(pending_line, part, folder, tuple(variables.items())))
            cwd = cwd if subshell else folder
    return commands


def _moved(cwd: str, target: str) -> str:
    moved = os.path.normpath(os.path.join(cwd or ".", target))
    if moved.startswith("..") or os.path.isabs(moved):
        raise ValueError(f"`cd {target}` leaves the repository")
    return "" if moved == "." else moved


def expand(text: str, variables: dict[str, str]) -> str:
    """``$NAME`` and ``${NAME}`` replaced by their values; an unknown name is an error naming it."""
    def value(match: re.Match) -> str:
        name = match.group(1) or match.group(2)
        if name not in variables:
            raise KeyError(f"variable ${name} is not defined (by the README block or by tests/test_readme.py)")
        return variables[name]
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", value, text)


# ----------------------------------------------------------------------------------------------- fake data root

def load_generate_lists(repo: Path = REPO):
    """``repo``/dataset/generate_lists.py as a module (dataset/ is not a package); its default --out is its folder."""
    spec = importlib.util.spec_from_file_location("readme_generate_lists", repo / "dataset" / "generate_lists.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tiny_synthetic_sizes():
    from data.synthetic import SyntheticSizes

    return SyntheticSizes(sod_train=6, sod_test=3, video_train=1, video_test=1, min_frames=8, max_frames=9)


def run_synthetic(argv: list[str]) -> None:
    """``python -m data.synthetic`` in this process with `tiny_synthetic_sizes` (the bundled sizes take 20 s)."""
    from data import synthetic

    original = synthetic.generate
    synthetic.generate = partial(original, sizes=tiny_synthetic_sizes())
    try:
        synthetic.main(argv)
    finally:
        synthetic.generate = original


def _link(path: Path, target: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.symlink_to(os.path.relpath(target, path.parent), target_is_directory=target.is_dir())


def build_fake_root(root: Path) -> None:
    """The data root of SPEC §9 from the synthetic data (written into ``root`` by ``python -m data.synthetic``):
    sod/DUTS-TR (the synthetic .jpg training images) and the six test sets (links to SYN-TE); the renamed DAVSOD
    folders (links to the synthetic videos); DAVIS (<video>/Imgs .jpg, ground-truth) and VOS
    (JPEGImages/<id>, Annotations/<id>) with every video of dataset/splits.json, all links to one .jpg video."""
    run_synthetic(["--root", str(root), "--seed", "0", "-j", "1"])
    sod = root / "sod"
    for image in sorted((sod / "SYN-TR" / "images").glob("*.jpg")):  # DUTS-TR images are all .jpg
        _link(sod / "DUTS-TR" / "images" / image.name, image)
        _link(sod / "DUTS-TR" / "GT" / f"{image.stem}.png", sod / "SYN-TR" / "GT" / f"{image.stem}.png")
    for name in SOD_TEST_SETS:
        _link(sod / name, sod / "SYN-TE")
    vsod = root / "vsod"
    for name, target in (("DAVSOD_Training_Set", "SYN-V-train"), ("DAVSOD_Validation_Set", "SYN-V-test"),
                         ("DAVSOD_Test_Set_Easy_35", "SYN-V-test")):
        _link(vsod / name, vsod / target)
    source = next(p for p in sorted((vsod / "SYN-V-test").iterdir()) if p.is_dir())
    jpg = vsod / "jpg-video"
    (jpg / "Imgs").mkdir(parents=True)
    (jpg / "ground-truth").mkdir()
    for gt in sorted((source / "GT_object_level").glob("*.png")):
        frame = cv2.imread(str(source / "Imgs" / gt.name))
        assert cv2.imwrite(str(jpg / "Imgs" / f"{gt.stem}.jpg"), frame)
        _link(jpg / "ground-truth" / gt.name, gt)
    definitions = json.loads((REPO / "dataset" / "splits.json").read_text())
    for dataset in definitions["video"]:
        for split in dataset["splits"].values():
            for video in split.get("videos", []):
                if dataset["name"] == "VOS":
                    _link(vsod / "VOS" / "JPEGImages" / str(video), jpg / "Imgs")
                    _link(vsod / "VOS" / "Annotations" / str(video), jpg / "ground-truth")
                elif dataset["name"] == "DAVIS" and not (vsod / "DAVIS" / video).exists():
                    _link(vsod / "DAVIS" / video, jpg)


def write_small_lists(root: Path, out: Path) -> dict[str, list[str]]:
    """dataset/{train,val,test}_video_lst.txt for ``root`` by dataset/generate_lists.py, from the repository's
    split definitions with one video per VOS and DAVIS split (the full lists list 40 identical VOS test videos)."""
    module = load_generate_lists()
    definitions = json.loads((REPO / "dataset" / "splits.json").read_text())
    for dataset in definitions["video"]:
        for split in dataset["splits"].values():
            if "videos" in split:
                split["videos"] = split["videos"][:1]
    lines, problems = module.generate(root, definitions)
    assert not problems, problems
    out.mkdir(parents=True, exist_ok=True)
    for split, split_lines in lines.items():
        (out / f"{split}_video_lst.txt").write_text("".join(f"{line}\n" for line in split_lines))
    return lines


# ----------------------------------------------------------------------------------------------- repository copy

def make_repo_copy(base: Path, lists: Path) -> Path:
    """A folder standing for the repository: links to its files and folders, except real folders for what commands
    write: empty results/ and checkpoints/, dataset/ with copies of its files and the small list files, and
    Evaluation/ with links to its files (so eval_*.sh find ../results in the copy)."""
    repo = base / "repo"
    repo.mkdir()
    for entry in sorted(REPO.iterdir()):
        if entry.name in OUTPUT_FOLDERS or entry.name in UNLINKED or entry.suffix == ".onnx":
            continue
        if entry.name.startswith(".") and entry.name != ".venv":
            continue
        (repo / entry.name).symlink_to(entry, target_is_directory=entry.is_dir())
    for name in ("results", "checkpoints"):
        (repo / name).mkdir()
    (repo / "dataset").mkdir()
    for entry in (REPO / "dataset").iterdir():
        if entry.is_file():
            (repo / "dataset" / entry.name).write_bytes(entry.read_bytes())
    for entry in lists.iterdir():
        (repo / "dataset" / entry.name).write_bytes(entry.read_bytes())
    (repo / "Evaluation").mkdir()
    for entry in (REPO / "Evaluation").iterdir():
        if entry.name != "__pycache__":
            (repo / "Evaluation" / entry.name).symlink_to(entry)
    return repo


def shim_bin(folder: Path) -> Path:
    """A folder for the front of PATH: ``python``, ``python3`` and ``torchrun`` of this interpreter."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("python", "python3"):
        (folder / name).symlink_to(sys.executable)
    torchrun = folder / "torchrun"
    torchrun.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m torch.distributed.run "$@"\n')
    torchrun.chmod(0o755)
    return folder


def read_grey(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert image is not None, f"unreadable {path}"
    return image
