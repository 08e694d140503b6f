"""The "executorch" backend: a .pte program lowered to XNNPACK, run by ExecuTorch's runtime alone, gives the eager
maps (within the float32 bound of tests/bounds.py), through predict.py the released SDNet's maps of real photos
within 1 grey level of PyTorch's; the program is kept in the compiled-network cache and a later run loads it; the
runtime's C++ notes stay off the terminal. Skipped with its reason where requirements-deploy.txt is not installed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import bounds
import cv2
import numpy as np
import pytest
import torch
from reference import REFERENCE
from test_backends import converted
from test_onnxruntime import REAL_PHOTOS, released_sdnet_and_real_photos

import predict
from engine.inference import backends
from engine.inference import runner as inference
from engine.inference.backends import BackendError

REPO = Path(__file__).resolve().parents[1]

needs_executorch = pytest.mark.skipif(not backends.executorch_available(),
                                      reason="executorch absent (pip install -r requirements-deploy.txt)")


@needs_executorch
@pytest.mark.slow  # exporting a program takes 10-20 s: make test-ci-slow runs it in .ci/run
def test_predict_with_executorch_gives_pytorchs_maps_of_real_photos_and_keeps_the_program(
        tmp_path: Path) -> None:
    """The released SDNet on three real photographs (scikit-image's chelsea, coffee and astronaut) at 320: the maps
    through ExecuTorch are within 1 grey level of PyTorch's (--backend eager); the program exported by the first run
    is loaded by the second (the same bytes); no line of the runtime's own reaches the terminal."""
    photos = tmp_path / "photos"
    checkpoint = released_sdnet_and_real_photos(photos)
    cache = tmp_path / "cache"
    predict.main(["--checkpoint", str(checkpoint), "--backend", "eager", "-j", "0", str(photos), "--out",
                  str(tmp_path / "eager")])
    for out in ("cold", "warm"):  # the command as people run it: its terminal is what they see
        done = subprocess.run([sys.executable, "predict.py", "--checkpoint", str(checkpoint), "--backend",
                               "executorch", "-j", "0", "--cache-dir", str(cache), str(photos), "--out",
                               str(tmp_path / out)], cwd=REPO, capture_output=True, text=True, timeout=300,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
        assert done.returncode == 0, done.stderr
        lines = [line for line in done.stderr.replace("\r", "\n").splitlines() if line.strip() and "%|" not in line]
        made = "exported" if out == "cold" else "loaded from the cache"
        assert any(f"executorch fp32 program for input 1x3x320x320 {made} in" in line for line in lines)
        assert all(" INFO " in line for line in lines), lines  # our log lines only: no note of the runtime's
    for name in REAL_PHOTOS:
        eager, cold, warm = (cv2.imread(str(tmp_path / out / "photos" / f"{name}.png"), cv2.IMREAD_UNCHANGED)
                             for out in ("eager", "cold", "warm"))
        assert np.array_equal(cold, warm) and eager.shape == cold.shape
        assert np.abs(eager.astype(int) - cold).max() <= 1, name


@needs_executorch
@pytest.mark.parametrize(("name", "shape"), [  # SDNet's small program is the default set's parity test of the runtime
    ("sdnet", (1, 3, 32, 40)), pytest.param("sdneta", (1, 3, 64, 64), marks=pytest.mark.slow),
    pytest.param("stdnet", (1, 24, 32, 48), marks=pytest.mark.slow)])
def test_executorch_gives_the_eager_converted_maps(name: str, shape: tuple[int, ...]) -> None:
    model = converted(name)
    x = torch.randn(shape)
    runtime = inference.prepare_for_inference(model, "cpu", backend="executorch")
    assert runtime.path == "executorch+fp32"
    maps = runtime(x)
    torch.testing.assert_close(maps, inference.prepare_for_inference(model, "cpu", backend="eager")(x),
                               atol=bounds.MAP_FLOAT32, rtol=0)
    assert torch.equal(runtime(x), maps)


def test_executorch_is_chosen_on_request_only(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda", 0)
    with pytest.raises(BackendError, match="^--backend executorch runs on the CPU: leave out --gpu$"):
        backends.choose_backend(cuda, "executorch")
    with pytest.raises(BackendError, match="--precision bf16 runs on the CPU with the openvino backend, not "
                                           "--backend executorch"):
        backends.choose_backend(cpu, "executorch", "bf16")
    monkeypatch.setattr(backends, "executorch_available", lambda: False)
    with pytest.raises(BackendError, match=r"^--backend executorch needs the executorch package \(pip install -r "
                                           r"requirements-deploy.txt\)$"):
        backends.choose_backend(cpu, "executorch")


@needs_executorch
@pytest.mark.slow
def test_export_onnx_writes_a_pte_that_executorchs_runtime_alone_runs(tmp_path: Path) -> None:
    """export_onnx.py --format executorch: a .pte loaded by ExecuTorch's runtime (not our code) gives the released
    SDNet's PyTorch maps of the golden photos within the float32 bound; --any-size is refused in one line."""
    checkpoint = REFERENCE / "checkpoints" / "sdnet_from_scratch.pth"
    golden = REFERENCE / "golden" / "sdnet_golden_io.npz"
    if not checkpoint.is_file() or not golden.is_file():
        pytest.skip(f"reference data absent: {checkpoint}, {golden}")
    import export_onnx
    from models import load_model

    out = tmp_path / "sdnet.pte"
    export_onnx.main(["--checkpoint", str(checkpoint), "--size", "64", "--format", "executorch", "--out", str(out)])
    image = torch.nn.functional.interpolate(torch.from_numpy(np.load(golden)["input"][:1]), size=(64, 64),
                                            mode="bilinear", antialias=True)
    from executorch.runtime import Runtime

    program = Runtime.get().load_program(out.read_bytes())
    (shipped,) = program.load_method("forward").execute([image])
    with torch.no_grad():
        expected = load_model(checkpoint)[0](image)
    assert shipped.shape == (1, 1, 64, 64) and float(shipped.max() - shipped.min()) > 0.5
    torch.testing.assert_close(shipped, expected, atol=bounds.MAP_FLOAT32, rtol=0)
    with pytest.raises(SystemExit) as refused:
        export_onnx.main(["--checkpoint", str(checkpoint), "--format", "executorch", "--any-size", "--out",
                          str(tmp_path / "x.pte")])
    assert refused.value.code == 2 and not (tmp_path / "x.pte").exists()
