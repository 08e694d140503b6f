"""The "executorch" backend: the converted network as a phone app ships it, exported with ``torch.export`` for one
input shape and lowered to XNNPACK in an ExecuTorch program (.pte), run by ExecuTorch's runtime, not by PyTorch.

A program serves one input shape: exporting and lowering one takes 10-20 s on 2 cores, so each is kept in the
compiled-network cache (`engine.inference.network_cache`, keyed like OpenVINO's: the model's digest, the shape,
ExecuTorch's version) and a later run loads it in milliseconds. XNNPACK runs on ExecuTorch's own thread pool (one
thread per core). fp32, or int8 on request: the program quantized on the calibration set (PT2E, for XNNPACK;
`engine.inference.export.executorch_program`) and kept only if it passes the accuracy gate
(`engine.inference.quantization`). The runtime's C++ notes (its CPU probing, printed when a program is lowered,
loaded or first run) are kept off the terminal by pointing file descriptor 2 at /dev/null for those calls, and
torch's notes about ExecuTorch's enums by its logger's level: what else the process writes to stderr meanwhile is
lost too.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import torch

from engine.inference.backends import Backend, BackendError, Network, Settings
from engine.inference.export import executorch_program, quiet_native_stderr, quiet_torch_notes
from engine.inference.quantization import check_gate, network_inputs
from utils import LOGGER_NAME

__all__ = ["ExecuTorchBackend"]

# Bumped when the way a program is built changes, so that no older cache entry is taken for a newer program.
_CACHE_FORMAT = "executorch 2"


class ExecuTorchBackend(Backend):
    name = "executorch"
    memory_format = torch.contiguous_format  # the program takes NCHW inputs, as an app hands them

    def __init__(self, model: torch.nn.Module, settings: Settings) -> None:
        if settings.precision not in ("fp32", "int8"):
            raise BackendError(f"--backend executorch runs fp32 or int8, not {settings.precision}")
        if settings.device.type != "cpu":
            raise BackendError("--backend executorch runs on the CPU: leave out --gpu")
        super().__init__(model, settings)

    def prepare(self, shape: tuple[int, ...], streams: int) -> Network:
        with quiet_torch_notes():
            return self._prepare(shape)

    def _prepare(self, shape: tuple[int, ...]) -> Network:
        from importlib.metadata import version  # not an import of executorch: that probes the CPU aloud

        start = time.perf_counter()
        key = f"{_CACHE_FORMAT}|{version('executorch')}|{self.model_digest}|{shape}"
        int8 = self.settings.int8 if self.settings.precision == "int8" else None
        if int8 is not None:
            key += f"|int8 {int8.digest}|{version('torchao')}"
        method, source = self.kept_or_exported(key, lambda: self._export(shape), lambda payload: _load(payload, shape),
                                               "program", None if int8 is None else lambda run: self._gate(run, shape))
        logging.getLogger(LOGGER_NAME).info("executorch %s program for input %s %s in %.2f s",
                                            self.settings.precision, "x".join(map(str, shape)), source,
                                            time.perf_counter() - start)
        return Network(method)

    def _export(self, shape: tuple[int, ...]) -> bytes:
        """The .pte program of the model for inputs of ``shape``, lowered to XNNPACK."""
        example = torch.zeros(shape)
        calibration = network_inputs(self.settings.int8.calibration, shape) if self.settings.precision == "int8" \
            else None
        try:
            return executorch_program(self.model, example, calibration)
        except Exception as err:
            with torch.inference_mode():  # the model's own error for this shape, if it has one, is the caller's
                self.model(example)
            raise BackendError(f"--backend executorch: exporting the network failed "
                               f"({str(err).strip().splitlines()[0]}); --backend eager runs without it") from err

    def int8_program(self, shape: tuple[int, ...]) -> bytes:
        """The .pte program quantized for inputs of ``shape``, once it has passed the accuracy gate (what
        export_onnx.py --format executorch --precision int8 ships)."""
        with quiet_torch_notes():
            payload = self._export(shape)
            self._gate(_load(payload, shape), shape)
        return payload

    def _gate(self, run: Callable[[torch.Tensor], torch.Tensor], shape: tuple[int, ...]) -> None:
        """The accuracy gate of a fresh INT8 program ``run`` against the model in float32."""
        with torch.inference_mode():
            moved = check_gate(self.model, run, self.settings.int8, shape, "--backend executorch")
        logging.getLogger(LOGGER_NAME).info("executorch int8 program for input %s passed the accuracy gate on %s: "
                                            "S-measure %+.4f, MAE %+.4f of fp32's", "x".join(map(str, shape)),
                                            self.settings.int8.gate_source, *moved)


def _load(payload: bytes, shape: tuple[int, ...]) -> Callable[[torch.Tensor], torch.Tensor]:
    """The forward method of the .pte program ``payload`` for inputs of ``shape`` as a function of one input (it
    holds the program, which the method needs alive), after a first pass: the runtime probes the CPU when it first
    loads and when it first runs."""
    with quiet_native_stderr():
        from executorch.runtime import Runtime

        program = Runtime.get().load_program(payload)
        method = program.load_method("forward")
        method.execute([torch.zeros(shape)])

    def forward(x: torch.Tensor, program=program) -> torch.Tensor:
        return method.execute([x.contiguous()])[0]

    return forward
