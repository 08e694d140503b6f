"""Quantization-aware fine-tuning (``train_sod.py --finetune CHECKPOINT --precision int8``): the converted network
trained with its convolutions computed as an 8-bit runtime computes them, so that its weights learn to sit on the
grid `engine.inference` quantizes them to (``--precision int8`` of the "openvino" and "executorch" backends).

What is fake-quantized, as both backends quantize it: every convolution with more than one output channel, its
weights per output channel (symmetric, 8 bits, [-127, 127]: scale max|w| / 127) and its input per tensor (8 bits,
affine, the range a moving average of each batch's minimum and maximum, as torch's default QAT observer keeps it).
The one-output-channel convolutions (the saliency head, the attention maps) stay float, as the backends keep them.
Gradients pass the rounding unchanged inside the range (straight-through) and stop outside it.

Why fake quantization on the model's own modules, not NNCF's or PT2E's QAT: both rebuild the network into another
module (NNCF's wrapped graph, PT2E's exported graph of one input shape), whose state dict is not our checkpoint and
which trains one input size only, where a training epoch makes one pass per size (480, 400, 240, 320 px). Here
the model stays itself: its state dict has the converted model's keys (the quantized network's ranges are left
out: the backends calibrate their own), every input size trains, DDP and resuming work as for any run; the
checkpoints are converted checkpoints that every script loads, and ``--precision int8`` quantizes them as any
other (post-training, on the calibration set, through the accuracy gate).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize

from models.layers import InitialBlock

__all__ = ["QAT_AVERAGING", "fake_quantized_layers", "prepare_qat"]

QAT_AVERAGING = 0.01  # the moving average's weight of each batch's range (torch's default observer's constant)
_WEIGHT_KEY, _PARAMETRIZED_KEY = "weight", "parametrizations.weight.original"


class _PerChannelWeights(nn.Module):
    """A weight (C_out, C_in/groups, kh, kw) rounded to 8 bits per output channel, symmetric: scale max|w_c| / 127."""

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        scale = weight.detach().abs().amax(dim=tuple(range(1, weight.dim()))).clamp_min(torch.finfo(weight.dtype).tiny)
        zero = torch.zeros(weight.shape[0], dtype=torch.int32, device=weight.device)
        return torch.fake_quantize_per_channel_affine(weight, scale / 127, zero, 0, -127, 127)


def _quantize_input(module: nn.Module, args: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    """Forward pre-hook: the input (N, C, H, W) rounded to 8 bits per tensor over the module's running range
    (updated from the batch in training mode; the range always holds 0, so zero stays exact)."""
    x = args[0]
    if module.training:
        with torch.no_grad():
            low, high = x.detach().amin().float(), x.detach().amax().float()
            if not module.qat_ranged:
                module.qat_low.copy_(low)
                module.qat_high.copy_(high)
                module.qat_ranged = True
            else:
                module.qat_low.lerp_(low, QAT_AVERAGING)
                module.qat_high.lerp_(high, QAT_AVERAGING)
    if not module.qat_ranged:  # evaluated before any training batch: nothing to round to yet
        return args
    low, high = module.qat_low.clamp(max=0.0), module.qat_high.clamp(min=0.0)
    scale = ((high - low) / 255).clamp_min(torch.finfo(torch.float32).tiny)
    zero_point = torch.round(-low / scale).clamp(0, 255).to(torch.int32)
    return (torch.fake_quantize_per_tensor_affine(x, scale, zero_point, 0, 255), *args[1:])


def fake_quantized_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The layers `prepare_qat` fake-quantizes, by name: every ``nn.Conv2d`` with more than one output channel and
    the converted initial block (one convolution of its own weight)."""
    return [(name, module) for name, module in model.named_modules()
            if isinstance(module, nn.Conv2d) and module.out_channels > 1
            or isinstance(module, InitialBlock) and module.deploy]


def _saved_as_weight(layer: nn.Module, state_dict: dict, prefix: str, local_metadata: dict) -> None:
    """State-dict post-hook of a fake-quantized layer: its float weight under the key the converted model has, first
    of the layer's entries as there (they are the last entries of ``state_dict`` when the hook runs)."""
    entries = {key: state_dict.pop(key) for key in [key for key in state_dict if key.startswith(prefix)]}
    state_dict[prefix + _WEIGHT_KEY] = entries.pop(prefix + _PARAMETRIZED_KEY)
    state_dict.update(entries)


def _loaded_as_original(layer: nn.Module, state_dict: dict, prefix: str, *_) -> None:
    """Load-state-dict pre-hook of a fake-quantized layer: its weight's key to where the float weight now lives."""
    if prefix + _WEIGHT_KEY in state_dict:
        state_dict[prefix + _PARAMETRIZED_KEY] = state_dict.pop(prefix + _WEIGHT_KEY)


def prepare_qat(model: nn.Module) -> nn.Module:
    """In place: ``model`` (converted: ``models.convert_model`` or ``build_model(..., deploy=True)``) with the
    weights and inputs of `fake_quantized_layers` fake-quantized to 8 bits as the module docstring says; returns
    it. Its outputs keep their shapes; its state dict keeps the converted model's keys and loads as before (the
    inputs' running ranges are not in it: a resumed run measures them again from its first batch)."""
    for _, layer in fake_quantized_layers(model):
        parametrize.register_parametrization(layer, _WEIGHT_KEY, _PerChannelWeights())
        device = layer.parametrizations.weight.original.device
        layer.register_buffer("qat_low", torch.zeros((), device=device), persistent=False)
        layer.register_buffer("qat_high", torch.zeros((), device=device), persistent=False)
        layer.qat_ranged = False  # a plain attribute: asking a CUDA tensor would wait for the device at every layer
        layer.register_forward_pre_hook(_quantize_input)
        # per layer, not on the whole model: a block's own hooks rename its layers' keys (the release's names)
        layer.register_state_dict_post_hook(_saved_as_weight)
        layer.register_load_state_dict_pre_hook(_loaded_as_original)
    return model
