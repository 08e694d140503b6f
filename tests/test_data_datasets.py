"""Readers for every image mode, SODDataset / VSODDataset layouts, clip order, determinism and bad inputs."""

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from data.datasets import SODDataset, VSODDataset
from data.lists import StillEntry
from data.readers import DataError, exif_orientation, read_gt, read_rgb, upright
from data.transforms import IMAGENET_MEAN, IMAGENET_STD


def _write(path: Path, array: np.ndarray) -> Path:
    """Write an RGB/grey/16-bit array with OpenCV (RGB given, BGR stored)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if array.ndim == 3 and array.shape[2] in (3, 4):
        array = cv2.cvtColor(array, cv2.COLOR_RGB2BGR if array.shape[2] == 3 else cv2.COLOR_RGBA2BGRA)
    assert cv2.imwrite(str(path), array)
    return path


def _rgb(height, width, seed):
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def test_read_rgb_and_gt_every_mode(tmp_path):
    rgb = _rgb(6, 5, 0)
    grey = rgb[:, :, 1].copy()
    assert np.array_equal(read_rgb(_write(tmp_path / "rgb.png", rgb)), rgb)
    assert np.array_equal(read_rgb(_write(tmp_path / "rgb.bmp", rgb)), rgb)
    assert np.array_equal(read_rgb(_write(tmp_path / "g.png", grey)), np.dstack([grey] * 3))
    rgba = np.dstack([rgb, np.full((6, 5), 7, np.uint8)])
    assert np.array_equal(read_rgb(_write(tmp_path / "rgba.png", rgba)), rgb)
    Image.fromarray(grey).convert("LA").save(tmp_path / "la.png")
    assert np.array_equal(read_rgb(tmp_path / "la.png"), np.dstack([grey] * 3))
    palette = Image.fromarray((grey > 127).astype(np.uint8), mode="P")
    palette.putpalette([0, 0, 0, 255, 255, 255] + [0] * 762)
    palette.save(tmp_path / "p.png")
    mask = (grey > 127).astype(np.float32)
    assert np.array_equal(read_rgb(tmp_path / "p.png"), np.dstack([(mask * 255).astype(np.uint8)] * 3))
    assert np.array_equal(read_gt(tmp_path / "p.png"), mask)
    deep = grey.astype(np.uint16) * 257
    _write(tmp_path / "d16.png", deep)
    assert read_rgb(tmp_path / "d16.png").dtype == np.uint16
    np.testing.assert_array_equal(read_gt(tmp_path / "d16.png"), (grey / 255.0).astype(np.float32))
    np.testing.assert_array_equal(read_gt(tmp_path / "g.png"), (grey / 255.0).astype(np.float32))
    np.testing.assert_array_equal(read_gt(_write(tmp_path / "grgb.png", np.dstack([grey] * 3))),
                                  (grey / 255.0).astype(np.float32))
    expected = (rgb.astype(np.float64) @ [0.2125, 0.7154, 0.0721] / 255).astype(np.float32)
    np.testing.assert_allclose(read_gt(tmp_path / "rgb.png"), expected, rtol=0, atol=1e-7)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_upright_turns_an_image_as_pillow_does_for_each_exif_orientation(tmp_path, orientation):
    """`upright` against Pillow's ImageOps.exif_transpose; read_rgb(orient=True) applies the file's tag (a
    lossless PNG with an eXIf chunk), read_rgb() keeps the stored pixels."""
    rgb = _rgb(5, 7, orientation)
    image = Image.fromarray(rgb)
    exif = image.getexif()
    exif[0x0112] = orientation
    expected = np.asarray(ImageOps.exif_transpose(image))
    np.testing.assert_array_equal(upright(rgb, orientation), expected)
    image.save(tmp_path / "tagged.png", exif=exif)
    assert exif_orientation(tmp_path / "tagged.png") == orientation
    np.testing.assert_array_equal(read_rgb(tmp_path / "tagged.png", orient=True), expected)
    np.testing.assert_array_equal(read_rgb(tmp_path / "tagged.png"), rgb)
    # datasets are read as stored (the authors' reading); predict.py's items upright
    assert SODDataset.files([tmp_path / "tagged.png"], None)[0]["size"] == rgb.shape[:2]
    assert SODDataset.files([tmp_path / "tagged.png"], None, orient=True)[0]["size"] == expected.shape[:2]


def test_exif_orientation_of_untagged_and_unreadable_files_is_as_stored(tmp_path):
    assert exif_orientation(_write(tmp_path / "plain.jpg", _rgb(4, 4, 0))) == 1
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    assert exif_orientation(tmp_path / "broken.jpg") == 1
    image = Image.fromarray(_rgb(4, 4, 0))
    exif = image.getexif()
    exif[0x0112] = 9  # out of range: ignored
    image.save(tmp_path / "odd.png", exif=exif)
    assert exif_orientation(tmp_path / "odd.png") == 1


def test_webp_and_tiff_are_read_like_png(tmp_path):
    rgb = _rgb(6, 5, 3)
    for name in ("x.webp", "x.tif", "x.tiff"):
        Image.fromarray(rgb).save(tmp_path / name, **({"lossless": True} if name.endswith("webp") else {}))
        np.testing.assert_array_equal(read_rgb(tmp_path / name), rgb)


def _sod_tree(root: Path, name="A", count=4, size=(30, 40)):
    for i in range(count):
        image = _rgb(*size, i)
        ext = [".jpg", ".png", ".bmp", ".jpeg"][i % 4]
        path = root / "sod" / name / "images" / f"im{i}{ext}"
        _write(path, image if i % 2 == 0 else image[:, :, 0])  # grey images too
        _write(root / "sod" / name / "GT" / f"im{i}.png", ((image[:, :, 0] > 127) * 255).astype(np.uint8))


def test_sod_train_items_shapes_and_determinism(tmp_path):
    _sod_tree(tmp_path, "A")
    _sod_tree(tmp_path, "B", count=2)
    ds = SODDataset(tmp_path, "A+B", size=48, seed=3)  # found under root/sod/<name>
    assert len(ds) == 6 and [s[0] for s in ds.samples] == ["A"] * 4 + ["B"] * 2
    assert ds.samples[0][1].name == "im0.jpg" and ds.samples[0][2].name == "im0.png"
    image, gt = ds[1]
    assert image.shape == (3, 48, 48) and gt.shape == (1, 48, 48)
    assert image.dtype == gt.dtype == torch.float32 and 0 <= gt.min() and gt.max() <= 1
    assert all(torch.equal(a, b) for a, b in zip(ds[1], ds[1]))
    ds.set_epoch(1)
    assert not torch.equal(ds[1][0], image)
    ds.set_size(32)
    assert ds[0][0].shape == (3, 32, 32)
    ds.set_size(48)
    ds.set_epoch(0)
    assert torch.equal(ds[1][0], image)
    # Same batches with 0 and 2 workers (randomness depends on (seed, epoch, size, index) only).
    batches = [torch.cat([b[0] for b in torch.utils.data.DataLoader(ds, batch_size=3, num_workers=j)])
               for j in (0, 2)]
    assert torch.equal(batches[0], batches[1])
    assert SODDataset(tmp_path / "sod", "B", size=48, seed=3)[0][0].shape == (3, 48, 48)  # root = .../sod


def test_sod_test_items(tmp_path):
    _sod_tree(tmp_path, "A")
    (tmp_path / "sod/A/GT/im3.png").unlink()  # test images may lack GT
    ds = SODDataset(tmp_path, "A", mode="test", size=None, with_gt=True)
    item = ds[0]
    assert item["error"] is None and item["name"] == "im0" and item["dataset"] == "A"
    assert item["image"].shape == (3, 30, 40) and item["gt"].shape == (1, 30, 40) and item["size"] == (30, 40)
    assert ds[3]["gt"] is None and ds[3]["error"] is None
    rgb = read_rgb(tmp_path / "sod/A/images/im2.bmp")
    expected = (rgb[:, :, 0] / 255.0 - IMAGENET_MEAN[0]) / IMAGENET_STD[0]
    np.testing.assert_array_equal(ds[2]["image"][0].numpy(), expected.astype(np.float32))


def test_sod_bad_inputs(tmp_path):
    with pytest.raises(DataError, match=r"dataset NOPE not found: no images/ folder in .*NOPE or .*sod/NOPE"):
        SODDataset(tmp_path, "NOPE")
    (tmp_path / "sod/E/images").mkdir(parents=True)
    with pytest.raises(DataError, match=r"no images \(.*\) in .*sod/E/images"):
        SODDataset(tmp_path, "E")
    _sod_tree(tmp_path, "A")
    (tmp_path / "sod/A/GT/im1.png").unlink()
    with pytest.raises(DataError, match=r"missing GT for training image .*im1.png: expected .*GT/im1.png"):
        SODDataset(tmp_path, "A")
    _write(tmp_path / "sod/A/GT/im1.png", np.zeros((31, 40), np.uint8))
    ds = SODDataset(tmp_path, "A")
    with pytest.raises(DataError, match=r"GT size 31x40 differs from image size 30x40: .*im1.png / .*im1.png"):
        ds[1]
    (tmp_path / "sod/A/images/im2.bmp").write_bytes(b"not an image")
    with pytest.raises(DataError, match=r"cannot read .*im2.bmp: not an image"):
        ds[2]
    (tmp_path / "sod/A/GT/im0.png").write_bytes(b"")
    with pytest.raises(DataError, match=r"empty file .*GT/im0.png \(0 bytes\)"):
        ds[0]
    # Test time: the unreadable file is reported by path in the item, not raised.
    test = SODDataset(tmp_path, "A", mode="test", size=16, with_gt=True)
    errors = [item["error"] for item in test]
    assert errors[0].startswith("empty file") and "GT/im0.png" in errors[0]
    assert "GT size 31x40" in errors[1] and "im2.bmp" in errors[2] and errors[3] is None


def _video_tree(root: Path):
    """DAVSOD layout (12 frames, ids step 2, 20x24), VOS layout (5 frames), and a still pair; returns list path."""
    lines = []
    davsod = root / "vsod/DAVSOD_Training_Set/select_0001"
    for k in range(12):
        frame = np.full((20, 24, 3), 10 * k, np.uint8)
        _write(davsod / "Imgs" / f"select_0001_{2 * k:05d}.png", frame)
        _write(davsod / "GT_object_level" / f"select_0001_{2 * k:05d}.png", np.full((20, 24), 10 * k, np.uint8))
    folder = "vsod/DAVSOD_Training_Set/select_0001"
    lines.append(f"{folder}/Imgs .png {folder}/GT_object_level .png")
    for k in range(5):
        _write(root / f"vsod/VOS/JPEGImages/7/{k:05d}.jpg", np.full((16, 18, 3), 40 * k, np.uint8))
        _write(root / f"vsod/VOS/Annotations/7/{k:05d}.png", np.full((16, 18), 40 * k, np.uint8))
    lines.append("vsod/VOS/JPEGImages/7 .jpg vsod/VOS/Annotations/7 .png")
    _write(root / "sod/DUTS-TR/images/s.jpg", _rgb(30, 20, 9))
    _write(root / "sod/DUTS-TR/GT/s.png", np.zeros((30, 20), np.uint8))
    path = root / "train.txt"
    path.write_text("sod/DUTS-TR/images/s.jpg sod/DUTS-TR/GT/s.png\n" + "\n".join(lines) + "\n")
    return path


def _frame_values(clip: torch.Tensor) -> list[float]:
    """Mean red value (0-255) of each frame of a normalised clip (3T, S, S)."""
    red = clip[0::3] * IMAGENET_STD[0] + IMAGENET_MEAN[0]
    return [round(float(v) * 255, 3) for v in red.mean(dim=(1, 2))]


def test_vsod_train_clips_order_and_shapes(tmp_path):
    list_file = _video_tree(tmp_path)
    ds = VSODDataset(tmp_path, list_file, nframes=4, size=16, framegap=4, seed=1)
    assert isinstance(ds.samples[0][0], StillEntry) and ds.samples[0][1] is None
    davsod = [[int(n[-9:-4]) // 2 for n in c] for e, c in ds.samples[1:] if e.dataset == "DAVSOD"]
    # DAVSOD: ids step 2 -> mean gap 2; targets 1, 4, 8 give rates 1, 2, min(4, 12 // 4 = 3).
    assert davsod == [
        [0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11],                # target 1: rate 1
        [0, 2, 4, 6], [1, 3, 5, 7], [4, 6, 8, 10], [5, 7, 9, 11],  # target 4: rate 2, tail chunk aligned to end
        [0, 3, 6, 9], [1, 4, 7, 10], [2, 5, 8, 11],                # target 8: rate 3
    ]
    vos = [[int(n[:5]) for n in c] for e, c in ds.samples[1:] if e.dataset == "VOS"]
    assert vos == [[0, 1, 2, 3], [1, 2, 3, 4]]  # framegap only; rate min(4, 5 // 4) = 1, tail chunk
    clip, gt = ds[5]  # DAVSOD frames 1, 3, 5, 7 (values 10 * k)
    assert clip.shape == (12, 16, 16) and gt.shape == (4, 1, 16, 16)
    assert _frame_values(clip) == [10.0, 30.0, 50.0, 70.0]
    np.testing.assert_allclose(gt.mean(dim=(1, 2, 3)).numpy() * 255, [10, 30, 50, 70], atol=1e-3)
    clip, gt = ds[11]
    assert _frame_values(clip) == [0.0, 40.0, 80.0, 120.0]
    assert _frame_values(ds[12][0]) == [40.0, 80.0, 120.0, 160.0]
    still, still_gt = ds[0]
    assert still.shape == (12, 16, 16) and torch.equal(still[:3], still[9:]) and still_gt.shape == (4, 1, 16, 16)
    assert torch.equal(ds[3][0], ds[3][0])
    # video --beta NAME BETA: the clips whose first image path contains /NAME/ carry the weight BETA
    weighted = VSODDataset(tmp_path, list_file, nframes=4, size=16, framegap=4, seed=1,
                           weighted=("DAVSOD_Training_Set", 3.0))
    assert [float(weighted[i][2]) for i in (0, 5, 11)] == [1.0, 3.0, 1.0]
    assert torch.equal(weighted[5][0], ds[5][0])


def test_vsod_val_and_test_items(tmp_path):
    list_file = _video_tree(tmp_path)
    val = VSODDataset(tmp_path, list_file, mode="val", nframes=4, size=8, framegap=4, cut=0.5, dataset="DAVSOD")
    assert [c for _, c in val.samples] == [
        [f"select_0001_{2 * k:05d}.png" for k in (0, 1, 2, 3)], [f"select_0001_{2 * k:05d}.png" for k in (2, 3, 4, 5)]]
    item = val[1]
    assert item["error"] is None and item["video"] == "select_0001" and item["dataset"] == "DAVSOD"
    assert item["clip"].shape == (12, 8, 8) and item["gt"].shape == (4, 1, 20, 24) and item["size"] == (20, 24)
    assert _frame_values(item["clip"]) == [20.0, 30.0, 40.0, 50.0]
    vos = VSODDataset(tmp_path, list_file, mode="val", nframes=4, size=8, dataset="VOS")
    assert vos[0]["gt"].shape == (4, 1, 8, 8)  # VOS GT resized, as the authors' validation
    test = VSODDataset(tmp_path, list_file, mode="test", nframes=4, size=8, dataset="VOS")
    item = test[1]
    assert item["gt"] is None and item["video"] == "7" and item["size"] == (16, 18)
    assert item["frames"] == [f"{k:05d}.png" for k in range(1, 5)] and item["names"] == item["frames"]
    assert len(VSODDataset(tmp_path, list_file, mode="test", nframes=4, size=8)) == 4 + 2


def test_vsod_bad_inputs(tmp_path):
    list_file = _video_tree(tmp_path)
    with pytest.raises(DataError, match="no usable lines for dataset DAVIS"):
        VSODDataset(tmp_path, list_file, mode="test", dataset="DAVIS")
    (tmp_path / "vsod/VOS/JPEGImages/7/00003.jpg").unlink()
    with pytest.raises(DataError, match=r"missing image .*JPEGImages/7/00003.jpg for annotation .*7/00003.png"):
        VSODDataset(tmp_path, list_file, nframes=4)
    test = VSODDataset(tmp_path, list_file, mode="test", nframes=4, size=8, dataset="VOS")
    assert "cannot read file" in test[0]["error"] and "00003.jpg" in test[0]["error"]
    (tmp_path / "sod/DUTS-TR/GT/s.png").unlink()
    with pytest.raises(DataError, match=r"missing file .*GT/s.png of training pair"):
        VSODDataset(tmp_path, list_file, nframes=4)
    with pytest.raises(DataError, match=r"annotation folder not found: .*Annotations/9"):
        (tmp_path / "l.txt").write_text("vsod/VOS/JPEGImages/9 .jpg vsod/VOS/Annotations/9 .png\n")
        VSODDataset(tmp_path, tmp_path / "l.txt", mode="test")
