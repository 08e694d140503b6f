"""export_onnx.py: the exported converted model equals PyTorch's within 1e-4 (onnxruntime, CPU)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import export_onnx
import utils
from models import build_model

onnx = pytest.importorskip("onnx")
onnxruntime = pytest.importorskip("onnxruntime")

SIZE = 64


@pytest.mark.parametrize(("name", "channels", "frames"), [("sdnet", 3, 1), ("stdnet", 24, 8)])
def test_onnx_output_equals_pytorch(name: str, channels: int, frames: int, tmp_path: Path) -> None:
    torch.manual_seed(0)
    training = build_model(name, bn=name == "stdnet")
    # Non-trivial BN statistics, so that a wrong fold of the BN layers into the exported convs would show.
    for module in training.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 1.5)
    checkpoint = tmp_path / f"{name}.pth"
    torch.save({"state_dict": training.state_dict()}, checkpoint)
    out = tmp_path / f"{name}.onnx"
    export_onnx.main(["--model", name, "--train-config", "sdnet", "--evaluate", str(checkpoint), "--size", str(SIZE),
                      "--out", str(out)])
    graph = onnx.load(str(out))
    onnx.checker.check_model(graph)
    assert max(o.version for o in graph.opset_import if o.domain in ("", "ai.onnx")) >= 17
    assert [i.name for i in graph.graph.input] == ["image"] and [o.name for o in graph.graph.output] == ["saliency"]
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1  # the test machine's cores are shared
    session = onnxruntime.InferenceSession(str(out), options, providers=["CPUExecutionProvider"])
    image = torch.randn(1, channels, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    (exported,) = session.run(None, {"image": image.numpy()})
    with torch.no_grad():
        converted = utils.build_inference_model(name, checkpoint)(image)
        trained = training.eval()(image)
    assert exported.shape == (frames, 1, SIZE, SIZE)
    np.testing.assert_allclose(exported, converted.numpy(), rtol=0, atol=1e-4)
    np.testing.assert_allclose(exported, trained.numpy(), rtol=0, atol=1e-4)


def test_export_refuses_old_opsets(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exit_info:
        export_onnx.main(["--evaluate", str(tmp_path / "x.pth"), "--out", str(tmp_path / "x.onnx"), "--opset", "13"])
    assert exit_info.value.code == 2
