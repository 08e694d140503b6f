"""Shared test fixtures: the reference data beside the project (skipped with a reason where it is absent)."""

from pathlib import Path

import pytest

REFERENCE = Path(__file__).resolve().parents[1].parent / "shared" / "reference"


@pytest.fixture
def reference():
    """``reference('golden/x.npz')`` -> path of that reference file; skips the test if it is not available."""
    def get(relative: str) -> Path:
        path = REFERENCE / relative
        if not path.exists():
            pytest.skip(f"reference file {path} not available")
        return path
    return get
