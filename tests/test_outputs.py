"""An output that cannot be written (under a file, or a file where a folder is expected) is a one-line error naming
its flag, before any work and with nothing written, for every script that writes."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import torch

from data.atomic import unwritable
from models import build_model


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("checkpoint") / "sdnet.pth"
    torch.manual_seed(0)
    torch.save(build_model("sdnet").state_dict(), path)
    return path


# (module, its main's arguments with {ck} the checkpoint, {dir} an existing folder, {bad} a path below a file)
COMMANDS = [
    ("predict", ["--checkpoint", "{ck}", "--out", "{bad}", "{ck}"], "--out"),
    ("generate_salmaps_sod", ["--evaluate", "{ck}", "--datadir", "{dir}", "--testdata", "X", "--savedir", "{bad}"],
     "--savedir"),
    ("generate_salmaps_vsod", ["--evaluate", "{ck}", "--datadir", "{dir}", "--testdata", "X", "--savedir", "{bad}"],
     "--savedir"),
    ("convert", ["--checkpoint", "{ck}", "--out", "{bad}/sdnet.pth"], "--out"),
    ("export_onnx", ["--checkpoint", "{ck}", "--out", "{bad}/sdnet.onnx"], "--out"),
    ("speed_sod", ["--model", "sdnet", "--size", "32", "--json", "{bad}/speed.json"], "--json"),
    ("engine.hub", ["download", "sdnet_from_scratch", "--out", "{bad}"], "--out"),
    ("train_sod", ["--datadir", "{dir}", "--savedir", "{bad}"], "--savedir"),
    ("Evaluation.__main__", ["compare", "--testdata", "X", "--results-dir", "{dir}", "--out", "{bad}", "exp"],
     "--out"),
]


@pytest.mark.parametrize(("module", "argv", "flag"), COMMANDS, ids=[c[0] for c in COMMANDS])
def test_an_output_below_a_file_is_a_one_line_error(module: str, argv: list[str], flag: str, tmp_path: Path,
                                                    checkpoint: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "a_file").write_bytes(b"")
    bad = tmp_path / "a_file" / "out"
    names = {"ck": str(checkpoint), "dir": str(tmp_path / "data"), "bad": str(bad)}
    with pytest.raises(SystemExit) as exit_:
        importlib.import_module(module).main([arg.format(**names) for arg in argv])
    assert exit_.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "ERROR" in line or "error" in line]
    assert len(errors) == 1 and flag in errors[0] and "is not a folder" in errors[0], errors
    assert sorted(path.name for path in tmp_path.rglob("*")) == ["a_file", "data"]


def test_unwritable_says_why_and_creates_nothing(tmp_path: Path) -> None:
    (tmp_path / "a_file").write_bytes(b"")
    assert unwritable(tmp_path / "new" / "deeper", folder=True) is None
    assert unwritable(tmp_path / "new" / "x.pth", folder=False) is None
    assert unwritable(tmp_path / "a_file", folder=False) is None  # replaced atomically
    assert unwritable(tmp_path / "a_file", folder=True) == f"{tmp_path / 'a_file'} is not a folder"
    assert unwritable(tmp_path / "a_file" / "x.pth", folder=False) == f"{tmp_path / 'a_file'} is not a folder"
    assert unwritable(tmp_path, folder=False) == "is a folder, not a file"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["a_file"]


def test_a_write_failing_mid_run_is_a_one_line_error(tmp_path: Path, checkpoint: Path,
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture) -> None:
    import errno

    import cv2
    import numpy as np

    import predict

    def full_disk(path, payload, **options):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    assert cv2.imwrite(str(tmp_path / "photo.png"), np.zeros((20, 30, 3), np.uint8))
    monkeypatch.setattr(predict, "write_bytes_atomic", full_disk)
    with pytest.raises(SystemExit) as exit_:
        predict.main(["--checkpoint", str(checkpoint), "--size", "32", "-j", "0", "--backend", "eager",
                      str(tmp_path / "photo.png"), "--out", str(tmp_path / "maps")])
    assert exit_.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "ERROR" in line]
    assert len(errors) == 1 and "No space left on device" in errors[0] and "--out" in errors[0], errors
