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
import functools
import logging

import configs
import utils
from data import DataError
from data.datasets import VSODDataset
from data.lists import dataset_names, read_video_list
from engine import startup, train
from models import build_model
from models.losses import bce_ssim_iou_loss, clip_bce_weights

DEFAULTS = configs.TRAIN_DEFAULTS["video"]


def build_parser() -> argparse.ArgumentParser:
    """Command-line flags: the shared training flags plus the video-specific ones."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    utils.add_training_args(parser, "video")
    group = parser.add_argument_group("video training")
    group.add_argument("--train-lst", default=DEFAULTS["train_lst"], help="training list file (paths under --datadir)")
    group.add_argument("--val-lst", default=DEFAULTS["val_lst"],
                       help="validation list file; one validation set per dataset in it; '' skips validation")
    group.add_argument("--val-cut", type=float, default=DEFAULTS["val_cut"],
                       help="fraction of the sorted annotated frames kept per DAVSOD validation video (>= 1: all)")
    group.add_argument("--framegap", type=float, default=DEFAULTS["framegap"],
                       help="gap target of VOS training clips and of validation clips")
    group.add_argument("--nframes", type=utils.positive_int, default=DEFAULTS["nframes"], help="frames per clip")
    group.add_argument("--tid", nargs="+", default=list(DEFAULTS["tid"]), choices=configs.TEMPORAL_OPS,
                       help="branch ops of the temporal difference convolutions (STDC)")
    group.add_argument("--scales", type=float, nargs="+", default=list(DEFAULTS["scales"]),
                       help="initial STDC branch logits, one per --tid op")
    group.add_argument("--nstdc", type=utils.positive_int, default=DEFAULTS["nstdc"],
                       help="STDC pairs (T-W then T-H) in each temporal module (the released models: 1)")
    group.add_argument("--beta", nargs="+", default=None, metavar="BETA | NAME BETA",
                       help="BCE weighting (off by default, as in the release): BETA weighs the salient pixels of a "
                            "clip by N_neg / (BETA N_pos); NAME BETA weighs the clips whose first image path contains "
                            "/NAME/ by BETA in BCE and IoU")
    group.add_argument("--warmup", type=int, default=0,
                       help="accepted as in the release, where it has no effect: video training never freezes the "
                            "branch logits (SPEC §6.3)")
    group.add_argument("--lr-reduce", type=float, default=DEFAULTS["lr_reduce"],
                       help="lr factor of the preloaded backbone (names containing 'block')")
    bn = group.add_mutually_exclusive_group()
    bn.add_argument("--bn", dest="bn", action="store_true", default=DEFAULTS["bn"],
                    help="BatchNorm in the backbone DiffBlocks and STDC branches (the default)")
    bn.add_argument("--nobn", dest="bn", action="store_false",
                    help="no BatchNorm in the backbone DiffBlocks and STDC branches (decoder BN stays)")
    return parser


class VideoTask(startup.TrainingTask):
    """STDNet / STDNet-A on clips: one pass per epoch, BCE + SSIM + IoU, one validation set per dataset."""

    kind = "video"
    drop_last = True

    def resolve(self, args, ctx):
        if len(args.scales) != len(args.tid):
            utils.fail(f"--scales needs one value per --tid op ({len(args.tid)}), got {len(args.scales)}")
        size = args.size
        if size % 32:  # as in the released script: clip sizes are multiples of 32
            size = max(32, round(size / 32) * 32)
            if ctx.is_main:
                logging.getLogger(utils.LOGGER_NAME).warning("--size %d rounded to %d, a multiple of 32",
                                                             args.size, size)
        if not args.preload and ctx.is_main:
            logging.getLogger(utils.LOGGER_NAME).warning(
                "no --preload: the backbone is trained from scratch at the full lr (the paper's recipe starts from "
                "a pretrained backbone)")
        if args.beta is not None:
            try:
                beta = float(args.beta[-1])
            except ValueError:
                utils.fail(f"--beta {' '.join(args.beta)}: expected BETA or NAME BETA, BETA a number")
            if len(args.beta) > 2 or beta <= 0:
                utils.fail(f"--beta {' '.join(args.beta)}: expected BETA or NAME BETA with BETA > 0")
        train_lst = startup.resolve_list_file(args.train_lst, "--train-lst")
        val_lst = startup.resolve_list_file(args.val_lst, "--val-lst") if args.val_lst else None
        return argparse.Namespace(**{**vars(args), "size": size, "train_lst": str(train_lst),
                                     "val_lst": str(val_lst) if val_lst else ""})

    def datasets(self, args):
        try:
            weighted = (args.beta[0], float(args.beta[1])) if args.beta and len(args.beta) == 2 else None
            train_set = VSODDataset(args.datadir, args.train_lst, mode="train", nframes=args.nframes, size=args.size,
                                    framegap=args.framegap, seed=args.seed, weighted=weighted)
        except DataError as err:
            utils.fail(f"--train-lst {args.train_lst}: {err}")
        try:
            return train_set, self.validation_sets(args) if args.val_lst else {}
        except DataError as err:
            utils.fail(f"--val-lst {args.val_lst}: {err}")

    @staticmethod
    def validation_sets(args) -> dict[str, VSODDataset]:
        """One validation dataset per dataset name in the list (DAVSOD, VOS, DAVIS, ...), in list order; only
        DAVSOD is cut to its first ``--val-cut`` of annotated frames (SPEC §6.3)."""
        cut = args.val_cut if args.val_cut < 1 else 1.0
        return {name: VSODDataset(args.datadir, args.val_lst, mode="val", nframes=args.nframes, size=args.size,
                                  framegap=args.framegap, cut=cut if name == "DAVSOD" else 1.0, dataset=name)
                for name in dataset_names(read_video_list(args.val_lst))}

    def build(self, args, deploy=False):
        return build_model(args.model, args.config, bn=args.bn, tid=args.tid, scales=args.scales,
                           nframes=args.nframes, nstdc=args.nstdc, deploy=deploy)

    def param_groups(self, model, args):
        return train.video_param_groups(model, args.wd, args.lr_reduce, preloaded=bool(args.preload))

    def loss(self, args, batch):
        beta = float(args.beta[0]) if args.beta and len(args.beta) == 1 else None
        return functools.partial(video_loss, nframes=args.nframes, beta=beta, iter_size=args.iter_size)

    def best_file(self, val_set):
        return f"checkpoint_best_{val_set}.pth"

    def frames_per_sample(self, args):
        return args.nframes

    def summary(self, args):
        return f"bn {args.bn}, tid {' '.join(args.tid)}, nstdc {args.nstdc}"


def video_loss(pred, target, clip_weights=None, *, nframes: int, beta: float | None = None, iter_size: int = 1):
    """BCE + (1 - SSIM) + IoU of (B*T, 1, S, S) maps against (B, T, 1, S, S) targets (frame t of clip b at row
    b*T + t); ``--beta``: per-clip pixel weights (one value) or the clips' weights (B,) (NAME BETA). Each term is a
    mean over the batch (a sum divided by B), so dividing by ``iter_size`` divides the sum by B x iter-size, as the
    image loss: ``iter_size`` accumulated batches give the gradient of one batch that many times larger."""
    target = target.reshape(pred.shape)
    pixels = clip_bce_weights(target, nframes, beta) if beta is not None else None
    frames = clip_weights.repeat_interleave(nframes) if clip_weights is not None else None
    return bce_ssim_iou_loss(pred, target, frame_weights=frames, pixel_weights=pixels) / iter_size


def main(argv: list[str] | None = None) -> None:
    startup.run(VideoTask(), build_parser().parse_args(argv))


if __name__ == "__main__":
    main()
