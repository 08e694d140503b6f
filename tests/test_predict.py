"""predict.py on images, folders and videos with an image and a video model; clip grouping; bad input."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import predict
import utils
from data.readers import read_rgb
from data.transforms import preprocess_test
from models import build_model

SIZE = 64


def random_checkpoint(path: Path, name: str, bn: bool) -> Path:
    """A training-form checkpoint with random weights in the authors' layout (DataParallel ``module.`` keys)."""
    torch.manual_seed(0)
    model = build_model(name, bn=bn)
    torch.save({f"module.{key}": value for key, value in model.state_dict().items()}, path)
    return path


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("checkpoints")
    return {"sdnet": random_checkpoint(folder / "sdnet.pth", "sdnet", bn=False),
            "stdnet": random_checkpoint(folder / "stdnet.pth", "stdnet", bn=True)}


def write_video(path: Path, frames: int, height: int = 48, width: int = 80) -> None:
    """A short .mp4 (OpenCV writer, mp4v) of a bright square moving over noise."""
    rng = np.random.default_rng(frames)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 12, (width, height))
    for t in range(frames):
        frame = rng.integers(0, 80, size=(height, width, 3), dtype=np.uint8)
        cv2.rectangle(frame, (5 + 4 * t, 10), (30 + 4 * t, 35), (60, 220, 240), -1)
        writer.write(frame)
    writer.release()


def read_video(path: Path) -> tuple[list[np.ndarray], float]:
    """All frames (RGB uint8) and the frame rate of a video file."""
    capture = cv2.VideoCapture(str(path))
    fps = capture.get(cv2.CAP_PROP_FPS)
    frames = list(predict.read_frames(capture))
    capture.release()
    return frames, fps


@pytest.fixture
def inputs(tmp_path: Path) -> Path:
    """tmp/in: photo.jpg, album/{x.png, nested/y.jpg, notes.txt}, clip.mp4 (10 frames)."""
    rng = np.random.default_rng(1)
    folder = tmp_path / "in"
    (folder / "album" / "nested").mkdir(parents=True)
    for name, shape in [("photo.jpg", (40, 56)), ("album/x.png", (64, 48)), ("album/nested/y.jpg", (33, 70))]:
        assert cv2.imwrite(str(folder / name), rng.integers(0, 255, size=(*shape, 3), dtype=np.uint8))
    (folder / "album" / "notes.txt").write_text("not an image")
    write_video(folder / "clip.mp4", frames=10)
    return folder


def through_codec(maps: np.ndarray, fps: float, path: Path) -> np.ndarray:
    """Grey maps (T, H, W) after the same mp4v encoding as predict.py and decoding: the exact expected video."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, maps.shape[:0:-1])
    for saliency in maps:
        writer.write(cv2.cvtColor(saliency, cv2.COLOR_GRAY2BGR))
    writer.release()
    return np.stack(read_video(path)[0])


def inference_runner(name: str, checkpoint: Path, **options) -> torch.nn.Module:
    """The model exactly as predict.py runs it (same checkpoint handling, same CPU inference path)."""
    return utils.prepare_for_inference(utils.build_inference_model(name, checkpoint, **options), torch.device("cpu"))


def oracle_maps(model: torch.nn.Module, frames: list[np.ndarray], nframes: int = 1) -> np.ndarray:
    """Maps of consecutive frames computed directly: one clip per group of nframes (the group count must divide)."""
    tensors = [preprocess_test(frame, SIZE) for frame in frames]
    with torch.no_grad():
        groups = [torch.cat(tensors[i: i + nframes])[None] for i in range(0, len(tensors), nframes)]
        return np.concatenate([utils.saliency_to_uint8(model(batch), frames[0].shape[:2]) for batch in groups])


def test_image_model_on_images_folders_and_a_video(inputs: Path, tmp_path: Path, checkpoints, capsys) -> None:
    out = tmp_path / "out"
    predict.main(["--model", "sdnet", "--checkpoint", str(checkpoints["sdnet"]), "--train-config", "sdnet",
                  "--size", str(SIZE), "-j", "0", "--gpu", "0", "--overlay", "--cutout",
                  str(inputs / "photo.jpg"), str(inputs / "album"), str(inputs / "clip.mp4"), "--out", str(out)])
    written = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    expected = [f"{base}{suffix}" for base in ("album/nested/y", "album/x", "photo")
                for suffix in (".png", "_cutout.png", "_overlay.jpg")]
    assert written == sorted(expected + ["clip.mp4"])
    model = inference_runner("sdnet", checkpoints["sdnet"])
    for source, base in [("photo.jpg", "photo"), ("album/x.png", "album/x"), ("album/nested/y.jpg", "album/nested/y")]:
        rgb = read_rgb(inputs / source)
        saliency = cv2.imread(str(out / f"{base}.png"), cv2.IMREAD_UNCHANGED)
        np.testing.assert_array_equal(saliency, oracle_maps(model, [rgb])[0])
        cut = cv2.imread(str(out / f"{base}_cutout.png"), cv2.IMREAD_UNCHANGED)
        np.testing.assert_array_equal(cut[:, :, 3], saliency)
        np.testing.assert_array_equal(cut[:, :, :3], cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        assert cv2.imread(str(out / f"{base}_overlay.jpg")).shape == rgb.shape
    frames, fps = read_video(inputs / "clip.mp4")
    maps, out_fps = read_video(out / "clip.mp4")
    assert len(maps) == len(frames) == 10 and out_fps == fps and maps[0].shape == frames[0].shape
    np.testing.assert_array_equal(np.stack(maps), through_codec(oracle_maps(model, frames), fps, tmp_path / "x.mp4"))
    assert "images/s" in capsys.readouterr().err


def test_video_model_groups_frames_into_clips(inputs: Path, tmp_path: Path, checkpoints) -> None:
    """10 frames with --nframes 4: clips 0-3, 4-7 and the tail as the last 4 frames (6-9) of which 8, 9 are new; a
    still image is a clip of 4 copies."""
    out = tmp_path / "out"
    predict.main(["--model", "stdnet", "--checkpoint", str(checkpoints["stdnet"]), "--size", str(SIZE),
                  "--nframes", "4", "--tid", "cv", "cd", "ad", "-j", "0", str(inputs / "clip.mp4"),
                  str(inputs / "photo.jpg"), "--out", str(out)])
    model = inference_runner("stdnet", checkpoints["stdnet"], nframes=4)
    frames, _ = read_video(inputs / "clip.mp4")
    expected = np.concatenate([oracle_maps(model, frames[:8], 4), oracle_maps(model, frames[6:], 4)[2:]])
    stream = predict.video_maps(predict.Predictor(model, True, 4), iter(frames), SIZE)
    np.testing.assert_array_equal(np.stack(list(stream)), expected)
    maps, fps = read_video(out / "clip.mp4")
    np.testing.assert_array_equal(np.stack(maps), through_codec(expected, fps, tmp_path / "x.mp4"))
    photo = read_rgb(inputs / "photo.jpg")
    np.testing.assert_array_equal(cv2.imread(str(out / "photo.png"), cv2.IMREAD_UNCHANGED),
                                  oracle_maps(model, [photo] * 4, 4)[-1])


class RecordingPredictor(predict.Predictor):
    """Stands in for a video model: records the clips it is given (frame numbers) and returns them as maps."""

    def __init__(self, nframes: int) -> None:
        self.video, self.nframes, self.clips = True, nframes, []

    def clip(self, frames: list[torch.Tensor], size: tuple[int, int]) -> np.ndarray:
        numbers = [int(round(frame[0, 0, 0].item())) for frame in frames]
        self.clips.append(numbers)
        return np.array(numbers, dtype=np.uint8)


@pytest.mark.parametrize(("count", "clips"), [
    (8, [[0, 1, 2, 3], [4, 5, 6, 7]]),
    (6, [[0, 1, 2, 3], [2, 3, 4, 5]]),
    (3, [[0, 1, 2, 1]]),
    (1, [[0, 0, 0, 0]]),
])
def test_stream_clips_and_tail(count: int, clips: list[list[int]], monkeypatch) -> None:
    """Every frame gets exactly one map, in order, from the clips SPEC §6.3 would build for a stream (rate 1)."""
    monkeypatch.setattr(predict, "preprocess_test", lambda rgb, size: torch.full((3, 1, 1), float(rgb[0, 0, 0])))
    recorder = RecordingPredictor(4)
    frames = [np.full((2, 2, 3), t, dtype=np.uint8) for t in range(count)]
    assert [int(m) for m in predict.video_maps(recorder, iter(frames), SIZE)] == list(range(count))
    assert recorder.clips == clips


def run_failing(argv: list[str], capsys, status: int = 2) -> str:
    with pytest.raises(SystemExit) as exit_info:
        predict.main(argv)
    assert exit_info.value.code == status
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


def test_corrupt_image_is_reported_and_the_others_are_written(inputs: Path, tmp_path: Path, checkpoints,
                                                              capsys) -> None:
    broken = inputs / "album" / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    out = tmp_path / "out"
    err = run_failing(["--model", "sdnet", "--checkpoint", str(checkpoints["sdnet"]), "--size", str(SIZE), "-j", "0",
                       str(inputs / "album"), "--out", str(out)], capsys, status=1)
    assert str(broken) in err
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*.png")) == ["album/nested/y.png", "album/x.png"]


def test_unreadable_video_is_a_one_line_error(inputs: Path, tmp_path: Path, checkpoints, capsys) -> None:
    bad = inputs / "bad.mov"
    bad.write_bytes(b"\x00\x00\x00\x18ftypqt  garbage")
    err = run_failing(["--model", "sdnet", "--checkpoint", str(checkpoints["sdnet"]), str(inputs / "photo.jpg"),
                       str(bad), "--out", str(tmp_path / "out")], capsys)
    assert str(bad) in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_missing_input_and_wrong_checkpoint_are_one_line_errors(inputs: Path, tmp_path: Path, checkpoints,
                                                                capsys) -> None:
    err = run_failing(["--model", "sdnet", "--checkpoint", str(checkpoints["sdnet"]), str(inputs / "nope.jpg"),
                       "--out", str(tmp_path / "out")], capsys)
    assert "nope.jpg" in err
    err = run_failing(["--model", "sdnet", "--checkpoint", str(checkpoints["stdnet"]), str(inputs / "photo.jpg"),
                       "--out", str(tmp_path / "out")], capsys)
    assert "does not match" in err and "unexpected keys" in err
    assert not (tmp_path / "out").exists()
