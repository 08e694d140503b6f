"""A shipped file run by its runtime alone, as a deployment runs it (not by our model code): ONNX (.onnx) by ONNX
Runtime, OpenVINO's IR (.xml with its .bin) by OpenVINO, an ExecuTorch program (.pte) by ExecuTorch's runtime.
export_onnx.py --verify uses it to say whether a file gives the checkpoint's maps; a file its runtime cannot load
(truncated, tampered, another format under the suffix) is a `ShippedFileError`, one line naming it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from engine.inference.export import quiet_native_stderr, quiet_torch_notes

__all__ = ["SHIPPED_SUFFIXES", "ShippedFileError", "shipped_network"]

SHIPPED_SUFFIXES = {".onnx": "ONNX Runtime", ".xml": "OpenVINO", ".pte": "ExecuTorch"}


class ShippedFileError(ValueError):
    """A shipped file that its runtime cannot load or run: a one-line message naming the file."""


def shipped_network(path: str | Path) -> Callable[[torch.Tensor], torch.Tensor]:
    """The file at ``path`` loaded by the runtime of its suffix (`SHIPPED_SUFFIXES`), as a function of one input
    (B, 3T, H, W) float32 -> its output ((B, 1, H, W), or (B*T, 1, H, W) for a clip); an input the file cannot take
    (another shape) raises `ShippedFileError` too. fp32 where the file holds no quantization: OpenVINO is told f32,
    since its own default on CPUs with AMX or AVX512-BF16 is bf16."""
    path = Path(path)
    runtime = SHIPPED_SUFFIXES.get(path.suffix.lower())
    if runtime is None:
        raise ShippedFileError(f"{path}: not a shipped file ({', '.join(SHIPPED_SUFFIXES)})")
    if not path.is_file():
        raise ShippedFileError(f"{path}: no such file")
    try:
        run = {".onnx": _onnxruntime, ".xml": _openvino, ".pte": _executorch}[path.suffix.lower()](path)
    except Exception as err:  # noqa: BLE001 - each runtime raises its own types for a file it cannot read
        raise ShippedFileError(f"{path}: {runtime} cannot load it ({_first_line(err)}): truncated, damaged or "
                               "not what its suffix says") from err

    def checked(x: torch.Tensor) -> torch.Tensor:
        try:
            return run(x.contiguous())
        except Exception as err:  # noqa: BLE001 - as above
            raise ShippedFileError(f"{path}: {runtime} could not run it on an input {'x'.join(map(str, x.shape))} "
                                   f"({_first_line(err)}); give the --size it was exported for") from err

    return checked


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:200] if text else type(err).__name__


def _onnxruntime(path: Path) -> Callable[[torch.Tensor], torch.Tensor]:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # errors only: its notes would go to stderr past our logger
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: torch.from_numpy(session.run(None, {name: x.numpy()})[0])


def _openvino(path: Path) -> Callable[[torch.Tensor], torch.Tensor]:
    from engine.inference.backends.openvino import openvino_core

    request = openvino_core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"}
                                            ).create_infer_request()
    return lambda x: torch.from_numpy(request.infer([x.numpy()])[0].copy())


def _executorch(path: Path) -> Callable[[torch.Tensor], torch.Tensor]:
    with quiet_torch_notes(), quiet_native_stderr():
        from executorch.runtime import Runtime

        program = Runtime.get().load_program(path.read_bytes())
        method = program.load_method("forward")

    def run(x: torch.Tensor, program=program) -> torch.Tensor:
        with quiet_native_stderr():
            return method.execute([x])[0]

    return run
