"""Careless and hostile input, as commands: each case runs a script in a fresh process and checks its exit status
(README, "Bad input": 0 all written, 1 some inputs refused and the rest written, 2 nothing done), its lines (one per
fault, naming the file or flag, no traceback), that the good inputs' outputs are byte for byte those of a run
without the bad ones, that nothing is half-written, and for the decompression bombs the peak memory."""

from __future__ import annotations

import importlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from test_guard import png

from data.synthetic import SyntheticSizes, generate
from models import build_model

REPO = Path(__file__).resolve().parents[1]
# Runs the command as its only child and prints the child's peak RSS (MiB; grandchildren that were waited for, such
# as DataLoader workers, included) on the last line of stderr.
PEAK_WRAPPER = ("import resource, subprocess, sys; code = subprocess.call(sys.argv[1:]); "
                "sys.stderr.write(f'\\npeak {resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024:.0f}\\n'); "
                "sys.exit(code)")


def run(*args: str | Path, cwd: Path = REPO, env: dict | None = None) -> tuple[int, list[str], float]:
    """(exit status, stderr lines without progress bars, peak RSS in MiB) of ``python args...``."""
    environment = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", **(env or {})}
    result = subprocess.run([sys.executable, "-c", PEAK_WRAPPER, sys.executable, *map(str, args)], cwd=cwd,
                            env=environment, capture_output=True, text=True, timeout=300)
    lines = [line.split("\r")[-1] for line in result.stderr.splitlines() if line.split("\r")[-1].strip()]
    assert lines and lines[-1].startswith("peak "), result.stderr
    peak = float(lines.pop().split()[1])
    assert not any("Traceback" in line for line in lines), result.stderr
    return result.returncode, lines, peak


def run_main(script: str, argv: list, capsys) -> tuple[int, list[str]]:
    """(exit status, stderr lines) of ``script``'s main(argv) in this process: for failures found before any model
    runs, where a fresh interpreter would only add seconds (one case of each test also runs as a process)."""
    module = importlib.import_module(script.removesuffix(".py"))
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        module.main([str(arg) for arg in argv])
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert not any("Traceback" in line for line in lines)
    return exit_info.value.code, lines


def errors(lines: list[str]) -> list[str]:
    return [line.split(" ERROR ", 1)[1] for line in lines if " ERROR " in line]


def tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    """data/ (a small synthetic set), sdnet.pth (random weights), good/ (two photos), photo.jpg."""
    root = tmp_path_factory.mktemp("bad_input")
    generate(root / "data", 0, SyntheticSizes(sod_train=6, sod_test=3, video_train=1, video_test=1, min_frames=10,
                                              max_frames=10), workers=0)
    torch.manual_seed(0)
    torch.save(build_model("sdnet").state_dict(), root / "sdnet.pth")
    images = sorted((root / "data" / "sod" / "SYN-TE" / "images").iterdir())
    (root / "good").mkdir()
    for image in images[:2]:
        shutil.copy(image, root / "good" / image.name)
    shutil.copy(images[0], root / "photo.jpg")
    return root


def predict(inputs: Path, out: Path, *names: str | Path, flags: tuple[str, ...] = ()) -> tuple[int, list[str], float]:
    return run("predict.py", "--checkpoint", inputs / "sdnet.pth", "--size", "64", "--out", out, *flags, *names)


@pytest.mark.slow  # 8 s, .ci/run runs it; test_a_bomb_in_a_test_set_costs_its_own_map_only is the default set's
def test_bombs_and_broken_files_in_a_folder_cost_one_line_each(inputs: Path, tmp_path: Path) -> None:
    """The issue's bombs (a header claiming 60000 x 60000 in a few KB; a real 20000 x 20000 PNG of 400 MB pixels in
    under 1 MB), a truncated JPEG, an empty file, a GIF, a text file, a symlink loop and an empty folder beside two
    good photos: the photos' maps are those of a run without the rest, every bad file named, exit 1, and the peak
    memory that of the good run."""
    clean_status, _, clean_peak = predict(inputs, tmp_path / "clean", inputs / "good")
    assert clean_status == 0
    folder = tmp_path / "good"
    shutil.copytree(inputs / "good", folder)
    (folder / "bomb.png").write_bytes(png(60000, 60000, rows=1))
    (folder / "huge.png").write_bytes(png(20000, 20000))
    photo = (inputs / "photo.jpg").read_bytes()
    (folder / "cut.jpg").write_bytes(photo[:len(photo) // 2])
    (folder / "empty.png").write_bytes(b"")
    (folder / "anim.gif").write_bytes(b"GIF89a" + bytes(30))
    (folder / "notes.txt").write_text("not an image")
    (folder / "loop.jpg").symlink_to(folder / "loop.jpg")
    (folder / "nothing").mkdir()
    status, lines, peak = predict(inputs, tmp_path / "out", folder)
    assert status == 1
    assert sorted(errors(lines)[:-1]) == sorted([
        f"cannot read {folder / 'cut.jpg'}: truncated JPEG file (its data ends early)",
        f"empty file {folder / 'empty.png'} (0 bytes)",
        f"refused {folder / 'bomb.png'}: PNG of 60000x60000 = 3600.0 megapixels is over the cap of 64 "
        "(--max-megapixels raises it)",
        f"refused {folder / 'huge.png'}: PNG of 20000x20000 = 400.0 megapixels is over the cap of 64 "
        "(--max-megapixels raises it)"])
    assert errors(lines)[-1] == "4 of 6 inputs refused or incomplete (listed above); every other map was written"
    warning = next(line for line in lines if "WARNING skipped" in line)
    for skipped in (f"{folder / 'anim.gif'} (not an image", f"{folder / 'notes.txt'} (not an image",
                    f"{folder / 'loop.jpg'} (symbolic link loop)", f"{folder / 'nothing'} (empty folder)"):
        assert skipped in warning
    assert tree(tmp_path / "out") == tree(tmp_path / "clean")
    assert peak < clean_peak + 64, (peak, clean_peak)


def test_a_named_input_that_is_no_file_is_one_line(inputs: Path, tmp_path: Path, capsys,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    dashed = tmp_path / "-dash.jpg"
    shutil.copy(inputs / "photo.jpg", dashed)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "dir.jpg").mkdir()
    (tmp_path / "loop.png").symlink_to(tmp_path / "loop.png")
    cases = {
        (str(dashed.name),): f"predict.py: error: {dashed.name} names a file but starts with '-', so it reads as a "
                             f"flag: put -- before such inputs (e.g. predict.py [flags] -- {dashed.name}) (--help "
                             "lists the flags)",
        (str(tmp_path / "dir.jpg"),): f"input {tmp_path / 'dir.jpg'}: a folder with no image "
                                      "(.jpg/.jpeg/.png/.bmp/.webp/.tif/.tiff) or video (.mp4/.avi/.mov) in it",
        (str(tmp_path / "loop.png"),): f"input {tmp_path / 'loop.png'}: symbolic link loop",
        (str(tmp_path / "none.jpg"),): f"input {tmp_path / 'none.jpg'}: no such file or folder",
    }
    for index, (names, message) in enumerate(cases.items()):
        argv = ["--checkpoint", inputs / "sdnet.pth", "--out", tmp_path / "out", *names]
        if index == 0:
            status, lines, _ = run(REPO / "predict.py", *argv, cwd=tmp_path)
        else:
            status, lines = run_main("predict.py", argv, capsys)
        assert status == 2 and len(lines) == 1 and lines[0].endswith(message), (names, lines)
    assert not (tmp_path / "out").exists()
    status, _, _ = run(REPO / "predict.py", "--checkpoint", inputs / "sdnet.pth", "--size", "64", "--out",
                       tmp_path / "out", "--", dashed.name, cwd=tmp_path)
    assert status == 0 and (tmp_path / "out" / "-dash.png").is_file()


def test_checkpoints_that_are_no_checkpoint_are_named(inputs: Path, tmp_path: Path, capsys) -> None:
    full = (inputs / "sdnet.pth").read_bytes()
    cases = {"text.pth": (b"hello\n", "not a checkpoint: a text file"),
             "page.pth": (b"<!DOCTYPE html><html>404</html>", "not a checkpoint: a text file (an HTML page: a "
                                                              "download that failed?)"),
             "empty.pth": (b"", "not a checkpoint: an empty file (0 bytes)"),
             "cut.pth": (full[:len(full) // 2], "not a checkpoint: a zip archive cut short (no central directory: "
                                                "an incomplete download or copy?)")}
    for index, (name, (content, message)) in enumerate(cases.items()):
        (tmp_path / name).write_bytes(content)
        argv = ["--checkpoint", tmp_path / name, "--out", tmp_path / "out", inputs / "photo.jpg"]
        status, lines = run("predict.py", *argv)[:2] if index == 0 else run_main("predict.py", argv, capsys)
        assert status == 2 and len(lines) == 1 and lines[0].endswith(f"{tmp_path / name}: {message}"), lines
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("script", "flags", "message"), [
    ("predict.py", ["--size", "1"], "argument --size: must be at least 16 pixels (the smallest input every model "
                                    "accepts), got 1"),
    ("predict.py", ["--size", "8"], "argument --size: must be at least 16 pixels"),
    ("predict.py", ["--max-megapixels", "0"], "argument --max-megapixels: must be above 0 and at most 10000, got 0"),
    ("export_onnx.py", ["--size", "1"], "argument --size: must be at least 16 pixels"),
    ("train_sod.py", ["--size", "1"], "argument --size: must be at least 16 pixels"),
    ("train_sod.py", ["--pass-scales", "0"], "argument --pass-scales: must be at least 0.25 and at most 4, got 0"),
    ("train_sod.py", ["--pass-scales", "1", "64"], "argument --pass-scales: must be at least 0.25 and at most 4, "
                                                   "got 64"),
    ("train_sod.py", ["--max-steps", "-1"], "argument --max-steps: must be at least 0, got -1"),
    ("train_sod.py", ["--lr", "-1"], "argument --lr: must be above 0 and at most 1, got -1"),
    ("train_sod.py", ["--lr", "nan"], "argument --lr: must be above 0 and at most 1, got nan"),
    ("train_sod.py", ["--lr-steps", "0-x"], "argument --lr-steps: expected epochs (1 to 100000) joined by '-'"),
    ("train_vsod.py", ["--framegap", "0"], "argument --framegap: must be above 0 and at most 1000, got 0"),
    ("train_vsod.py", ["--epochs", "0"], "argument --epochs: must be at least 1, got 0"),
])
def test_numeric_flags_are_checked_where_they_are_parsed(script: str, flags: list[str], message: str,
                                                         tmp_path: Path, capsys,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", [script])
    extra = ["--checkpoint", "x.pth", "--out", str(tmp_path / "o")] if script in ("predict.py", "export_onnx.py") \
        else ["--savedir", str(tmp_path / "o")]
    argv = [*extra, *flags, *(["photo.jpg"] if script == "predict.py" else [])]
    # argparse names the program after sys.argv[0], which a process run sets to the script
    status, lines = run(script, *argv)[:2] if flags == ["--size", "1"] and script == "predict.py" else \
        run_main(script, argv, capsys)
    assert status == 2 and len(lines) == 1 and message in lines[0], lines
    assert lines[0].startswith(f"{script}: error: ") and not (tmp_path / "o").exists()


def test_training_data_is_checked_before_anything_is_written(inputs: Path, tmp_path: Path, capsys) -> None:
    data = tmp_path / "sod"
    shutil.copytree(inputs / "data" / "sod" / "SYN-TR", data / "BAD")
    images = sorted((data / "BAD" / "images").iterdir())
    (images[0]).write_bytes(b"")
    cv2.imwrite(str(data / "BAD" / "GT" / f"{images[1].stem}.png"), np.zeros((10, 10), np.uint8))
    shutil.copy(images[2], data / "BAD" / "GT" / f"{images[2].stem}.png")  # a photo saved as GT
    cv2.imwrite(str(data / "BAD" / "GT" / f"{images[2].stem}.png"), cv2.imread(str(images[2])))
    flags = ("train_sod.py", "--datadir", data, "--train-data", "BAD", "--val-data", "", "--size", "32",
             "--epochs", "1", "--batch-size", "2", "-j", "0", "--max-steps", "1", "--savedir", tmp_path / "run")
    status, lines, _ = run(*flags)
    assert status == 2 and not (tmp_path / "run").exists()
    assert errors(lines) == [
        f"empty file {images[0]} (0 bytes)",
        f"GT size 10x10 differs from image size {cv2.imread(str(images[1])).shape[0]}x"
        f"{cv2.imread(str(images[1])).shape[1]}: {images[1]} / {data / 'BAD' / 'GT' / (images[1].stem + '.png')}",
        f"GT {data / 'BAD' / 'GT' / (images[2].stem + '.png')} is not a mask: "
        f"{errors(lines)[2].split(' is not a mask: ')[1].split('%')[0]}% of its pixels are grey (between 10% and 90%; "
        "a GT is black and white up to its edges)",
        "--train-data BAD: 3 of 6 training pairs refused (listed above); nothing was written. Fix or remove them, "
        "or train without them with --skip-bad-pairs"]
    import train_sod

    capsys.readouterr()
    train_sod.main([str(flag) for flag in (*flags[1:], "--skip-bad-pairs")])  # in this process: it succeeds
    lines = capsys.readouterr().err.splitlines()
    assert any("WARNING 3 of 6 training pairs refused (listed above): training without them (--skip-bad-pairs): "
               "3 of 6 samples dropped" in line for line in lines)
    assert any("training sdnet (config sdnet, bn False) on cpu: 3 images" in line for line in lines)
    # what the logged loss is, said once; the first step is logged, not only every --print-freq steps
    assert any(line.endswith("INFO loss: class-balanced BCE summed over each image's pixels, per image (the release's "
                             "scale: hundreds to thousands)") for line in lines)
    assert any("epoch 0 @32: step 1/1, loss " in line for line in lines)


def test_pixels_damaged_behind_a_whole_header_stop_training_in_one_line(inputs: Path, tmp_path: Path,
                                                                         capsys) -> None:
    """A training image whose PNG layout is whole (the check reads headers only) but whose compressed pixels are
    damaged: the run stops when it reads it, in one line naming it, exit 1."""
    data = tmp_path / "sod"
    shutil.copytree(inputs / "data" / "sod" / "SYN-TR", data / "TR")
    image = sorted((data / "TR" / "images").iterdir())[0]
    raw = bytearray(cv2.imencode(".png", cv2.imread(str(image)))[1].tobytes())
    start = raw.index(b"IDAT") + 4
    raw[start:start + 6] = b"\xff" * 6  # the zlib stream's first bytes; the chunk layout and its CRC field stay
    image.unlink()
    damaged = image.with_suffix(".png")
    damaged.write_bytes(bytes(raw))
    status, lines = run_main("train_sod.py", ["--datadir", data, "--train-data", "TR", "--val-data", "", "--size",
                                              "32", "--epochs", "1", "--batch-size", "2", "-j", "1", "--savedir",
                                              tmp_path / "run"], capsys)
    assert status == 1
    assert errors(lines) == [f"--train-data TR: cannot decode image file {damaged} (PNG data damaged); the run "
                             "stopped (resume with --resume once it is fixed or gone)"]


def test_a_step_that_cannot_fit_in_memory_is_refused(inputs: Path, tmp_path: Path, capsys) -> None:
    status, lines = run_main("train_sod.py", ["--datadir", inputs / "data" / "sod", "--train-data", "SYN-TR",
                                              "--val-data", "", "--size", "8192", "--savedir", tmp_path / "run"],
                             capsys)
    assert status == 2 and len(lines) == 1 and not (tmp_path / "run").exists()
    assert "--size 8192 / --batch-size 24: a training step at 12288 px with 24 images needs about " in lines[0]
    assert "GiB, more than " in lines[0] and "; lower --batch-size or --size" in lines[0]


def test_a_bad_frame_of_a_video_costs_its_own_map(inputs: Path, tmp_path: Path) -> None:
    writer = cv2.VideoWriter(str(tmp_path / "clip.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 10, (64, 48))
    for t in range(30):
        frame = np.full((48, 64, 3), 8 * t, np.uint8)
        cv2.circle(frame, (10 + t, 20), 8, (255, 0, 0), -1)
        writer.write(frame)
    writer.release()
    data = bytearray((tmp_path / "clip.mp4").read_bytes())
    data[len(data) // 2:len(data) // 2 + 300] = b"\xff" * 300
    (tmp_path / "damaged.mp4").write_bytes(bytes(data))
    status, lines, _ = predict(inputs, tmp_path / "out", tmp_path / "damaged.mp4", inputs / "photo.jpg")
    assert status == 1
    capture = cv2.VideoCapture(str(tmp_path / "out" / "damaged.mp4"))
    maps = []
    while (frame := capture.read())[0]:
        maps.append(frame[1])
    assert len(maps) == 30
    bad = errors(lines)[0]
    assert bad.startswith(f"{tmp_path / 'damaged.mp4'}: 1 of 30 frames could not be decoded (frames ")
    position = int(bad.split("(frames ")[1].split(",")[0])
    assert maps[position].max() <= 8  # black, up to the codec's rounding
    assert errors(lines)[-1] == "1 of 2 inputs refused or incomplete (listed above); every other map was written"
    assert (tmp_path / "out" / "photo.png").is_file()


def test_eval_scripts_say_which_python_and_stop_in_one_line_without_torch(tmp_path: Path) -> None:
    copy = tmp_path / "repo" / "Evaluation"
    copy.mkdir(parents=True)
    for script in ("eval_sod.sh", "eval_vsod.sh", "find_python.sh"):
        shutil.copy(REPO / "Evaluation" / script, copy / script)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python3").write_text(f"#!/bin/sh\nexec {sys.executable} -S \"$@\"\n")  # no site-packages: no torch
    (bin_dir / "python3").chmod(0o755)
    for script in ("eval_sod.sh", "eval_vsod.sh"):
        result = subprocess.run(["bash", str(copy / script), "A", "exp", "data"], capture_output=True, text=True,
                                env={"PATH": f"{bin_dir}:/usr/bin:/bin"})
        assert result.returncode == 2
        assert result.stderr.splitlines() == [
            f"{script}: {bin_dir / 'python3'} (the active environment: no {tmp_path / 'repo'}/.venv) has no torch: "
            f"run 'make venv' in {tmp_path / 'repo'}, or activate an environment with requirements.txt installed"]
    result = subprocess.run(["bash", str(REPO / "Evaluation" / "eval_sod.sh"), "--help"], capture_output=True,
                            text=True)
    python = REPO / ".venv" / "bin" / "python"
    expected = f"eval_sod.sh: using {python} (the project's .venv)" if python.exists() else "eval_sod.sh: using "
    assert result.returncode == 0 and result.stderr.startswith(expected)


def test_a_measure_without_a_value_names_the_file(tmp_path: Path) -> None:
    for name in ("GT", "maps"):
        (tmp_path / "data" / "W" / name).mkdir(parents=True)
    (tmp_path / "results" / "exp").mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "data" / "W" / "GT" / "a.png"), np.full((20, 30), 255, np.uint8))
    cv2.imwrite(str(tmp_path / "data" / "W" / "GT" / "b.png"), np.pad(np.full((10, 10), 255, np.uint8), 5))
    shutil.copytree(tmp_path / "data" / "W" / "GT", tmp_path / "results" / "exp" / "W")
    flags = ("-m", "Evaluation", "sod", "W", "exp", tmp_path / "data", "--results-dir", tmp_path / "results",
             "--metrics", "sifmeasure", "--workers", "0")
    status, lines, _ = run(*flags)
    assert status == 2 and errors(lines) == [
        f"{tmp_path / 'results/exp/W/a.png'}: sifmeasure cannot be computed: the GT's objects cover the whole map "
        "(no background), which has no size-invariant value (PySODMetrics fails on it too) (GT "
        f"{tmp_path / 'data/W/GT/a.png'}); --skip-uncomputable evaluates without such maps"]
    assert not (tmp_path / "results" / "exp" / "metrics_sod.json").exists()
    status, lines, _ = run(*flags, "--skip-uncomputable")
    assert status == 0
    entry = json.loads((tmp_path / "results" / "exp" / "metrics_sod.json").read_text())["W"]
    assert entry["skipped"] == 1 and entry["images"] == 1
    assert any("W: 1 maps left out (--skip-uncomputable, listed above)" in line for line in lines)


def test_degenerate_maps_give_pysodmetrics_values() -> None:
    """1 x 1, 2 x 2, 1 x 3 and constant maps: every summary measure, in float64, equals PySODMetrics (our metric
    oracle) to the suite's 1e-6 (relative 1e-12 for the E-measure's 1/eps = 4.5e15 on 1-pixel maps)."""
    py_sod_metrics = pytest.importorskip("py_sod_metrics")
    import Evaluation

    rng = np.random.default_rng(0)
    cases = [(rng.integers(0, 256, shape, dtype=np.uint8), (rng.random(shape) > 0.5).astype(np.uint8) * 255)
             for shape in [(1, 1), (1, 1), (2, 2), (2, 2), (1, 3)]]
    cases += [(np.full((5, 6), 0, np.uint8), np.full((5, 6), 255, np.uint8)),
              (np.full((5, 6), 255, np.uint8), np.zeros((5, 6), np.uint8)),
              (np.full((5, 6), 128, np.uint8), np.pad(np.full((1, 2), 255, np.uint8), 2))]
    for pred, gt in cases:
        for name in ("MAE", "Fmeasure", "Emeasure", "WeightedFmeasure", "Smeasure"):
            ours, oracle = getattr(Evaluation, name)(dtype=torch.float64), getattr(py_sod_metrics, name)()
            ours.step(pred=pred, gt=gt)
            oracle.step(pred=pred, gt=gt)
            for key, value in oracle.get_results().items():
                mine = ours.get_results()[key]
                for part in (value if isinstance(value, dict) else {"": value}):
                    expected = np.asarray(value[part] if part else value, np.float64)
                    actual = np.asarray(mine[part] if part else mine, np.float64)
                    np.testing.assert_allclose(actual, expected, rtol=1e-12, atol=1e-6, equal_nan=True,
                                               err_msg=f"{name} {key} {part} {pred.shape}")
    one_pixel = Evaluation.Emeasure()
    one_pixel.step(pred=np.full((1, 1), 9, np.uint8), gt=np.full((1, 1), 255, np.uint8))
    assert one_pixel.get_results()["em"]["curve"].max() == 1 / np.finfo(np.float64).eps  # docs/bad_input.md


def test_regenerated_maps_are_never_compared_with_their_old_figures(inputs: Path, tmp_path: Path, capsys) -> None:
    """An experiment's maps regenerated with another model into the same --savedir: compare evaluates them again
    (saying so) and its table holds the new figures, those of a fresh evaluation. (In this process: every step
    succeeds; the commands' own exit paths are tested above.)"""
    import generate_salmaps_sod
    from Evaluation.__main__ import main as evaluation

    torch.manual_seed(1)
    torch.save(build_model("sdnet").state_dict(), tmp_path / "other.pth")
    sod, results = inputs / "data" / "sod", tmp_path / "results"

    def maps(checkpoint: Path, exp: str) -> None:
        generate_salmaps_sod.main([str(arg) for arg in ("--evaluate", checkpoint, "--datadir", sod, "--testdata",
                                                        "SYN-TE", "--savedir", results / exp, "--size", "64", "-j",
                                                        "0")])

    def evaluate(exp: str) -> tuple[dict, str]:
        capsys.readouterr()
        evaluation(["sod", "SYN-TE", exp, str(sod), "--results-dir", str(results), "--workers", "0"])
        return json.loads((results / exp / "metrics_sod.json").read_text())["SYN-TE"], capsys.readouterr().err

    maps(inputs / "sdnet.pth", "exp")
    old = evaluate("exp")[0]
    maps(tmp_path / "other.pth", "fresh")
    fresh = evaluate("fresh")[0]
    maps(tmp_path / "other.pth", "exp")  # regenerated in place, with another model
    capsys.readouterr()
    evaluation(["compare", "exp", "fresh", "--testdata", "SYN-TE", "--results-dir", str(results), "--workers", "0"])
    assert ("evaluating exp on SYN-TE: its maps changed since its figures were computed (the maps changed since "
            "(other bytes))") in capsys.readouterr().err
    new = json.loads((results / "exp" / "metrics_sod.json").read_text())["SYN-TE"]
    assert new["MAE"] == fresh["MAE"] != old["MAE"] and new["source"]["maps"]["sha256"] == fresh["source"]["maps"][
        "sha256"]
    table = (results / "compare" / "compare_sod_pysodmetrics.csv").read_text().splitlines()
    assert table[1].startswith(f"exp,{fresh['MAE']!r},") and table[2].startswith(f"fresh,{fresh['MAE']!r},")
    assert "recomputing" not in evaluate("exp")[1]  # unchanged maps: nothing to say


def test_a_bomb_in_a_test_set_costs_its_own_map_only(inputs: Path, tmp_path: Path) -> None:
    """generate_salmaps_sod.py on a test set holding a 20000 x 20000 PNG (decoded, 400 MB of pixels and 11 GB of
    float64 preprocessing before the guard): refused by its header, the other maps byte for byte, peak memory
    that of the clean run."""
    data = tmp_path / "sod"
    shutil.copytree(inputs / "data" / "sod" / "SYN-TE", data / "TE")
    flags = ("generate_salmaps_sod.py", "--evaluate", inputs / "sdnet.pth", "--datadir", data, "--testdata", "TE",
             "--size", "64", "-j", "1")
    status, _, clean_peak = run(*flags, "--savedir", tmp_path / "clean")
    assert status == 0
    bomb = data / "TE" / "images" / "zz_huge.png"
    bomb.write_bytes(png(20000, 20000))
    status, lines, peak = run(*flags, "--savedir", tmp_path / "out")
    assert status == 1 and errors(lines) == [
        f"refused {bomb}: PNG of 20000x20000 = 400.0 megapixels is over the cap of 64 (--max-megapixels raises it)",
        "1 image(s) refused (listed above); their maps are missing, every other map was written"]
    assert tree(tmp_path / "out") == tree(tmp_path / "clean")
    assert peak < clean_peak + 64, (peak, clean_peak)
