"""Train STDNet / STDNet-A for video salient object detection (SPEC §6.3).

Clips of ``--nframes`` frames from the list file ``--train-lst`` (still images become static clips), loss BCE +
(1 - SSIM) + IoU, the preloaded backbone trained at lr x ``--lr-reduce``; after each epoch the MAE on every
validation set of ``--val-lst`` (DAVSOD, VOS, DAVIS) with a best checkpoint per set. Runs on the CPU, one GPU,
several GPUs (``--gpu 0,1``: one DDP process each) or under torchrun.

Example: python train_vsod.py --model stdnet --resume --gpu 0,1 --datadir ROOTDIR --lr-reduce 0.1
         --preload checkpoints/sdnet_stage1_backbone.pth --savedir results/exp5
"""

from __future__ import annotations

import argparse

import torch

import configs
import utils
from data import DataError, read_video_list, select_videos
from data.datasets import VSODDataset
from models import build_model
from models.losses import bce_ssim_iou_loss

DEFAULTS = configs.TRAIN_DEFAULTS["video"]


def build_parser() -> argparse.ArgumentParser:
    """Command-line flags: the shared training flags plus the video-specific ones."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    utils.add_common_args(parser, "video")
    group = parser.add_argument_group("video training")
    group.add_argument("--train-lst", default=DEFAULTS["train_lst"], help="training list file (paths under --datadir)")
    group.add_argument("--val-lst", default=DEFAULTS["val_lst"],
                       help="validation list file; one validation set per dataset in it; '' skips validation")
    group.add_argument("--val-cut", type=float, default=DEFAULTS["val_cut"],
                       help="fraction of the sorted annotated frames kept per DAVSOD validation video (>= 1: all)")
    group.add_argument("--framegap", type=float, default=DEFAULTS["framegap"],
                       help="gap target of VOS training clips and of validation clips")
    group.add_argument("--nframes", type=int, default=DEFAULTS["nframes"], help="frames per clip")
    group.add_argument("--tid", nargs="+", default=list(DEFAULTS["tid"]), choices=["cv", "cd", "ad"],
                       help="branch ops of the temporal difference convolutions (STDC)")
    group.add_argument("--scales", type=float, nargs="+", default=list(DEFAULTS["scales"]),
                       help="initial STDC branch logits, one per --tid op")
    group.add_argument("--lr-reduce", type=float, default=DEFAULTS["lr_reduce"],
                       help="lr factor of the preloaded backbone (names containing 'block')")
    group.add_argument("--nobn", dest="bn", action="store_false",
                       help="no BatchNorm in the backbone DiffBlocks and STDC branches (decoder BN stays)")
    return parser


def validation_sets(args: argparse.Namespace, list_file) -> dict[str, VSODDataset]:
    """One validation dataset per dataset name in the list (DAVSOD, VOS, DAVIS, ...), in list order; only DAVSOD
    is cut to its first ``--val-cut`` of annotated frames (SPEC §6.3)."""
    names = list(dict.fromkeys(entry.dataset for entry in select_videos(read_video_list(list_file))))
    cut = args.val_cut if args.val_cut < 1 else 1.0
    return {name: VSODDataset(args.datadir, list_file, mode="val", nframes=args.nframes, size=args.size,
                              framegap=args.framegap, cut=cut if name == "DAVSOD" else 1.0, dataset=name)
            for name in names}


def train(args: argparse.Namespace) -> None:
    """One training process (of one or several)."""
    ctx, logger = utils.start_process(args.gpu)
    utils.check_training_args(args, ctx)
    if len(args.scales) != len(args.tid):
        utils.fail(f"--scales needs one value per --tid op ({len(args.tid)}), got {len(args.scales)}")
    if args.size % 32:  # as in the released script: clip sizes are multiples of 32
        size = max(32, round(args.size / 32) * 32)
        if ctx.is_main:
            logger.warning("--size %d rounded to %d, a multiple of 32", args.size, size)
        args.size = size
    train_lst = utils.resolve_list_file(args.train_lst, "--train-lst")
    val_lst = utils.resolve_list_file(args.val_lst, "--val-lst") if args.val_lst else None
    utils.init_distributed(ctx)
    resume = utils.load_resume_checkpoint(args)
    utils.seed_everything(utils.resolve_seed(args, ctx))
    try:
        train_set = VSODDataset(args.datadir, train_lst, mode="train", nframes=args.nframes, size=args.size,
                                framegap=args.framegap, seed=args.seed)
    except DataError as err:
        utils.fail(f"--train-lst {args.train_lst}: {err}")
    try:
        val_sets = validation_sets(args, val_lst) if val_lst else {}
    except DataError as err:
        utils.fail(f"--val-lst {args.val_lst}: {err}")

    model = build_model(args.model, args.config, bn=args.bn, tid=args.tid, scales=args.scales, nframes=args.nframes)
    start_epoch, best = utils.initialise_model(model, args, resume, logger)
    if not args.preload and ctx.is_main:
        logger.warning("no --preload: the backbone is trained from scratch at the full lr (the paper's recipe "
                       "starts from a pretrained backbone)")
    model.to(ctx.device)
    groups = utils.video_param_groups(model, args.wd, args.lr_reduce, preloaded=bool(args.preload))
    optimizer = torch.optim.Adam(groups, lr=args.lr, betas=DEFAULTS["betas"])
    scaler = torch.amp.GradScaler("cuda", enabled=args.amp)
    if resume is not None:
        utils.restore_optimizer(optimizer, resume, args)
        if args.amp and "scaler" in resume:
            scaler.load_state_dict(resume["scaler"])

    logger = utils.start_run_files(args, ctx, resume)
    logger.info("training %s (config %s, bn %s, tid %s) on %s: %d clips, validation on %s, %d process(es), "
                "seed %d", args.model, args.config, args.bn, " ".join(args.tid), ctx.device, len(train_set),
                ", ".join(val_sets) or "nothing", ctx.world_size, args.seed)
    job = utils.TrainJob(
        args=args, model=model, optimizer=optimizer, train_set=train_set,
        # (B, T, 1, S, S) targets against the (B*T, 1, S, S) maps, frame t of clip b at row b*T + t
        loss_fn=lambda pred, target: bce_ssim_iou_loss(pred, target.reshape(pred.shape)),
        pass_sizes=[args.size], val_sets=val_sets,
        best_files={name: f"checkpoint_best_{name}.pth" for name in val_sets},
        drop_last=True, start_epoch=start_epoch, best=best, frames_per_sample=args.nframes, scaler=scaler)
    utils.fit(job, ctx, logger)


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    utils.launch(train, args)


if __name__ == "__main__":
    main()
