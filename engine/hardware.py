"""What this machine can do, for training and inference alike: the precisions there are (`PRECISIONS`), the
processor's flags, read once from ``/proc/cpuinfo`` (native bf16 arithmetic for the inference backends and for bf16
autocast while training), whether its bf16 channels_last kernels compute right, and the memory a process may use
(`memory_bytes`, the training memory check)."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from pathlib import Path

import torch

__all__ = ["PRECISIONS", "TORCH_DTYPES", "cpu_flags", "cpu_has_native_bf16", "cpu_has_int8_dot_products",
           "bf16_channels_last_gradients", "memory_bytes"]

TORCH_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
# What ``--precision`` takes, in training and at inference (fp16 on CUDA; bf16 where the CPU or GPU has it natively).
PRECISIONS = tuple(TORCH_DTYPES)

# AVX512-BF16 (dot products of bf16 pairs) or AMX (bf16 tile multiplies): where neither is present, bf16 is
# emulated in float32 and is slower than float32 itself.
NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The processor's feature flags (Linux; empty elsewhere or when unreadable)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX)."""
    return bool(NATIVE_BF16_FLAGS & cpu_flags())


# VNNI (AVX512 or AVX) or AMX: int8 dot products accumulated in int32. Without them (AVX2 alone), int8 kernels
# multiply u8 x s8 pairs into saturating int16 sums (vpmaddubsw), slower and less exact.
INT8_DOT_PRODUCT_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})


def cpu_has_int8_dot_products() -> bool:
    """Whether this CPU has int8 dot-product instructions (AVX512-VNNI, AVX-VNNI or AMX-INT8)."""
    return bool(INT8_DOT_PRODUCT_FLAGS & cpu_flags())


# The weight gradients of 3x3 convolutions in bf16 and channels_last (the CDCM's dilated convolutions of 24 channels
# among them), each compared with float32 arithmetic on the same bf16 values. On a CPU with AVX512-BF16 but no AMX
# (AMD Zen 4; or oneDNN held to AVX512_CORE_BF16 / AVX512_CORE) PyTorch 2.14's oneDNN computes some of them wrong:
# NaN or garbage at 20, 24, 28 and 40 channels (not 8, 16 or 32) from 32 x 32 pixels up, at times a segmentation
# fault. Products of bf16 values are exact in float32 and the kernels accumulate in float32, so a correct gradient is
# the float32 one rounded once to bf16 (at most 2^-8 = 0.4 % relative) plus accumulation rounding; a wrong one is off
# by 100 % or NaN. 5 % of the largest entry separates the two. It runs in a child process, which a crashing kernel
# cannot take down with the caller, and which inherits the environment (ONEDNN_MAX_CPU_ISA included) and so the
# kernels training will use.
_BF16_PROBE = """
import torch, torch.nn.functional as F
torch.set_num_threads(1)
g = torch.Generator().manual_seed(0)
worst = 0.0
for channels, size, dilation in ((24, 32, 3), (24, 16, 3), (24, 32, 5), (20, 32, 2), (24, 32, 1), (48, 32, 1)):
    cl = torch.channels_last
    x, dy = (torch.randn(2, channels, size, size, generator=g).bfloat16().contiguous(memory_format=cl)
             for _ in range(2))
    w = torch.randn(channels, channels, 3, 3, generator=g).bfloat16().contiguous(memory_format=cl).requires_grad_()
    F.conv2d(x, w, None, 1, dilation, dilation).backward(dy)
    w32 = w.detach().float().requires_grad_()
    F.conv2d(x.float(), w32, None, 1, dilation, dilation).backward(dy.float())
    error = (w.grad.float() - w32.grad).abs().max().item() / w32.grad.abs().max().item()
    worst = max(worst, error) if error == error else float("inf")
print(worst)
"""
BF16_PROBE_RELATIVE = 0.05


@functools.cache
def bf16_channels_last_gradients() -> str | None:
    """None when this CPU's bf16 convolutions in channels_last give correct weight gradients (the check above, about
    2 s in a child process, once per process), else what went wrong, in words."""
    try:
        probe = subprocess.run([sys.executable, "-c", _BF16_PROBE], capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"the check could not run ({err})"
    if probe.returncode != 0:
        how = f"signal {-probe.returncode}" if probe.returncode < 0 else f"exit status {probe.returncode}"
        return f"a bf16 convolution crashed ({how})"
    worst = float(probe.stdout.strip() or "inf")
    if not worst <= BF16_PROBE_RELATIVE:
        return ("bf16 convolutions give wrong weight gradients" + (" (NaN)" if worst == float("inf") else
                                                                     f" ({100 * worst:.0f} % off)"))
    return None


def memory_bytes(device) -> tuple[int, str]:
    """The memory a process on ``device`` can use at most and what it is: a CUDA device's total memory, else the
    machine's physical memory, or the cgroup (container) limit where that is lower."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory, f"{torch.cuda.get_device_name(device)} memory"
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for limit_file in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            limit = Path(limit_file).read_text().strip()
        except OSError:
            continue
        if limit.isdigit() and int(limit) < total:
            return int(limit), "the container's memory limit"
    return total, "the machine's memory"
