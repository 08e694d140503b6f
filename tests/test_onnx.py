"""export_onnx.py: the exported converted model equals PyTorch's within 1e-4 (onnxruntime, CPU)."""

from __future__ import annotations

from pathlib import Path

import bounds
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from reference import REFERENCE

import export_onnx
from models import load_model

onnx = pytest.importorskip("onnx")
onnxruntime = pytest.importorskip("onnxruntime")

SIZE = 64
# Weights whose maps spread over (0, 1) on real images (the released SDNet; the golden STDNet weights, whose output
# conv was scaled for that), so that an export error cannot hide in a flat map.
CASES = {
    "sdnet": (REFERENCE / "checkpoints" / "sdnet_from_scratch.pth", REFERENCE / "golden" / "sdnet_golden_io.npz"),
    "stdnet": (REFERENCE / "golden" / "stdnet_golden_weights.pth", REFERENCE / "golden" / "stdnet_golden_io.npz"),
}


@pytest.mark.parametrize(("name", "any_size"), [("sdnet", False), ("stdnet", False), ("sdnet", True)])
def test_onnx_output_equals_pytorch(name: str, any_size: bool, tmp_path: Path) -> None:
    checkpoint, golden = CASES[name]
    if not checkpoint.is_file() or not golden.is_file():
        pytest.skip(f"reference data absent: {checkpoint}, {golden}")
    out = tmp_path / f"{name}.onnx"
    # --any-size: traced at another size than the one it then runs
    export_onnx.main(["--checkpoint", str(checkpoint), "--size", str(SIZE + 16 if any_size else SIZE), "--out",
                      str(out), *(["--any-size"] if any_size else [])])
    graph = onnx.load(str(out))
    onnx.checker.check_model(graph)
    assert max(o.version for o in graph.opset_import if o.domain in ("", "ai.onnx")) >= 17
    assert [i.name for i in graph.graph.input] == ["image"] and [o.name for o in graph.graph.output] == ["saliency"]
    # The golden photos / clip (already normalised), reduced to the export size.
    image = F.interpolate(torch.from_numpy(np.load(golden)["input"][:1]), size=(SIZE, SIZE), mode="bilinear",
                          antialias=True)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1  # the test machine's cores are shared
    session = onnxruntime.InferenceSession(str(out), options, providers=["CPUExecutionProvider"])
    (exported,) = session.run(None, {"image": image.numpy()})
    with torch.no_grad():
        converted = load_model(checkpoint)[0](image)
        training = load_model(checkpoint, inference_config="sdnet")[0](image)
    assert exported.shape == (1 if name == "sdnet" else 8, 1, SIZE, SIZE)
    assert exported.max() - exported.min() > 0.5
    np.testing.assert_allclose(exported, converted.numpy(), rtol=0, atol=bounds.MAP_FLOAT32)
    np.testing.assert_allclose(exported, training.numpy(), rtol=0, atol=bounds.MAP_FLOAT32)


def test_export_refuses_old_opsets(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exit_info:
        export_onnx.main(["--checkpoint", str(tmp_path / "x.pth"), "--out", str(tmp_path / "x.onnx"), "--opset", "13"])
    assert exit_info.value.code == 2


def test_export_writes_openvinos_ir_that_openvino_alone_runs(tmp_path: Path) -> None:
    """--format openvino: the .xml and its .bin, read and compiled by OpenVINO (not our code), give the released
    SDNet's PyTorch maps of the golden photos within the float32 bound, at any size with --any-size; an --out that
    is not an .xml is one line, exit 2."""
    checkpoint, golden = CASES["sdnet"]
    if not checkpoint.is_file() or not golden.is_file():
        pytest.skip(f"reference data absent: {checkpoint}, {golden}")
    from engine.inference.backends.openvino import openvino_core  # the process's one Core (see there why)

    out = tmp_path / "ir" / "sdnet.xml"
    export_onnx.main(["--checkpoint", str(checkpoint), "--size", str(SIZE + 16), "--format", "openvino",
                      "--any-size", "--out", str(out)])  # traced at another size than the one it then runs
    assert sorted(path.name for path in out.parent.iterdir()) == ["sdnet.bin", "sdnet.xml"]
    image = F.interpolate(torch.from_numpy(np.load(golden)["input"][:1]), size=(SIZE, SIZE), mode="bilinear",
                          antialias=True)
    compiled = openvino_core().compile_model(str(out), "CPU", {"INFERENCE_PRECISION_HINT": "f32",
                                                               "INFERENCE_NUM_THREADS": 1})
    shipped = compiled([image.numpy()])[0]
    with torch.no_grad():
        expected = load_model(checkpoint)[0](image).numpy()
    assert shipped.shape == (1, 1, SIZE, SIZE) and shipped.max() - shipped.min() > 0.5
    np.testing.assert_allclose(shipped, expected, rtol=0, atol=bounds.MAP_FLOAT32)
    with pytest.raises(SystemExit) as refused:
        export_onnx.main(["--checkpoint", str(checkpoint), "--format", "openvino", "--out", str(tmp_path / "x.onnx")])
    assert refused.value.code == 2 and not (tmp_path / "x.onnx").exists()
