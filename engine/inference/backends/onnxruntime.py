"""The "onnxruntime" backend: the converted network as the ONNX file export_onnx.py ships (any height and width,
`engine.inference.export`), run by ONNX Runtime's CPU execution provider, as a deployment outside PyTorch runs it.

The file is exported once per batch and channel count (0.3-0.8 s) and kept in the compiled-network cache
(`engine.inference.network_cache`, keyed like OpenVINO's: the model's digest, the input's batch and channels,
ONNX Runtime's version); one session serves every height and width. A session runs a pass on the settings' threads
(intra-op), one node after another, its worker threads sleeping between passes (no spinning: a server's other
threads keep their cores). fp32 only.
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path

import torch

from engine.inference.backends import Backend, BackendError, Network, Settings
from engine.inference.export import ONNX_OPSET, export_onnx
from utils import LOGGER_NAME

__all__ = ["OnnxRuntimeBackend"]

# Bumped when the way a network is built changes, so that no older cache entry is taken for a newer network.
_CACHE_FORMAT = "onnxruntime 1"


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"

    def __init__(self, model: torch.nn.Module, settings: Settings) -> None:
        if settings.precision != "fp32":
            raise BackendError(f"--backend onnxruntime runs fp32, not {settings.precision}")
        if settings.device.type != "cpu":
            raise BackendError("--backend onnxruntime runs on the CPU: leave out --gpu")
        super().__init__(model, settings)
        self._sessions: dict[tuple[int, int], object] = {}  # (batch, channels) -> session

    def prepare(self, shape: tuple[int, ...], streams: int) -> Network:
        session = self._sessions.get(shape[:2])
        if session is None:
            session = self._sessions[shape[:2]] = self._session(shape)

        def run(x: torch.Tensor) -> torch.Tensor:
            return torch.from_numpy(session.run(["saliency"], {"image": x.contiguous().numpy()})[0])

        return Network(run)

    def _session(self, shape: tuple[int, ...]):
        import onnxruntime

        start = time.perf_counter()
        session, source = self.kept_or_exported(
            f"{_CACHE_FORMAT}|{onnxruntime.__version__}|{ONNX_OPSET}|{self.model_digest}|{shape[:2]}",
            lambda: self._export(shape), self._load, "network")
        logging.getLogger(LOGGER_NAME).info("onnxruntime network for %d x %d-channel inputs %s in %.2f s", shape[0],
                                            shape[1], source, time.perf_counter() - start)
        return session

    def _load(self, payload: bytes):
        """An ONNX Runtime session of the ONNX file ``payload`` on the settings' threads; raises what ONNX Runtime
        raises for a file it cannot load."""
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = self.settings.threads, 1
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3  # errors only: its notes would go to stderr past our logger
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        return onnxruntime.InferenceSession(payload, options, providers=["CPUExecutionProvider"])

    def _export(self, shape: tuple[int, ...]) -> bytes:
        example = torch.zeros(shape, dtype=self.settings.dtype)
        try:
            with tempfile.TemporaryDirectory(prefix="sdnet-onnx-") as folder:
                path = Path(folder) / "network.onnx"
                export_onnx(self.model, example, path, any_size=True)
                return path.read_bytes()
        except Exception as err:
            with torch.inference_mode():  # the model's own error for this shape, if it has one, is the caller's
                self.model(example)
            raise BackendError(f"--backend onnxruntime: exporting the network failed "
                               f"({str(err).strip().splitlines()[0]}); --backend eager runs without it") from err
