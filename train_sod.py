"""Train SDNet / SDNet-A for image salient object detection (SPEC §6.1).

Each epoch makes one pass over the training set per ``--pass-scales`` entry (480, 400, 240, 320 px for
``--size 320``) with class-balanced BCE, then measures the MAE on ``--val-data``. Runs on the CPU, one GPU, several
GPUs (``--gpu 0,1``: one DDP process each) or under torchrun (one process per rank, NCCL or Gloo).

Example: python train_sod.py --model sdnet --resume --gpu 0,1 --datadir ROOTDIR/sod --savedir results/exp1
"""

from __future__ import annotations

import argparse
import functools

import configs
import utils
from data import DataError
from data.datasets import SODDataset
from engine import startup, train
from models.losses import weighted_bce_loss

DEFAULTS = configs.TRAIN_DEFAULTS["image"]


def build_parser() -> argparse.ArgumentParser:
    """Command-line flags: the shared training flags plus the image-specific ones."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    utils.add_training_args(parser, "image")
    group = parser.add_argument_group("image training")
    group.add_argument("--train-data", "--traindata", default=DEFAULTS["train_data"],
                       help="training set folder under --datadir (or --datadir/sod), '+'-joined for several")
    group.add_argument("--val-data", "--valdata", default=DEFAULTS["val_data"],
                       help="validation set folder under --datadir (or --datadir/sod); '' skips validation")
    bn = group.add_mutually_exclusive_group()
    bn.add_argument("--bn", action="store_true", default=DEFAULTS["bn"],
                    help="BatchNorm in the backbone DiffBlocks (SDNet-A: yes)")
    bn.add_argument("--nobn", dest="bn", action="store_false", help="no BatchNorm in the backbone (the default)")
    group.add_argument("--warmup", type=int, default=DEFAULTS["warmup"],
                       help="epochs of frozen branch logits from scratch (none with --preload/--finetune)")
    group.add_argument("--beta", type=float, default=DEFAULTS["beta"], help="weight factor of background pixels")
    group.add_argument("--pass-scales", type=float, nargs="+", default=list(DEFAULTS["pass_scales"]),
                       help="one pass per scale and epoch at round(scale * size / 16) * 16 px, in this order")
    return parser


class ImageTask(startup.TrainingTask):
    """SDNet / SDNet-A on still images: multi-scale passes, weighted BCE, one validation set."""

    kind = "image"

    def datasets(self, args):
        try:
            train_set = SODDataset(args.datadir, args.train_data, mode="train", size=args.size, seed=args.seed)
        except DataError as err:
            utils.fail(f"--train-data {args.train_data}: {err}")
        if not args.val_data:
            return train_set, {}
        try:
            val_set = SODDataset(args.datadir, args.val_data, mode="test", size=args.size, with_gt=True)
        except DataError as err:
            utils.fail(f"--val-data {args.val_data}: {err}")
        return train_set, {args.val_data: val_set}

    def param_groups(self, model, args):
        return train.image_param_groups(model, args.wd)

    def loss(self, args, batch):
        # iter-size x the nominal per-process batch divides every batch's summed loss (also the smaller last one)
        return functools.partial(weighted_bce_loss, beta=args.beta, divisor=batch * args.iter_size)

    def pass_sizes(self, args):
        """round(s * size / 16) * 16 per scale (Python rounding, half to even)."""
        return [round(scale * args.size / 16) * 16 for scale in args.pass_scales]

    def warmup(self, args):
        return 0 if (args.preload or args.finetune) else args.warmup


def main(argv: list[str] | None = None) -> None:
    startup.run(ImageTask(), build_parser().parse_args(argv))


if __name__ == "__main__":
    main()
