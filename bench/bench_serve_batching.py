"""Streams or batches for the server's concurrent requests: the inference thread of serve.py sends the requests
waiting at once through the runner's ``stream`` (several passes in flight on OpenVINO's streams). This times the
alternative, the same requests concatenated into one batch per pass, and checks whether its maps are the same
bits (a map must not depend on the other requests).

Usage: .venv/bin/python bench/bench_serve_batching.py [--checkpoint PATH] [--size 320] [--requests 64]
       [--batches 2 4 8] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from engine.inference.runner import prepare_for_inference  # noqa: E402
from models import (
    build_model,  # noqa: E402
    load_model,  # noqa: E402
)

RELEASED = Path(__file__).resolve().parents[2] / "shared" / "reference" / "checkpoints" / "sdnet_from_scratch.pth"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", default=str(RELEASED))
    parser.add_argument("--size", type=int, default=320)
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--batches", type=int, nargs="+", default=[2, 4, 8])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    if Path(args.checkpoint).is_file():
        model = load_model(args.checkpoint)[0]
    else:
        torch.manual_seed(0)
        model = build_model("sdnet")
    runner = prepare_for_inference(model, "cpu", cache=None)
    torch.manual_seed(1)
    inputs = [torch.randn(1, 3, args.size, args.size) for _ in range(args.requests)]
    reference = [runner(x) for x in inputs]

    def streamed() -> list[torch.Tensor]:
        return [out for _, out in runner.stream(enumerate(inputs))]

    def batched(size: int) -> list[torch.Tensor]:
        outputs = []
        for start in range(0, len(inputs), size):
            outputs.extend(runner(torch.cat(inputs[start:start + size])).split(1))
        return outputs

    ways = {"stream (serve.py)": streamed, **{f"batch {b}": (lambda b=b: batched(b)) for b in args.batches}}
    for way in ways.values():  # every network prepared before timing
        way()
    rows = {name: [] for name in ways}
    same = {}
    for _ in range(args.rounds):
        for name, way in ways.items():
            start = time.perf_counter()
            outputs = way()
            rows[name].append(len(inputs) / (time.perf_counter() - start))
            same[name] = all(torch.equal(a, b) for a, b in zip(outputs, reference, strict=True))
    print(f"| way ({args.requests} requests at {args.size} px, {runner.path}, {runner.threads} threads) | "
          "requests/s (median) | maps equal to one at a time |")
    print("|---|---:|---|")
    for name, rates in rows.items():
        print(f"| {name} | {statistics.median(rates):.2f} | {'yes' if same[name] else 'no'} |")


if __name__ == "__main__":
    main()
