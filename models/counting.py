"""What a model costs: its parameters and the multiply-accumulates of one forward pass (design §5)."""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["count_parameters", "count_macs"]


def count_parameters(model: nn.Module) -> int:
    """Number of parameter elements (buffers such as BN running statistics and pre-biases excluded, design §5)."""
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, *inputs: torch.Tensor) -> int:
    """Multiply-accumulates of one forward pass of ``model`` on ``inputs`` = FLOPs / 2 by FlopCounterMode.

    PyTorch's counter counts convolutions and matrix products only (not pooling, interpolation or element-wise
    ops), which is the convention of design §5. It counts what the module actually executes, so a training-form
    model is charged for each of its branches. The pass runs on the meta device (shapes only, no arithmetic) and
    falls back to a real pass on ``inputs``' device if some op has no meta kernel.
    """
    try:
        meta_model = copy.deepcopy(model).to("meta")
        with torch.inference_mode(), FlopCounterMode(display=False) as counter:
            meta_model(*(x.to("meta") for x in inputs))
    except (NotImplementedError, RuntimeError):  # an op without a meta kernel: count a real pass
        with torch.inference_mode(), FlopCounterMode(display=False) as counter:
            model(*inputs)
    return counter.get_total_flops() // 2
