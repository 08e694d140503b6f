"""Train SDNet / SDNet-A for image salient object detection (SPEC §6.1).

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
from data import DataError
from data.datasets import SODDataset
from models import build_model
from models.losses import weighted_bce_loss

DEFAULTS = configs.TRAIN_DEFAULTS["image"]


def build_parser() -> argparse.ArgumentParser:
    """Command-line flags: the shared training flags plus the image-specific ones."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    utils.add_common_args(parser, "image")
    group = parser.add_argument_group("image training")
    group.add_argument("--train-data", "--traindata", default=DEFAULTS["train_data"],
                       help="training set folder under --datadir (or --datadir/sod), '+'-joined for several")
    group.add_argument("--val-data", "--valdata", default=DEFAULTS["val_data"],
                       help="validation set folder under --datadir (or --datadir/sod); '' skips validation")
    group.add_argument("--bn", action="store_true", help="BatchNorm in the backbone DiffBlocks (SDNet-A: yes)")
    group.add_argument("--warmup", type=int, default=DEFAULTS["warmup"],
                       help="epochs of frozen branch logits from scratch (none with --preload/--finetune)")
    group.add_argument("--beta", type=float, default=DEFAULTS["beta"], help="weight factor of background pixels")
    group.add_argument("--pass-scales", type=float, nargs="+", default=list(DEFAULTS["pass_scales"]),
                       help="one pass per scale and epoch at round(scale * size / 16) * 16 px, in this order")
    return parser


def pass_sizes(size: int, scales: list[float]) -> list[int]:
    """Input size of each pass of an epoch: round(s * size / 16) * 16 (Python rounding, half to even)."""
    return [round(scale * size / 16) * 16 for scale in scales]


def train(args: argparse.Namespace) -> None:
    """One training process (of one or several)."""
    ctx, logger = utils.start_process(args.gpu)
    utils.check_training_args(args, ctx)
    utils.init_distributed(ctx)
    resume = utils.load_resume_checkpoint(args)
    utils.seed_everything(utils.resolve_seed(args, ctx))
    try:
        train_set = SODDataset(args.datadir, args.train_data, mode="train", size=args.size, seed=args.seed)
    except DataError as err:
        utils.fail(f"--train-data {args.train_data}: {err}")
    val_sets = {}
    if args.val_data:
        try:
            val_sets[args.val_data] = SODDataset(args.datadir, args.val_data, mode="test", size=args.size,
                                                 with_gt=True)
        except DataError as err:
            utils.fail(f"--val-data {args.val_data}: {err}")

    model = build_model(args.model, args.config, bn=args.bn)
    start_epoch, best = utils.initialise_model(model, args, resume, logger)
    model.to(ctx.device)
    optimizer = torch.optim.Adam(utils.image_param_groups(model, args.wd), lr=args.lr, betas=DEFAULTS["betas"])
    scaler = torch.amp.GradScaler("cuda", enabled=args.amp)
    if resume is not None:
        utils.restore_optimizer(optimizer, resume, args)
        if args.amp and "scaler" in resume:
            scaler.load_state_dict(resume["scaler"])

    logger = utils.start_run_files(args, ctx, resume)
    logger.info("training %s (config %s, bn %s) on %s: %d images, %d process(es), seed %d", args.model, args.config,
                args.bn, ctx.device, len(train_set), ctx.world_size, args.seed)
    job = utils.TrainJob(
        args=args, model=model, optimizer=optimizer, train_set=train_set,
        # the nominal per-process batch divides every batch's summed loss (also the smaller last one)
        loss_fn=functools.partial(weighted_bce_loss, beta=args.beta, divisor=args.batch_size // ctx.world_size),
        pass_sizes=pass_sizes(args.size, args.pass_scales), val_sets=val_sets,
        best_files={name: "checkpoint_best.pth" for name in val_sets},
        warmup=0 if (args.preload or args.finetune) else args.warmup,
        start_epoch=start_epoch, best=best, scaler=scaler)
    utils.fit(job, ctx, logger)


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    utils.launch(train, args)


if __name__ == "__main__":
    main()
