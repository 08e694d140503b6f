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
