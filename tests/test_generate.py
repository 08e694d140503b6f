"""Map generators (design §7.2): the README commands, parity with the authors' maps, bad input."""

from __future__ import annotations

import pickle
from pathlib import Path

import bounds
import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from reference import REFERENCE

import generate_salmaps_sod
import generate_salmaps_vsod
from data.datasets import SODDataset
from data.readers import read_rgb
from data.transforms import preprocess_test, saliency_to_uint8
from engine.inference import runner as inference
from engine.inference.runner import prepare_for_inference
from models import build_model, load_model

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


def inference_runner(checkpoint: Path, **options) -> torch.nn.Module:
    """The model exactly as the scripts run it (same checkpoint handling, same CPU inference path)."""
    return prepare_for_inference(load_model(checkpoint, **options)[0], torch.device("cpu"))


def assert_only_truncation_flips(ours: np.ndarray, reference: np.ndarray, reference_float255: np.ndarray) -> None:
    """Maps may differ by one level only where the float map sits on an integer after x255 (float rounding of the
    two computations decides on which side of the boundary the truncation falls)."""
    difference = np.abs(ours.astype(int) - reference.astype(int))
    assert difference.max() <= 1
    boundary_distance = np.abs(reference_float255 - np.round(reference_float255))
    assert (boundary_distance[difference > 0] < bounds.QUANTISATION_BOUNDARY).all()


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
    training = inference_runner(SDNET_RELEASE, inference_config="sdnet")
    names = sorted(p.name for p in (sod_root / "SET" / "images").iterdir())
    assert sorted(p.name for p in (tmp_path / "base" / "SET").iterdir()) == [n.replace(".jpg", ".png") for n in names]
    for name in names:
        base = read_map(tmp_path / "base" / "SET" / name.replace(".jpg", ".png"))
        train = read_map(tmp_path / "train" / "SET" / name.replace(".jpg", ".png"))
        item = SODDataset.files([sod_root / "SET" / "images" / name], 64)[0]
        with torch.no_grad():
            float255 = F.interpolate(training(item["image"][None]), size=item["size"], mode="bilinear",
                                     align_corners=False)[0, 0].numpy() * 255
        assert train.shape == item["size"]
        np.testing.assert_array_equal(train, float255.astype(np.uint8))
        assert_only_truncation_flips(base, train, float255)


@needs_release
def test_our_converted_checkpoint_gives_the_same_maps(sod_root: Path, tmp_path: Path) -> None:
    """A checkpoint of ours (wrapper dict, converted weights, deploy=True) loads straight into the inference model."""
    converted = load_model(SDNET_RELEASE)[0]
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


@pytest.fixture(scope="module")
def random_sdnet(tmp_path_factory) -> Path:
    """A training-form SDNet checkpoint with random weights in the authors' layout."""
    torch.manual_seed(3)
    path = tmp_path_factory.mktemp("random") / "sdnet.pth"
    torch.save({f"module.{key}": value for key, value in build_model("sdnet").state_dict().items()}, path)
    return path


def full_resolution_command(root: Path, savedir: Path, checkpoint: Path, *extra: str) -> list[str]:
    command = sod_command(root, savedir, checkpoint, *extra)
    del command[command.index("--size"):command.index("--size") + 2]
    return command


@pytest.mark.slow  # 7 s: .ci/run runs it
def test_full_resolution_maps_never_depend_on_the_other_images(tmp_path: Path, random_sdnet: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Images of 7 sizes, some sizes met again after others, at full resolution (no --size) with the runner keeping
    networks for 2 shapes: each map is byte for byte the one the image gives in a run of its own."""
    monkeypatch.setattr(inference, "RUNNER_NETWORKS", 2)
    sizes = [(48, 64), (64, 48), (50, 70), (48, 64), (33, 41), (64, 64), (64, 48), (40, 96), (72, 40), (48, 64)]
    for i, (height, width) in enumerate(sizes):
        write_rgb(tmp_path / "all" / "SET" / "images" / f"img{i}.jpg", blob_image(height, width, 10 + i))
    generate_salmaps_sod.main(full_resolution_command(tmp_path / "all", tmp_path / "maps", random_sdnet, "-j", "2",
                                                      "--threads", "2", "--no-cache"))
    for i in range(len(sizes)):
        alone = tmp_path / f"alone{i}"
        (alone / "SET" / "images").mkdir(parents=True)
        (tmp_path / "all" / "SET" / "images" / f"img{i}.jpg").rename(alone / "SET" / "images" / f"img{i}.jpg")
        generate_salmaps_sod.main(full_resolution_command(alone, alone / "maps", random_sdnet, "--threads", "1"))
        ours = (tmp_path / "maps" / "SET" / f"img{i}.png").read_bytes()
        assert ours == (alone / "maps" / "SET" / f"img{i}.png").read_bytes(), f"img{i} {sizes[i]}"
        assert read_map(tmp_path / "maps" / "SET" / f"img{i}.png").shape == sizes[i]


def test_a_backend_that_cannot_be_prepared_writes_nothing(sod_root: Path, tmp_path: Path, random_sdnet: Path,
                                                          monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    import engine.inference.backends.openvino as openvino_backend

    def broken(*args, **kwargs):
        raise RuntimeError("unsupported operator\nmore detail")

    monkeypatch.setattr(openvino_backend, "export_onnx", broken)
    err = run_failing(sod_command(sod_root, tmp_path / "res", random_sdnet, "--no-cache"), capsys)
    assert err.strip().splitlines()[-1].endswith("--backend openvino: exporting the network failed (unsupported "
                                                 "operator); --backend eager runs without OpenVINO")
    assert not (tmp_path / "res").exists()
    generate_salmaps_sod.main(sod_command(sod_root, tmp_path / "res", random_sdnet, "--backend", "eager"))
    assert len(list((tmp_path / "res" / "SET").iterdir())) == 3


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
def test_flag_contradicting_the_checkpoint_names_both(sod_root: Path, tmp_path: Path, capsys) -> None:
    err = run_failing(sod_command(sod_root, tmp_path / "res", SDNET_RELEASE, "--bn"), capsys)
    assert f"--bn contradicts {SDNET_RELEASE}, which has bn False" in err
    assert not (tmp_path / "res").exists()


def test_checkpoint_that_does_not_fit_names_the_keys(sod_root: Path, tmp_path: Path, capsys) -> None:
    weights = build_model("sdnet").state_dict()
    del weights["block2_2.conv2.bias"]
    damaged = tmp_path / "damaged.pth"
    torch.save({f"module.{key}": value for key, value in weights.items()}, damaged)
    err = run_failing(sod_command(sod_root, tmp_path / "res", damaged), capsys)
    assert str(damaged) in err and "missing keys: block2_2.conv2.bias" in err
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


# ------------------------------------------------------------------------------------------------- video generator

VIDEOS = {"DAVIS/bear": 10, "DAVIS/kite": 3, "VOS/7": 4}


@pytest.fixture
def vsod_root(tmp_path: Path) -> Path:
    """DAVIS layout (<video>/Imgs/*.jpg + ground-truth/*.png), one VOS video, and the test list naming all three."""
    root = tmp_path / "data"
    lines = []
    for index, (video, count) in enumerate(VIDEOS.items()):
        dataset, name = video.split("/")
        if dataset == "DAVIS":
            images, annotations = f"vsod/DAVIS/{name}/Imgs", f"vsod/DAVIS/{name}/ground-truth"
        else:
            images, annotations = f"vsod/VOS/JPEGImages/{name}", f"vsod/VOS/Annotations/{name}"
        height, width = 40 + 4 * index, 56 - 4 * index
        for t in range(count):
            write_rgb(root / images / f"{t:05d}.jpg", blob_image(height, width, 10 * index + t))
            (root / annotations).mkdir(parents=True, exist_ok=True)
            assert cv2.imwrite(str(root / annotations / f"{t:05d}.png"), np.zeros((height, width), np.uint8))
        lines.append(f"{images} .jpg {annotations} .png")
    (root / "test_video_lst.txt").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture(scope="module")
def video_checkpoints(tmp_path_factory) -> dict[str, Path]:
    """Random training-form STDNet / STDNet-A (BN, tid cv cd ad) in the authors' layout (module. keys)."""
    folder = tmp_path_factory.mktemp("video_checkpoints")
    paths = {}
    for name in ("stdnet", "stdneta"):
        torch.manual_seed(0)
        model = build_model(name, bn=True)
        paths[name] = folder / f"{name}_from_scratch_DAVIS.pth"
        torch.save({f"module.{k}": v for k, v in model.state_dict().items()}, paths[name])
    return paths


def vsod_command(root: Path, savedir: Path, model: str, checkpoint: Path) -> list[str]:
    """The README command (video SOD), with test paths, sizes and a 4-frame clip."""
    config = "sdnet-a" if model == "stdneta" else "sdnet"
    return ["--model", model, "--inference-config", "baseline", "--train-config", config, "-j", "0", "--gpu", "0",
            "--datadir", str(root), "--testdata", "DAVIS", "--savedir", str(savedir), "--size", "64", "--evaluate",
            str(checkpoint), "--tid", "cv", "cd", "ad", "--test-lst", str(root / "test_video_lst.txt"),
            "--nframes", "4"]


@pytest.mark.parametrize("model", ["stdnet", "stdneta"])
def test_video_maps_of_every_annotated_frame(model: str, vsod_root: Path, tmp_path: Path, video_checkpoints) -> None:
    """bear (10 frames, 4-frame clips, rate 2): clips 0,2,4,6 / 1,3,5,7 and the tail chunk 2..9 (2,4,6,8 / 3,5,7,9),
    whose maps win; kite (3 frames): one ping-pong clip 0,1,2,1. The VOS video is not selected."""
    generate_salmaps_vsod.main(vsod_command(vsod_root, tmp_path / "res", model, video_checkpoints[model]))
    assert sorted(p.name for p in (tmp_path / "res").iterdir()) == ["DAVIS"]
    network = inference_runner(video_checkpoints[model], nframes=4)
    clip_lists = {"bear": [[0, 2, 4, 6], [1, 3, 5, 7], [2, 4, 6, 8], [3, 5, 7, 9]], "kite": [[0, 1, 2, 1]]}
    for video, clips in clip_lists.items():
        folder = vsod_root / "vsod" / "DAVIS" / video / "Imgs"
        expected = {}
        for clip in clips:
            frames = [read_rgb(folder / f"{t:05d}.jpg") for t in clip]
            with torch.no_grad():
                clip_tensor = torch.cat([preprocess_test(frame, 64) for frame in frames])[None]
                maps = saliency_to_uint8(network(clip_tensor), frames[0].shape[:2])
            expected.update({f"{t:05d}.png": saliency for t, saliency in zip(clip, maps, strict=True)})
        written = sorted(p.name for p in (tmp_path / "res" / "DAVIS" / video).iterdir())
        assert written == sorted(expected)
        for name, saliency in expected.items():
            np.testing.assert_array_equal(read_map(tmp_path / "res" / "DAVIS" / video / name), saliency)


def test_video_generator_bad_input(vsod_root: Path, tmp_path: Path, video_checkpoints, capsys) -> None:
    """Missing data root or list file: exit 2; an unreadable frame: reported, other clips written, exit 1."""
    command = vsod_command(vsod_root, tmp_path / "res", "stdnet", video_checkpoints["stdnet"])
    with pytest.raises(SystemExit) as exit_info:
        generate_salmaps_vsod.main(command + ["--datadir", str(tmp_path / "nowhere")])
    assert exit_info.value.code == 2 and "nowhere" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        generate_salmaps_vsod.main(command + ["--test-lst", str(tmp_path / "missing.txt")])
    assert exit_info.value.code == 2 and "missing.txt" in capsys.readouterr().err
    broken = vsod_root / "vsod" / "DAVIS" / "kite" / "Imgs" / "00001.jpg"
    broken.write_bytes(b"broken")
    with pytest.raises(SystemExit) as exit_info:
        generate_salmaps_vsod.main(command)
    assert exit_info.value.code == 1 and str(broken) in capsys.readouterr().err
    assert len(list((tmp_path / "res" / "DAVIS" / "bear").iterdir())) == 10
    assert not (tmp_path / "res" / "DAVIS" / "kite").exists()


SDNETA_RELEASE = REFERENCE / "checkpoints" / "sdneta_from_pretrained.pth"


@pytest.mark.skipif(not SDNETA_RELEASE.is_file(), reason=f"reference checkpoint absent: {SDNETA_RELEASE}")
def test_paper_command_works_with_or_without_bn(sod_root: Path, tmp_path: Path) -> None:
    """The README's SDNet-A command passes --bn; the checkpoint says BN anyway, so both give the same maps."""
    command = ["--model", "sdneta", "--inference-config", "baseline", "--train-config", "sdnet-a", "-j", "0",
               "--datadir", str(sod_root), "--testdata", "SET", "--evaluate", str(SDNETA_RELEASE), "--size", "64"]
    generate_salmaps_sod.main([*command, "--bn", "--savedir", str(tmp_path / "bn")])
    generate_salmaps_sod.main([*command, "--savedir", str(tmp_path / "plain")])
    names = sorted(p.name for p in (tmp_path / "bn" / "SET").iterdir())
    assert len(names) == 3 and names == sorted(p.name for p in (tmp_path / "plain" / "SET").iterdir())
    for name in names:
        np.testing.assert_array_equal(read_map(tmp_path / "bn" / "SET" / name), read_map(tmp_path / "plain" / "SET" /
                                                                                           name))
