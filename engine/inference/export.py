"""The one export path of each shipped format: ONNX (`export_onnx`: export_onnx.py writes it, the "openvino" and
"onnxruntime" backends run it), OpenVINO's IR made from it (`openvino_ir`: export_onnx.py --format openvino) and
ExecuTorch programs (`executorch_program`: export_onnx.py --format executorch writes it, the "executorch" backend
runs it)."""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import sys
import warnings
from pathlib import Path

import torch
from torch import nn

from data.atomic import atomic_path

__all__ = ["ONNX_OPSET", "ONNX_MAX_OPSET", "export_onnx", "openvino_ir", "ir_files", "executorch_program",
           "quiet_native_stderr", "quiet_torch_notes", "quiet_nncf"]

ONNX_OPSET = 17
ONNX_MAX_OPSET = 23  # the newest opset the pinned torch (2.14.1) exports to


def export_onnx(model: nn.Module, example: torch.Tensor, out: str | os.PathLike, opset: int = ONNX_OPSET, *,
                any_size: bool = False) -> None:
    """Trace ``model`` on ``example`` into the ONNX file ``out`` (input ``image``, output ``saliency``), written to a
    temporary file first and then renamed. The graph takes inputs of ``example``'s shape, or with ``any_size`` of
    its batch and channels at any height and width (the models compute every size from the input's, so one trace
    serves all; the batch stays fixed because a video model's clip arithmetic is unrolled per clip). Image models:
    (B, 3, H, W) -> (B, 1, H, W); video models: (B, 3T, H, W) -> (B*T, 1, H, W)."""
    sizes = {"image": {2: "height", 3: "width"}, "saliency": {2: "height", 3: "width"}} if any_size else None
    with atomic_path(Path(out)) as temporary, warnings.catch_warnings(), torch.inference_mode(False), \
            torch.no_grad():
        # The TorchScript-based exporter is the one that needs no extra package (onnxscript). Its tracer's notes
        # about shape-dependent Python code and constant folding do not apply: the batch is fixed on purpose and
        # the sizes are computed with traced integer arithmetic.
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message="Constant folding", category=UserWarning)
        torch.onnx.export(model, (example.clone(),), str(temporary), input_names=["image"],
                          output_names=["saliency"], opset_version=opset, dynamo=False, dynamic_axes=sizes)


@contextlib.contextmanager
def quiet_native_stderr():
    """File descriptor 2 to /dev/null for the block: ExecuTorch writes its CPU probing notes there from C++, past
    Python's streams, when it is imported, lowers a program, loads one or first runs it. What else the process
    writes to stderr meanwhile is lost too."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


@contextlib.contextmanager
def quiet_torch_notes():
    """torch's note about the enums ExecuTorch's modules register on import, kept off the terminal for the block
    (the level of torch's pytree logger, put back after)."""
    noisy = logging.getLogger("torch.utils._pytree")
    level = noisy.level
    noisy.setLevel(logging.ERROR)
    try:
        yield
    finally:
        noisy.setLevel(level)


@contextlib.contextmanager
def quiet_nncf():
    """NNCF's notes and progress bars kept off the terminal for the block: its logger's level at ERROR (put back
    after) and Python's stdout and stderr to nowhere, where its progress bars write (what else the process prints
    from Python meanwhile is lost too)."""
    noisy = logging.getLogger("nncf")
    level = noisy.level
    noisy.setLevel(logging.ERROR)
    try:
        with open(os.devnull, "w") as null, contextlib.redirect_stdout(null), contextlib.redirect_stderr(null):
            yield
    finally:
        noisy.setLevel(level)


def executorch_program(model: nn.Module, example: torch.Tensor,
                       calibration: list[torch.Tensor] | None = None) -> bytes:
    """The ExecuTorch program (.pte bytes) of ``model`` for inputs of ``example``'s shape (one shape: the graph is
    exported with ``torch.export``), lowered to XNNPACK, as a phone app runs it. Shapes as `export_onnx`'s. With
    ``calibration`` (inputs of that shape), the program is INT8: PT2E quantization for XNNPACK (per-channel symmetric
    weights, per-tensor activations observed over the calibration inputs), the one-channel convolutions and what
    follows them up to the next convolution left in float (`engine.inference.quantization`). Raises what the
    export raises."""
    with quiet_torch_notes(), warnings.catch_warnings(), torch.no_grad(), quiet_native_stderr():
        warnings.simplefilter("ignore")
        # imported here: importing ExecuTorch probes the CPU aloud
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
        from executorch.exir import to_edge_transform_and_lower

        def lowered(network: nn.Module):
            exported = torch.export.export(network, (example.clone(),))
            return to_edge_transform_and_lower(exported, partitioner=[XnnpackPartitioner()])

        if calibration is None:
            program = lowered(model)
            if _stranded_convolutions(program, "aten.convolution"):
                folded = _lowered_with_constant_kernels(model, example).to_executorch().buffer
                if _gives_the_models_output(folded, model, example):
                    return folded
            return program.to_executorch().buffer
        # A quantized convolution XNNPACK does not take (SDNet-A's attention: convolutions of a split's outputs)
        # would leave a per-channel dequantization that ExecuTorch's portable kernels cannot run: such convolutions
        # are found in a first lowering and left in float in a second.
        in_float: set[str] = set()
        while True:
            program = lowered(_pt2e_int8(model, example, calibration, in_float))
            stranded = _stranded_convolutions(program) - in_float
            if not stranded:
                return program.to_executorch().buffer
            in_float |= stranded


def _stranded_convolutions(program, target: str = "dequantize_per_channel") -> set[str]:
    """The modules (innermost names) of the convolutions left outside XNNPACK: those with per-channel quantized
    weights (``target`` "dequantize_per_channel": the users of such a weight), or, with "aten.convolution", every
    convolution left in float."""
    stranded = set()
    for node in program.exported_program().graph.nodes:
        if target in str(node.target):
            for user in ([node] if target == "aten.convolution" else node.users):
                stack = user.meta.get("nn_module_stack") or {"": ("",)}
                stranded.add(list(stack.values())[-1][0])
    return stranded


def _gives_the_models_output(program: bytes, model: nn.Module, example: torch.Tensor) -> bool:
    """Whether the ExecuTorch ``program`` gives ``model``'s output on ``example`` to float32 rounding (1e-4 on maps in
    (0, 1), the bound of tests/bounds.py). Folding kernels into constants gave SDNet-A other maps (its attention's
    kernels are sliced from one weight too), so a folded program is taken only where it passes this."""
    from executorch.runtime import Runtime

    x = torch.randn(example.shape, generator=torch.Generator().manual_seed(0))  # zeros would hide a wrong kernel
    loaded = Runtime.get().load_program(program)
    method = loaded.load_method("forward")  # valid while ``loaded`` lives
    return bool((method.execute([x])[0] - model(x)).abs().max() <= 1e-4)


def _lowered_with_constant_kernels(model: nn.Module, example: torch.Tensor):
    """``model`` lowered to XNNPACK after its weights computed from parameters (the STDCs' kernels, sliced from one
    weight at every pass) were folded into constants: XNNPACK takes only constant weights, and a convolution it
    does not take runs on ExecuTorch's portable kernels (45 s for an STDNet clip). Done on the edge program: folded
    there, the constants are contiguous copies (folded on the exported program, they were strided views, and
    ExecuTorch 1.5.1 crashed running them). Its max-poolings then run on the portable kernels (decomposed with
    their indices, which XNNPACK does not take): hence only where a convolution would be left out otherwise."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import EdgeProgramManager, to_edge
    from executorch.exir.backend.backend_api import to_backend
    from executorch.exir.passes.constant_prop_pass import constant_prop_pass

    model = copy.deepcopy(model).requires_grad_(False)
    edge = to_edge(torch.export.export(model, (example.clone(),)))
    return EdgeProgramManager({"forward": to_backend(constant_prop_pass(edge.exported_program()),
                                                     XnnpackPartitioner())})


def _pt2e_int8(model: nn.Module, example: torch.Tensor, calibration: list[torch.Tensor],
               in_float: set[str] = frozenset()) -> nn.Module:
    """``model`` exported for ``example``'s shape and quantized for XNNPACK on the ``calibration`` inputs, the
    convolutions of the modules named in ``in_float`` (innermost module names) left in float."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    class FloatHeadQuantizer(XNNPACKQuantizer):
        """XNNPACK's quantizer, without the one-channel convolutions and the operations after them up to the next
        convolution (their annotations taken away, so no observer or quantization is put there)."""

        def annotate(self, graph: torch.fx.GraphModule) -> torch.fx.GraphModule:
            graph = super().annotate(graph)
            conv = torch.ops.aten.conv2d.default
            def innermost(node: torch.fx.Node) -> str:
                stack = node.meta.get("nn_module_stack") or {"": ("",)}
                return list(stack.values())[-1][0]

            for node in graph.graph.nodes:
                if node.target == conv and innermost(node) in in_float:
                    node.meta.pop("quantization_annotation", None)
            pending = [node for node in graph.graph.nodes
                       if node.target == conv and node.args[1].meta["val"].shape[0] == 1]
            seen = set()
            while pending:
                node = pending.pop()
                if node not in seen:
                    seen.add(node)
                    node.meta.pop("quantization_annotation", None)
                    pending.extend(user for user in node.users if user.target != conv)
            return graph

    quantizer = FloatHeadQuantizer()
    quantizer.set_global(get_symmetric_quantization_config(is_per_channel=True))
    graph = prepare_pt2e(torch.export.export(model, (example.clone(),)).module(), quantizer)
    for x in calibration:
        graph(x)
    return convert_pt2e(graph)


def openvino_ir(model: nn.Module, example: torch.Tensor, opset: int = ONNX_OPSET, *,
                any_size: bool = False) -> tuple[bytes, bytes]:
    """OpenVINO's IR of ``model`` (the .xml graph and the .bin weights, float32 as trained): the ONNX export of
    `export_onnx` (shapes as there) read by OpenVINO and saved without compressing the weights to fp16."""
    import tempfile

    import openvino

    with tempfile.TemporaryDirectory(prefix="sdnet-ir-") as folder:
        onnx_path = Path(folder) / "network.onnx"
        export_onnx(model, example, onnx_path, opset, any_size=any_size)
        return ir_files(openvino.convert_model(onnx_path))


def ir_files(graph) -> tuple[bytes, bytes]:
    """The .xml and .bin of the OpenVINO model ``graph`` as saved, weights as they are (not compressed to fp16)."""
    import tempfile

    import openvino

    with tempfile.TemporaryDirectory(prefix="sdnet-ir-") as folder:
        xml_path = Path(folder) / "network.xml"
        openvino.save_model(graph, xml_path, compress_to_fp16=False)
        return xml_path.read_bytes(), xml_path.with_suffix(".bin").read_bytes()
