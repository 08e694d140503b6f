"""Export the DCR-converted model of a checkpoint for shipping: ONNX (input ``image``, output ``saliency``),
OpenVINO's IR (.xml and .bin) or an ExecuTorch program for phones (.pte, lowered to XNNPACK).

    python export_onnx.py --checkpoint checkpoints/sdnet_from_scratch.pth --size 320 --out sdnet.onnx
    python export_onnx.py --checkpoint checkpoints/sdnet_from_scratch.pth --format openvino --out sdnet.xml
    python export_onnx.py --checkpoint checkpoints/sdnet_from_scratch.pth --format executorch --out sdnet.pte

The graph has a fixed input shape: image models take (1, 3, size, size) ImageNet-normalised images and return
(1, 1, size, size) sigmoid maps; video models take one clip (1, 3T, size, size), frame t in channels 3t..3t+2,
and return (T, 1, size, size). With ``--any-size`` the height and width are free (H, W instead of size, size;
ONNX only: a .pte program has one input shape). Pre- and post-processing are as in predict.py (resize,
normalise; upsample the map). The model is what the checkpoint holds; the model flags may be given and must then
agree with it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

import utils
from data.atomic import unwritable, write_bytes_atomic
from engine.inference.backends import executorch_available
from engine.inference.export import ONNX_MAX_OPSET, ONNX_OPSET, executorch_program, export_onnx, openvino_ir
from engine.inference.loading import ModelFlags, add_model_args, model_from_flags
from engine.inference.predictor import ModelInput

FORMATS = ("onnx", "openvino", "executorch")


def build_parser() -> argparse.ArgumentParser:
    parser = utils.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True,
                        help="the authors' release (module. keys) or ours, training form or converted")
    parser.add_argument("--size", type=utils.input_size, default=None,
                        help="square input size in pixels (default: sdnet 320, sdneta 384, video models 256)")
    parser.add_argument("--out", required=True,
                        help="the file to write: .onnx; for --format openvino the .xml (its .bin beside it); for "
                             "--format executorch the .pte")
    parser.add_argument("--format", choices=FORMATS, default="onnx",
                        help="onnx (ONNX Runtime, OpenVINO, browsers), openvino (OpenVINO's IR, fp32 weights) or "
                             "executorch (a .pte for ExecuTorch's runtime on phones, lowered to XNNPACK; needs "
                             "requirements-deploy.txt)")
    parser.add_argument("--opset", type=utils.int_between(ONNX_OPSET, ONNX_MAX_OPSET), default=ONNX_OPSET,
                        help=f"ONNX opset ({ONNX_OPSET} to {ONNX_MAX_OPSET})")
    parser.add_argument("--any-size", action="store_true",
                        help="height and width free in the graph (batch and frames stay fixed); --size is then "
                             "only the example the graph is traced on")
    add_model_args(parser)
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.inference_config != "baseline":
        parser.error("--inference-config: only the converted model ('baseline') is exported")
    if args.format == "executorch" and args.any_size:
        parser.error("--any-size: a .pte program has one input shape (give --size)")
    if args.format == "openvino" and not args.out.endswith(".xml"):
        parser.error(f"--out {args.out}: OpenVINO's IR is an .xml (with its .bin beside it)")
    logger = utils.setup_logger()
    if (why := unwritable(args.out, folder=False)) is not None:
        utils.fail(f"--out {args.out}: {why}")
    model, description = model_from_flags(ModelFlags.from_args(args), args.checkpoint)
    model_input = ModelInput.of(description, args.size)
    example = torch.randn(model_input.shape(), generator=torch.Generator().manual_seed(0))
    if args.format == "onnx":
        export_onnx(model, example, args.out, args.opset, any_size=args.any_size)
    elif args.format == "openvino":
        graph, weights = openvino_ir(model, example, args.opset, any_size=args.any_size)
        # the weights first: the .xml, which names them, appears only once they are whole
        write_bytes_atomic(Path(args.out).with_suffix(".bin"), weights)
        write_bytes_atomic(args.out, graph)
    elif not executorch_available():
        utils.fail("--format executorch needs the executorch package (pip install -r requirements-deploy.txt)")
    else:
        write_bytes_atomic(args.out, executorch_program(model, example))
    side = ("H", "W") if args.any_size else (model_input.size, model_input.size)
    logger.info("wrote %s: input 'image' %s, output 'saliency' %s", args.out, (1, model_input.channels, *side),
                (model_input.nframes, 1, *side))


if __name__ == "__main__":
    main()
