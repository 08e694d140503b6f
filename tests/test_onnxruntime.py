"""The "onnxruntime" backend: the ONNX file export_onnx.py ships, run by ONNX Runtime alone, gives the eager maps
(within the float32 bound of tests/bounds.py: the same products summed in another order), the same bytes on every
call, and through predict.py the released SDNet's maps of real photos within 1 grey level of PyTorch's; its file
is kept in the compiled-network cache, and a damaged entry is exported again."""

from __future__ import annotations

from pathlib import Path

import bounds
import cv2
import numpy as np
import pytest
import torch
from reference import REFERENCE
from test_backends import cached_run, converted

import predict
from engine.inference import backends, network_cache
from engine.inference import runner as inference
from engine.inference.backends import BackendError


@pytest.mark.parametrize(("name", "shapes"), [
    ("sdnet", [(1, 3, 64, 64), (1, 3, 50, 70), (2, 3, 33, 17)]),
    ("sdneta", [(1, 3, 64, 64), (1, 3, 33, 47)]),
    ("stdnet", [(1, 24, 32, 48)]),
])
def test_onnxruntime_gives_the_eager_converted_maps(name: str, shapes: list[tuple[int, ...]]) -> None:
    model = converted(name)
    eager = inference.prepare_for_inference(model, "cpu", backend="eager")
    runtime = inference.prepare_for_inference(model, "cpu", backend="onnxruntime", threads=2)
    assert runtime.path == "onnxruntime+fp32"
    for shape in shapes:
        x = torch.randn(shape)
        maps = runtime(x)
        torch.testing.assert_close(maps, eager(x), atol=bounds.MAP_FLOAT32, rtol=0)
        assert torch.equal(runtime(x), maps)


def test_the_exported_file_is_cached_and_a_damaged_entry_exported_again(tmp_path: Path) -> None:
    model = converted("sdnet", seed=13)
    x = torch.randn(1, 3, 40, 48)
    cache = tmp_path / "cache"
    cold, made = cached_run(model, cache, x, backend="onnxruntime")
    assert made == ["compiled"] and len(list(cache.glob("*.bin"))) == 1  # 'compiled': not loaded from the cache
    warm, made = cached_run(model, cache, torch.randn(1, 3, 56, 32), backend="onnxruntime")  # any size: loaded
    assert made == ["loaded"]
    assert torch.equal(cached_run(model, cache, x, backend="onnxruntime")[0], cold)
    assert cached_run(converted("sdnet", seed=14), cache, x, backend="onnxruntime")[1] == ["compiled"]
    [entry, _] = sorted(cache.glob("*.bin"), key=lambda path: path.stat().st_mtime)
    network_cache.NetworkCache(cache).put(entry.stem, b"not an onnx file")
    out, made = cached_run(model, cache, x, backend="onnxruntime")
    assert made == ["compiled"] and torch.equal(out, cold)
    assert cached_run(model, cache, x, backend="onnxruntime")[1] == ["loaded"]  # rebuilt


def test_onnxruntime_is_chosen_on_request_only(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda", 0)
    assert backends.choose_backend(cpu, "onnxruntime") == "onnxruntime" and backends.choose_backend(cpu) == "openvino"
    for device, precision, message in [(cuda, "fp32", "--backend onnxruntime runs on the CPU: leave out --gpu"),
                                       (cpu, "bf16", "--precision bf16 runs on the CPU with the openvino backend, "
                                                     "not --backend onnxruntime")]:
        with pytest.raises(BackendError, match=message):
            backends.choose_backend(device, "onnxruntime", precision)
    monkeypatch.setattr(backends, "onnxruntime_available", lambda: False)
    with pytest.raises(BackendError, match=r"^--backend onnxruntime needs the onnxruntime package \(pip install -r "
                                           r"requirements.txt\)$"):
        backends.choose_backend(cpu, "onnxruntime")


REAL_PHOTOS = ("chelsea", "coffee", "astronaut")


def released_sdnet_and_real_photos(folder: Path) -> Path:
    """The released SDNet's checkpoint, with scikit-image's real photographs `REAL_PHOTOS` written as PNG files into
    ``folder``; the test skips with its reason where either is absent."""
    skdata = pytest.importorskip("skimage.data")
    checkpoint = REFERENCE / "checkpoints" / "sdnet_from_scratch.pth"
    if not checkpoint.is_file():
        pytest.skip(f"reference data absent: {checkpoint}")
    folder.mkdir(parents=True)
    for name in REAL_PHOTOS:
        assert cv2.imwrite(str(folder / f"{name}.png"), cv2.cvtColor(getattr(skdata, name)(), cv2.COLOR_RGB2BGR))
    return checkpoint


def test_predict_with_onnxruntime_gives_pytorchs_maps_of_real_photos(tmp_path: Path) -> None:
    """The released SDNet on three real photographs (scikit-image's chelsea, coffee and astronaut): predict.py's
    maps through ONNX Runtime are within 1 grey level of its maps through PyTorch (--backend eager)."""
    photos = tmp_path / "photos"
    checkpoint = released_sdnet_and_real_photos(photos)
    for backend in ("eager", "onnxruntime"):
        predict.main(["--checkpoint", str(checkpoint), "--backend", backend, "-j", "0", "--no-cache", str(photos),
                      "--out", str(tmp_path / backend)])
    for name in REAL_PHOTOS:
        eager, runtime = (cv2.imread(str(tmp_path / backend / "photos" / f"{name}.png"), cv2.IMREAD_UNCHANGED)
                          for backend in ("eager", "onnxruntime"))
        assert eager.shape == runtime.shape and np.abs(eager.astype(int) - runtime).max() <= 1, name
