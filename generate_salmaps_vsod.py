"""Write the saliency maps of video SOD test sets (design §7.2): one 8-bit PNG per annotated frame.

    python generate_salmaps_vsod.py --model stdnet --inference-config baseline --train-config sdnet --gpu 0 \
        --datadir ROOT --testdata DAVSOD --savedir results/EXP --size 256 --evaluate checkpoints/EXP_DAVSOD.pth \
        --tid cv cd ad

The videos of a dataset are the ``--test-lst`` lines whose clip folder contains ``/<DATASET>``. Each video's sorted
annotated frames are grouped into clips of ``--nframes`` (gap target ``--framegap``, no cut, design §6.3); every clip
is resized, predicted in one pass, and each frame's map is upsampled to the size of the clip's last frame and
written to ``<savedir>/<DATASET>/<video>/<frame>.png``. A frame in several clips is written by the last of them.
The model is what the checkpoint holds; the model flags may be given and must then agree with it.

Under torchrun (or srun, as training) each process takes its share of the images (of the videos, whole) on the
device of its local rank, and rank 0 reports the totals; the maps are those one process writes.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tqdm import tqdm

import utils
from data import DataError
from data.atomic import unwritable, write_image_atomic
from data.datasets import VSODDataset, test_loader
from data.guard import max_pixels_of
from engine.distributed import cleanup_distributed, distributed_context, init_distributed, is_main_process
from engine.inference import BackendError, RunnerFlags, add_device_args, runner_from_flags
from engine.loading import ModelFlags, add_model_args, model_from_flags
from engine.maps import stream_maps
from engine.sharding import share, summed


def build_parser() -> argparse.ArgumentParser:
    parser = utils.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--evaluate", required=True, metavar="CHECKPOINT",
                        help="checkpoint: training form (ours or the authors' layout, module. keys) or converted")
    parser.add_argument("--datadir", required=True, help="data root; the list file's paths are relative to it")
    parser.add_argument("--test-lst", default="dataset/test_video_lst.txt", help="list file of the test videos")
    parser.add_argument("--testdata", default="DAVIS", help="'+'-joined dataset names (DAVSOD, VOS, DAVIS)")
    parser.add_argument("--savedir", default="results/savedir",
                        help="maps go to <savedir>/<DATASET>/<video>/<frame>.png")
    parser.add_argument("--size", type=utils.input_size, default=None,
                        help="square network input size in pixels (default: no resize)")
    parser.add_argument("--framegap", type=utils.positive_float, default=4,
                        help="target gap of frame numbers inside a clip (> 0)")
    parser.add_argument("-j", "--workers", type=utils.non_negative_int, default=4, help="frame reading processes")
    utils.add_max_megapixels_arg(parser)
    add_model_args(parser, "video")
    add_device_args(parser)
    return parser


def write_clip_maps(maps, item: dict, outdir: Path) -> None:
    """Write one clip's (T, H, W) uint8 maps; in a ping-pong padded clip a frame's last occurrence is written."""
    last = {name: t for t, name in enumerate(item["names"])}
    for name, t in last.items():
        write_image_atomic(outdir / item["video"] / name, maps[t])


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    logger = utils.setup_logger(None, 0 if is_main_process() else 1)  # ranks other than 0: warnings only
    ctx = distributed_context(args.gpu)  # one process, or one of several under torchrun / srun
    root = Path(args.datadir)
    if not root.is_dir():
        utils.fail(f"--datadir {root}: no such folder")
    if (why := unwritable(args.savedir, folder=True)) is not None:
        utils.fail(f"--savedir {args.savedir}: {why}")
    model, description = model_from_flags(ModelFlags.from_args(args), args.evaluate, kind="video")
    datasets = {}
    for name in (name for name in args.testdata.split("+") if name):
        try:
            datasets[name] = VSODDataset(root, args.test_lst, mode="test", nframes=description.nframes,
                                         size=args.size, framegap=args.framegap, dataset=name,
                                         max_pixels=max_pixels_of(args.max_megapixels))
        except DataError as err:
            utils.fail(f"--testdata {name}: {err}")
    init_distributed(ctx)
    logger.info(utils.tune_process(ctx.device, args.threads))
    runner = runner_from_flags(model, RunnerFlags.from_args(args), ctx.device)
    failures = clips = 0
    try:
        for name, dataset in datasets.items():
            videos = [entry.video for entry, _ in dataset.samples]  # a video's clips stay in one process
            dataset.samples = [dataset.samples[i] for i in share(videos, ctx.rank, ctx.world_size)]
            items = ((item, None if item["error"] else item["clip"][None], item["size"])
                     for item in test_loader(dataset, args.workers))
            for item, maps in tqdm(stream_maps(runner, items), total=len(dataset), desc=name, unit="clip",
                                   disable=not ctx.is_main):
                if item["error"]:
                    logger.error("%s: the %d maps of its clip of %s are missing", item["error"],
                                 len(set(item["names"])), item["video"])
                    failures += 1
                    continue
                write_clip_maps(maps, item, Path(args.savedir) / name)
                clips += 1
    except BackendError as err:
        utils.fail(str(err))
    except OSError as err:  # a full disk, a folder made read-only meanwhile
        utils.fail(f"--savedir {args.savedir}: cannot write a map: {err}")
    clips, failures = summed([clips, failures], ctx)
    cleanup_distributed()
    processes = f" by {ctx.world_size} processes" if ctx.world_size > 1 else ""
    logger.info("%d clips predicted%s, maps in %s", clips, processes, args.savedir)
    if failures:
        utils.fail(f"{failures} clip(s) had refused frames (listed above); the maps of those clips are missing, every "
                   "other map was written", status=1)


if __name__ == "__main__":
    main()
