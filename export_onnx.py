"""Export the DCR-converted model of a checkpoint for shipping: ONNX (input ``image``, output ``saliency``),
OpenVINO's IR (.xml and .bin) or an ExecuTorch program for phones (.pte, lowered to XNNPACK).

    python export_onnx.py --checkpoint checkpoints/sdnet_from_scratch.pth --size 320 --out sdnet.onnx
    python export_onnx.py --checkpoint checkpoints/sdnet_from_scratch.pth --format openvino --out sdnet.xml
    python export_onnx.py --checkpoint checkpoints/sdnet_from_scratch.pth --format executorch --out sdnet.pte
    python export_onnx.py --checkpoint checkpoints/sdnet_from_scratch.pth --format openvino --precision int8 \
        --out sdnet-int8.xml

``--precision int8`` (openvino and executorch) ships the network quantized as ``--backend openvino|executorch
--precision int8`` runs it: calibrated on ``--calibration`` and written only if it passes the accuracy gate
(``--gate``, ``--gate-tolerance``; docs/runtime.md), else one line with both figures and exit 2.

``--verify FILE`` (instead of ``--out``) checks a shipped file against the checkpoint: FILE run by its runtime
alone (.onnx ONNX Runtime, .xml OpenVINO, .pte ExecuTorch) on the gate images of the project's fixed set at
``--size``; an fp32 file must give the checkpoint's 8-bit maps within 1 grey level, an int8 one (``--precision
int8``) pass the accuracy gate. A file its runtime cannot load is one line, exit 2; one that gives other maps, exit 1.

    python export_onnx.py --checkpoint checkpoints/sdnet_from_scratch.pth --verify sdnet.onnx

The graph has a fixed input shape: image models take (1, 3, size, size) ImageNet-normalised images and return
(1, 1, size, size) sigmoid maps; video models take one clip (1, 3T, size, size), frame t in channels 3t..3t+2,
and return (T, 1, size, size). With ``--any-size`` the height and width are free (H, W instead of size, size;
ONNX only: a .pte program has one input shape). Pre- and post-processing are as in predict.py (resize,
normalise; upsample the map). The model is what the checkpoint holds; the model flags may be given and must then
agree with it.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

import utils
from data.atomic import unwritable, write_bytes_atomic
from data.readers import DataError
from data.transforms import saliency_to_uint8
from engine.inference.backends import BackendError, Settings, backend_class, executorch_available
from engine.inference.export import ONNX_MAX_OPSET, ONNX_OPSET, executorch_program, export_onnx, openvino_ir
from engine.inference.loading import ModelFlags, add_model_args, model_from_flags
from engine.inference.predictor import ModelInput
from engine.inference.quantization import add_int8_args, check_gate, int8_sets, network_inputs
from engine.inference.shipped import ShippedFileError, shipped_network

FORMATS = ("onnx", "openvino", "executorch")


def build_parser() -> argparse.ArgumentParser:
    parser = utils.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True,
                        help="the authors' release (module. keys) or ours, training form or converted")
    parser.add_argument("--size", type=utils.input_size, default=None,
                        help="square input size in pixels (default: sdnet 320, sdneta 384, video models 256)")
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--out", help="the file to write: .onnx; for --format openvino the .xml (its .bin beside "
                                      "it); for --format executorch the .pte")
    target.add_argument("--verify", metavar="FILE",
                        help="check the shipped FILE (.onnx, .xml or .pte) against the checkpoint's maps instead of "
                             "writing one")
    parser.add_argument("--format", choices=FORMATS, default="onnx",
                        help="onnx (ONNX Runtime, OpenVINO, browsers), openvino (OpenVINO's IR, fp32 weights) or "
                             "executorch (a .pte for ExecuTorch's runtime on phones, lowered to XNNPACK; needs "
                             "requirements-deploy.txt)")
    parser.add_argument("--opset", type=utils.int_between(ONNX_OPSET, ONNX_MAX_OPSET), default=ONNX_OPSET,
                        help=f"ONNX opset ({ONNX_OPSET} to {ONNX_MAX_OPSET})")
    parser.add_argument("--precision", choices=("fp32", "int8"), default="fp32",
                        help="fp32 (default: the weights as trained) or int8 (--format openvino or executorch: "
                             "quantized on --calibration, written only if it passes the accuracy gate)")
    add_int8_args(parser)
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
    if args.precision == "int8" and args.format == "onnx" and not args.verify:
        parser.error("--precision int8: give --format openvino or executorch (the formats with a quantizer here)")
    if args.precision == "int8" and args.any_size:
        parser.error("--any-size: an int8 network is quantized for one input shape (give --size)")
    if args.precision != "int8" and (args.calibration or args.gate):
        parser.error(f"{'--calibration' if args.calibration else '--gate'} is for --precision int8")
    if args.format == "openvino" and args.out and not args.out.endswith(".xml"):
        parser.error(f"--out {args.out}: OpenVINO's IR is an .xml (with its .bin beside it)")
    logger = utils.setup_logger()
    if args.out and (why := unwritable(args.out, folder=False)) is not None:
        utils.fail(f"--out {args.out}: {why}")
    model, description = model_from_flags(ModelFlags.from_args(args), args.checkpoint)
    model_input = ModelInput.of(description, args.size)
    if args.verify:
        verify(model, args, model_input.shape())
        return
    example = torch.randn(model_input.shape(), generator=torch.Generator().manual_seed(0))
    if args.format == "executorch" and not executorch_available():
        utils.fail("--format executorch needs the executorch package (pip install -r requirements-deploy.txt)")
    if args.precision == "int8":
        write_int8(model, args, model_input.shape())
    elif args.format == "onnx":
        export_onnx(model, example, args.out, args.opset, any_size=args.any_size)
    elif args.format == "openvino":
        graph, weights = openvino_ir(model, example, args.opset, any_size=args.any_size)
        # the weights first: the .xml, which names them, appears only once they are whole
        write_bytes_atomic(Path(args.out).with_suffix(".bin"), weights)
        write_bytes_atomic(args.out, graph)
    else:
        write_bytes_atomic(args.out, executorch_program(model, example))
    side = ("H", "W") if args.any_size else (model_input.size, model_input.size)
    logger.info("wrote %s: input 'image' %s, output 'saliency' %s", args.out, (1, model_input.channels, *side),
                (model_input.nframes, 1, *side))


def write_int8(model: torch.nn.Module, args: argparse.Namespace, shape: tuple[int, ...]) -> None:
    """The network quantized for ``shape`` by the backend of ``--format``, written once it has passed the gate."""
    try:
        sets = int8_sets(args.calibration, args.gate, args.gate_tolerance)
        backend = backend_class(args.format)(model, Settings(torch.device("cpu"), "int8", torch.get_num_threads(),
                                                             None, sets))
        if args.format == "openvino":
            graph, weights = backend.int8_ir(shape)
            write_bytes_atomic(Path(args.out).with_suffix(".bin"), weights)
            write_bytes_atomic(args.out, graph)
        else:
            write_bytes_atomic(args.out, backend.int8_program(shape))
    except (BackendError, DataError) as err:
        utils.fail(str(err))


def verify(model: torch.nn.Module, args: argparse.Namespace, shape: tuple[int, ...]) -> None:
    """``--verify``: the shipped file run by its runtime alone against ``model`` (see the module's docstring)."""
    logger = logging.getLogger(utils.LOGGER_NAME)
    try:
        run = shipped_network(args.verify)
        sets = int8_sets(None, args.gate, args.gate_tolerance)
        with torch.inference_mode():
            if args.precision == "int8":
                moved = check_gate(model, run, replace(sets, calibration_source="its own calibration"), shape,
                                   f"--verify {args.verify}")
                logger.info("%s passes the accuracy gate on %s at %s: S-measure %+.4f, MAE %+.4f of the checkpoint's",
                            args.verify, sets.gate_source, "x".join(map(str, shape)), *moved)
                return
            worst = 0
            for x in network_inputs([rgb for rgb, _ in sets.gate], shape):
                ours, theirs = (saliency_to_uint8(out.float(), shape[2:]) for out in (model(x), run(x)))
                worst = max(worst, int(np.abs(ours.astype(np.int16) - theirs).max()))
    except (ShippedFileError, BackendError, DataError) as err:
        utils.fail(str(err))
    if worst > 1:
        utils.fail(f"--verify {args.verify}: its maps differ from the checkpoint's by up to {worst} grey levels at "
                   f"{'x'.join(map(str, shape))} (an fp32 file gives them within 1): another network, or damaged "
                   "(an int8 file: add --precision int8)", status=1)
    logger.info("%s gives the checkpoint's maps within %d grey level at %s (%d images of the project's fixed set)",
                args.verify, worst, "x".join(map(str, shape)), len(sets.gate))


if __name__ == "__main__":
    main()
