"""Map generators (SPEC §7.2): the README commands, parity with the authors' maps, bad input."""

from __future__ import annotations

import pickle
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import generate_salmaps_sod
import utils

REFERENCE = Path(__file__).resolve().parents[1].parent / "shared" / "reference"
SDNET_RELEASE = REFERENCE / "checkpoints" / "sdnet_from_scratch.pth"
needs_release = pytest.mark.skipif(not SDNET_RELEASE.is_file(), reason=f"reference checkpoint absent: {SDNET_RELEASE}")


def write_rgb(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


def blob_image(height: int, width: int, seed: int) -> np.ndarray:
    """A bright ellipse on a noisy darker background, (H, W, 3) uint8."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 90, size=(height, width, 3), dtype=np.uint8)
    centre = (int(rng.integers(width // 3, 2 * width // 3)), int(rng.integers(height // 3, 2 * height // 3)))
    cv2.ellipse(image, centre, (width // 4, height // 5), 15, 0, 360, (230, 200, 60), -1)
    return image


@pytest.fixture
def sod_root(tmp_path: Path) -> Path:
    """<root>/SET/images with three small images of different sizes."""
    for i, (height, width) in enumerate([(48, 64), (70, 52), (64, 64)]):
        write_rgb(tmp_path / "sod" / "SET" / "images" / f"img{i}.jpg", blob_image(height, width, i))
    return tmp_path / "sod"


def read_map(path: Path) -> np.ndarray:
    saliency = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert saliency is not None and saliency.dtype == np.uint8 and saliency.ndim == 2, path
    return saliency


def sod_command(root: Path, savedir: Path, checkpoint: Path, *extra: str) -> list[str]:
    """The README command (image SOD), with test paths and sizes."""
    return ["--model", "sdnet", "--inference-config", "baseline", "--train-config", "sdnet", "-j", "0", "--gpu", "0",
            "--datadir", str(root), "--testdata", "SET", "--savedir", str(savedir), "--evaluate", str(checkpoint),
            "--size", "64", *extra]


def assert_only_truncation_flips(ours: np.ndarray, reference: np.ndarray, reference_float255: np.ndarray) -> None:
    """Maps may differ by one level only where the float map sits on an integer after x255 (float rounding of the
    two computations decides on which side of the boundary the truncation falls)."""
    difference = np.abs(ours.astype(int) - reference.astype(int))
    assert difference.max() <= 1
    boundary_distance = np.abs(reference_float255 - np.round(reference_float255))
    assert (boundary_distance[difference > 0] < 2e-3).all()


@needs_release
def test_golden_photos_equal_the_authors_maps(tmp_path: Path) -> None:
    """chelsea and coffee (the golden photos) -> our PNGs == golden output_converted upsampled, x255, truncated."""
    skimage_data = pytest.importorskip("skimage.data")
    golden = np.load(REFERENCE / "golden" / "sdnet_golden_io.npz")
    photos = {"chelsea": skimage_data.chelsea(), "coffee": skimage_data.coffee()}
    for name, rgb in photos.items():
        write_rgb(tmp_path / "sod" / "GOLD" / "images" / f"{name}.png", rgb)
    generate_salmaps_sod.main(sod_command(tmp_path / "sod", tmp_path / "res", SDNET_RELEASE, "--size", "320")
                              + ["--testdata", "GOLD"])
    largest = 0
    for index, (name, rgb) in enumerate(photos.items()):
        ours = read_map(tmp_path / "res" / "GOLD" / f"{name}.png")
        assert ours.shape == rgb.shape[:2]
        upsampled = F.interpolate(torch.from_numpy(golden["output_converted"][index: index + 1]), size=rgb.shape[:2],
                                  mode="bilinear", align_corners=False)[0, 0] * 255
        authors = upsampled.to(torch.uint8).numpy()
        assert_only_truncation_flips(ours, authors, upsampled.numpy())
        largest = max(largest, int(np.abs(ours.astype(int) - authors.astype(int)).max()))
    print(f"largest pixel difference to the authors' maps: {largest}")


@needs_release
def test_baseline_and_training_form_give_the_same_maps(sod_root: Path, tmp_path: Path) -> None:
    generate_salmaps_sod.main(sod_command(sod_root, tmp_path / "base", SDNET_RELEASE))
    generate_salmaps_sod.main(sod_command(sod_root, tmp_path / "train", SDNET_RELEASE, "--inference-config", "sdnet"))
    training = utils.build_inference_model("sdnet", SDNET_RELEASE, inference_config="sdnet")
    names = sorted(p.name for p in (sod_root / "SET" / "images").iterdir())
    assert sorted(p.name for p in (tmp_path / "base" / "SET").iterdir()) == [n.replace(".jpg", ".png") for n in names]
    for name in names:
        base = read_map(tmp_path / "base" / "SET" / name.replace(".jpg", ".png"))
        train = read_map(tmp_path / "train" / "SET" / name.replace(".jpg", ".png"))
        item = utils.ImageFiles([sod_root / "SET" / "images" / name], 64)[0]
        with torch.no_grad():
            float255 = F.interpolate(training(item["image"]), size=item["size"], mode="bilinear",
                                     align_corners=False)[0, 0].numpy() * 255
        assert train.shape == item["size"]
        np.testing.assert_array_equal(train, float255.astype(np.uint8))
        assert_only_truncation_flips(base, train, float255)


@needs_release
def test_our_converted_checkpoint_gives_the_same_maps(sod_root: Path, tmp_path: Path) -> None:
    """A checkpoint of ours (wrapper dict, converted weights, deploy=True) loads straight into the inference model."""
    converted = utils.build_inference_model("sdnet", SDNET_RELEASE)
    ours = tmp_path / "ours.pth"
    torch.save({"model": "sdnet", "config": "sdnet", "bn": False, "deploy": True, "epoch": 0,
                "state_dict": converted.state_dict()}, ours)
    generate_salmaps_sod.main(sod_command(sod_root, tmp_path / "released", SDNET_RELEASE, "-j", "2"))
    generate_salmaps_sod.main(sod_command(sod_root, tmp_path / "ours", ours))
    for path in sorted((tmp_path / "released" / "SET").iterdir()):
        np.testing.assert_array_equal(read_map(path), read_map(tmp_path / "ours" / "SET" / path.name))


@needs_release
def test_corrupt_image_is_reported_and_the_others_are_written(sod_root: Path, tmp_path: Path, capsys) -> None:
    corrupt = sod_root / "SET" / "images" / "broken.jpg"
    corrupt.write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(SystemExit) as exit_info:
        generate_salmaps_sod.main(sod_command(sod_root, tmp_path / "res", SDNET_RELEASE))
    assert exit_info.value.code == 1
    assert str(corrupt) in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "res" / "SET").iterdir()) == ["img0.png", "img1.png", "img2.png"]


def run_failing(argv: list[str], capsys) -> str:
    """Run the generator expecting exit status 2; returns the error output (one line, no traceback)."""
    with pytest.raises(SystemExit) as exit_info:
        generate_salmaps_sod.main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert len([line for line in err.splitlines() if "ERROR" in line]) == 1
    return err


def test_missing_datadir_is_a_one_line_error(tmp_path: Path, capsys) -> None:
    err = run_failing(sod_command(tmp_path / "nowhere", tmp_path / "res", tmp_path / "x.pth"), capsys)
    assert "--datadir" in err and "nowhere" in err
    assert not (tmp_path / "res").exists()


@needs_release
def test_checkpoint_that_does_not_fit_names_the_keys(sod_root: Path, tmp_path: Path, capsys) -> None:
    err = run_failing(sod_command(sod_root, tmp_path / "res", SDNET_RELEASE, "--bn"), capsys)
    assert "missing keys" in err and "bn0" in err
    assert not (tmp_path / "res").exists()


def _touch(path: str) -> None:
    Path(path).touch()


class _Payload:
    """Unpickling this would call ``_touch(marker)``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (_touch, (str(self.marker),))


def test_pickled_objects_are_refused_without_running_them(sod_root: Path, tmp_path: Path, capsys) -> None:
    marker = tmp_path / "code_ran"
    malicious = tmp_path / "malicious.pth"
    malicious.write_bytes(pickle.dumps({"state_dict": _Payload(marker)}, protocol=2))
    err = run_failing(sod_command(sod_root, tmp_path / "res", malicious), capsys)
    assert str(malicious) in err and "refused" in err
    assert not marker.exists() and not (tmp_path / "res").exists()
