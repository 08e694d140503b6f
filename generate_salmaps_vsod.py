"""Write the saliency maps of video SOD test sets (design §7.2): one 8-bit PNG per annotated frame.

    python generate_salmaps_vsod.py --model stdnet --inference-config baseline --train-config sdnet --gpu 0 \
        --datadir ROOT --testdata DAVSOD --savedir results/EXP --size 256 --evaluate checkpoints/EXP_DAVSOD.pth \
        --tid cv cd ad

The videos of a dataset are the ``--test-lst`` lines whose clip folder contains ``/<DATASET>``. Each video's sorted
annotated frames are grouped into clips of ``--nframes`` (gap target ``--framegap``, no cut, design §6.3); every clip
is resized, predicted in one pass, and each frame's map is upsampled to the size of the clip's last frame and
written to ``<savedir>/<DATASET>/<video>/<frame>.png``. A frame in several clips is written by the last of them.
The model is what the checkpoint holds; the model flags may be given and must then agree with it.

Several processes (torchrun, srun) share the videos, each video whole in one process, and rank 0 logs the totals.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import utils
from data import DataError
from data.atomic import write_image_atomic
from data.datasets import VSODDataset
from data.guard import max_pixels_of
from engine.inference import generation


def build_parser() -> argparse.ArgumentParser:
    parser = utils.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datadir", required=True, help="data root; the list file's paths are relative to it")
    parser.add_argument("--test-lst", default="dataset/test_video_lst.txt", help="list file of the test videos")
    parser.add_argument("--testdata", default="DAVIS", help="'+'-joined dataset names (DAVSOD, VOS, DAVIS)")
    parser.add_argument("--framegap", type=utils.float_between(0.0, 1000.0, low_open=True), default=4,
                        help="target gap of frame numbers inside a clip (> 0)")
    generation.add_generation_args(parser, "video", "<DATASET>/<video>/<frame>.png")
    return parser


def write_clip_maps(maps, item: dict, outdir: Path) -> None:
    """Write one clip's (T, H, W) uint8 maps; in a ping-pong padded clip a frame's last occurrence is written."""
    last = {name: t for t, name in enumerate(item["names"])}
    for name, t in last.items():
        write_image_atomic(outdir / item["video"] / name, maps[t])


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    logger, ctx = generation.start_generation(args)  # one process, or one of several under torchrun / srun
    root = Path(args.datadir)
    model, description = generation.generation_model(args, "video")
    datasets = {}
    for name in (name for name in args.testdata.split("+") if name):
        try:
            datasets[name] = VSODDataset(root, args.test_lst, mode="test", nframes=description.nframes,
                                         size=args.size, framegap=args.framegap, dataset=name,
                                         max_pixels=max_pixels_of(args.max_megapixels))
        except DataError as err:
            utils.fail(f"--testdata {name}: {err}")
    logger.info(utils.tune_process(ctx.device, args.threads))
    predictor = generation.generation_predictor(model, description, args, ctx)
    failures = clips = 0
    with generation.writing_maps(args.savedir):
        for name, dataset in datasets.items():
            videos = [entry.video for entry, _ in dataset.samples]  # a video's clips stay in one process
            generation.take_share(dataset, videos, ctx)
            for item, maps in generation.test_set_maps(predictor, dataset, args.workers, desc=name, unit="clip",
                                                       show=ctx.is_main):
                if item["error"]:
                    logger.error("%s: the %d maps of its clip of %s are missing", item["error"],
                                 len(set(item["names"])), item["video"])
                    failures += 1
                    continue
                write_clip_maps(maps, item, Path(args.savedir) / name)
                clips += 1
    clips, failures = generation.finish([clips, failures], ctx)
    processes = f" by {ctx.world_size} processes" if ctx.world_size > 1 else ""
    logger.info("%d clips predicted%s, maps in %s", clips, processes, args.savedir)
    if failures:
        utils.fail(f"{failures} clip(s) had refused frames (listed above); the maps of those clips are missing, every "
                   "other map was written", status=1)


if __name__ == "__main__":
    main()
