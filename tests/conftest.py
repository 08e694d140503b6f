"""Shared test set-up: one CPU thread per process, a private cache of compiled networks, process-wide settings
restored after every test, and the reference data beside the project (skipped with a reason where it is absent)."""

import os
import tempfile

import pytest
import torch
from reference import reference_file

import utils

# The suite runs on 2 cores, often beside other processes (DataLoader workers, DDP peers, subprocesses). With more
# than one intra-op thread per process, OpenMP's busy-waiting threads then fight for the cores and some float64
# tests ran 70x slower; one thread per process (inherited by subprocesses) keeps the suite fast and stable.
os.environ["OMP_NUM_THREADS"] = "1"
torch.set_num_threads(1)
# `make test-isa` holds PyTorch's oneDNN to another instruction set (ONEDNN_MAX_CPU_ISA), which sums in another
# order as another CPU does. OpenVINO's CPU plugin reads the same variable for its own copy of oneDNN but not for its
# own kernels, which choose by the real CPU (its OV_CPU_MAX_ISA exists in debug builds only): a capped oneDNN beside
# uncapped kernels is a mix no processor has, and it crashes (sdneta at AVX2 on a CPU with AMX). PyTorch's oneDNN
# reads the variable once, at its first primitive: one convolution fixes the cap for PyTorch, then the variable is
# taken out of the environment before OpenVINO (or any subprocess) starts, so OpenVINO runs as on this CPU.
TORCH_ONEDNN_ISA = os.environ.pop("ONEDNN_MAX_CPU_ISA", None)
if TORCH_ONEDNN_ISA is not None:
    os.environ["ONEDNN_MAX_CPU_ISA"] = TORCH_ONEDNN_ISA
    torch.nn.functional.conv2d(torch.ones(1, 16, 16, 16), torch.ones(16, 16, 3, 3))
    del os.environ["ONEDNN_MAX_CPU_ISA"]
# Compiled networks of the suite (and of the scripts it starts) go to a folder of its own, never the user's cache.
_CACHE = tempfile.TemporaryDirectory(prefix="sdnet-test-cache-")
os.environ["SDNET_CACHE_DIR"] = _CACHE.name


@pytest.fixture(autouse=True)
def process_settings(monkeypatch: pytest.MonkeyPatch):
    """Scripts run in-process by the tests change process-wide settings in their ``main`` (`utils.tune_process`):
    threads and cudnn.benchmark are put back after each test, and the malloc setting, which cannot be undone, is
    recorded instead of made (``utils.keep_freed_memory``; tests/test_layout.py checks that scripts call it)."""
    threads, benchmark = torch.get_num_threads(), torch.backends.cudnn.benchmark
    monkeypatch.setattr(utils, "keep_freed_memory", lambda keep_bytes=utils.MALLOC_KEEP_BYTES: True)
    yield
    torch.set_num_threads(threads)
    torch.backends.cudnn.benchmark = benchmark


@pytest.fixture
def reference():
    """``reference('golden/x.npz')`` -> path of that reference file; skips the test if it is not available."""
    return reference_file
