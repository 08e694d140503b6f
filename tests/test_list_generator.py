"""dataset/generate_lists.py reproduces the reference list files and reports inconsistent data."""

import importlib.util
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from reference import REFERENCE

REPO = Path(__file__).resolve().parents[1]
REFERENCE_LISTS = REFERENCE / "dataset"
SPLITS = ("train", "val", "test")


def _load_generator():
    spec = importlib.util.spec_from_file_location("generate_lists", REPO / "dataset" / "generate_lists.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _encoded(ext: str, height: int = 1, width: int = 1) -> bytes:
    ok, buffer = cv2.imencode(ext, np.zeros((height, width, 3), np.uint8))
    assert ok
    return buffer.tobytes()


def _build_tree(root: Path, lines: set[str]) -> None:
    """Tiny files at the paths of the list lines: one annotated frame per video, 1x1 pixels."""
    data = {ext: _encoded(ext) for ext in (".jpg", ".png")}
    folders = set()
    for line in lines:
        fields = line.split()
        if len(fields) == 2:
            pairs = [(fields[0], fields[1])]
        else:
            clip_dir, image_ext, anno_dir, label_ext = fields
            pairs = [(f"{clip_dir}/00000{image_ext}", f"{anno_dir}/00000{label_ext}")]
        for image, gt in pairs:
            for path in (image, gt):
                folder = (root / path).parent
                if folder not in folders:
                    folder.mkdir(parents=True, exist_ok=True)
                    folders.add(folder)
                (root / path).write_bytes(data[Path(path).suffix])


def test_generator_reproduces_reference_lists(tmp_path):
    if not all((REFERENCE_LISTS / f"{split}_video_lst.txt").exists() for split in SPLITS):
        pytest.skip(f"reference list files absent in {REFERENCE_LISTS}")
    reference = {split: (REFERENCE_LISTS / f"{split}_video_lst.txt").read_text().splitlines() for split in SPLITS}
    root = tmp_path / "root"
    _build_tree(root, set().union(*reference.values()))
    _load_generator().main(["--root", str(root), "--out", str(tmp_path / "out")])
    for split in SPLITS:
        ours = (tmp_path / "out" / f"{split}_video_lst.txt").read_text().splitlines()
        assert len(ours) == len(set(ours)) == len(reference[split])
        assert set(ours) == set(reference[split])
    train = (tmp_path / "out" / "train_video_lst.txt").read_text().splitlines()
    assert sum(len(line.split()) == 2 for line in train) == 10553
    assert [sum(f"/{n}" in line for line in train) for n in ("DAVSOD", "VOS", "DAVIS")] == [61, 119, 22]


def _write_splits(tmp_path, videos: list[int]):
    """A splits.json with DUTS-TR (still) and VOS videos ``videos`` as the training split; returns its path."""
    splits = tmp_path / "splits.json"
    splits.write_text(json.dumps({
        "still": [{"name": "DUTS-TR", "split": "train", "image_dir": "sod/DUTS-TR/images",
                   "label_dir": "sod/DUTS-TR/GT", "image_ext": ".jpg", "label_ext": ".png"}],
        "video": [{"name": "VOS", "image_dir": "vsod/VOS/JPEGImages/{video}",
                   "label_dir": "vsod/VOS/Annotations/{video}", "image_ext": ".jpg", "label_ext": ".png",
                   "splits": {"train": {"videos": videos}}}]}))
    return splits


def test_generator_reports_problems_and_writes_nothing(tmp_path, capsys):
    generator = _load_generator()
    splits = _write_splits(tmp_path, [1, 2, 3])
    root = tmp_path / "root"
    _build_tree(root, {"sod/DUTS-TR/images/a.jpg sod/DUTS-TR/GT/a.png",
                       "vsod/VOS/JPEGImages/1 .jpg vsod/VOS/Annotations/1 .png",
                       "vsod/VOS/JPEGImages/2 .jpg vsod/VOS/Annotations/2 .png"})
    (root / "sod/DUTS-TR/GT/b.png").write_bytes(_encoded(".png"))  # GT without image
    (root / "vsod/VOS/Annotations/2/00000.png").write_bytes(_encoded(".png", 2, 3))  # size mismatch
    out = tmp_path / "out"
    args = ["--root", str(root), "--out", str(out), "--splits", str(splits)]
    with pytest.raises(SystemExit) as exit_info:
        generator.main(args)
    assert exit_info.value.code == 2 and not out.exists()
    messages = [line.split(" ERROR ", 1)[1] for line in capsys.readouterr().err.splitlines() if " ERROR " in line]
    assert any(m.startswith("missing or unreadable image") and "images/b.jpg" in m for m in messages)
    assert any(m.startswith("size mismatch: image") and "JPEGImages/2/00000.jpg is 1x1" in m
               and "is 2x3" in m for m in messages)
    assert any(m.startswith("annotation folder not found") and m.endswith("Annotations/3") for m in messages)
    assert messages[-1].startswith("3 problems in")
    with pytest.raises(SystemExit):
        generator.main(["--root", str(tmp_path / "nope"), "--out", str(out)])
    assert "--root: data root not found" in capsys.readouterr().err


def test_still_images_may_differ_in_size_but_video_frames_may_not(tmp_path, capsys):
    generator = _load_generator()
    splits = _write_splits(tmp_path, [1])
    root = tmp_path / "root"
    for folder, stem, (h, w) in (("sod/DUTS-TR", "a", (1, 1)), ("sod/DUTS-TR", "b", (2, 3)),
                                 ("vsod/VOS", "1/00000", (1, 1))):
        image_dir, gt_dir = ("images", "GT") if folder.startswith("sod") else ("JPEGImages", "Annotations")
        for sub, ext in ((image_dir, ".jpg"), (gt_dir, ".png")):
            path = root / folder / sub / f"{stem}{ext}"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(_encoded(ext, h, w))
    out = tmp_path / "out"
    generator.main(["--root", str(root), "--out", str(out), "--splits", str(splits)])
    assert (out / "train_video_lst.txt").read_text().splitlines()[:2] == [
        "sod/DUTS-TR/images/a.jpg sod/DUTS-TR/GT/a.png", "sod/DUTS-TR/images/b.jpg sod/DUTS-TR/GT/b.png"]
    (root / "vsod/VOS/JPEGImages/1/00001.jpg").write_bytes(_encoded(".jpg", 2, 3))
    (root / "vsod/VOS/Annotations/1/00001.png").write_bytes(_encoded(".png", 2, 3))
    capsys.readouterr()
    with pytest.raises(SystemExit):
        generator.main(["--root", str(root), "--out", str(tmp_path / "out2"), "--splits", str(splits)])
    assert "ERROR frames of different sizes" in capsys.readouterr().err
