"""Inference speed of the image models (SDNet, SDNet-A) with random weights, as the release measures it (design §8).

    python speed_sod.py --model sdnet --config baseline -j 1 --gpu 0 --size 320

Prints the model, device, input shape, parameters, MACs (FLOPs / 2 by torch.utils.flop_counter) and FPS: batch 1
(``-b``), input already on the device, the median over ``-n`` timed passes after a warm-up, each pass synchronised
on a GPU. ``--config baseline`` times the DCR-converted network, ``--config sdnet`` / ``sdnet-a`` the multi-branch
training form. The inference path is `engine.inference.prepare_for_inference` (``--eager`` for plain eager PyTorch;
``--precision bf16`` for OpenVINO's bf16 on CPUs with native bf16).
"""

from __future__ import annotations

import argparse

import utils
from engine.inference.speed import SpeedFlags, run_speed, speed_parser


def build_parser() -> argparse.ArgumentParser:
    return speed_parser("image")


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    device = utils.start_inference(args.gpu, args.threads, cudnn_benchmark=True)
    return run_speed(SpeedFlags.from_args(args), "image", device)


if __name__ == "__main__":
    main()
