"""Write the saliency maps of image SOD test sets (design §7.2): one 8-bit PNG per image, at the image's size.

    python generate_salmaps_sod.py --model sdnet --inference-config baseline --train-config sdnet --gpu 0 \
        --datadir ROOT/sod --testdata ECSSD+DUTS-TE --savedir results/EXP --evaluate checkpoints/EXP.pth --size 320

Each image of ``<datadir>/<DATASET>/images/`` is resized to size x size, normalised and predicted (batch 1); the map
is upsampled bilinearly to the original size and written to ``<savedir>/<DATASET>/<stem>.png``. The model is what
the checkpoint holds; ``--model``, ``--bn`` and ``--train-config`` may be given and must then agree with it. Images
that cannot be decoded are reported by path and skipped; the exit status is then 1.

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
from data.datasets import SODDataset, test_loader
from data.guard import max_pixels_of
from engine.distributed import cleanup_distributed, distributed_context, init_distributed, is_main_process
from engine.inference import BackendError, RunnerFlags, add_device_args, runner_from_flags
from engine.loading import ModelFlags, add_model_args, model_from_flags
from engine.maps import stream_maps
from engine.sharding import share, summed


def build_parser() -> argparse.ArgumentParser:
    parser = utils.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--evaluate", required=True, metavar="CHECKPOINT",
                        help="checkpoint: the authors' release (module. keys) or ours, training form or converted")
    parser.add_argument("--datadir", required=True, help="folder holding <DATASET>/images/")
    parser.add_argument("--testdata", default="ECSSD", help="'+'-joined dataset folder names under --datadir")
    parser.add_argument("--savedir", default="results/savedir", help="maps go to <savedir>/<DATASET>/<stem>.png")
    parser.add_argument("--size", type=utils.input_size, default=None,
                        help="square network input size in pixels (default: no resize)")
    parser.add_argument("-j", "--workers", type=utils.non_negative_int, default=4, help="image reading processes")
    utils.add_max_megapixels_arg(parser)
    add_model_args(parser, "image")
    add_device_args(parser)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    logger = utils.setup_logger(None, 0 if is_main_process() else 1)  # ranks other than 0: warnings only
    ctx = distributed_context(args.gpu)  # one process, or one of several under torchrun / srun
    datadir = Path(args.datadir)
    if not datadir.is_dir():
        utils.fail(f"--datadir {datadir}: no such folder")
    if (why := unwritable(args.savedir, folder=True)) is not None:
        utils.fail(f"--savedir {args.savedir}: {why}")
    datasets = {}
    for name in (name for name in args.testdata.split("+") if name):
        if not (datadir / name / "images").is_dir():
            utils.fail(f"--testdata {name}: no folder {datadir / name / 'images'}")
        try:
            datasets[name] = SODDataset(datadir, name, mode="test", size=args.size,
                                        max_pixels=max_pixels_of(args.max_megapixels))
        except DataError as err:
            utils.fail(f"--testdata {name}: {err}")
    model, _ = model_from_flags(ModelFlags.from_args(args), args.evaluate, kind="image")
    init_distributed(ctx)
    logger.info(utils.tune_process(ctx.device, args.threads))
    runner = runner_from_flags(model, RunnerFlags.from_args(args), ctx.device)
    failures = 0
    try:
        for name, dataset in datasets.items():
            outdir = Path(args.savedir) / name
            total = len(dataset)
            dataset.samples = [dataset.samples[i] for i in share(range(total), ctx.rank, ctx.world_size)]
            written = 0
            items = ((item, None if item["error"] else item["image"][None], item["size"])
                     for item in test_loader(dataset, args.workers))
            for item, maps in tqdm(stream_maps(runner, items), total=len(dataset), desc=name, unit="img",
                                   leave=False, disable=not ctx.is_main):
                if item["error"]:
                    logger.error("%s", item["error"])
                    failures += 1
                    continue
                write_image_atomic(outdir / f"{item['name']}.png", maps[0])
                written += 1
            written = summed([written], ctx)[0]
            processes = f" by {ctx.world_size} processes" if ctx.world_size > 1 else ""
            logger.info("%s: %d of %d maps written to %s%s", name, written, total, outdir, processes)
    except BackendError as err:
        utils.fail(str(err))
    except OSError as err:  # a full disk, a folder made read-only meanwhile
        utils.fail(f"--savedir {args.savedir}: cannot write a map: {err}")
    failures = summed([failures], ctx)[0]
    cleanup_distributed()
    if failures:
        utils.fail(f"{failures} image(s) refused (listed above); their maps are missing, every other map was written",
                   status=1)


if __name__ == "__main__":
    main()
