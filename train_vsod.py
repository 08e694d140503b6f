"""Train STDNet / STDNet-A for video salient object detection (design §6.3).

Clips of ``--nframes`` frames from the list file ``--train-lst`` (still images become static clips), loss BCE +
(1 - SSIM) + IoU, the preloaded backbone trained at lr x ``--lr-reduce``; after each epoch the MAE on every
validation set of ``--val-lst`` (DAVSOD, VOS, DAVIS) with a best checkpoint per set. Runs on the CPU, one GPU,
several GPUs (``--gpu 0,1``: one DDP process each) or under torchrun.

Example: python train_vsod.py --model stdnet --resume --gpu 0,1 --datadir ROOTDIR --lr-reduce 0.1
         --preload checkpoints/sdnet_stage1_backbone.pth --savedir results/exp5
"""

from __future__ import annotations

import argparse
import functools
import logging

import torch

import configs
import utils
from data.datasets import VSODDataset, vsod_validation_sets
from engine.training import loop, startup
from engine.training.settings import TrainingTask, TrainSettings, add_training_args, settings_from_flags
from models import build_model
from models.losses import video_training_loss

DEFAULTS = configs.TRAIN_DEFAULTS["video"]


def build_parser() -> argparse.ArgumentParser:
    """Command-line flags: the shared training flags plus the video-specific ones."""
    parser = utils.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_training_args(parser, "video")
    group = parser.add_argument_group("video training")
    group.add_argument("--train-lst", default=DEFAULTS["train_lst"], help="training list file (paths under --datadir)")
    group.add_argument("--val-lst", default=DEFAULTS["val_lst"],
                       help="validation list file; one validation set per dataset in it; '' skips validation")
    group.add_argument("--val-cut", type=utils.float_between(0.0, 1000.0, low_open=True), default=DEFAULTS["val_cut"],
                       help="fraction of the sorted annotated frames kept per DAVSOD validation video (>= 1: all)")
    group.add_argument("--framegap", type=utils.float_between(0.0, 1000.0, low_open=True),
                       default=DEFAULTS["framegap"],
                       help="gap target (frame numbers, > 0) of VOS training clips and of validation clips")
    group.add_argument("--nframes", type=utils.frames_per_clip, default=DEFAULTS["nframes"], help="frames per clip")
    group.add_argument("--tid", nargs="+", default=list(DEFAULTS["tid"]), choices=configs.TEMPORAL_OPS,
                       help="branch ops of the temporal difference convolutions (STDC)")
    group.add_argument("--scales", type=utils.float_between(-100.0, 100.0), nargs="+",
                       default=list(DEFAULTS["scales"]),
                       help="initial STDC branch logits, one per --tid op")
    group.add_argument("--nstdc", type=utils.int_between(1, 16), default=DEFAULTS["nstdc"],
                       help="STDC pairs (T-W then T-H) in each temporal module (the released models: 1)")
    group.add_argument("--beta", nargs="+", default=None, metavar="BETA | NAME BETA",
                       help="BCE weighting (off by default, as in the release): BETA weighs the salient pixels of a "
                            "clip by N_neg / (BETA N_pos); NAME BETA weighs the clips whose first image path contains "
                            "/NAME/ by BETA in BCE and IoU")
    group.add_argument("--warmup", type=utils.epoch_count, default=0,
                       help="accepted as in the release, where it has no effect: video training never freezes the "
                            "branch logits (docs/design.md §6.3)")
    group.add_argument("--lr-reduce", type=utils.float_between(0.0, 1.0), default=DEFAULTS["lr_reduce"],
                       help="lr factor of the preloaded backbone (names containing 'block')")
    bn = group.add_mutually_exclusive_group()
    bn.add_argument("--bn", dest="bn", action="store_true", default=DEFAULTS["bn"],
                    help="BatchNorm in the backbone DiffBlocks and STDC branches (the default)")
    bn.add_argument("--nobn", dest="bn", action="store_false",
                    help="no BatchNorm in the backbone DiffBlocks and STDC branches (decoder BN stays)")
    return parser


TASK_FLAGS = ("train_lst", "val_lst", "val_cut", "framegap", "beta", "warmup", "lr_reduce")


def resolve_flags(args: argparse.Namespace) -> TrainSettings:
    """The settings of the video flags: ``--scales`` one per ``--tid`` op, ``--size`` rounded to a multiple of 32
    (as the released script), ``--beta`` BETA or NAME BETA, the list files found
    (`engine.training.startup.resolve_list_file`; not for ``--checkinfo``, which reads no data). One line and exit 2
    for a flag that cannot work."""
    if len(args.scales) != len(args.tid):
        utils.fail(f"--scales needs one value per --tid op ({len(args.tid)}), got {len(args.scales)}")
    logger = logging.getLogger(utils.LOGGER_NAME)
    main_process = startup.is_main_process()
    size = args.size
    if size % 32:
        size = max(32, round(size / 32) * 32)
        if main_process and not args.checkinfo:
            logger.warning("--size %d rounded to %d, a multiple of 32", args.size, size)
    if args.beta is not None:
        try:
            beta = float(args.beta[-1])
        except ValueError:
            utils.fail(f"--beta {' '.join(args.beta)}: expected BETA or NAME BETA, BETA a number")
        if len(args.beta) > 2 or beta <= 0:
            utils.fail(f"--beta {' '.join(args.beta)}: expected BETA or NAME BETA with BETA > 0")
    if args.checkinfo:
        return settings_from_flags(args, "video", TASK_FLAGS, size=size)
    if not args.preload and main_process and not args.evaluate:
        logger.warning("no --preload: the backbone is trained from scratch at the full lr (the paper's recipe starts "
                       "from a pretrained backbone)")
    train_lst = startup.resolve_list_file(args.train_lst, "--train-lst")
    val_lst = startup.resolve_list_file(args.val_lst, "--val-lst") if args.val_lst else None
    return settings_from_flags(args, "video", TASK_FLAGS, size=size, train_lst=str(train_lst),
                               val_lst=str(val_lst) if val_lst else "")


def video_task(settings: TrainSettings) -> TrainingTask:
    """STDNet / STDNet-A on clips as data: one pass per epoch, BCE + SSIM + IoU, one validation set per dataset
    of the validation list, a best checkpoint per set."""
    flag = settings.task_flag
    beta = flag("beta")
    weighted = (beta[0], float(beta[1])) if beta and len(beta) == 2 else None
    return TrainingTask(
        kind="video",
        build_model=functools.partial(build_model, settings.model, settings.config, bn=settings.bn,
                                      tid=settings.tid, scales=settings.scales, nframes=settings.nframes,
                                      nstdc=settings.nstdc),
        train_set=functools.partial(VSODDataset, settings.datadir, flag("train_lst"), mode="train",
                                    nframes=settings.nframes, size=settings.size, framegap=flag("framegap"),
                                    weighted=weighted, max_pixels=settings.max_pixels),
        val_sets=functools.partial(vsod_validation_sets, settings.datadir, flag("val_lst"),
                                   nframes=settings.nframes, size=settings.size, framegap=flag("framegap"),
                                   val_cut=flag("val_cut"), max_pixels=settings.max_pixels),
        loss=functools.partial(video_training_loss, nframes=settings.nframes,
                               beta=float(beta[0]) if beta and len(beta) == 1 else None,
                               iter_size=settings.iter_size),
        param_groups=functools.partial(loop.video_param_groups, wd=settings.wd, lr_reduce=flag("lr_reduce"),
                                       preloaded=bool(settings.preload)),
        train_flag=f"--train-lst {flag('train_lst')}", val_flag=f"--val-lst {flag('val_lst')}",
        pass_sizes=(settings.size,), best_file="checkpoint_best_{}.pth", frames_per_sample=settings.nframes,
        drop_last=True,
        summary=f"bn {settings.bn}, tid {' '.join(settings.tid)}, nstdc {settings.nstdc}",
        loss_meaning="BCE (mean over pixels) + (1 - SSIM) + IoU (mean over frames), per clip")


def main(argv: list[str] | None = None) -> None:
    utils.setup_logger(None, 0 if startup.is_main_process() else 1)  # flag errors below are logged lines
    settings = resolve_flags(build_parser().parse_args(argv))
    torch.set_num_threads(startup.choose_threads(settings)[0])  # logged by the engine, with why
    startup.run(video_task(settings), settings)


if __name__ == "__main__":
    main()
