"""predict.py on images, folders and videos with an image and a video model; clip grouping; bad input."""

from __future__ import annotations

import ctypes
import os
import re
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from reference import REFERENCE

import predict
import utils
from data import DataError
from data.readers import read_rgb
from data.transforms import overlay, preprocess_test, saliency_to_uint8
from data.video import clip_groups, open_video, read_frames, video_writer, write_map_video
from engine.inference.predictor import ModelInput, Predictor
from engine.inference.runner import prepare_for_inference
from models import build_model, load_model

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
    """A short .mp4 (OpenCV writer, mp4v, as cameras and older tools write) of a bright square moving over noise."""
    rng = np.random.default_rng(frames)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 12, (width, height))
    for t in range(frames):
        frame = rng.integers(0, 80, size=(height, width, 3), dtype=np.uint8)
        cv2.rectangle(frame, (5 + 4 * t, 10), (30 + 4 * t, 35), (60, 220, 240), -1)
        writer.write(frame)
    writer.release()


def read_video(path: Path) -> tuple[list[np.ndarray], float]:
    """All frames (RGB uint8) and the frame rate of a video file."""
    video = open_video(path)
    frames = list(read_frames(video))
    video.release()
    return frames, video.fps


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
    """Grey maps (T, H, W) or BGR frames (T, H, W, 3) after the same H.264 encoding as predict.py
    (`data.video.video_writer`) and decoding: the exact expected video."""
    with video_writer(path, fps) as add:
        for frame in maps:
            add(frame)
    return np.stack(read_video(path)[0])


def test_map_videos_are_h264_that_browsers_play_and_the_same_bytes_each_time(tmp_path: Path) -> None:
    """A map video is H.264 (High profile, 4:2:0, BT.601 at video range, as web video) in an .mp4 whose index comes
    first (a browser plays it while it loads), written the same bytes each time, whatever the heap held; decoded,
    each map is within the encoder's CRF 17 of its values: a few grey levels (H.264 decoding is bit-exact by the
    standard and the encoder's bytes are fixed on a machine; 8 bounds it for these smooth maps, plus 1 for the
    range's rounding of 256 greys to 220)."""
    import av

    ys, xs = np.mgrid[0:96, 0:128]
    maps = np.stack([((np.sin(xs / 9 + t) * np.cos(ys / 13) + 1) * 127.5).astype(np.uint8) for t in range(12)])
    libc = ctypes.CDLL(None)
    libc.malloc.restype, libc.free.argtypes = ctypes.c_void_p, [ctypes.c_void_p]
    for index, name in enumerate(("a.mp4", "b.mp4", "c.mp4")):
        # Leave freed heap blocks full of other bytes each time: an encoder that read memory nobody set (x264 reads
        # past a row's end) would write other bytes.
        blocks = [libc.malloc(4096 * (size + 1)) for size in range(64)]
        for size, block in enumerate(blocks):
            ctypes.memset(block, 37 * index + size, 4096 * (size + 1))
        for block in blocks:
            libc.free(block)
        assert write_map_video(tmp_path / name, iter(maps), 25.0) == 12
    data = (tmp_path / "a.mp4").read_bytes()
    assert data == (tmp_path / "b.mp4").read_bytes() == (tmp_path / "c.mp4").read_bytes()
    assert data.index(b"moov") < data.index(b"mdat")
    with av.open(str(tmp_path / "a.mp4")) as container:
        stream = container.streams.video[0]
        assert (stream.codec_context.name, stream.codec_context.profile, stream.codec_context.pix_fmt) == (
            "h264", "High", "yuv420p")
        assert (stream.codec_context.color_range, stream.codec_context.colorspace) == (1, 6)  # BT.601, 16-235
        assert stream.average_rate == 25 and stream.frames == 12
    decoded = np.stack(read_video(tmp_path / "a.mp4")[0])
    assert np.abs(decoded[..., 0].astype(int) - maps).max() <= 9


def inference_runner(checkpoint: Path, **options) -> torch.nn.Module:
    """The model exactly as predict.py runs it (same checkpoint handling, same CPU inference path)."""
    return prepare_for_inference(load_model(checkpoint, **options)[0], torch.device("cpu"))


def oracle_maps(model: torch.nn.Module, frames: list[np.ndarray], nframes: int = 1) -> np.ndarray:
    """Maps of consecutive frames computed directly: one clip per group of nframes (the group count must divide)."""
    tensors = [preprocess_test(frame, SIZE) for frame in frames]
    with torch.no_grad():
        groups = [torch.cat(tensors[i: i + nframes])[None] for i in range(0, len(tensors), nframes)]
        return np.concatenate([saliency_to_uint8(model(batch), frames[0].shape[:2]) for batch in groups])


def test_image_model_on_images_folders_and_a_video(inputs: Path, tmp_path: Path, checkpoints, capsys) -> None:
    """Images, a folder and a video with --overlay: each image's map and overlay, the video's map video and its
    overlay video; --cutout for the images; --cutout with a video is one line, exit 2, nothing written."""
    out = tmp_path / "out"
    flags = ["--model", "sdnet", "--checkpoint", str(checkpoints["sdnet"]), "--train-config", "sdnet", "--size",
             str(SIZE), "-j", "0", "--gpu", "0"]
    images = [str(inputs / "photo.jpg"), str(inputs / "album")]
    predict.main([*flags, "--overlay", *images, str(inputs / "clip.mp4"), "--out", str(out)])
    # the rate leaves out the time spent preparing networks (a first run of a shape compiles them)
    assert re.search(r"INFO 13 images and video frames in [\d.]+ s \([\d.]+ s of it preparing networks\): [\d.]+ "
                     r"images/s on cpu", capsys.readouterr().err)
    predict.main([*flags, "--cutout", *images, "--out", str(out)])
    written = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    expected = [f"{base}{suffix}" for base in ("album/nested/y", "album/x", "photo")
                for suffix in (".png", "_cutout.png", "_overlay.jpg")]
    assert written == sorted(expected + ["clip.mp4", "clip_overlay.mp4"])
    model = inference_runner(checkpoints["sdnet"])
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
    expected_maps = oracle_maps(model, frames)
    np.testing.assert_array_equal(np.stack(maps), through_codec(expected_maps, fps, tmp_path / "x.mp4"))
    overlays, _ = read_video(out / "clip_overlay.mp4")
    drawn = np.stack([overlay(frame, saliency) for frame, saliency in zip(frames, expected_maps, strict=True)])
    np.testing.assert_array_equal(np.stack(overlays), through_codec(drawn, fps, tmp_path / "overlay.mp4"))
    err = run_failing([*flags, "--cutout", str(inputs / "clip.mp4"), "--out", str(tmp_path / "none")], capsys)
    assert "--cutout: a video has no cut-out (an .mp4 keeps no alpha channel)" in err
    assert not (tmp_path / "none").exists()


def test_video_model_groups_frames_into_clips(inputs: Path, tmp_path: Path, checkpoints) -> None:
    """10 frames with --nframes 4: clips 0-3, 4-7 and the tail as the last 4 frames (6-9) of which 8, 9 are new; a
    still image is a clip of 4 copies."""
    out = tmp_path / "out"
    predict.main(["--model", "stdnet", "--checkpoint", str(checkpoints["stdnet"]), "--size", str(SIZE),
                  "--nframes", "4", "--tid", "cv", "cd", "ad", "-j", "0", str(inputs / "clip.mp4"),
                  str(inputs / "photo.jpg"), "--out", str(out)])
    model = inference_runner(checkpoints["stdnet"], nframes=4)
    frames, _ = read_video(inputs / "clip.mp4")
    expected = np.concatenate([oracle_maps(model, frames[:8], 4), oracle_maps(model, frames[6:], 4)[2:]])
    stream = Predictor(model, ModelInput(SIZE, video=True, nframes=4)).video(iter(frames))
    np.testing.assert_array_equal(np.stack(list(stream)), expected)
    maps, fps = read_video(out / "clip.mp4")
    np.testing.assert_array_equal(np.stack(maps), through_codec(expected, fps, tmp_path / "x.mp4"))
    photo = read_rgb(inputs / "photo.jpg")
    np.testing.assert_array_equal(cv2.imread(str(out / "photo.png"), cv2.IMREAD_UNCHANGED),
                                  oracle_maps(model, [photo] * 4, 4)[-1])


def test_a_photo_is_turned_upright_by_its_exif_orientation(tmp_path: Path, checkpoints) -> None:
    """A phone photo stored sideways with EXIF orientation 6 (and a .webp / .tiff in a folder) gives, byte for
    byte, the map and overlay of the same photo stored upright."""
    from PIL import Image

    rng = np.random.default_rng(4)
    upright_rgb = rng.integers(0, 255, size=(56, 40, 3), dtype=np.uint8)
    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(upright_rgb).save(folder / "upright.png")
    stored = Image.fromarray(np.ascontiguousarray(np.rot90(upright_rgb, 1)))  # shown upright after 90 degrees CW
    exif = stored.getexif()
    exif[0x0112] = 6
    stored.save(folder / "sideways.png", exif=exif)
    Image.fromarray(upright_rgb).save(folder / "lossless.webp", lossless=True)
    Image.fromarray(upright_rgb).save(folder / "scan.tiff")
    out = tmp_path / "out"
    predict.main(["--checkpoint", str(checkpoints["sdnet"]), "--size", str(SIZE), "-j", "0", "--overlay",
                  str(folder), "--out", str(out)])
    expected = (out / "in" / "upright.png").read_bytes()
    assert cv2.imread(str(out / "in" / "upright.png"), cv2.IMREAD_UNCHANGED).shape == (56, 40)
    for name in ("sideways", "lossless", "scan"):
        assert (out / "in" / f"{name}.png").read_bytes() == expected
    assert (out / "in" / "sideways_overlay.jpg").read_bytes() == (out / "in" / "upright_overlay.jpg").read_bytes()


@pytest.mark.parametrize("model", ["sdnet", "stdnet"])
def test_a_one_frame_video_gives_its_map(tmp_path: Path, checkpoints, model: str) -> None:
    """One frame: an image model's map of it, a video model's of the clip of 4 copies (its ping-pong padding)."""
    write_video(tmp_path / "one.mp4", frames=1)
    out = tmp_path / "out"
    flags = ["--nframes", "4", "--tid", "cv", "cd", "ad"] if model == "stdnet" else []
    predict.main(["--checkpoint", str(checkpoints[model]), "--size", str(SIZE), *flags, "-j", "0",
                  str(tmp_path / "one.mp4"), "--out", str(out)])
    frames, fps = read_video(tmp_path / "one.mp4")
    runner = inference_runner(checkpoints[model], **({"nframes": 4} if model == "stdnet" else {}))
    expected = oracle_maps(runner, frames * 4, 4)[-1:] if model == "stdnet" else oracle_maps(runner, frames)
    maps, _ = read_video(out / "one.mp4")
    assert len(frames) == len(maps) == 1
    np.testing.assert_array_equal(np.stack(maps), through_codec(expected, fps, tmp_path / "x.mp4"))


def test_map_videos_of_odd_sizes_keep_the_pixels_they_can(tmp_path: Path) -> None:
    """An odd height or width loses its last row or column (4:2:0 needs even sizes), the rest aligned; frames
    under 2 x 4 pixels are a one-line error and leave nothing."""
    rng = np.random.default_rng(5)
    maps = rng.integers(0, 256, size=(3, 47, 81), dtype=np.uint8)
    assert write_map_video(tmp_path / "odd.mp4", iter(maps), 10.0) == 3
    decoded, _ = read_video(tmp_path / "odd.mp4")
    np.testing.assert_array_equal(np.stack(decoded), through_codec(maps[:, :46, :80], 10.0, tmp_path / "x.mp4"))
    for thin in (maps[:, :, :1], maps[:, :3]):  # 1 column; 3 rows, 2 once even, and x264 takes 4 at least
        with pytest.raises(DataError, match=r"too small to encode \(2 x 4 at least\)"):
            write_map_video(tmp_path / "thin.mp4", iter(thin), 10.0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["odd.mp4", "x.mp4"]


@pytest.mark.parametrize(("count", "clips"), [
    (8, [([0, 1, 2, 3], [0, 1, 2, 3]), ([4, 5, 6, 7], [0, 1, 2, 3])]),
    (6, [([0, 1, 2, 3], [0, 1, 2, 3]), ([2, 3, 4, 5], [2, 3])]),
    (3, [([0, 1, 2, 1], [0, 3, 2])]),
    (1, [([0, 0, 0, 0], [3])]),
])
def test_stream_clips_and_tail(count: int, clips: list) -> None:
    """Every frame gets exactly one map, in order, from the clips design §6.3 would build for a stream (rate 1): the
    kept positions of the clips, in order, name each frame once."""
    groups = list(clip_groups(iter(range(count)), 4))
    assert groups == clips
    assert [clip[position] for clip, keep in groups for position in keep] == list(range(count))
    assert [list(map(int, clip)) for clip, _ in clip_groups(iter(range(count)), 1)] == [[t] for t in range(count)]


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


def test_an_unreadable_video_is_refused_and_the_others_are_written(inputs: Path, tmp_path: Path, checkpoints,
                                                                   capsys) -> None:
    bad = inputs / "bad.mov"
    bad.write_bytes(b"\x00\x00\x00\x18ftypqt  garbage")
    err = run_failing(["--model", "sdnet", "--checkpoint", str(checkpoints["sdnet"]), str(inputs / "photo.jpg"),
                       str(bad), "--size", str(SIZE), "--out", str(tmp_path / "out")], capsys, status=1)
    assert f"ERROR cannot read video {bad} (corrupt, cut short, empty or unsupported format)" in err
    assert "ERROR 1 of 2 inputs refused or incomplete (listed above); every other map was written" in err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["photo.png"]


def test_missing_input_and_wrong_checkpoint_are_one_line_errors(inputs: Path, tmp_path: Path, checkpoints,
                                                                capsys) -> None:
    err = run_failing(["--model", "sdnet", "--checkpoint", str(checkpoints["sdnet"]), str(inputs / "nope.jpg"),
                       "--out", str(tmp_path / "out")], capsys)
    assert "nope.jpg" in err
    err = run_failing(["--model", "sdnet", "--checkpoint", str(checkpoints["stdnet"]), str(inputs / "photo.jpg"),
                       "--out", str(tmp_path / "out")], capsys)
    assert f"--model sdnet contradicts {checkpoints['stdnet']}, which has model stdnet" in err
    assert not (tmp_path / "out").exists()


SDNETA_RELEASE = REFERENCE / "checkpoints" / "sdneta_from_pretrained.pth"


@pytest.mark.skipif(not SDNETA_RELEASE.is_file(), reason=f"reference checkpoint absent: {SDNETA_RELEASE}")
def test_released_sdneta_needs_no_model_flags(inputs: Path, tmp_path: Path) -> None:
    """The issue's command: --checkpoint, inputs, --out; model, BN and op table come from the file and give the
    maps the explicit flags give."""
    photo = str(inputs / "photo.jpg")
    predict.main(["--checkpoint", str(SDNETA_RELEASE), photo, "--out", str(tmp_path / "bare"), "--size", "64"])
    predict.main(["--checkpoint", str(SDNETA_RELEASE), photo, "--out", str(tmp_path / "flags"), "--size", "64",
                  "--model", "sdneta", "--bn", "--train-config", "sdnet-a"])
    bare, flagged = (cv2.imread(str(tmp_path / name / "photo.png"), -1) for name in ("bare", "flags"))
    assert bare.shape == (40, 56) and bare.max() > bare.min()
    np.testing.assert_array_equal(bare, flagged)


@pytest.fixture(scope="module")
def converted_stdnet(checkpoints, tmp_path_factory) -> Path:
    """Our converted STDNet (convert.py, 8 frames) of the random raw checkpoint."""
    import convert

    out = tmp_path_factory.mktemp("converted") / "stdnet_converted.pth"
    convert.main(["--checkpoint", str(checkpoints["stdnet"]), "--out", str(out)])
    return out


@pytest.mark.parametrize(("which", "flags", "message"), [
    ("sdnet", ["--model", "sdneta"], "--model sdneta contradicts {}, which has model sdnet"),
    ("sdnet", ["--bn"], "--bn contradicts {}, which has bn False"),
    ("sdnet", ["--train-config", "sdnet-a"], "--train-config sdnet-a contradicts {}, which has config sdnet"),
    ("stdnet", ["--tid", "cv"], "--tid cv contradicts {}, which has tid cv cd ad"),
    ("stdnet", ["--nobn"], "--nobn contradicts {}, which has bn True"),
    ("converted", ["--nframes", "4"], "--nframes 4 contradicts {}, which has nframes 8"),
    ("converted", ["--inference-config", "sdnet"], "--inference-config sdnet contradicts {}, which is already"),
])
def test_a_flag_contradicting_the_checkpoint_is_a_one_line_error(which, flags, message, inputs, tmp_path, checkpoints,
                                                                 converted_stdnet, capsys) -> None:
    checkpoint = converted_stdnet if which == "converted" else checkpoints[which]
    err = run_failing(["--checkpoint", str(checkpoint), str(inputs / "photo.jpg"), "--out", str(tmp_path / "out"),
                       *flags], capsys)
    assert message.format(checkpoint) in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_the_same_bytes_on_an_idle_and_a_busy_machine(inputs: Path, tmp_path: Path, checkpoints,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The default CPU path (OpenVINO, two streams of one thread) writes the same files with one busy loop per core
    beside it, and the same as one pass at a time (one thread)."""
    import subprocess
    import sys

    from engine.inference.backends.openvino import OpenVINOBackend

    streams = []
    prepare = OpenVINOBackend.prepare

    def spy(self, shape, count):
        streams.append(count)
        return prepare(self, shape, count)

    monkeypatch.setattr(OpenVINOBackend, "prepare", spy)

    def run(out: Path, threads: int) -> dict[str, bytes]:
        predict.main(["--model", "stdnet", "--checkpoint", str(checkpoints["stdnet"]), "--size", str(SIZE),
                      "--nframes", "4", "--tid", "cv", "cd", "ad", "-j", "0", "--threads", str(threads), "--no-cache",
                      str(inputs), "--out", str(out)])
        return {str(path.relative_to(out)): path.read_bytes() for path in sorted(out.rglob("*")) if path.is_file()}

    idle = run(tmp_path / "idle", 2)
    assert set(streams) == {2}  # every network with two streams: several inputs in flight
    loops = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(os.cpu_count() or 1)]
    try:
        busy = run(tmp_path / "busy", 2)
    finally:
        for loop in loops:
            loop.kill()
            loop.wait()
    assert len(idle) == 4 and busy == idle  # photo, x, y and the video
    streams.clear()
    assert run(tmp_path / "one", 1) == idle and set(streams) == {1}


def test_a_line_logged_while_a_progress_bar_runs_never_splits_it() -> None:
    """The scripts' console handler writes above the bars (tqdm.write): the bar is cleared first, so the logged line
    starts a line of its own and the bar is not left drawn twice (issue 30)."""
    import io

    from tqdm import tqdm

    stream = io.StringIO()
    logger = utils.setup_logger()
    logger.handlers[0].setStream(stream)
    with tqdm(total=2, file=stream, ascii=True) as bar:
        bar.update()
        logger.info("network compiled")
        bar.update()
    logged = next(line for line in stream.getvalue().split("\n") if "network compiled" in line)
    assert re.fullmatch(r"\d\d:\d\d:\d\d INFO network compiled", logged.split("\r")[-1])
    utils.setup_logger()


@pytest.mark.parametrize("model", ["sdnet", "stdnet"])
def test_the_predictor_takes_bytes_files_and_arrays_alike(inputs: Path, tmp_path: Path, checkpoints,
                                                          model: str) -> None:
    """One image as a file's path, its bytes or its RGB array: the same map, the one predict.py writes; a video
    model's is the last map of a still clip of --nframes copies; the files are predict.py's bytes."""
    import predict

    kind = ["--tid", "cv", "cd", "ad", "--nframes", "4"] if model == "stdnet" else []
    predict.main(["--checkpoint", str(checkpoints[model]), "--size", str(SIZE), *kind, "-j", "0", "--overlay",
                  "--cutout", str(inputs / "photo.jpg"), "--out", str(tmp_path)])
    options = {"nframes": 4, "tid": ("cv", "cd", "ad")} if model == "stdnet" else {}
    predictor = Predictor.from_checkpoint(checkpoints[model], size=SIZE, **options)
    assert predictor.input == ModelInput(SIZE, video=model == "stdnet", nframes=4 if model == "stdnet" else 1)
    photo = inputs / "photo.jpg"
    rgb = read_rgb(photo, orient=True)
    maps = [predictor.map_of(photo), predictor.map_of(photo.read_bytes()), predictor.map_of(rgb)]
    written = cv2.imread(str(tmp_path / "photo.png"), cv2.IMREAD_UNCHANGED)
    assert all(np.array_equal(m, written) for m in maps)
    files = predictor.files(predictor.prepare(photo).rgb, maps[0], ["map", "overlay", "cutout"])
    assert files == {"map": (tmp_path / "photo.png").read_bytes(),
                     "overlay": (tmp_path / "photo_overlay.jpg").read_bytes(),
                     "cutout": (tmp_path / "photo_cutout.png").read_bytes()}


def test_a_fifo_in_a_folder_is_named_and_skipped(inputs: Path, tmp_path: Path, checkpoints, capsys) -> None:
    """A FIFO (or socket, device) in an input folder is never opened (reading one could block for ever): it is
    named in the closing warning as skipped, and every image's map is written."""
    fifo = inputs / "album" / "pipe.png"
    os.mkfifo(fifo)
    out = tmp_path / "out"
    predict.main(["--checkpoint", str(checkpoints["sdnet"]), "--size", str(SIZE), "-j", "0", str(inputs / "album"),
                  "--out", str(out)])
    assert f"{fifo} (not a regular file)" in capsys.readouterr().err
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*.png")) == ["album/nested/y.png", "album/x.png"]


def test_a_video_cut_short_says_what_its_header_declares(tmp_path: Path, checkpoints, capsys) -> None:
    """An AVI cut in half: the maps of the frames that can be read are written, and the error line says how many
    frames the header declares and how many were read (not a count of the frames read alone); exit 1."""
    whole, cut = tmp_path / "whole.avi", tmp_path / "cut.avi"
    writer = cv2.VideoWriter(str(whole), cv2.VideoWriter_fourcc(*"MJPG"), 12, (80, 48))
    rng = np.random.default_rng(0)
    for _ in range(60):
        writer.write(rng.integers(0, 255, (48, 80, 3), dtype=np.uint8))
    writer.release()
    data = whole.read_bytes()
    cut.write_bytes(data[:len(data) // 2])
    out = tmp_path / "out"
    err = run_failing(["--checkpoint", str(checkpoints["sdnet"]), "--size", str(SIZE), str(cut), "--out", str(out)],
                      capsys, status=1)
    maps, _ = read_video(out / "cut.mp4")
    assert 0 < len(maps) < 60
    assert f"{cut}: cut short: its header declares 60 frames, {len(maps)} could be read" in err


def test_out_at_or_above_an_input_folder(tmp_path: Path, checkpoints, capsys) -> None:
    """--out at an input folder's parent writes the maps beside the photos; a second run (with --overlay) reads the
    photos and names the maps of the first as skipped, not inputs; --out equal to the folder writes into its
    subfolder of the folder's name, which later runs leave out (named); a named file is always read, and a map that
    would overwrite its input, or a folder with nothing but our outputs, is refused in one line that says so."""
    photos = tmp_path / "photos"
    (photos / "sub").mkdir(parents=True)
    rng = np.random.default_rng(2)
    for name, shape in (("a.jpg", (40, 50)), ("sub/b.jpg", (30, 20))):
        assert cv2.imwrite(str(photos / name), rng.integers(0, 255, (*shape, 3), dtype=np.uint8))
    run = ["--checkpoint", str(checkpoints["sdnet"]), "--size", str(SIZE), "-j", "0"]
    predict.main([*run, str(photos), "--out", str(tmp_path)])
    first = {name: (photos / name).read_bytes() for name in ("a.png", "sub/b.png")}
    capsys.readouterr()
    predict.main([*run, str(photos), "--out", str(tmp_path), "--overlay"])
    assert (f"skipped 2 entries of the input folders: {photos / 'a.png'} (the map of {photos / 'a.jpg'}, from an "
            f"earlier run: not an input); {photos / 'sub/b.png'} (the map of {photos / 'sub/b.jpg'}, from an earlier "
            "run: not an input)") in capsys.readouterr().err
    assert all((photos / name).read_bytes() == data for name, data in first.items())
    assert sorted(str(p.relative_to(photos)) for p in photos.rglob("*")) == [
        "a.jpg", "a.png", "a_overlay.jpg", "sub", "sub/b.jpg", "sub/b.png", "sub/b_overlay.jpg"]

    for path in [*photos.rglob("*.png"), *photos.rglob("*_overlay.jpg")]:
        path.unlink()
    for _ in range(2):
        predict.main([*run, str(photos), "--out", str(photos)])
    assert f"{photos / 'photos'} (the maps of {photos} are written there)" in capsys.readouterr().err
    assert (photos / "photos" / "a.png").read_bytes() == first["a.png"]

    with pytest.raises(SystemExit) as refused:
        predict.main([*run, str(photos / "photos" / "a.png"), "--out", str(photos / "photos")])
    assert refused.value.code == 2
    assert capsys.readouterr().err.strip().endswith(
        f"--out {photos / 'photos'}: the map of {photos / 'photos' / 'a.png'} would overwrite the input "
        f"{photos / 'photos' / 'a.png'} (choose another --out)")
    only_maps = tmp_path / "maps"
    (only_maps / "maps").mkdir(parents=True)
    shutil.copy(photos / "photos" / "a.png", only_maps / "maps")
    with pytest.raises(SystemExit):
        predict.main([*run, str(only_maps), "--out", str(only_maps)])
    assert capsys.readouterr().err.strip().endswith(
        f"input {only_maps}: a folder with no image (.jpg/.jpeg/.png/.bmp/.webp/.tif/.tiff) or video (.mp4/.avi/.mov) "
        f"in it but what predict.py writes: {only_maps / 'maps'} (the maps of {only_maps} are written there)")
