"""Convert a trained checkpoint with DCR (design §2.3) and save the single-branch inference weights.

    python convert.py --checkpoint results/exp1/save_models/checkpoint_latest.pth --out checkpoints/sdnet_converted.pth

The training-form weights (the authors' release or ours) are loaded, every PDC block and STDC is reparameterized,
and the converted weights are written atomically in our checkpoint format, describing the model with
``deploy: True``; the map generators, ``predict.py``, ``export_onnx.py`` and ``speed_*.py --evaluate`` load it
directly. The model is what the checkpoint holds; the model flags may be given and must then agree with it.
"""

from __future__ import annotations

import argparse
import logging

import utils
from data.atomic import unwritable
from engine.checkpoint_file import save_checkpoint
from engine.inference.loading import ModelFlags, add_model_args, model_from_flags
from models import count_parameters


def build_parser() -> argparse.ArgumentParser:
    parser = utils.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, help="training-form checkpoint (the authors' release or ours)")
    parser.add_argument("--out", required=True, help="where to write the converted checkpoint (.pth)")
    add_model_args(parser)
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    logger: logging.Logger = utils.setup_logger()
    if args.inference_config != "baseline":
        parser.error("--inference-config: convert.py always writes the converted ('baseline') form")
    if (why := unwritable(args.out, folder=False)) is not None:
        utils.fail(f"--out {args.out}: {why}")
    model, description = model_from_flags(ModelFlags.from_args(args), args.checkpoint)
    save_checkpoint(args.out, model.state_dict(), description)
    logger.info("%s converted: %d parameters, written to %s", description.model, count_parameters(model), args.out)


if __name__ == "__main__":
    main()
