"""Inference: a model from a checkpoint and the flags, the inference runner, and predicting 8-bit maps.

`load_model` reads a checkpoint, takes from its description (`models.ModelDescription`) everything it says, asks
the flags only for the rest, and refuses a flag that contradicts it. `prepare_for_inference` is the one place
choosing how a model runs. `Predictor` turns preprocessed images and clips into 8-bit maps; `video_maps` streams
the maps of a video's frames, grouped into clips for video models.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import importlib.util
import logging
import os
import sys
import tempfile
import warnings
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

import configs
from data.atomic import atomic_path
from data.transforms import preprocess_test, saliency_to_uint8
from data.video import clip_groups
from engine.checkpoints import check_description
from models import (
    CheckpointError,
    ModelDescription,
    build_model,
    convert_model,
    load_checkpoint,
    load_weights,
    skip_zero_pre_biases,
)
from utils import BACKENDS, LOGGER_NAME, fail, select_device

__all__ = ["load_model", "model_from_flags", "BACKENDS", "choose_backend", "tune_process", "InferenceRunner",
           "prepare_for_inference", "runner_from_flags", "export_onnx", "Predictor", "video_maps"]

DEFAULT_NFRAMES = configs.TRAIN_DEFAULTS["video"]["nframes"]


def load_model(checkpoint: str | os.PathLike, *, kind: str | None = None, model: str | None = None,
               train_config: str | None = None, inference_config: str = "baseline", bn: bool | None = None,
               tid: tuple[str, ...] | None = None, nframes: int | None = None) -> tuple[nn.Module, ModelDescription]:
    """The model of ``checkpoint`` in eval mode on the CPU, ready for `prepare_for_inference`, and its description.

    What the checkpoint says (ours: its metadata; the authors' raw state dicts: inferred from keys and shapes)
    decides; the arguments (the scripts' flags, None = not given) fill in only what it cannot say, and one that
    contradicts it raises ``CheckpointError`` naming the flag and the file. ``kind`` ('image' / 'video') is the
    script's. ``inference_config='baseline'`` gives the DCR-converted single-branch model (a training-form
    checkpoint is converted, a converted one loaded as it is); the training config gives the training form.
    Defaults for what nobody says: the model's own op table, BN for video models only, tid cv cd ad, 8 frames.
    Raises ``CheckpointError`` (a ValueError, one line) when the file is unreadable or the weights do not fit.
    Forward: image models (B, 3, H, W) -> (B, 1, H, W); video models (B, 3T, H, W) -> (B*T, 1, H, W).
    """
    loaded = load_checkpoint(checkpoint)
    found = loaded.description
    check_description(found, checkpoint, flags={"config": "--train-config"}, model=model, config=train_config, bn=bn,
                      tid=tid, nframes=nframes)
    if found.model is None:
        raise CheckpointError(f"{checkpoint}: holds only a backbone (no saliency decoder), e.g. for --preload; it "
                              "cannot make maps")
    name = found.model
    spec = configs.MODELS[name]
    if kind is not None and spec["kind"] != kind:
        raise CheckpointError(f"{checkpoint} holds the {spec['kind']} model {name}; this script runs {kind} models")
    video = spec["kind"] == "video"
    config = found.config or train_config or spec["config"]
    if inference_config not in ("baseline", config):
        raise CheckpointError(f"--inference-config {inference_config}: use 'baseline' (converted) or the training "
                              f"config {config!r}")
    if video and not found.deploy and found.tid is None and tid is None:
        raise CheckpointError(f"{checkpoint}: the STDC branch ops cannot be read off its weights: give --tid")
    if found.deploy and inference_config != "baseline":
        raise CheckpointError(f"--inference-config {inference_config} contradicts {checkpoint}, which is already "
                              "converted (DCR): only 'baseline' runs it")
    description = ModelDescription(
        model=name, config=config, bn=next(value for value in (found.bn, bn, video) if value is not None),
        tid=tuple(found.tid or tid or configs.TEMPORAL_OPS) if video else None,
        nframes=(found.nframes or nframes or DEFAULT_NFRAMES) if video else None,
        deploy=inference_config == "baseline", nstdc=(found.nstdc or 1) if video else None)
    shape = {"bn": description.bn}
    if video:
        shape.update(tid=description.tid, nframes=description.nframes, nstdc=description.nstdc)
    network = build_model(name, config, deploy=found.deploy, **shape)
    load_weights(network, loaded.state_dict, source=checkpoint)
    if description.deploy and not found.deploy:
        deploy = build_model(name, config, deploy=True, **shape)
        network = load_weights(deploy, convert_model(network.eval()).state_dict())
    return network.eval(), description


def model_from_flags(args, checkpoint: str | os.PathLike, kind: str | None = None) -> tuple[nn.Module,
                                                                                            ModelDescription]:
    """`load_model` with the flags of `utils.add_inference_args`; a checkpoint that cannot be read, does not fit or
    contradicts a flag ends the script with one error line and exit status 2."""
    try:
        return load_model(checkpoint, kind=kind, model=args.model, train_config=args.train_config,
                          inference_config=args.inference_config, bn=args.bn,
                          tid=tuple(args.tid) if args.tid else None, nframes=args.nframes)
    except CheckpointError as err:
        fail(str(err))


# A CUDA graph is captured for an input shape on its third pass: shapes met once or twice (full-resolution maps of
# varied sizes) never pay for a capture, and the eager passes before it let cudnn.benchmark pick its kernels. At most
# CUDA_GRAPH_SHAPES graphs are kept (least recently used dropped), bounding their memory.
CUDA_GRAPH_AFTER = 2
CUDA_GRAPH_SHAPES = 4
# Not measured yet on a GPU (BENCHMARKS.md); NCHW is what cuDNN's depthwise kernels and the release use.
CUDA_CHANNELS_LAST = False
# The CPU backends (BENCHMARKS.md, "Backends", has the side-by-side measurement they were chosen from):
# "openvino" (the default): the network exported to ONNX and compiled by OpenVINO's CPU plugin for each input shape
#   at its first pass (0.5 s for SDNet, 2 s for an STDNet clip, on 2 cores), the fastest steady state too;
# "channels_last": NHWC weights, oneDNN runs the depthwise convs, pools and element-wise ops in NHWC, 2-2.5x faster
#   than NCHW; what runs shapes beyond CPU_COMPILE_SHAPES and the fallback when exporting or compiling fails;
# "inductor": channels_last compiled by TorchInductor with frozen weights per input shape (15-30 s cold on 2 cores).
# Never chosen from the clock: the same command takes the same path, and writes the same bytes, on a busy machine.
CPU_COMPILE_SHAPES = 4
# OpenVINO's CPU plugin defaults to bf16 on CPUs with AVX512-BF16 or AMX: that was slower here and moved the maps by
# about 2e-4. f32 keeps them at float rounding from eager PyTorch; LATENCY runs one request on all threads.
OPENVINO_CONFIG = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"}
ONNX_OPSET = 17
# glibc malloc serves blocks above a (dynamic) threshold with mmap and unmaps them when freed, so every pass pays
# page faults to touch its activations again: ~90,000 per STDNet clip on the CPU, a third of its time. Blocks up to
# this size are kept in the heap instead and reused (resident memory stays at the peak of a pass; BENCHMARKS.md).
MALLOC_KEEP_BYTES = 2**30


def tune_process(device: torch.device) -> None:
    """Process-wide settings for fast inference, for scripts that run inference and nothing else (the speed,
    generation and predict scripts call it; the README says so): on the CPU, glibc malloc keeps freed blocks up to
    MALLOC_KEEP_BYTES for reuse; on CUDA, cudnn.benchmark picks the fastest convolution kernels."""
    if torch.device(device).type == "cuda":
        torch.backends.cudnn.benchmark = True
        return
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # not glibc
        return
    m_trim_threshold, m_mmap_threshold = -1, -3
    # Older glibc refuses mmap thresholds above 32 MiB (returns 0).
    if not mallopt(m_mmap_threshold, MALLOC_KEEP_BYTES):
        mallopt(m_mmap_threshold, 32 * 2**20)
    mallopt(m_trim_threshold, 2**31 - 1)


def export_onnx(model: nn.Module, example: torch.Tensor, out: str | os.PathLike, opset: int = ONNX_OPSET) -> None:
    """Trace ``model`` on ``example`` (its one fixed input shape) into the ONNX file ``out`` (input ``image``, output
    ``saliency``), written to a temporary file first and then renamed. The one export path: export_onnx.py and the
    "openvino" backend use it. Image models: (B, 3, H, W) -> (B, 1, H, W); video models: (B, 3T, H, W) ->
    (B*T, 1, H, W)."""
    with atomic_path(Path(out)) as temporary, warnings.catch_warnings(), torch.inference_mode(False), \
            torch.no_grad():
        # The TorchScript-based exporter is the one that needs no extra package (onnxscript); the graph is traced
        # for one fixed input shape on purpose, so the tracer's notes about shape-dependent Python code and
        # constant folding do not apply.
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message="Constant folding", category=UserWarning)
        torch.onnx.export(model, (example.clone(),), str(temporary), input_names=["image"],
                          output_names=["saliency"], opset_version=opset, dynamo=False)


def openvino_available() -> bool:
    """Whether the openvino package (a requirement; the "openvino" backend) can be imported."""
    return importlib.util.find_spec("openvino") is not None


@functools.cache
def _openvino_core():
    """The process's one OpenVINO Core, kept to the end: when the last Core and compiled model went away, OpenVINO
    unloaded its CPU plugin while its worker threads still used it, which corrupted the heap (a segfault in a later,
    unrelated Python call; seen with openvino 2026.4.1 when test runners were garbage-collected)."""
    import openvino

    return openvino.Core()


class _OpenVINONetwork:
    """``model`` exported to ONNX for one input ``shape`` and compiled by OpenVINO for the CPU (OPENVINO_CONFIG).

    ``streams`` = 1: one inference request on ``threads`` threads (`__call__`, a pass at a time). ``streams`` > 1:
    that many requests of one thread each, started with `start` and finished in any order (`InferenceRunner.stream`
    keeps several inputs in flight). Both give the same bits: each output element is computed by one thread in a
    fixed order, whatever the thread count (tests/test_speed.py).
    """

    def __init__(self, model: nn.Module, shape: tuple[int, ...], threads: int, streams: int = 1) -> None:
        core = _openvino_core()
        config = {**OPENVINO_CONFIG, "INFERENCE_NUM_THREADS": threads}
        if streams > 1:
            config.update(PERFORMANCE_HINT="THROUGHPUT", NUM_STREAMS=streams)
        with tempfile.TemporaryDirectory(prefix="sdnet-onnx-") as folder:
            path = Path(folder) / "network.onnx"
            export_onnx(model, torch.zeros(shape), path)
            compiled = core.compile_model(core.read_model(path), "CPU", config)
        self.idle = [compiled.create_infer_request() for _ in range(streams)]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.idle[0].infer([x.contiguous().numpy()])[0])

    def start(self, x: torch.Tensor) -> Callable[[], torch.Tensor]:
        """Start a pass on ``x`` in an idle request (one must be idle); returns the function that waits for it and
        gives its output."""
        request = self.idle.pop()
        request.start_async([x.contiguous().numpy()])

        def result() -> torch.Tensor:
            request.wait()
            out = torch.from_numpy(request.get_output_tensor(0).data.copy())
            self.idle.append(request)
            return out

        return result


class _DropCudaHomeWarning(logging.Filter):
    """Drops torch's "No CUDA runtime is found, using CUDA_HOME=..." note, logged when inductor first imports its
    C++ extension tools on a machine with a CUDA toolkit but no GPU: noise for a CPU compile."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("No CUDA runtime is found")


@contextlib.contextmanager
def _quiet_cuda_home():
    """`_DropCudaHomeWarning` on torch's cpp_extension logger for the duration of a compile, then removed."""
    logger, note = logging.getLogger("torch.utils.cpp_extension"), _DropCudaHomeWarning()
    logger.addFilter(note)
    try:
        yield
    finally:
        logger.removeFilter(note)


def _freezing_patch():
    """Inductor's ``freezing`` (weights as constants: oneDNN-prepacked convs with fused ReLU/add) must be on while
    dynamo traces, not only in inductor's options. A private setting, checked against the pinned torch (2.14.1,
    tests/test_speed.py spies on it); where it is missing, compiling goes on without it, with a warning."""
    import contextlib

    import torch._inductor.config as inductor_config

    if not hasattr(inductor_config, "freezing"):
        logging.getLogger(LOGGER_NAME).warning("torch %s has no inductor freezing setting: compiling without frozen "
                                               "weights (slower)", torch.__version__)
        return contextlib.nullcontext()
    return inductor_config.patch(freezing=True)


class InferenceRunner(nn.Module):
    """A private copy of ``model`` in eval mode on ``device``, run on the backend `prepare_for_inference` chose.

    forward: the model's input ((B, 3, H, W) images or (B, 3T, H, W) clips, any float dtype, any device) -> its maps
    as float32 on ``device`` ((B, 1, H, W) or (B*T, 1, H, W)), computed under ``torch.inference_mode`` (so the
    result is an inference tensor). ``backend`` is one of `BACKENDS` but "auto"; ``path`` names it with the
    precision for logs and benchmark records, ``dtype`` is the precision the network runs in, ``threads`` the CPU
    threads of the "openvino" backend.
    """

    def __init__(self, model: nn.Module, device: torch.device, backend: str, dtype: torch.dtype,
                 threads: int = 1) -> None:
        super().__init__()
        self.model, self.backend = model, backend
        self.device, self.dtype, self.threads = torch.device(device), dtype, threads
        self._graphs: OrderedDict[tuple, tuple[torch.cuda.CUDAGraph, torch.Tensor, torch.Tensor]] = OrderedDict()
        self._compiled: Callable[[torch.Tensor], torch.Tensor] | None = None
        # the compiled network of each input shape (inductor, openvino), at most CPU_COMPILE_SHAPES
        self._networks: dict[tuple, Callable[[torch.Tensor], torch.Tensor]] = {}
        self._passes: dict[tuple, int] = {}  # eager passes per input shape before a CUDA graph

    @property
    def path(self) -> str:
        return f"{self.backend}+{'fp16' if self.dtype == torch.float16 else 'fp32'}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            x = x.to(self.device, self.dtype)
            if self.backend == "cuda_graphs":
                out = self._graph_forward(x)
            elif self.backend in ("inductor", "openvino"):
                out = self._compiled_forward(x)
            else:
                out = self.model(x)
            return out.float()

    def warm_up(self, x: torch.Tensor, passes: int = 1) -> None:
        """Run ``passes`` untimed passes on ``x``, bringing its shape to the backend's steady state."""
        self._passes[self._key(x)] = CUDA_GRAPH_AFTER
        for _ in range(passes):
            self(x)

    def stream(self, inputs: Iterable[tuple[Any, torch.Tensor | None]]) -> Iterator[tuple[Any, torch.Tensor | None]]:
        """(tag, input) pairs -> (tag, output) pairs in the same order, each output what `forward` gives for the
        input (None for None). The "openvino" backend keeps up to ``threads`` inputs in flight, each on one thread
        (OpenVINO's streams): the same bits as one input at a time on all threads, and where other processes keep
        the cores busy about twice the images/s (BENCHMARKS.md). Other backends run one input at a time."""
        in_flight: deque[tuple[Any, Callable[[], torch.Tensor] | None]] = deque()

        def finished(entry: tuple[Any, Callable[[], torch.Tensor] | None]) -> tuple[Any, torch.Tensor | None]:
            tag, result = entry
            return tag, None if result is None else result().float()

        for tag, x in inputs:
            if x is None:
                in_flight.append((tag, None))
                continue
            x = x.to(self.device, self.dtype)
            network = self._networks.get(self._key(x, streaming=True))  # only openvino with 2+ threads has one
            if network is None:
                while in_flight:
                    yield finished(in_flight.popleft())
                if self.backend == "openvino" and self.threads >= 2:  # a new shape: compiled now
                    with torch.inference_mode():
                        out = self._compiled_forward(x, streaming=True).float()
                else:
                    out = self(x)
                yield tag, out
                continue
            while len(in_flight) >= self.threads:
                yield finished(in_flight.popleft())
            in_flight.append((tag, network.start(x)))
        while in_flight:
            yield finished(in_flight.popleft())

    def _key(self, x: torch.Tensor, streaming: bool = False) -> tuple:
        return (tuple(x.shape), self.dtype, "streams") if streaming else (tuple(x.shape), self.dtype)

    def _compiled_forward(self, x: torch.Tensor, streaming: bool = False) -> torch.Tensor:
        key = self._key(x, streaming)
        network = self._networks.get(key)
        if network is not None:
            return network(x)
        if len(self._networks) >= CPU_COMPILE_SHAPES:
            return self.model(x)
        logger = logging.getLogger(LOGGER_NAME)
        logger.info("compiling the network (%s%s) for input %s: once per input shape", self.backend,
                    f", {self.threads} streams" if streaming else "", "x".join(map(str, x.shape)))
        try:
            network, out = self._compile(x, streaming)
        except Exception as err:
            # An error of the model itself is raised again by the eager model; only a failed export or compile (no
            # C++ compiler, an unsupported op) falls back to the channels_last eager path.
            out = self.model(x)
            logger.warning("compiling (%s) failed (%s): running channels_last eager", self.backend,
                           str(err).splitlines()[0])
            self.backend = "channels_last"
            return out
        self._networks[key] = network
        return out

    def _compile(self, x: torch.Tensor, streaming: bool = False) -> tuple[Callable[[torch.Tensor], torch.Tensor],
                                                                          torch.Tensor]:
        """The compiled network for ``x``'s shape (``streaming``: OpenVINO's one request per thread) and its output
        for ``x``."""
        if self.backend == "openvino":
            network = _OpenVINONetwork(self.model, tuple(x.shape), self.threads, self.threads if streaming else 1)
            return network, network(x)
        if self._compiled is None:
            self._compiled = torch.compile(self.model, dynamic=False)
        with _freezing_patch(), _quiet_cuda_home():
            return self._compiled, self._compiled(x)

    def _graph_forward(self, x: torch.Tensor) -> torch.Tensor:
        key = self._key(x)
        entry = self._graphs.get(key)
        if entry is None:
            self._passes[key] = self._passes.get(key, 0) + 1
            if self._passes[key] <= CUDA_GRAPH_AFTER:
                return self.model(x)
            try:
                entry = self._capture(x)
            except RuntimeError as err:
                logging.getLogger(LOGGER_NAME).warning("CUDA graph capture failed (%s): running eagerly", err)
                self.backend = "channels_last" if CUDA_CHANNELS_LAST else "eager"
                return self.model(x)
            self._graphs[key] = entry
            if len(self._graphs) > CUDA_GRAPH_SHAPES:
                self._graphs.popitem(last=False)
        self._graphs.move_to_end(key)
        graph, static_input, static_output = entry
        static_input.copy_(x)
        graph.replay()
        # The graph overwrites static_output on its next replay: hand out a copy.
        return static_output.clone()

    def _capture(self, x: torch.Tensor) -> tuple[torch.cuda.CUDAGraph, torch.Tensor, torch.Tensor]:
        static_input = x.clone()
        # Capture needs one pass on a side stream first (lazy allocations, cuDNN workspace).
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            self.model(static_input)
        torch.cuda.current_stream(self.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_output = self.model(static_input)
        return graph, static_input, static_output


def choose_backend(device: torch.device, requested: str = "auto") -> str:
    """The backend a job runs on: ``requested`` unless "auto"; "auto" is "cuda_graphs" on CUDA and "openvino" on the
    CPU ("channels_last" where the openvino package is missing). Decided from the request alone, never from the
    clock. Raises ValueError for a backend the device or the installation cannot run."""
    cuda = torch.device(device).type == "cuda"
    if requested not in BACKENDS:
        raise ValueError(f"--backend {requested}: choose from {', '.join(BACKENDS)}")
    if requested == "cuda_graphs" and not cuda:
        raise ValueError("--backend cuda_graphs needs a CUDA device (--gpu)")
    if requested == "openvino" and cuda:
        raise ValueError("--backend openvino runs on the CPU: leave out --gpu")
    if requested == "openvino" and not openvino_available():
        raise ValueError("--backend openvino needs the openvino package (pip install -r requirements.txt)")
    if requested != "auto":
        return requested
    if cuda:
        return "cuda_graphs"
    return "openvino" if openvino_available() else "channels_last"


def prepare_for_inference(model: nn.Module, device: torch.device, *, backend: str = "auto",
                          half: bool = False) -> InferenceRunner:
    """The one place choosing how a model runs at inference; returns an `InferenceRunner` (a callable module).

    The model is deep-copied (the caller's stays as it was), put in eval mode without gradients and moved to
    ``device``; the backend is `choose_backend` of the request. "eager" is the plain eager NCHW float32 model, for
    comparison; every other backend skips DiffBlock pre-biases that are exactly zero (`skip_zero_pre_biases`), and
    ``half`` runs the network in float16 on CUDA (ignored elsewhere, with a warning). The "openvino" backend runs
    ``torch.get_num_threads()`` threads, as the torch backends do. Every backend gives the eager NCHW float32 maps
    to float rounding (about 1e-7; BENCHMARKS.md). Nothing process-wide is changed (see `tune_process`). Inputs of
    any size and batch size work on every backend.
    """
    logger = logging.getLogger(LOGGER_NAME)
    device = torch.device(device)
    backend = choose_backend(device, backend)
    if half and (backend == "eager" or device.type != "cuda"):
        logger.warning("--half %s: running float32", "is ignored with --eager" if backend == "eager" else
                       "needs CUDA")
        half = False
    model = copy.deepcopy(model).eval().requires_grad_(False).to(device)
    if backend != "eager":
        skip_zero_pre_biases(model)
    if half:
        model = model.half()
    if backend in ("channels_last", "inductor", "openvino") or (backend == "cuda_graphs" and CUDA_CHANNELS_LAST):
        model = model.to(memory_format=torch.channels_last)
    return InferenceRunner(model, device, backend, torch.float16 if half else torch.float32,
                           threads=torch.get_num_threads())


def runner_from_flags(model: nn.Module, args, device: torch.device | None = None) -> InferenceRunner:
    """`prepare_for_inference` from the flags of `utils.add_inference_args` / `add_speed_args` (``--gpu`` unless
    ``device`` is given, ``--backend``, ``--eager``, ``--half``, ``--threads``), after `tune_process`; logs the
    backend it runs. A backend the device cannot run ends the script with one error line. ``--threads`` sets
    torch's CPU threads (``torch.set_num_threads``, process-wide: the scripts run inference and nothing else)."""
    device = device if device is not None else select_device(args.gpu)
    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)
    tune_process(device)
    try:
        runner = prepare_for_inference(model, device, backend="eager" if args.eager else args.backend,
                                       half=args.half)
    except ValueError as err:
        fail(str(err))
    logging.getLogger(LOGGER_NAME).info("inference backend %s on %s, %d CPU threads", runner.path, device,
                                        runner.threads)
    return runner


class Predictor:
    """A runner (`prepare_for_inference`) turning preprocessed images and clips into 8-bit maps at a given size."""

    def __init__(self, runner: nn.Module, video: bool, nframes: int) -> None:
        self.runner, self.video, self.nframes = runner, video, nframes

    def images(self, items: Iterable[tuple[Any, torch.Tensor | None, tuple[int, int]]]
               ) -> Iterator[tuple[Any, np.ndarray | None]]:
        """(tag, (1, 3, S, S) image or None, (H, W)) -> (tag, (H, W) uint8 map or None), in order; a video model
        sees each image as a still clip of nframes copies (its last map is kept). The runner's `stream` keeps
        several images in flight."""
        inputs = (((tag, size), image.repeat(1, self.nframes, 1, 1) if self.video and image is not None else image)
                  for tag, image, size in items)
        for (tag, size), out in self.runner.stream(inputs):
            yield tag, None if out is None else saliency_to_uint8(out[-1:], size)[0]


def video_maps(predictor: Predictor, frames: Iterator[np.ndarray], size: int | None) -> Iterator[np.ndarray]:
    """One (H, W) uint8 map per RGB frame of a stream, in order, holding at most a few clips of frames in memory.

    An image model sees one frame at a time; a video model clips of ``nframes`` consecutive frames, grouped by
    `data.video.clip_groups` (the tail and short videos as the test clips of SPEC §6.3 are built). The runner's
    `stream` keeps several frames or clips in flight.
    """
    shape: tuple[int, int] | None = None

    def preprocessed() -> Iterator[torch.Tensor]:
        nonlocal shape
        for rgb in frames:
            shape = rgb.shape[:2]
            yield preprocess_test(rgb, size)

    def inputs() -> Iterator[tuple[tuple, torch.Tensor]]:
        for clip, keep in clip_groups(preprocessed(), predictor.nframes if predictor.video else 1):
            yield (keep, shape), torch.cat(clip)[None] if predictor.video else clip[0][None]

    for (keep, frame_shape), out in predictor.runner.stream(inputs()):
        maps = saliency_to_uint8(out, frame_shape)  # (T, H, W), or (1, H, W) for an image model
        yield from (maps[position] for position in keep)
