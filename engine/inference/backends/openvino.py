"""The "openvino" backend, the CPU default: the converted network exported to ONNX once (any height and width,
`engine.inference.export`), and compiled by OpenVINO's CPU plugin for each input shape at its first pass (0.1-0.3 s;
the export itself 0.3-0.8 s), the compiled networks kept on disk for later runs (`engine.inference.network_cache`).

Every input of a shape runs through the network compiled for that shape alone, whatever came before: a map is a
function of its own input. A network runs one request on all threads (``streams`` = 1) or several requests of one
thread each (OpenVINO's streams, for keeping several inputs in flight); both give the same bits, since each output
element is computed by one thread in a fixed order whatever the thread count
(tests/test_backends.py::test_streams_give_the_bits_of_one_pass_at_a_time_in_order).

Precision: f32 by default (OpenVINO's own default on CPUs with AVX512-BF16 or AMX is bf16, which moves the maps by
about 2e-4); bf16 on request, where the CPU computes bf16 natively; int8 on request: the graph of each input shape
quantized by NNCF's post-training quantization on the calibration set (per-channel symmetric weights, symmetric
activations: its "performance" preset; the one-channel convolutions in float, `engine.inference.quantization`) and
kept only if it passes the accuracy gate. On a CPU with int8 dot products (VNNI, AMX) the depthwise convolutions are
quantized too, where that passes the gate, else kept in float; without them, always in float (`int8_recipes`). The
precision reported is read back from the compiled network (an int8 network computes in int8 where it is quantized
and in f32 elsewhere).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import logging
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from engine.hardware import cpu_has_int8_dot_products, cpu_has_native_bf16
from engine.inference.backends import Backend, BackendError, Network, Settings
from engine.inference.export import export_onnx, ir_files, quiet_nncf
from engine.inference.quantization import GateFailed, check_gate, network_inputs
from utils import LOGGER_NAME

__all__ = ["OPENVINO_CONFIG", "openvino_core", "native_bf16", "int8_recipes", "OpenVINOBackend"]

# LATENCY: one request at a time on all threads. Streams override it (see `OpenVINOBackend.compile_config`).
OPENVINO_CONFIG = {"PERFORMANCE_HINT": "LATENCY"}
_OPENVINO_PRECISION = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}
# Bumped when the way a network is built changes, so that no older cache entry is taken for a newer network.
_CACHE_FORMAT = "openvino 3"


@functools.cache
def openvino_core():
    """The process's one OpenVINO Core, kept to the end: when the last Core and compiled model went away, OpenVINO
    unloaded its CPU plugin while its worker threads still used it, which corrupted the heap (a segfault in a later,
    unrelated Python call; seen with openvino 2026.4.1 when test runners were garbage-collected)."""
    import openvino

    return openvino.Core()


def native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX, and OpenVINO lists BF16 among its CPU
    capabilities); elsewhere OpenVINO would emulate it, slower than f32."""
    return cpu_has_native_bf16() and \
        "BF16" in openvino_core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def int8_recipes(graph, int8_dot_products: bool) -> list[tuple[str, list[str]]]:
    """The post-training quantizations of ``graph`` (an ov.Model) to try in turn, the first that passes the accuracy
    gate kept: (what it keeps in float, in words; the friendly names of those ops). Always in float: the convolutions
    of one output channel (the saliency head, the attention maps), each feeding a sigmoid. The depthwise convolutions
    run in f32 in OpenVINO's CPU plugin either way (its runtime graph: ``brgconv_*_dw_f32``), but quantized, their
    inputs and outputs fuse with the int8 convolutions beside them: with ``int8_dot_products`` (VNNI, AMX) that runs
    SDNet at 1.54x fp32 against 1.21x in float (Sapphire Rapids); without them (AVX2 alone) it ran slower than in float
    (1.14x against 1.19x, AMD Zen 3) and rounded the released SDNet below the gate (S -0.0057), so it is not tried.
    BENCHMARKS.md and docs/runtime.md give the figures."""
    ops = graph.get_ordered_ops()
    one_channel = [op.get_friendly_name() for op in ops
                   if op.get_type_name() == "Convolution" and op.output(0).get_partial_shape()[1] == 1]
    depthwise = [op.get_friendly_name() for op in ops if op.get_type_name() == "GroupConvolution"]
    recipes = [("the one-channel and the depthwise convolutions", one_channel + depthwise)]
    if int8_dot_products:
        recipes.insert(0, ("the one-channel convolutions", one_channel))
    return recipes


class _Requests(Network):
    """A compiled network with ``streams`` inference requests: a call runs one pass, `start` starts one in an idle
    request (``slots`` of them)."""

    def __init__(self, compiled, streams: int) -> None:
        self.slots = streams
        self.idle = [compiled.create_infer_request() for _ in range(streams)]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.start(x)()

    def start(self, x: torch.Tensor) -> Callable[[], torch.Tensor]:
        request = self.idle.pop()
        request.start_async([x.contiguous().numpy()])

        def finish() -> torch.Tensor:
            try:
                request.wait()
                return torch.from_numpy(request.get_output_tensor(0).data.copy())
            finally:
                self.idle.append(request)

        return finish


class OpenVINOBackend(Backend):
    name = "openvino"

    def __init__(self, model: torch.nn.Module, settings: Settings) -> None:
        if settings.precision not in _OPENVINO_PRECISION:
            raise BackendError(f"--backend openvino runs fp32, bf16 or int8, not {settings.precision}")
        if settings.precision == "bf16" and not native_bf16():
            raise BackendError("--precision bf16 needs a CPU with native bf16 (AVX512-BF16 or AMX), which this one "
                               "has not; --precision fp32 runs here")
        if settings.precision == "int8" and importlib.util.find_spec("nncf") is None:
            raise BackendError("--precision int8 with --backend openvino needs the nncf package (pip install -r "
                               "requirements-deploy.txt)")
        super().__init__(model, settings)
        self._graphs: dict[tuple[int, int], object] = {}  # (batch, channels) -> the exported ov.Model
        # the quantized ov.Model of the latest int8 shape, gate passed: its other stream counts compile from it (one
        # kept, as the runner keeps few networks: full-resolution runs meet many shapes)
        self._int8_graphs: dict[tuple[int, ...], object] = {}
        self._compiled_precision: str | None = None

    @property
    def precision(self) -> str:
        return self._compiled_precision or self.settings.precision

    def compile_config(self, streams: int) -> dict:
        """OpenVINO's compile settings for a network of ``streams`` requests on the settings' threads."""
        config = {**OPENVINO_CONFIG, "INFERENCE_PRECISION_HINT": _OPENVINO_PRECISION[self.settings.precision],
                  "INFERENCE_NUM_THREADS": self.settings.threads}
        if streams > 1:
            config.update(PERFORMANCE_HINT="THROUGHPUT", NUM_STREAMS=streams)
        return config

    def prepare(self, shape: tuple[int, ...], streams: int) -> Network:
        streams = max(1, min(streams, self.settings.threads))
        config = self.compile_config(streams)
        start = time.perf_counter()
        key = self._network_key(shape, config) if self.cache is not None else None
        compiled, source = self._load(key, config), "loaded from the cache"
        if compiled is None:
            compiled, source = self._compile(shape, config), "compiled"
            if key is not None:
                problem = self.cache.put(key, compiled.export_model().getvalue())
                if problem is not None:  # the run goes on; later runs compile again
                    logging.getLogger(LOGGER_NAME).warning("compiled networks are not kept: %s (choose another "
                                                           "--cache-dir, or --no-cache)", problem)
                    self.cache = None
        precision = {"f32": "fp32", "bf16": "bf16"}.get(compiled.get_property("INFERENCE_PRECISION_HINT")
                                                        .get_type_name())
        if precision == "fp32" and self.settings.precision == "int8":
            precision = "int8"
        if precision != self.settings.precision:
            raise BackendError(f"--precision {self.settings.precision}: OpenVINO compiled the network in "
                               f"{precision}; --precision fp32 runs as asked")
        logging.getLogger(LOGGER_NAME).log(
            logging.INFO if self._compiled_precision is None else logging.DEBUG,
            "openvino network for input %s (%s, %d stream%s) %s in %.2f s", "x".join(map(str, shape)), precision,
            streams, "s" if streams > 1 else "", source, time.perf_counter() - start)
        self._compiled_precision = precision
        return _Requests(compiled, streams)

    def _network_key(self, shape: tuple[int, ...], config: dict) -> str:
        import openvino

        cpu = openvino_core().get_property("CPU", "FULL_DEVICE_NAME")
        text = f"{_CACHE_FORMAT}|{openvino.get_version()}|{cpu}|{self.model_digest}|{shape}|{sorted(config.items())}"
        if self.settings.precision == "int8":
            text += f"|int8 {self.settings.int8.digest}|{_nncf_version()}"
        return hashlib.sha256(text.encode()).hexdigest()

    def _load(self, key: str | None, config: dict):
        """The compiled network of cache entry ``key``, or None (no cache, no entry, or one OpenVINO cannot load,
        which is then removed)."""
        payload = self.cache.get(key) if key is not None else None
        if payload is None:
            return None
        try:
            return openvino_core().import_model(payload, "CPU", config)
        except RuntimeError:
            self.cache.discard(key)
            return None

    def _compile(self, shape: tuple[int, ...], config: dict):
        """The network compiled for ``shape`` from the export of its batch and channels."""
        graph = self._graphs.get(shape[:2])
        if graph is None:
            graph = self._graphs[shape[:2]] = self._export(shape)
        try:
            graph = graph.clone()
            graph.reshape(list(shape))
            if self.settings.precision == "int8":
                graph = self._gated_int8(graph, shape)
            return openvino_core().compile_model(graph, "CPU", config)
        except BackendError:
            raise
        except RuntimeError as err:
            self._model_error(shape)
            raise BackendError(f"--backend openvino: compiling for input {'x'.join(map(str, shape))} failed "
                               f"({str(err).splitlines()[0]}); --backend eager runs without OpenVINO") from err

    def _gated_int8(self, graph, shape: tuple[int, ...]):
        """``graph`` (reshaped to ``shape``) quantized on the calibration set, once it has passed the accuracy gate
        against the model in float32 (`engine.inference.quantization.check_gate` raises otherwise); kept for the
        other stream counts of the shape."""
        import nncf

        if shape in self._int8_graphs:
            return self._int8_graphs[shape]
        sets = self.settings.int8
        calibration = nncf.Dataset([x.numpy() for x in network_inputs(sets.calibration, shape)])
        recipes = int8_recipes(graph, cpu_has_int8_dot_products())
        for number, (in_words, in_float) in enumerate(recipes, 1):
            with quiet_nncf():
                quantized = nncf.quantize(graph, calibration, preset=nncf.QuantizationPreset.PERFORMANCE,
                                          subset_size=len(sets.calibration),
                                          ignored_scope=nncf.IgnoredScope(names=in_float))
            request = openvino_core().compile_model(quantized, "CPU", self.compile_config(1)).create_infer_request()

            def run(x: torch.Tensor, request=request) -> torch.Tensor:
                return torch.from_numpy(request.infer([x.numpy()])[0].copy())

            try:
                with torch.inference_mode():
                    moved = check_gate(self.model, run, sets, shape, "--backend openvino")
                break
            except GateFailed as failure:
                if number == len(recipes):
                    raise
                logging.getLogger(LOGGER_NAME).info("openvino int8 with %s in float failed the accuracy gate "
                                                    "(S-measure %+.4f, MAE %+.4f of fp32's); trying %s in float",
                                                    in_words, *failure.moved, recipes[number][0])
        logging.getLogger(LOGGER_NAME).info("openvino int8 network for input %s (%s in float) passed the accuracy "
                                            "gate on %s: S-measure %+.4f, MAE %+.4f of fp32's",
                                            "x".join(map(str, shape)), in_words, sets.gate_source, *moved)
        self._int8_graphs = {shape: quantized}
        return quantized

    def int8_ir(self, shape: tuple[int, ...]) -> tuple[bytes, bytes]:
        """OpenVINO's IR (.xml, .bin) of the network quantized for inputs of ``shape``, once it has passed the
        accuracy gate (what export_onnx.py --format openvino --precision int8 ships)."""
        graph = self._export(shape)
        graph.reshape(list(shape))
        return ir_files(self._gated_int8(graph, shape))

    def _model_error(self, shape: tuple[int, ...]) -> None:
        """Raise the model's own error for inputs of ``shape`` (too few channels, too small), if it has one: that
        is the caller's to see, not a failure of the backend."""
        with torch.inference_mode():
            self.model(torch.zeros(shape, dtype=self.settings.dtype))

    def _export(self, shape: tuple[int, ...]):
        example = torch.zeros(shape, dtype=self.settings.dtype)
        try:
            with tempfile.TemporaryDirectory(prefix="sdnet-onnx-") as folder:
                path = Path(folder) / "network.onnx"
                export_onnx(self.model, example, path, any_size=True)
                return openvino_core().read_model(path)
        except Exception as err:
            self._model_error(shape)
            raise BackendError(f"--backend openvino: exporting the network failed ({str(err).splitlines()[0]}); "
                               "--backend eager runs without OpenVINO") from err


def _nncf_version() -> str:
    from importlib.metadata import version

    return version("nncf")
