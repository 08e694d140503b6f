"""Shared test set-up: one CPU thread per process, and the reference data beside the project (skipped with a reason
where it is absent)."""

import os

import pytest
import torch
from reference import reference_file

# The suite runs on 2 cores, often beside other processes (DataLoader workers, DDP peers, subprocesses). With more
# than one intra-op thread per process, OpenMP's busy-waiting threads then fight for the cores and some float64
# tests ran 70x slower; one thread per process (inherited by subprocesses) keeps the suite fast and stable.
os.environ["OMP_NUM_THREADS"] = "1"
torch.set_num_threads(1)


@pytest.fixture
def reference():
    """``reference('golden/x.npz')`` -> path of that reference file; skips the test if it is not available."""
    return reference_file
