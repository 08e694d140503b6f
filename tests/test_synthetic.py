"""The bundled synthetic data: deterministic, in the real layouts, and not solvable by a centre prior."""

from pathlib import Path

import cv2
import pytest

from data.datasets import SODDataset, VSODDataset
from data.lists import StillEntry, read_video_list, select_videos
from data.synthetic import SyntheticSizes, centre_prior, generate

TINY = SyntheticSizes(sod_train=3, sod_test=2, video_train=2, video_test=1, min_frames=5, max_frames=9)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_synthetic_is_deterministic_and_parses(tmp_path):
    generate(tmp_path / "a", seed=7, sizes=TINY, workers=1)
    generate(tmp_path / "b", seed=7, sizes=TINY, workers=2)
    generate(tmp_path / "c", seed=8, sizes=TINY, workers=1)
    first, second, other = _files(tmp_path / "a"), _files(tmp_path / "b"), _files(tmp_path / "c")
    assert first == second
    images = [k for k in first if k.startswith("sod/")]
    assert images == [k for k in other if k.startswith("sod/")] and all(first[k] != other[k] for k in images)
    assert not [p for p in (tmp_path / "a").iterdir() if p.name.startswith(".")]  # staging folder removed
    root = tmp_path / "a"
    assert sorted(first)[:3] == ["lists/test_video_lst.txt", "lists/train_video_lst.txt", "lists/val_video_lst.txt"]
    train = read_video_list(root / "lists/train_video_lst.txt")
    assert [type(e) for e in train].count(StillEntry) == 3
    videos = [(v.dataset, v.video) for v in select_videos(train)]
    assert videos == [("SYN-V-train", "tr000"), ("SYN-V-train", "tr001")]
    assert [v.video for v in select_videos(read_video_list(root / "lists/test_video_lst.txt"), "SYN-V-test")] == [
        "te000"]
    frames = sorted((root / "vsod/SYN-V-test/te000/Imgs").iterdir())
    assert frames[0].name == "te000_00001.png" and 5 <= len(frames) <= 9
    assert SODDataset(root, "SYN-TR+SYN-TE", size=32)[4][1].shape == (1, 32, 32)
    clip, gt = VSODDataset(root, root / "lists/train_video_lst.txt", size=32)[5]
    assert clip.shape == (24, 32, 32) and gt.shape == (8, 1, 32, 32)
    item = VSODDataset(root, root / "lists/val_video_lst.txt", mode="val", size=32)[0]
    assert item["error"] is None and item["gt"].shape[:2] == (8, 1)


def test_centre_prior_scores_poorly_on_syn_te(tmp_path):
    metrics = pytest.importorskip("py_sod_metrics")
    generate(tmp_path, seed=0, sizes=SyntheticSizes(sod_train=0, video_train=0, video_test=0), workers=1)
    gts = sorted((tmp_path / "sod/SYN-TE/GT").iterdir())
    assert len(gts) == 100
    smeasure = metrics.Smeasure()
    sizes = set()
    for path in gts:
        gt = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        sizes.add(gt.shape)
        smeasure.step(pred=centre_prior(*gt.shape), gt=gt)
    score = smeasure.get_results()["sm"]
    print(f"centre-prior S-measure on SYN-TE: {score:.4f}")
    assert score < 0.6, score
    assert len({h / w > 1 for h, w in sizes}) == 2 and min(min(s) for s in sizes) < 200 < max(max(s) for s in sizes)
