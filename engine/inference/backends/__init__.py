"""The inference backends, one module each, behind one small interface.

A `Backend` is made once per runner from the model and the `Settings` (device, precision, threads, compiled-network
cache); its `prepare(shape, streams)` gives the `Network` that runs inputs of that one shape. A network computes a
pass on call, or starts one (`Network.start`) and hands back the function that finishes it, so that up to
``Network.slots`` inputs are in flight (OpenVINO's streams; every other network has one slot and computes at once).
The runner (`engine.inference.runner`) holds the prepared networks and is the one place deciding which input runs
where.

Backends ("auto" is chosen by `choose_backend`):
- `engine.inference.backends.eager`: "eager" (the plain NCHW float32 model) and "channels_last" (NHWC oneDNN kernels);
- `engine.inference.backends.openvino`: "openvino", the CPU default (the exported graph compiled per input shape);
- `engine.inference.backends.onnxruntime`: "onnxruntime" (the ONNX file export_onnx.py ships, run by ONNX Runtime);
- `engine.inference.backends.executorch`: "executorch" (a .pte program lowered to XNNPACK per input shape, run by
  ExecuTorch's runtime, as a phone app runs it);
- `engine.inference.backends.inductor`: "inductor" (TorchInductor per input shape);
- `engine.inference.backends.cuda_graphs`: "cuda_graphs", the CUDA default (a CUDA graph per input shape).

INT8 (``--precision int8``) runs on "openvino" and "executorch", each quantizing the network per input shape on a
calibration set and keeping it only if it passes the accuracy gate (`engine.inference.quantization`).

A backend never changes what it runs once made: what cannot be prepared raises `BackendError`, a one-line message
naming the backend and the flag that avoids it, and nothing falls back to another backend.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import importlib
import importlib.util
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from engine.hardware import PRECISIONS
from engine.inference.network_cache import NetworkCache, model_key
from models import skip_zero_pre_biases
from utils import LOGGER_NAME

if TYPE_CHECKING:
    from engine.inference.quantization import Int8Sets

__all__ = ["BACKENDS", "INFERENCE_PRECISIONS", "INT8_BACKENDS", "BackendError", "Settings", "Network", "Backend",
           "backend_class", "choose_backend", "openvino_available", "onnxruntime_available", "executorch_available"]

# backend name -> (module of engine.inference.backends, class name)
_MODULES = {"eager": ("eager", "EagerBackend"), "channels_last": ("eager", "ChannelsLastBackend"),
            "inductor": ("inductor", "InductorBackend"), "openvino": ("openvino", "OpenVINOBackend"),
            "onnxruntime": ("onnxruntime", "OnnxRuntimeBackend"), "executorch": ("executorch", "ExecuTorchBackend"),
            "cuda_graphs": ("cuda_graphs", "CudaGraphBackend")}
# What ``--backend`` takes: every backend above ("auto": `choose_backend`); ``--precision`` takes every precision of
# `engine.hardware.PRECISIONS` (fp16 on CUDA, bf16 on the CPU with OpenVINO) and int8 (`INT8_BACKENDS`).
BACKENDS = ("auto", *_MODULES)
INFERENCE_PRECISIONS = (*PRECISIONS, "int8")
INT8_BACKENDS = ("openvino", "executorch")


class BackendError(RuntimeError):
    """A backend that cannot run the request (the device, the installation, the CPU): a one-line message."""


@dataclass(frozen=True)
class Settings:
    """What a backend runs with: ``device``; ``precision`` ('fp32', 'fp16' on CUDA, 'bf16' on the CPU with
    OpenVINO, 'int8' with `INT8_BACKENDS`); ``threads``, the CPU threads of a pass; ``cache``, the folder of compiled
    networks kept between runs (`engine.inference.network_cache`; None: none kept); ``int8``, the calibration and
    gate sets of 'int8' (`engine.inference.quantization.Int8Sets`)."""

    device: torch.device
    precision: str = "fp32"
    threads: int = 1
    cache: Path | None = None
    int8: Int8Sets | None = None

    @property
    def dtype(self) -> torch.dtype:
        """The dtype the runner hands the network: float16 for 'fp16', else float32 (OpenVINO converts to bf16
        inside; an int8 network quantizes its own inputs)."""
        return torch.float16 if self.precision == "fp16" else torch.float32


class Network:
    """The network for one input shape: ``network(x)`` -> output; ``network.start(x)`` starts a pass and returns
    the function that waits for it and gives its output. This one computes on call and at `start` (one slot)."""

    slots = 1

    def __init__(self, run: Callable[[torch.Tensor], torch.Tensor]) -> None:
        self.run = run

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.run(x)

    def start(self, x: torch.Tensor) -> Callable[[], torch.Tensor]:
        out = self(x)
        return lambda: out


class Backend:
    """A model made ready for one backend: a private copy in eval mode without gradients on the device, DiffBlock
    pre-biases that are exactly zero skipped (unless ``keeps_model``), in the backend's memory format and
    precision. Subclasses give `prepare`; ``name`` is the backend's, `precision` what it runs (read back from the
    compiled network where the backend compiles)."""

    name = ""
    memory_format = torch.channels_last
    keeps_model = False  # True: the model exactly as given, for comparisons (eager)

    def __init__(self, model: nn.Module, settings: Settings) -> None:
        self.settings = settings
        model = copy.deepcopy(model).eval().requires_grad_(False).to(settings.device)
        if not self.keeps_model:
            skip_zero_pre_biases(model)
        if settings.precision == "fp16":
            model = model.half()
        self.model = model.to(memory_format=self.memory_format)
        # compiled networks kept between runs, for the backends that compile or export (None: none kept)
        self.cache = NetworkCache(settings.cache) if settings.cache is not None else None

    @property
    def precision(self) -> str:
        return self.settings.precision

    def kept_or_exported(self, key: str, export: Callable[[], bytes], load: Callable[[bytes], object],
                         what: str, check: Callable[[object], None] | None = None) -> tuple[object, str]:
        """``load`` of the file kept in the compiled-network cache under ``key`` (its text; the cache's own key is
        its digest), or of ``export()``, which is then kept; a kept file that does not load is discarded and
        exported again. ``what`` names the file in messages ('network', 'program'). Returns the loaded file and
        'loaded from the cache' or 'exported'. ``check`` (the INT8 gate) is called with a fresh export once loaded,
        before it is kept, and raises what refuses it. A file that cannot be kept is one warning, and nothing more is
        kept; a fresh export that does not load is a `BackendError`. (The "onnxruntime" and "executorch"
        backends.)"""
        cache, digest = self.cache, hashlib.sha256(key.encode()).hexdigest()
        payload = cache.get(digest) if cache is not None else None
        if payload is not None:
            try:
                return load(payload), "loaded from the cache"
            except Exception:  # noqa: BLE001 - each runtime raises its own types for a file it cannot load
                cache.discard(digest)
        payload = export()
        try:
            loaded = load(payload)
        except Exception as err:  # noqa: BLE001 - as above
            raise BackendError(f"--backend {self.name}: the exported {what} could not be loaded "
                               f"({str(err).strip().splitlines()[0]}); --backend eager runs without it") from err
        if check is not None:
            check(loaded)
        if cache is not None and (problem := cache.put(digest, payload)) is not None:
            logging.getLogger(LOGGER_NAME).warning("exported %ss are not kept: %s (choose another --cache-dir, or "
                                                   "--no-cache)", what, problem)
            self.cache = None
        return loaded, "exported"

    @functools.cached_property
    def model_digest(self) -> str:
        """`engine.inference.network_cache.model_key` of the backend's model, computed once."""
        return model_key(self.model)

    def prepare(self, shape: tuple[int, ...], streams: int) -> Network:
        """The network for inputs of ``shape`` (B, C, H, W) with up to ``streams`` in flight (a backend without
        streams ignores it); raises `BackendError` when it cannot be made."""
        raise NotImplementedError


def openvino_available() -> bool:
    """Whether the openvino package (a requirement; the "openvino" backend) can be imported."""
    return importlib.util.find_spec("openvino") is not None


def onnxruntime_available() -> bool:
    """Whether the onnxruntime package (a requirement; the "onnxruntime" backend) can be imported."""
    return importlib.util.find_spec("onnxruntime") is not None


def executorch_available() -> bool:
    """Whether the executorch package (requirements-deploy.txt; the "executorch" backend) can be imported."""
    return importlib.util.find_spec("executorch") is not None


def backend_class(name: str) -> type[Backend]:
    """The `Backend` subclass of backend ``name`` (one of `BACKENDS` but "auto"), its module imported on demand."""
    module, cls = _MODULES[name]
    return getattr(importlib.import_module(f"{__name__}.{module}"), cls)


def choose_backend(device: torch.device, requested: str = "auto", precision: str = "fp32") -> str:
    """The backend a job runs on: ``requested`` unless "auto"; "auto" is "cuda_graphs" on CUDA and "openvino" on the
    CPU ("channels_last" where the openvino package is missing, unless bf16 is asked for). Decided from the request
    alone, never from the clock or the inputs. Raises `BackendError` for a request the device, the installation
    or the backend cannot run."""
    cuda = torch.device(device).type == "cuda"
    if requested not in BACKENDS:
        raise BackendError(f"--backend {requested}: choose from {', '.join(BACKENDS)}")
    if precision not in INFERENCE_PRECISIONS:
        raise BackendError(f"--precision {precision}: choose from {', '.join(INFERENCE_PRECISIONS)}")
    if requested == "auto":
        requested = "cuda_graphs" if cuda else "openvino" if openvino_available() or precision in ("bf16", "int8") \
            else "channels_last"
    if requested == "cuda_graphs" and not cuda:
        raise BackendError("--backend cuda_graphs needs a CUDA device (--gpu)")
    if requested == "openvino" and cuda:
        raise BackendError("--backend openvino runs on the CPU: leave out --gpu")
    if requested == "openvino" and not openvino_available():
        raise BackendError("--backend openvino needs the openvino package (pip install -r requirements.txt)")
    if requested == "onnxruntime" and cuda:
        raise BackendError("--backend onnxruntime runs on the CPU: leave out --gpu")
    if requested == "onnxruntime" and not onnxruntime_available():
        raise BackendError("--backend onnxruntime needs the onnxruntime package (pip install -r requirements.txt)")
    if requested == "executorch" and cuda:
        raise BackendError("--backend executorch runs on the CPU: leave out --gpu")
    if requested == "executorch" and not executorch_available():
        raise BackendError("--backend executorch needs the executorch package (pip install -r "
                           "requirements-deploy.txt)")
    if precision == "bf16" and (cuda or requested != "openvino"):
        raise BackendError("--precision bf16 runs on the CPU with the openvino backend"
                           + (" (on CUDA: --precision fp16)" if cuda else f", not --backend {requested}"))
    if precision == "int8" and requested not in INT8_BACKENDS:
        raise BackendError(f"--precision int8 runs on the CPU with --backend {' or '.join(INT8_BACKENDS)}, not "
                           f"--backend {requested}")
    if precision == "fp16" and (not cuda or requested == "eager"):
        raise BackendError("--precision fp16 (--half) runs on CUDA only" if not cuda else
                           "--precision fp16 (--half) is not run by --backend eager")
    return requested
