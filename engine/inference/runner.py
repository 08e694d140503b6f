"""The inference runner: the one place deciding how a model runs, and which prepared network runs each input.

`prepare_for_inference` fixes the backend once, from the request alone (device, ``--backend``, precision), before
anything runs; `InferenceRunner` keeps the networks of the last few input shapes and sends every input, one at a
time (`InferenceRunner.forward`) or several in flight (`InferenceRunner.stream`), to the network of its shape. A map
therefore depends on its own input only, never on the other inputs of a run or on the machine's load.
`runner_from_flags` is the same from the scripts' flags (`add_device_args`, resolved once into `RunnerFlags`).
Nothing here changes process-wide state: the scripts' ``main`` set threads and memory behaviour
(`utils.tune_process`).
"""

from __future__ import annotations

import argparse
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from data.readers import DataError
from engine.inference.backends import (
    BACKENDS,
    INFERENCE_PRECISIONS,
    Backend,
    BackendError,
    Network,
    Settings,
    backend_class,
    choose_backend,
)
from engine.inference.network_cache import default_cache_dir
from engine.inference.quantization import DEFAULT_TOLERANCE, Int8Sets, add_int8_args, int8_sets
from utils import LOGGER_NAME, fail, select_device, thread_count

__all__ = ["RUNNER_NETWORKS", "BackendError", "InferenceRunner", "prepare_for_inference", "add_device_args",
           "RunnerFlags", "runner_from_flags"]

# Prepared networks a runner keeps (the least recently used is dropped): a compiled network holds its weights and
# the activation memory of its shape, so full-resolution maps of many sizes must not keep one per size. A dropped
# shape met again is prepared again, from the on-disk cache where the backend has one; it gives the same bits.
RUNNER_NETWORKS = 4


class InferenceRunner(nn.Module):
    """A model made ready by one backend (`engine.inference.backends`), run on the networks it prepares per input
    shape.

    forward: the model's input ((B, 3, H, W) images or (B, 3T, H, W) clips, any float dtype, any device) -> its maps
    as float32 on ``device`` ((B, 1, H, W) or (B*T, 1, H, W)), computed under ``torch.inference_mode``. ``path``
    names the backend with the precision it runs (read back from a compiled network once there is one).
    """

    def __init__(self, backend: Backend) -> None:
        super().__init__()
        self.backend = backend
        self.model = backend.model
        self.device, self.dtype = backend.settings.device, backend.settings.dtype
        self.threads = backend.settings.threads
        self._networks: OrderedDict[tuple[tuple[int, ...], int], Network] = OrderedDict()
        self.prepare_seconds = 0.0  # spent preparing networks (compiling, or loading them from the cache)

    @property
    def path(self) -> str:
        return f"{self.backend.name}+{self.backend.precision}"

    @property
    def precision(self) -> str:
        return self.backend.precision

    def network(self, x: torch.Tensor, streams: int = 1) -> Network:
        """The network for ``x``'s shape with up to ``streams`` inputs in flight: kept, or prepared now."""
        key = (tuple(x.shape), streams)
        network = self._networks.get(key)
        if network is None:
            start = time.perf_counter()
            network = self._networks[key] = self.backend.prepare(key[0], streams)
            self.prepare_seconds += time.perf_counter() - start
            while len(self._networks) > RUNNER_NETWORKS:
                self._networks.popitem(last=False)
        self._networks.move_to_end(key)
        return network

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            x = x.to(self.device, self.dtype)
            return self.network(x)(x).float()

    def warm_up(self, x: torch.Tensor, passes: int = 1) -> None:
        """Run ``passes`` untimed passes on ``x``, bringing its shape to the backend's steady state."""
        for _ in range(passes):
            self(x)

    def stream(self, inputs: Iterable[tuple[Any, torch.Tensor | None]]) -> Iterator[tuple[Any, torch.Tensor | None]]:
        """(tag, input) pairs -> (tag, output) pairs in the same order (None for None), each output what `forward`
        gives for the input alone. Up to ``threads`` inputs are in flight on a network that has streams (OpenVINO's,
        one thread each): where other processes keep the cores busy, about twice the images/s of one at a time
        (BENCHMARKS.md). Each output is then the bits of a one-thread pass (a runner of ``threads=1``), which are
        `forward`'s on several threads to float32 rounding: the same bits on the Intel Xeons measured, 6e-8 apart on
        an AVX2 AMD EPYC, whose OpenVINO kernels sum in another order on two threads. A consumer may stop early: the
        passes still in flight are finished and dropped, and the runner stays usable. Grad mode is the caller's
        between outputs: the passes run in inference mode, which a suspended generator does not leave entered."""
        in_flight: deque[tuple[Any, Callable[[], torch.Tensor] | None]] = deque()
        current: Network | None = None

        def finished() -> tuple[Any, torch.Tensor | None]:
            tag, finish = in_flight.popleft()
            with torch.inference_mode():
                return tag, None if finish is None else finish().float()

        try:
            for tag, x in inputs:
                if x is None:
                    in_flight.append((tag, None))
                    continue
                with torch.inference_mode():
                    x = x.to(self.device, self.dtype)
                    network = self.network(x, self.threads)
                # A request is free again once its pass is finished; passes of two networks never overlap.
                while in_flight and (network is not current or sum(f is not None for _, f in in_flight)
                                     >= network.slots):
                    yield finished()
                current = network
                with torch.inference_mode():
                    in_flight.append((tag, network.start(x)))
            while in_flight:
                yield finished()
        finally:
            with torch.inference_mode():
                for _, finish in in_flight:
                    if finish is not None:
                        finish()


def prepare_for_inference(model: nn.Module, device: torch.device | str, *, backend: str = "auto",
                          precision: str = "fp32", threads: int | None = None,
                          cache: str | Path | None = None, int8: Int8Sets | None = None) -> InferenceRunner:
    """The runner of ``model`` on ``device``: backend and precision fixed now, from the request alone.

    The model is copied (the caller's stays as it was). ``backend``: one of `engine.inference.backends.BACKENDS`
    ("auto": `engine.inference.backends.choose_backend`); ``precision``: 'fp32', 'fp16' (CUDA), 'bf16' (the CPU,
    OpenVINO, a CPU with native bf16) or 'int8' (the CPU, OpenVINO or ExecuTorch: quantized on ``int8``'s calibration
    set and kept only if it passes its accuracy gate, `engine.inference.quantization`; default: the project's fixed
    set); ``threads``: CPU threads of a pass (default: torch's); ``cache``: folder of compiled networks kept between
    runs (None: none). Every backend gives the eager NCHW float32 maps to float
    rounding in fp32 (about 1e-7; BENCHMARKS.md). Inputs of any size and batch size work on every backend. Raises
    `BackendError` (one line, naming the backend and the flag that avoids it) for a request that cannot run here.
    """
    device = torch.device(device)
    name = choose_backend(device, backend, precision)
    if precision == "int8" and int8 is None:
        int8 = int8_sets()
    settings = Settings(device=device, precision=precision, threads=threads or torch.get_num_threads(),
                        cache=Path(cache) if cache is not None else None, int8=int8 if precision == "int8" else None)
    return InferenceRunner(backend_class(name)(model, settings))


def add_device_args(parser: argparse.ArgumentParser) -> None:
    """The flags of where and how a model runs at inference, resolved by `RunnerFlags.from_args`."""
    group = parser.add_argument_group("device")
    group.add_argument("--gpu", default="", help="CUDA device(s), e.g. 0 or 0,1 (the first is used); '' = CPU "
                                                 "(without CUDA: the CPU, warned)")
    group.add_argument("--backend", default="auto", choices=BACKENDS,
                       help="how the network runs (docs/runtime.md; default: cuda_graphs on CUDA, openvino on the "
                            "CPU)")
    group.add_argument("--eager", action="store_true", help="the release's flag: --backend eager (plain eager NCHW)")
    group.add_argument("--precision", default="fp32", choices=INFERENCE_PRECISIONS,
                       help="fp32 (default, the authors' maps to float rounding), bf16 (the CPU with OpenVINO, on "
                            "CPUs with AVX512-BF16 or AMX: about 2x faster, maps moved as docs/runtime.md "
                            "measures), fp16 (CUDA) or int8 (the CPU with openvino or executorch, kept only if it "
                            "passes the accuracy gate: --calibration, --gate)")
    group.add_argument("--half", action="store_true",
                       help="the release's flag: --precision fp16 on CUDA (elsewhere fp32, warned)")
    group.add_argument("--threads", type=thread_count, default=None,
                       help="CPU threads (default: PyTorch's, one per physical core)")
    group.add_argument("--cache-dir", default=None,
                       help="folder of compiled networks kept between runs (default: $SDNET_CACHE_DIR, else "
                            "~/.cache/sdnet)")
    group.add_argument("--no-cache", action="store_true", help="keep no compiled networks between runs")
    add_int8_args(group)


@dataclass(frozen=True)
class RunnerFlags:
    """The device flags, resolved: ``gpu`` (``--gpu``), ``backend`` and ``precision`` with the release's aliases
    folded in (``--eager`` is backend 'eager', ``--half`` precision 'fp16'), ``half`` (fp16 came from --half, which
    falls back to fp32 with a warning where fp16 cannot run, as the release's commands expect), ``threads``,
    ``cache`` (the folder of compiled networks, None for none), and for int8 the ``calibration`` and ``gate``
    folders (None: the project's fixed set) and the ``gate_tolerance``."""

    gpu: str = ""
    backend: str = "auto"
    precision: str = "fp32"
    half: bool = False
    threads: int | None = None
    cache: Path | None = None
    calibration: Path | None = None
    gate: Path | None = None
    gate_tolerance: float = DEFAULT_TOLERANCE

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> RunnerFlags:
        """From the flags of `add_device_args`; contradicting ones end the script with one line (exit 2)."""
        if args.eager and args.backend not in ("auto", "eager"):
            fail(f"--eager and --backend {args.backend}: give one of them")
        if args.half and args.precision != "fp32":
            fail(f"--half and --precision {args.precision}: give one of them")
        if args.precision != "int8" and (args.calibration or args.gate):
            fail(f"{'--calibration' if args.calibration else '--gate'} is for --precision int8")
        cache = None if args.no_cache else Path(args.cache_dir) if args.cache_dir else default_cache_dir()
        return cls(gpu=args.gpu, backend="eager" if args.eager else args.backend,
                   precision="fp16" if args.half else args.precision, half=args.half, threads=args.threads,
                   cache=cache, calibration=Path(args.calibration) if args.calibration else None,
                   gate=Path(args.gate) if args.gate else None, gate_tolerance=args.gate_tolerance)

    def precision_on(self, device: torch.device) -> str:
        """The precision to run on ``device``: the release's ``--half`` runs float32 where float16 cannot run
        (the CPU, the eager backend), warned, so that its commands run as written."""
        if self.half and (device.type != "cuda" or self.backend == "eager"):
            logging.getLogger(LOGGER_NAME).warning("--half %s: running float32", "is ignored with --eager"
                                                   if self.backend == "eager" else "needs CUDA")
            return "fp32"
        return self.precision


def runner_from_flags(model: nn.Module, flags: RunnerFlags, device: torch.device | None = None) -> InferenceRunner:
    """`prepare_for_inference` as ``flags`` ask (on ``flags.gpu`` unless ``device`` is given); logs the backend. A
    request that cannot run here ends the script with one error line (exit status 2)."""
    device = device if device is not None else select_device(flags.gpu)
    precision = flags.precision_on(device)
    try:
        int8 = int8_sets(flags.calibration, flags.gate, flags.gate_tolerance) if precision == "int8" else None
        runner = prepare_for_inference(model, device, backend=flags.backend, precision=precision,
                                       threads=flags.threads, cache=flags.cache, int8=int8)
    except (BackendError, DataError) as err:
        fail(str(err))
    logging.getLogger(LOGGER_NAME).info("inference backend %s on %s, %d CPU threads%s", runner.path, device,
                                        runner.threads, f", compiled networks cached in {flags.cache}"
                                        if flags.cache and runner.backend.name in ("openvino", "onnxruntime",
                                                                                   "executorch") else "")
    return runner
