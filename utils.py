"""Small script helpers: logging set-up, device selection, `fail`, seeding, the parse-time flag types, and the
process-wide settings of the inference scripts (`tune_process`, `inference_device`, `start_inference`, which only a
script's ``main`` calls). The flags of each job are declared by the engine module that reads them
(`engine.training.settings`, `engine.inference.loading`, `engine.inference.runner`, `engine.inference.speed`).

Every package may use this module; it imports nothing of the project but ``configs``. The jobs themselves
(training, inference, speed) live in ``engine/``.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import random
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

import numpy as np
import torch
from tqdm import tqdm

import configs

LOGGER_NAME = "sdnet"


class _ConsoleHandler(logging.StreamHandler):
    """Writes each record above the progress bars on the terminal (`tqdm.write` clears and redraws them), so that a
    line logged while a bar runs never splits it and the bar is not drawn twice."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=self.stream)
        except Exception:  # logging's own contract: report, never raise
            self.handleError(record)


def setup_logger(savedir: str | os.PathLike | None = None, rank: int = 0) -> logging.Logger:
    """Console (and, if ``savedir`` is given, ``savedir/log.txt``) logger; ranks other than 0 log warnings only."""
    logger = logging.getLogger(LOGGER_NAME)
    logger.handlers.clear()
    logger.propagate = False
    logger.setLevel(logging.INFO if rank == 0 else logging.WARNING)
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S")
    console = _ConsoleHandler(sys.stderr)
    console.setFormatter(fmt)
    logger.addHandler(console)
    if savedir is not None and rank == 0:
        Path(savedir).mkdir(parents=True, exist_ok=True)
        file_handler = logging.FileHandler(Path(savedir) / "log.txt")
        file_handler.setFormatter(fmt)
        logger.addHandler(file_handler)
    return logger


def fail(message: str, status: int = 2) -> NoReturn:
    """Log ``message`` as one error line (no traceback) and exit with ``status`` (2: bad usage or input)."""
    logging.getLogger(LOGGER_NAME).error(message)
    raise SystemExit(status)


def parse_gpu_list(gpu: str | None) -> list[int]:
    """``--gpu`` value -> device indices: '0,1' -> [0, 1]; '' or None -> []."""
    return [int(part) for part in str(gpu or "").split(",") if part.strip()]


def select_device(gpu: str | None) -> torch.device:
    """Device for ``--gpu`` ('' or None: CPU; '0' or '0,1': the first listed CUDA device).

    Without CUDA a non-empty ``--gpu`` logs one warning and falls back to the CPU, so every README command also
    runs on a CPU-only machine.
    """
    gpus = parse_gpu_list(gpu)
    if not gpus:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        logging.getLogger(LOGGER_NAME).warning("--gpu %s given but CUDA is not available: running on CPU", gpu)
        return torch.device("cpu")
    return torch.device("cuda", gpus[0])


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators (CUDA included) with ``seed``."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def model_names(kind: str | None = None) -> list[str]:
    """The ``configs.MODELS`` names of ``kind`` ('image', 'video'; None: all), sorted."""
    return sorted(name for name, spec in configs.MODELS.items() if kind in (None, spec["kind"]))


def int_between(minimum: int, maximum: int, unit: str = "") -> Callable[[str], int]:
    """argparse type: a whole number from ``minimum`` to ``maximum`` (``unit`` names what it counts)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            what = f"a whole number{unit and ' of ' + unit}"
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}{unit and ' ' + unit}, got {value}")
        if value > maximum:
            raise argparse.ArgumentTypeError(f"must be at most {maximum}{unit and ' ' + unit}, got {value}")
        return value

    return parse


# Upper bounds of the numeric flags, by what they count. Processes and threads: beyond a few per core they only
# queue for the cores while each takes its memory (1e9 of them ended every script in "out of memory").
MAX_PARALLEL = max(16, 4 * (os.cpu_count() or 1))
MAX_COUNT = 10**7  # steps, passes, frequencies
MAX_EPOCHS = 100_000
MAX_SEED = 2**32 - 1  # numpy's seeds
MAX_NFRAMES = 64  # frames per clip
data_processes = int_between(0, MAX_PARALLEL, "processes")
process_count = int_between(1, MAX_PARALLEL, "processes")
thread_count = int_between(1, MAX_PARALLEL, "threads")
seed_number = int_between(0, MAX_SEED)
frames_per_clip = int_between(1, MAX_NFRAMES, "frames")
epoch_count = int_between(0, MAX_EPOCHS, "epochs")


# Square network input sizes: the smallest every model runs on (configs.MIN_INPUT_SIZE).
def input_size(text: str) -> int:
    """argparse type of square network input sizes in pixels: configs.MIN_INPUT_SIZE (the smallest input every model
    accepts) to configs.MAX_INPUT_SIZE."""
    value = int_between(-(2**63), configs.MAX_INPUT_SIZE, "pixels")(text)
    if value < configs.MIN_INPUT_SIZE:
        raise argparse.ArgumentTypeError(f"must be at least {configs.MIN_INPUT_SIZE} pixels (the smallest input every "
                                         f"model accepts), got {value}")
    return value


def float_between(low: float, high: float, *, low_open: bool = False) -> Callable[[str], float]:
    """argparse type: a finite float in [``low``, ``high``] (``(low, high]`` with ``low_open``)."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not math.isfinite(value) or (value <= low if low_open else value < low) or value > high:
            bound = f"above {low:g}" if low_open else f"at least {low:g}"
            raise argparse.ArgumentTypeError(f"must be {bound} and at most {high:g}, got {text}")
        return value

    return parse




class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser with usage errors in one line (no usage block; exit status 2 as argparse's), naming one
    more mistake: a file whose name starts with '-' given as an input, which argparse takes for a flag (it must
    follow '--')."""

    def parse_known_args(self, args=None, namespace=None):
        self._given = list(sys.argv[1:] if args is None else args)
        return super().parse_known_args(args, namespace)

    def error(self, message: str) -> NoReturn:
        given = getattr(self, "_given", [])
        before = given[:given.index("--")] if "--" in given else given
        dashed = [arg for arg in before if arg.startswith("-") and len(arg) > 1 and Path(arg).exists()]
        if dashed:
            message = (f"{dashed[0]} names a file but starts with '-', so it reads as a flag: put -- before such "
                       f"inputs (e.g. {self.prog} [flags] -- {dashed[0]})")
        self.exit(2, f"{self.prog}: error: {message} (--help lists the flags)\n")


def add_max_megapixels_arg(parser: argparse.ArgumentParser) -> None:
    """``--max-megapixels``: the pixel cap of every image read (data.guard; default configs.DEFAULT_MAX_MEGAPIXELS)."""
    parser.add_argument("--max-megapixels", type=float_between(0.0, 1e4, low_open=True),
                        default=configs.DEFAULT_MAX_MEGAPIXELS, metavar="MP",
                        help=f"refuse images of more than MP million pixels before decoding them (default "
                             f"{configs.DEFAULT_MAX_MEGAPIXELS:g}: a 48-megapixel photo passes)")


# glibc malloc serves blocks above a (dynamic) threshold with mmap and unmaps them when freed, so every pass pays
# page faults to touch its activations again: ~90,000 per STDNet clip on the CPU, a third of its time. Blocks up to
# this size are kept in the heap instead and reused (resident memory stays at the peak of a pass; BENCHMARKS.md).
MALLOC_KEEP_BYTES = 2**30
# A server holds large photos only while it answers them: it keeps blocks up to 32 MiB (a network pass at its
# input size) and unmaps larger ones when freed, and trims the heap above 32 MiB, so that it returns near its idle
# size after a burst of 62-megapixel uploads (BENCHMARKS.md, bench/bench_serve_memory.py).
SERVER_KEEP_BYTES = 32 * 2**20


def keep_freed_memory(keep_bytes: int = MALLOC_KEEP_BYTES) -> bool:
    """glibc only: keep freed blocks up to ``keep_bytes`` for reuse (``mallopt``, for the rest of the process: it
    cannot be undone); under `MALLOC_KEEP_BYTES` the heap is also trimmed above ``keep_bytes``, at it never.
    Returns whether it was done."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    # Older glibc refuses mmap thresholds above 32 MiB (returns 0).
    if not mallopt(m_mmap_threshold, keep_bytes):
        mallopt(m_mmap_threshold, 32 * 2**20)
    mallopt(m_trim_threshold, 2**31 - 1 if keep_bytes >= MALLOC_KEEP_BYTES else keep_bytes)
    return True


def tune_process(device: torch.device, threads: int | None = None, *, cudnn_benchmark: bool = False,
                 keep_bytes: int = MALLOC_KEEP_BYTES) -> str:
    """Process-wide settings for a script that runs inference and nothing else, called by its ``main``: ``threads``
    CPU threads for torch (None: torch's default); on the CPU, freed blocks up to ``keep_bytes`` kept for reuse
    (`keep_freed_memory`); on CUDA, ``cudnn_benchmark`` (the speed scripts: kernels picked by timing, which the map
    writers leave off so that their bytes never depend on the machine's load). Returns a line saying what was set,
    for the log."""
    if threads:
        torch.set_num_threads(threads)
    done = [f"{torch.get_num_threads()} CPU threads"]
    if torch.device(device).type == "cuda":
        torch.backends.cudnn.benchmark = cudnn_benchmark
        done.append(f"cudnn.benchmark {cudnn_benchmark}")
    elif keep_freed_memory(keep_bytes):
        done.append("freed memory kept for reuse" if keep_bytes >= MALLOC_KEEP_BYTES else
                    f"freed blocks up to {keep_bytes // 2**20} MiB kept for reuse, larger ones given back")
    return "process settings: " + ", ".join(done)


def inference_device(gpu: str | None, threads: int | None = None, *, cudnn_benchmark: bool = False,
                     keep_bytes: int = MALLOC_KEEP_BYTES) -> torch.device:
    """The device of ``--gpu`` (`select_device`) with the process tuned for inference on it (`tune_process`, whose
    line is logged): the start-up of predict.py and serve.py once their inputs are checked; only a script's ``main``
    calls it."""
    device = select_device(gpu)
    logging.getLogger(LOGGER_NAME).info(tune_process(device, threads, cudnn_benchmark=cudnn_benchmark,
                                                     keep_bytes=keep_bytes))
    return device


def start_inference(gpu: str | None, threads: int | None = None, *, cudnn_benchmark: bool = False) -> torch.device:
    """The start-up of a script with nothing to check before it runs inference (the speed scripts): the console
    logger (`setup_logger`; first, since choosing the device may warn), then `inference_device`."""
    setup_logger()
    return inference_device(gpu, threads, cudnn_benchmark=cudnn_benchmark)
