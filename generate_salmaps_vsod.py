"""Write the saliency maps of video SOD test sets (SPEC §7.2): one 8-bit PNG per annotated frame.

    python generate_salmaps_vsod.py --model stdnet --inference-config baseline --train-config sdnet --gpu 0 \
        --datadir ROOT --testdata DAVSOD --savedir results/EXP --size 256 --evaluate checkpoints/EXP_DAVSOD.pth \
        --tid cv cd ad

The videos of a dataset are the ``--test-lst`` lines whose clip folder contains ``/<DATASET>``. Each video's sorted
annotated frames are grouped into clips of ``--nframes`` (gap target ``--framegap``, no cut, SPEC §6.3); every clip
is resized, predicted in one pass, and each frame's map is upsampled to the size of the clip's last frame and
written to ``<savedir>/<DATASET>/<video>/<frame>.png``. A frame in several clips is written by the last of them.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from tqdm import tqdm

import configs
import utils
from data.lists import VideoEntry, annotated_frames, build_clips, image_name, read_video_list, select_videos
from data.readers import DataError, read_rgb
from data.transforms import preprocess_test_clip


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    video_models = sorted(name for name, spec in configs.MODELS.items() if spec["kind"] == "video")
    parser.add_argument("--model", default="stdnet", choices=video_models)
    parser.add_argument("--evaluate", required=True, metavar="CHECKPOINT",
                        help="checkpoint: training form (ours or the authors' layout, module. keys) or converted")
    parser.add_argument("--datadir", required=True, help="data root; the list file's paths are relative to it")
    parser.add_argument("--test-lst", default="dataset/test_video_lst.txt", help="list file of the test videos")
    parser.add_argument("--testdata", default="DAVIS", help="'+'-joined dataset names (DAVSOD, VOS, DAVIS)")
    parser.add_argument("--savedir", default="results/savedir",
                        help="maps go to <savedir>/<DATASET>/<video>/<frame>.png")
    parser.add_argument("--size", type=int, default=None, help="square network input size (default: no resize)")
    parser.add_argument("--framegap", type=float, default=4, help="target frame-number gap inside a clip")
    parser.add_argument("-j", "--workers", type=int, default=4, help="frame reading processes")
    utils.add_inference_args(parser)
    return parser


class ClipFiles(torch.utils.data.Dataset):
    """The test clips of some videos, read and preprocessed; an unreadable frame gives an error item.

    Item: ``{'image': (1, 3T, S, S) float32, 'size': (H, W) of the clip's last frame, 'outputs': T output paths
    relative to the savedir, 'error': None}``, or ``{'error': message}``.
    """

    def __init__(self, root: Path, clips: list[tuple[str, VideoEntry, list[str]]], size: int | None) -> None:
        self.root, self.clips, self.size = root, clips, size

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, index: int) -> dict:
        dataset, entry, frames = self.clips[index]
        names = [image_name(frame, entry) for frame in frames]
        try:
            rgb = [read_rgb(self.root / entry.clip_dir / name) for name in names]
        except DataError as err:
            return {"error": str(err)}
        return {"image": preprocess_test_clip(rgb, self.size)[None], "size": rgb[-1].shape[:2], "error": None,
                "outputs": [Path(dataset, entry.video, Path(name).stem + ".png") for name in names]}


def collect_clips(root: Path, entries: list[VideoEntry], dataset: str, args: argparse.Namespace) -> list:
    """(dataset, entry, clip frame names) for every clip of the videos of ``dataset``."""
    clips = []
    for entry in entries:
        frames = annotated_frames(root, entry)
        clips += [(dataset, entry, clip) for clip in build_clips(frames, args.nframes, args.framegap)]
    return clips


def write_clip_maps(saliency: torch.Tensor, item: dict, savedir: Path) -> None:
    """Write one clip's maps (T, 1, S, S); in a ping-pong padded clip a frame's last occurrence is written."""
    maps = utils.saliency_to_uint8(saliency, item["size"])
    last = {output: t for t, output in enumerate(item["outputs"])}
    for output, t in last.items():
        utils.write_image_atomic(savedir / output, maps[t])


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    logger = utils.setup_logger()
    root = Path(args.datadir)
    if not root.is_dir():
        utils.fail(f"--datadir {root}: no such folder")
    try:
        entries = read_video_list(args.test_lst)
        clips = []
        for dataset in (name for name in args.testdata.split("+") if name):
            videos = select_videos(entries, dataset)
            if not videos:
                utils.fail(f"--testdata {dataset}: no video line of {args.test_lst} contains '/{dataset}'")
            clips += collect_clips(root, videos, dataset, args)
    except DataError as err:
        utils.fail(str(err))
    model = utils.load_inference_model(args, args.evaluate)
    model = utils.prepare_for_inference(model, utils.select_device(args.gpu), eager=args.eager, half=args.half)
    failures = 0
    loader = utils.inference_loader(ClipFiles(root, clips, args.size), args.workers)
    for item in tqdm(loader, total=len(clips), desc="clips", unit="clip"):
        if item["error"]:
            logger.error(item["error"])
            failures += 1
            continue
        write_clip_maps(model(item["image"]), item, Path(args.savedir))
    logger.info("%d clips predicted, maps in %s", len(clips) - failures, args.savedir)
    if failures:
        utils.fail(f"{failures} clip(s) had unreadable frames (listed above); their maps are missing", status=1)


if __name__ == "__main__":
    main()
