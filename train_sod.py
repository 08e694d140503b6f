"""Train SDNet / SDNet-A for image salient object detection (design §6.1).

Each epoch makes one pass over the training set per ``--pass-scales`` entry (480, 400, 240, 320 px for
``--size 320``) with class-balanced BCE, then measures the MAE on ``--val-data``. Runs on the CPU, one GPU, several
GPUs (``--gpu 0,1``: one DDP process each) or under torchrun (one process per rank, NCCL or Gloo).

Example: python train_sod.py --model sdnet --resume --gpu 0,1 --datadir ROOTDIR/sod --savedir results/exp1
"""

from __future__ import annotations

import argparse
import functools

import torch

import configs
import utils
from data.datasets import SODDataset, sod_validation_sets
from engine.training import loop, startup
from engine.training.settings import TrainingTask, TrainSettings, add_training_args, settings_from_flags
from models import build_model
from models.losses import image_training_loss

DEFAULTS = configs.TRAIN_DEFAULTS["image"]


def build_parser() -> argparse.ArgumentParser:
    """Command-line flags: the shared training flags plus the image-specific ones."""
    parser = utils.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_training_args(parser, "image")
    group = parser.add_argument_group("image training")
    group.add_argument("--train-data", "--traindata", default=DEFAULTS["train_data"],
                       help="training set folder under --datadir (or --datadir/sod), '+'-joined for several")
    group.add_argument("--val-data", "--valdata", default=DEFAULTS["val_data"],
                       help="validation set folder under --datadir (or --datadir/sod); '' skips validation")
    bn = group.add_mutually_exclusive_group()
    bn.add_argument("--bn", action="store_true", default=DEFAULTS["bn"],
                    help="BatchNorm in the backbone DiffBlocks (SDNet-A: yes)")
    bn.add_argument("--nobn", dest="bn", action="store_false", help="no BatchNorm in the backbone (the default)")
    group.add_argument("--warmup", type=utils.epoch_count, default=DEFAULTS["warmup"],
                       help="epochs of frozen branch logits from scratch (none with --preload/--finetune)")
    group.add_argument("--beta", type=utils.float_between(0.0, 1000.0, low_open=True), default=DEFAULTS["beta"],
                       help="weight factor of background pixels (> 0)")
    low, high = configs.PASS_SCALE_RANGE
    group.add_argument("--pass-scales", type=utils.float_between(low, high), nargs="+",
                       default=list(DEFAULTS["pass_scales"]), metavar="SCALE",
                       help=f"multipliers of --size ({low:g} to {high:g}): one pass per scale and epoch at "
                            "round(scale * size / 16) * 16 px, in this order (default: "
                            f"{' '.join(map(str, DEFAULTS['pass_scales']))})")
    return parser


TASK_FLAGS = ("train_data", "val_data", "warmup", "beta", "pass_scales")


def image_task(settings: TrainSettings) -> TrainingTask:
    """SDNet / SDNet-A on still images as data: multi-scale passes (round(s * size / 16) * 16 per scale, Python
    rounding), weighted BCE, one validation set."""
    flag = settings.task_flag
    val_data = flag("val_data")
    return TrainingTask(
        kind="image",
        build_model=functools.partial(build_model, settings.model, settings.config, bn=settings.bn),
        train_set=functools.partial(SODDataset, settings.datadir, flag("train_data"), mode="train",
                                    size=settings.size, max_pixels=settings.max_pixels),
        val_sets=functools.partial(sod_validation_sets, settings.datadir, val_data, settings.size,
                                   max_pixels=settings.max_pixels),
        loss=functools.partial(image_training_loss, beta=flag("beta"), iter_size=settings.iter_size),
        param_groups=functools.partial(loop.image_param_groups, wd=settings.wd),
        train_flag=f"--train-data {flag('train_data')}", val_flag=f"--val-data {val_data}",
        pass_sizes=tuple(round(scale * settings.size / 16) * 16 for scale in flag("pass_scales")),
        warmup=0 if (settings.preload or settings.finetune) else flag("warmup"),
        summary=f"bn {settings.bn}",
        loss_meaning="class-balanced BCE summed over each image's pixels, per image (the release's scale: "
                     "hundreds to thousands)")


def main(argv: list[str] | None = None) -> None:
    utils.setup_logger(None, 0 if startup.is_main_process() else 1)  # flag errors below are logged lines
    settings = settings_from_flags(build_parser().parse_args(argv), "image", TASK_FLAGS)
    torch.set_num_threads(startup.choose_threads(settings)[0])  # logged by the engine, with why
    startup.run(image_task(settings), settings)


if __name__ == "__main__":
    main()
