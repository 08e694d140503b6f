"""Write the saliency maps of image SOD test sets (SPEC §7.2): one 8-bit PNG per image, at the image's size.

    python generate_salmaps_sod.py --model sdnet --inference-config baseline --train-config sdnet --gpu 0 \
        --datadir ROOT/sod --testdata ECSSD+DUTS-TE --savedir results/EXP --evaluate checkpoints/EXP.pth --size 320

Each image of ``<datadir>/<DATASET>/images/`` is resized to size x size, normalised and predicted (batch 1); the map
is upsampled bilinearly to the original size and written to ``<savedir>/<DATASET>/<stem>.png``. Images that cannot
be decoded are reported by path and skipped; the exit status is then 1.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tqdm import tqdm

import configs
import utils
from data.readers import list_images


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    image_models = sorted(name for name, spec in configs.MODELS.items() if spec["kind"] == "image")
    parser.add_argument("--model", default="sdnet", choices=image_models)
    parser.add_argument("--evaluate", required=True, metavar="CHECKPOINT",
                        help="checkpoint: the authors' release (module. keys) or ours, training form or converted")
    parser.add_argument("--datadir", required=True, help="folder holding <DATASET>/images/")
    parser.add_argument("--testdata", default="ECSSD", help="'+'-joined dataset folder names under --datadir")
    parser.add_argument("--savedir", default="results/savedir", help="maps go to <savedir>/<DATASET>/<stem>.png")
    parser.add_argument("--size", type=int, default=None, help="square network input size (default: no resize)")
    parser.add_argument("-j", "--workers", type=int, default=4, help="image reading processes")
    utils.add_inference_args(parser)
    return parser


def generate_dataset(model: utils.InferenceRunner, images: list[Path], outdir: Path, args: argparse.Namespace,
                     logger) -> int:
    """Predict and write the maps of ``images`` into ``outdir``; returns the number of unreadable images."""
    failures = 0
    loader = utils.inference_loader(utils.ImageFiles(images, args.size), args.workers)
    for item in tqdm(loader, total=len(images), desc=outdir.name, unit="img", leave=False):
        if item["error"]:
            logger.error(item["error"])
            failures += 1
            continue
        saliency = utils.saliency_to_uint8(model(item["image"]), item["size"])[0]
        utils.write_image_atomic(outdir / f"{item['path'].stem}.png", saliency)
    return failures


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    logger = utils.setup_logger()
    datadir = Path(args.datadir)
    if not datadir.is_dir():
        utils.fail(f"--datadir {datadir}: no such folder")
    datasets = [name for name in args.testdata.split("+") if name]
    for name in datasets:
        if not (datadir / name / "images").is_dir():
            utils.fail(f"--testdata {name}: no folder {datadir / name / 'images'}")
    model = utils.load_inference_model(args, args.evaluate)
    model = utils.prepare_for_inference(model, utils.select_device(args.gpu), eager=args.eager, half=args.half)
    failures = 0
    for name in datasets:
        images = list_images(datadir / name / "images")
        unreadable = generate_dataset(model, images, Path(args.savedir) / name, args, logger)
        logger.info("%s: %d maps written to %s", name, len(images) - unreadable, Path(args.savedir) / name)
        failures += unreadable
    if failures:
        utils.fail(f"{failures} image(s) could not be read (listed above); their maps are missing", status=1)


if __name__ == "__main__":
    main()
