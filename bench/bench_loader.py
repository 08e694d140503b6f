"""Throughput of the image-SOD training loader (decode + crop/flip + resize + normalise + collate), images/s.

Usage: python bench/bench_loader.py [--datadir ROOT --train-data NAME] [--size 320] [-j 2]

Without ``--datadir`` the synthetic SYN-TR set is generated into a temporary folder first (not timed).
The timed region is the DataLoader iteration only: ``--warmup`` batches (worker start-up included) are dropped,
then ``--batches`` batches are timed.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from data.datasets import SODDataset  # noqa: E402
from data.readers import DataError  # noqa: E402
from data.synthetic import SyntheticSizes, generate  # noqa: E402
from utils import setup_logger  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Images/s of the SOD training loader.")
    parser.add_argument("--datadir", default=None, help="data root (default: generate synthetic data in a temp dir)")
    parser.add_argument("--train-data", default="SYN-TR", help="'+'-joined image dataset names under --datadir")
    parser.add_argument("--size", type=int, default=320, help="square training size")
    parser.add_argument("-j", "--workers", type=int, default=2, help="DataLoader worker processes")
    parser.add_argument("--batch-size", type=int, default=24)
    parser.add_argument("--warmup", type=int, default=3, help="batches dropped before timing")
    parser.add_argument("--batches", type=int, default=30, help="timed batches")
    return parser


def measure(dataset: SODDataset, workers: int, batch_size: int, warmup: int, batches: int) -> float:
    """Images per second over ``batches`` batches after ``warmup`` batches (cycling through epochs if needed)."""
    generator = torch.Generator().manual_seed(0)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers,
                                         generator=generator)
    seen, start, done, epoch = 0, None, 0, 0
    while done < warmup + batches:
        dataset.set_epoch(epoch)
        for images, _ in loader:
            done += 1
            if done == warmup:
                start = time.perf_counter()
            elif done > warmup:
                seen += images.shape[0]
            if done == warmup + batches:
                break
        epoch += 1
    if start is None:  # no warm-up requested
        raise ValueError("--warmup must be >= 1")
    return seen / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.warmup < 1 or args.batches < 1:
        parser.error("--warmup and --batches must be >= 1")
    logger = setup_logger()
    with tempfile.TemporaryDirectory() as tmp:
        root = args.datadir
        if root is None:
            root = tmp
            generate(root, seed=0, sizes=SyntheticSizes(sod_test=0, video_train=0, video_test=0),
                     workers=max(1, args.workers))
        try:
            dataset = SODDataset(root, args.train_data, size=args.size, seed=0)
        except DataError as err:
            logger.error("%s", err)
            raise SystemExit(2) from None
        rate = measure(dataset, args.workers, args.batch_size, args.warmup, args.batches)
    logger.info("SOD training loader: %.1f images/s (size %d, -j %d, batch %d, %d timed batches, %d images in %s)",
                rate, args.size, args.workers, args.batch_size, args.batches, len(dataset), args.train_data)


if __name__ == "__main__":
    main()
