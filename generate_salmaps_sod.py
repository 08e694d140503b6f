"""Write the saliency maps of image SOD test sets (design §7.2): one 8-bit PNG per image, at the image's size.

    python generate_salmaps_sod.py --model sdnet --inference-config baseline --train-config sdnet --gpu 0 \
        --datadir ROOT/sod --testdata ECSSD+DUTS-TE --savedir results/EXP --evaluate checkpoints/EXP.pth --size 320

Each image of ``<datadir>/<DATASET>/images/`` is resized to size x size, normalised and predicted (batch 1); the map
is upsampled bilinearly to the original size and written to ``<savedir>/<DATASET>/<stem>.png``. The model is what
the checkpoint holds; ``--model``, ``--bn`` and ``--train-config`` may be given and must then agree with it. Images
that cannot be decoded are reported by path and skipped; the exit status is then 1.

Under torchrun (or srun, as training) each process makes the maps of its share of the images on the device of its
local rank (`engine.inference.sharding`); the maps are those one process writes.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import utils
from data import DataError
from data.atomic import write_image_atomic
from data.datasets import SODDataset
from data.guard import max_pixels_of
from engine.inference import generation
from engine.inference.sharding import summed


def build_parser() -> argparse.ArgumentParser:
    parser = utils.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datadir", required=True, help="folder holding <DATASET>/images/")
    parser.add_argument("--testdata", default="ECSSD", help="'+'-joined dataset folder names under --datadir")
    generation.add_generation_args(parser, "image", "<DATASET>/<stem>.png")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    logger, ctx = generation.start_generation(args)  # one process, or one of several under torchrun / srun
    datadir = Path(args.datadir)
    datasets = {}
    for name in (name for name in args.testdata.split("+") if name):
        if not (datadir / name / "images").is_dir():
            utils.fail(f"--testdata {name}: no folder {datadir / name / 'images'}")
        try:
            datasets[name] = SODDataset(datadir, name, mode="test", size=args.size,
                                        max_pixels=max_pixels_of(args.max_megapixels))
        except DataError as err:
            utils.fail(f"--testdata {name}: {err}")
    model, description = generation.generation_model(args, "image")
    logger.info(utils.tune_process(ctx.device, args.threads))
    predictor = generation.generation_predictor(model, description, args, ctx)
    failures = 0
    with generation.writing_maps(args.savedir):
        for name, dataset in datasets.items():
            outdir = Path(args.savedir) / name
            total = len(dataset)
            generation.take_share(dataset, list(range(total)), ctx)
            written = 0
            for item, saliency in generation.test_set_maps(predictor, dataset, args.workers, desc=name, unit="img",
                                                       show=ctx.is_main):
                if item["error"]:
                    logger.error("%s", item["error"])
                    failures += 1
                    continue
                write_image_atomic(outdir / f"{item['name']}.png", saliency)
                written += 1
            written = summed([written], ctx)[0]
            processes = f" by {ctx.world_size} processes" if ctx.world_size > 1 else ""
            logger.info("%s: %d of %d maps written to %s%s", name, written, total, outdir, processes)
    [failures] = generation.finish([failures], ctx)
    if failures:
        utils.fail(f"{failures} image(s) refused (listed above); their maps are missing, every other map was written",
                   status=1)


if __name__ == "__main__":
    main()
