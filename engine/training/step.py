"""How a training step runs: the form of the multi-branch blocks, the memory layout, the precision and compilation
(`StepSettings`, checked against the device by `resolve_step_settings`), applied in one place: `prepare_model`
for the model, `step_autocast` and `to_step_input` for each step.

The defaults are the fast path measured in BENCHMARKS.md ("Training"): every linear multi-branch block trained as
one convolution with its mixed kernel (``models.dcr.set_train_form``, the same function of the same parameters),
channels_last, float32. bf16 and fp16 are autocast (the loss stays float32); fp16 adds loss scaling (CUDA only).
int8 is quantization-aware fine-tuning (`engine.training.qat`): float32 arithmetic on a converted model whose
convolutions are fake-quantized to 8 bits.
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass

import torch
from torch import nn

from configs import TRAIN_FORMS
from engine.hardware import PRECISIONS, TORCH_DTYPES, bf16_channels_last_gradients, cpu_has_native_bf16
from models import set_train_form

__all__ = ["TRAIN_PRECISIONS", "QAT_PRECISION", "StepSettings", "StepError", "precision_error",
           "resolve_step_settings", "nchw_reason", "prepare_model", "step_autocast", "to_step_input", "compile_errors"]

QAT_PRECISION = "int8"
TRAIN_PRECISIONS = (*PRECISIONS, QAT_PRECISION)


class StepError(ValueError):
    """A step setting this machine cannot run; the message is one line naming the flag."""


@dataclass(frozen=True)
class StepSettings:
    """How each training step computes. ``train_form``: 'fused' (one convolution per linear multi-branch block;
    blocks with batch-statistics BN branch by branch) or 'separate' (branch by branch, the authors' arithmetic);
    ``precision``: 'fp32', 'bf16' or 'fp16' autocast of the forward pass, or 'int8' (quantization-aware, in
    float32); ``channels_last``: NHWC parameters and
    inputs; ``compile``: the model through ``torch.compile``."""

    train_form: str = "fused"
    precision: str = "fp32"
    channels_last: bool | None = True  # None: not asked, until `resolve_step_settings` decides
    compile: bool = False

    @property
    def loss_scaling(self) -> bool:
        """fp16 gradients underflow without a loss scale (`torch.amp.GradScaler`); bf16 has float32's range."""
        return self.precision == "fp16"

    def describe(self) -> dict:
        """The settings as a JSON-able dict (args.json, log.jsonl, benchmark rows)."""
        return asdict(self)


def precision_error(precision: str, device: torch.device) -> str | None:
    """Why ``precision`` cannot train on ``device`` (one line naming ``--precision``), or None when it can: bf16
    needs native bf16 (a CPU with AVX512-BF16 or AMX, a GPU with bf16 arithmetic); fp16 needs CUDA; fp32 and int8
    (float32 arithmetic) run anywhere."""
    if precision not in TRAIN_PRECISIONS:
        return f"--precision {precision}: choose from {', '.join(TRAIN_PRECISIONS)}"
    if precision == "fp16" and device.type != "cuda":
        return "--precision fp16 trains on CUDA only (float16 on the CPU is emulated); use bf16 or fp32"
    if precision == "bf16":
        if device.type == "cuda" and not torch.cuda.is_bf16_supported():
            return f"--precision bf16: {torch.cuda.get_device_name(device)} has no bf16 arithmetic; use fp16 or fp32"
        if device.type == "cpu" and not cpu_has_native_bf16():
            return ("--precision bf16 needs a CPU with native bf16 (AVX512-BF16 or AMX), which this one lacks: "
                    "emulated bf16 is slower than fp32; use fp32")
    return None


def resolve_step_settings(device: torch.device, *, train_form: str = "fused", precision: str = "fp32",
                          channels_last: bool | None = None, compile: bool = False) -> StepSettings:
    """The settings a run trains with on ``device``; `StepError` for a precision the device cannot run, an unknown
    form, or bf16 asked in channels_last where this CPU computes it wrong.

    ``channels_last`` None (not asked) is channels_last: faster for every model and form measured on the CPU, and
    what cuDNN's NHWC kernels want; except bf16 on a CPU whose bf16 channels_last convolutions fail
    `engine.hardware.bf16_channels_last_gradients` (AMD Zen 4: NaN weights from the first step, or a crash), which
    trains in NCHW (`nchw_reason` says why)."""
    if train_form not in TRAIN_FORMS:
        raise StepError(f"--train-form {train_form}: choose from {', '.join(TRAIN_FORMS)}")
    if (why := precision_error(precision, device)) is not None:
        raise StepError(why)
    if channels_last is not False and (why := nchw_reason(precision, device)) is not None:
        if channels_last:
            raise StepError(f"--precision bf16 --channels-last: on this CPU {why} in channels_last (a check at "
                            "start-up); train with --no-channels-last")
        channels_last = False
    return StepSettings(train_form, precision, channels_last is not False, compile)


def nchw_reason(precision: str, device: torch.device) -> str | None:
    """Why ``precision`` must train in NCHW on ``device`` (bf16 where this CPU's channels_last bf16 convolutions
    fail their check), or None."""
    if precision != "bf16" or device.type != "cpu":
        return None
    return bf16_channels_last_gradients()


def prepare_model(model: nn.Module, settings: StepSettings) -> nn.Module:
    """In place: the block form and memory layout of ``settings`` on ``model`` (already on its device); returns
    it. Parameters, their names and the state dict are unchanged (channels_last only strides the 4-D ones)."""
    set_train_form(model, settings.train_form)
    if settings.channels_last:
        model.to(memory_format=torch.channels_last)
    return model


def step_autocast(settings: StepSettings, device: torch.device) -> contextlib.AbstractContextManager:
    """The autocast context of a forward pass under ``settings`` (a no-op for fp32 and for int8, whose fake
    quantization computes in float32)."""
    if settings.precision in ("fp32", QAT_PRECISION):
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=TORCH_DTYPES[settings.precision])


def to_step_input(tensor: torch.Tensor, settings: StepSettings, device: torch.device) -> torch.Tensor:
    """A loader batch (N, C, H, W) on ``device`` in the layout of ``settings`` (non-blocking from pinned memory)."""
    tensor = tensor.to(device, non_blocking=True)
    if settings.channels_last and tensor.dim() == 4:
        tensor = tensor.contiguous(memory_format=torch.channels_last)
    return tensor


def compile_errors() -> tuple[type[BaseException], ...]:
    """The exceptions of a failed ``torch.compile`` (TorchDynamo's and TorchInductor's), caught around a compiled
    step to report ``--compile`` in one line instead of running eagerly behind the user's back."""
    errors: list[type[BaseException]] = []
    with contextlib.suppress(ImportError, AttributeError):
        from torch._dynamo.exc import TorchDynamoException

        errors.append(TorchDynamoException)
    with contextlib.suppress(ImportError, AttributeError):
        from torch._inductor.exc import InductorError

        errors.append(InductorError)
    return tuple(errors)
