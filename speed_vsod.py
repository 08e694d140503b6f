"""Inference speed of the video models (STDNet, STDNet-A) with random weights, as the release measures it (design §8).

    python speed_vsod.py --model stdnet --config baseline -j 1 --gpu 0 --size 256

One pass runs one clip of ``--nframes`` (8) frames, (1, 3*8, 256, 256); FPS counts frames (8 per clip): the median
over ``-n`` timed passes after a warm-up, input already on the device, each pass synchronised on a GPU. Also prints
the device, parameters and MACs per clip and per frame (FLOPs / 2 by torch.utils.flop_counter). ``--config
baseline`` times the DCR-converted network, a training op table the multi-branch training form. The inference path
is `engine.inference.prepare_for_inference` (``--eager`` for plain eager PyTorch; ``--precision bf16`` for OpenVINO's
bf16 on CPUs with native bf16).
"""

from __future__ import annotations

import argparse

import utils
from engine.inference.speed import SpeedFlags, run_speed, speed_parser


def build_parser() -> argparse.ArgumentParser:
    return speed_parser("video")


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    device = utils.start_inference(args.gpu, args.threads, cudnn_benchmark=True)
    return run_speed(SpeedFlags.from_args(args), "video", device)


if __name__ == "__main__":
    main()
