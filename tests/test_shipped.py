"""A shipped file checked as a deployment runs it (`engine.inference.shipped`, export_onnx.py --verify): each format
written by export_onnx.py and loaded by its runtime alone gives the released SDNet's 8-bit maps within 1 grey level;
a truncated file, or an IR without its whole .bin, is one line and exit 2; a file that loads but holds other weights
is one line and exit 1. At 96 pixels, to keep each export to seconds."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
from reference import REFERENCE
from test_bad_input import errors, run_main

import export_onnx
from engine.inference.backends import executorch_available

CHECKPOINT = REFERENCE / "checkpoints" / "sdnet_from_scratch.pth"
FORMATS = {"onnx": "sdnet.onnx", "openvino": "sdnet.xml", "executorch": "sdnet.pte"}


def export(tmp_path: Path, fmt: str) -> Path:
    if not CHECKPOINT.is_file():
        pytest.skip(f"reference data absent: {CHECKPOINT}")
    if fmt == "executorch" and not executorch_available():
        pytest.skip("executorch is not installed (requirements-deploy.txt)")
    out = tmp_path / FORMATS[fmt]
    export_onnx.main(["--checkpoint", str(CHECKPOINT), "--size", "96", "--format", fmt, "--out", str(out)])
    return out


def verify(path: Path, capsys) -> tuple[int, list[str]]:
    return run_main("export_onnx.py", ["--checkpoint", CHECKPOINT, "--size", "96", "--verify", path], capsys)


@pytest.mark.parametrize("fmt", ["onnx", "openvino", pytest.param("executorch", marks=pytest.mark.slow)])
def test_each_shipped_format_gives_the_checkpoints_maps_and_a_damaged_one_is_one_line(tmp_path: Path, fmt: str,
                                                                                     capsys) -> None:
    """The file as written passes --verify (its runtime alone: within 1 grey level of PyTorch's maps on the fixed
    set's 40 gate images); cut to half its bytes (for OpenVINO, its .bin) it is one line naming it, exit 2. (The .pte
export takes 10-20 s: `make test-ci-slow`.)"""
    shipped = export(tmp_path, fmt)
    capsys.readouterr()
    export_onnx.main(["--checkpoint", str(CHECKPOINT), "--size", "96", "--verify", str(shipped)])
    assert f"{shipped} gives the checkpoint's maps within" in capsys.readouterr().err
    damaged = shipped.with_suffix(".bin") if fmt == "openvino" else shipped
    damaged.write_bytes(damaged.read_bytes()[: damaged.stat().st_size // 2])
    status, lines = verify(shipped, capsys)
    [message] = errors(lines)
    assert status == 2 and message.startswith(f"{shipped}: ") and "cannot load it" in message, message


def test_a_file_with_other_weights_is_refused_with_status_1(tmp_path: Path, capsys) -> None:
    """An ONNX file that loads but whose first convolution's weights were doubled: its maps differ from the
    checkpoint's, one line saying by how much, exit 1."""
    shipped = export(tmp_path, "onnx")
    graph = onnx.load(str(shipped))
    weights = max(graph.graph.initializer, key=lambda tensor: len(tensor.dims) == 4)
    array = onnx.numpy_helper.to_array(weights) * 2
    weights.CopyFrom(onnx.numpy_helper.from_array(array, weights.name))
    onnx.save(graph, str(shipped))
    status, lines = verify(shipped, capsys)
    [message] = errors(lines)
    assert status == 1 and "its maps differ from the checkpoint's by up to" in message, message

