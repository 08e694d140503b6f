"""What this machine can do: its processor's flags, read once from ``/proc/cpuinfo``, which the runtime and training
choose by (native bf16 arithmetic for the inference backends and for bf16 autocast while training), and the memory
a process may use (`memory_bytes`, the training memory check)."""

from __future__ import annotations

import functools
import os
from pathlib import Path

__all__ = ["cpu_flags", "cpu_has_native_bf16", "memory_bytes"]

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


def memory_bytes(device) -> tuple[int, str]:
    """The memory a process on ``device`` can use at most and what it is: a CUDA device's total memory, else the
    machine's physical memory, or the cgroup (container) limit where that is lower."""
    import torch

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
