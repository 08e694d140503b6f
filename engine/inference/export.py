"""The one ONNX export path: export_onnx.py writes its files with it and the "openvino" backend compiles from it."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch
from torch import nn

from data.atomic import atomic_path

__all__ = ["ONNX_OPSET", "ONNX_MAX_OPSET", "export_onnx"]

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
