"""Convert a trained checkpoint with DCR (SPEC §2.3) and save the single-branch inference weights.

    python convert.py --model sdnet --train-config sdnet --checkpoint results/exp1/save_models/checkpoint_latest.pth \
        --out checkpoints/sdnet_converted.pth

The training-form weights (the authors' release or ours) are loaded, every PDC block and STDC is reparameterized,
and the converted state dict is written atomically in our checkpoint format with ``deploy: True``; the map
generators, ``predict.py``, ``export_onnx.py`` and ``speed_*.py --evaluate`` load it directly.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import configs
import utils


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="sdnet", choices=sorted(configs.MODELS))
    parser.add_argument("--checkpoint", required=True, help="training-form checkpoint (the authors' release or ours)")
    parser.add_argument("--out", required=True, help="where to write the converted checkpoint (.pth)")
    utils.add_inference_args(parser)
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    logger = utils.setup_logger()
    if args.inference_config != "baseline":
        parser.error("--inference-config: convert.py always writes the converted ('baseline') form")
    if not Path(args.checkpoint).is_file():
        utils.fail(f"--checkpoint {args.checkpoint}: no such file")
    model = utils.load_inference_model(args, args.checkpoint)
    spec = configs.MODELS[args.model]
    bn = spec["kind"] == "video" if args.bn is None else args.bn
    video = spec["kind"] == "video"
    converted = {
        "model": args.model, "config": args.train_config or spec["config"], "bn": bn,
        "tid": list(args.tid) if video else None, "nframes": args.nframes if video else None, "deploy": True,
        "state_dict": {key: value.detach().clone() for key, value in model.state_dict().items()},
    }
    utils.save_atomic(converted, args.out)
    logger.info("%s converted: %d parameters, written to %s", args.model, utils.count_parameters(model), args.out)


if __name__ == "__main__":
    main()
