"""What this machine's processor can do, read once from ``/proc/cpuinfo``: the flags the runtime and training
choose by (native bf16 arithmetic for the inference backends and for bf16 autocast while training)."""

from __future__ import annotations

import functools
from pathlib import Path

__all__ = ["cpu_flags", "cpu_has_native_bf16"]

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
