"""Write dataset/{train,val,test}_video_lst.txt from a data root and the split definitions (dataset/splits.json).

Usage: python dataset/generate_lists.py --root ROOTDIR [--out dataset/] [--splits dataset/splits.json]

Lines (paths relative to ROOTDIR): ``image gt`` for each still training image (DUTS-TR), then
``clip_dir image_ext anno_dir label_ext`` for each video, per dataset in definition order. Before writing, every
annotated file (name containing label_ext) must have an image of the same size (the annotation name with
label_ext replaced by image_ext) and every video must have a single frame size; otherwise each problem is logged
as one line, nothing is written and the exit status is 2. Order within a dataset: still images and folder-listed
videos sorted by name, listed videos in definition order.

Needs only the standard library, Pillow and the project's `data.atomic` and `utils` (no torch model code).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data.atomic import write_bytes_atomic  # noqa: E402
from data.guard import DataError, max_pixels_of, read_guarded  # noqa: E402
from utils import LOGGER_NAME, ArgumentParser, fail, setup_logger  # noqa: E402

SPLITS = ("train", "val", "test")
HERE = Path(__file__).resolve().parent
LOGGER = logging.getLogger(f"{LOGGER_NAME}.generate_lists")


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", required=True, help="data root holding sod/ and vsod/")
    parser.add_argument("--out", default=str(HERE), help="output folder for the three list files")
    parser.add_argument("--splits", default=str(HERE / "splits.json"), help="split definitions (JSON)")
    return parser


def _size(path: Path) -> tuple[int, int] | None:
    """(width, height) from the file header (`data.guard`, the project's one reading of headers), or None if the
    file is refused: unreadable, cut short, over the default pixel cap or not an image."""
    try:
        header = read_guarded(path, max_pixels_of(None))[1]
    except DataError:
        return None
    return header.width, header.height


def _pairs(root: Path, image_dir: str, label_dir: str, image_ext: str, label_ext: str,
           problems: list[str], one_size: bool = True) -> list[tuple[str, str]] | None:
    """(image name, label name) of every annotated file in label_dir, checked; None if the folder is unusable.

    ``one_size``: all frames must share one size (videos); still-image sets such as DUTS-TR have many sizes."""
    labels_path, images_path = root / label_dir, root / image_dir
    if not labels_path.is_dir():
        problems.append(f"annotation folder not found: {labels_path}")
        return None
    labels = sorted(name for name in os.listdir(labels_path) if label_ext in name)
    if not labels:
        problems.append(f"no annotated files (*{label_ext}) in {labels_path}")
        return None
    pairs, sizes = [], set()
    for label in labels:
        image = label.replace(label_ext, image_ext)
        image_size, label_size = _size(images_path / image), _size(labels_path / label)
        if label_size is None:
            problems.append(f"unreadable annotation {labels_path / label}")
        elif image_size is None:
            problems.append(f"missing or unreadable image {images_path / image} for {labels_path / label}")
        elif image_size != label_size:
            problems.append(f"size mismatch: image {images_path / image} is {image_size[1]}x{image_size[0]}, "
                            f"annotation {labels_path / label} is {label_size[1]}x{label_size[0]}")
        else:
            sizes.add(image_size)
        pairs.append((image, label))
    if one_size and len(sizes) > 1:
        problems.append(f"frames of different sizes {sorted(sizes)} (w, h) in {images_path}")
    return pairs


def _videos(root: Path, split: dict, problems: list[str]) -> list[tuple[str, dict[str, str]]]:
    """(video name, template fields) of one split."""
    if "videos" in split:
        return [(str(video), {}) for video in split["videos"]]
    folder = root / split["folder"]
    if not folder.is_dir():
        problems.append(f"video folder not found: {folder}")
        return []
    names = sorted(p.name for p in folder.iterdir() if p.is_dir())
    if not names:
        problems.append(f"no video folders in {folder}")
    return [(name, {"folder": split["folder"]}) for name in names]


def generate(root: Path, definitions: dict) -> tuple[dict[str, list[str]], list[str]]:
    """The lines of each split and the list of problems found (empty if the data is consistent)."""
    lines: dict[str, list[str]] = {split: [] for split in SPLITS}
    problems: list[str] = []
    for still in definitions.get("still", []):
        pairs = _pairs(root, still["image_dir"], still["label_dir"], still["image_ext"], still["label_ext"],
                       problems, one_size=False) or []
        lines[still["split"]] += [f"{still['image_dir']}/{image} {still['label_dir']}/{label}"
                                  for image, label in pairs]
        LOGGER.info("%s: %d still images", still["name"], len(pairs))
    for dataset in definitions.get("video", []):
        for split in SPLITS:
            if split not in dataset["splits"]:
                continue
            videos = _videos(root, dataset["splits"][split], problems)
            for video, fields in videos:
                image_dir = dataset["image_dir"].format(video=video, **fields)
                label_dir = dataset["label_dir"].format(video=video, **fields)
                _pairs(root, image_dir, label_dir, dataset["image_ext"], dataset["label_ext"], problems)
                lines[split].append(f"{image_dir} {dataset['image_ext']} {label_dir} {dataset['label_ext']}")
            LOGGER.info("%s %s: %d videos", dataset["name"], split, len(videos))
    return lines, problems


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    setup_logger()
    root, out = Path(args.root), Path(args.out)
    if not root.is_dir():
        fail(f"--root: data root not found: {root}")
    try:
        definitions = json.loads(Path(args.splits).read_text())
    except (OSError, json.JSONDecodeError) as err:
        fail(f"--splits: cannot read split definitions {args.splits}: {err}")
    lines, problems = generate(root, definitions)
    if problems:
        for problem in problems[:50]:
            LOGGER.error("%s", problem)
        if len(problems) > 50:
            LOGGER.error("... and %d more problems", len(problems) - 50)
        fail(f"{len(problems)} problems in {root}: no list file written")
    out.mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        write_bytes_atomic(out / f"{split}_video_lst.txt", "".join(line + "\n" for line in lines[split]).encode())
        LOGGER.info("wrote %s (%d lines)", out / f"{split}_video_lst.txt", len(lines[split]))


if __name__ == "__main__":
    main()
