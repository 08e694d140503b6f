"""What the two map generators (``generate_salmaps_sod.py``, ``generate_salmaps_vsod.py``) share: their common flags,
the checks before anything is written, the model and its `Predictor` on the process's device (one process, or one
of several under torchrun / srun: `engine.inference.sharding`), the maps of a test set with a progress bar, and one
error line for a failure while maps are written."""

from __future__ import annotations

import argparse
import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from torch import nn
from torch.utils.data import Dataset
from tqdm import tqdm

from data.atomic import unwritable
from data.datasets import test_loader
from engine.distributed import DistContext, cleanup_distributed, distributed_context, init_distributed, is_main_process
from engine.inference.loading import ModelFlags, add_model_args, model_from_flags
from engine.inference.predictor import ModelInput, Predictor
from engine.inference.runner import BackendError, RunnerFlags, add_device_args, runner_from_flags
from engine.inference.sharding import share, summed
from models import ModelDescription
from utils import add_max_megapixels_arg, data_processes, fail, input_size, setup_logger

__all__ = ["add_generation_args", "start_generation", "generation_model", "generation_predictor", "take_share",
           "test_set_maps", "writing_maps", "finish"]


def add_generation_args(parser: argparse.ArgumentParser, kind: str, layout: str) -> None:
    """The flags both generators take beside their data flags: the checkpoint (``--evaluate``, the release's name),
    ``--savedir`` (maps written as ``layout`` below it), ``--size``, ``-j``, the decode guard, the model flags of
    ``kind`` and the device flags."""
    parser.add_argument("--evaluate", required=True, metavar="CHECKPOINT",
                        help="the checkpoint to make the maps with (the release's name for it; --checkpoint "
                             "elsewhere): the authors' (module. keys) or ours, training form or converted")
    parser.add_argument("--savedir", default="results/savedir", help=f"maps go to <savedir>/{layout}")
    parser.add_argument("--size", type=input_size, default=None,
                        help="square network input size in pixels (default: no resize)")
    parser.add_argument("-j", "--workers", type=data_processes, default=4,
                        help=f"{'image' if kind == 'image' else 'frame'} reading processes")
    add_max_megapixels_arg(parser)
    add_model_args(parser, kind)
    add_device_args(parser)


def start_generation(args: argparse.Namespace) -> tuple[logging.Logger, DistContext]:
    """The logger (ranks other than 0: warnings only) and the process's context; a ``--datadir`` that is not a
    folder or a ``--savedir`` that cannot be written ends the script with one line, before anything is written."""
    logger = setup_logger(None, 0 if is_main_process() else 1)
    ctx = distributed_context(args.gpu)
    if not Path(args.datadir).is_dir():
        fail(f"--datadir {args.datadir}: no such folder")
    if (why := unwritable(args.savedir, folder=True)) is not None:
        fail(f"--savedir {args.savedir}: {why}")
    return logger, ctx


def generation_model(args: argparse.Namespace, kind: str) -> tuple[nn.Module, ModelDescription]:
    """The model of ``--evaluate`` as the model flags ask (one error line where the checkpoint does not fit)."""
    return model_from_flags(ModelFlags.from_args(args), args.evaluate, kind=kind)


def test_set_maps(predictor: Predictor, dataset: Dataset, workers: int, *, desc: str, unit: str,
                  show: bool) -> Iterator[tuple[dict, np.ndarray | None]]:
    """(item, its uint8 maps) for every item of a test ``dataset`` in order (None where the item holds an
    ``error``): an image's (H, W) map (`Predictor.images`), a clip's (T, H, W) maps (`Predictor.clips`), by the
    item's ``image`` or ``clip``; ``workers`` reading processes, a progress bar if ``show``."""
    key = "clip" if predictor.input.video else "image"
    items = ((item, None if item["error"] else item[key], item["size"]) for item in test_loader(dataset, workers))
    maps = predictor.clips(items) if predictor.input.video else predictor.images(items)
    yield from tqdm(maps, total=len(dataset), desc=desc, unit=unit, leave=False, disable=not show)


def generation_predictor(model: nn.Module, description: ModelDescription, args: argparse.Namespace,
                         ctx: DistContext) -> Predictor:
    """Join the run's processes (if several), then the predictor of ``model`` on this process's device as the
    device flags ask, its inputs at ``--size`` (none: each image or clip at its own size)."""
    init_distributed(ctx)
    runner = runner_from_flags(model, RunnerFlags.from_args(args), ctx.device)
    return Predictor(runner, ModelInput.of(description, args.size, full_resolution=True))


def take_share(dataset: Dataset, keys: list, ctx: DistContext) -> None:
    """Keep in ``dataset.samples`` this process's share of them (``keys``: one per sample,
    `engine.inference.sharding.share`)."""
    dataset.samples = [dataset.samples[i] for i in share(keys, ctx.rank, ctx.world_size)]


def finish(counts: list[int], ctx: DistContext) -> list[int]:
    """``counts`` summed over the run's processes, which then leave the process group."""
    counts = summed(counts, ctx)
    cleanup_distributed()
    return counts


@contextlib.contextmanager
def writing_maps(savedir: str) -> Iterator[None]:
    """A backend failure, a full disk or a folder made read-only while maps are written ends the script with one
    line; the maps written before are complete (atomic writes)."""
    try:
        yield
    except BackendError as err:
        fail(str(err))
    except OSError as err:
        fail(f"--savedir {savedir}: cannot write a map: {err}")
