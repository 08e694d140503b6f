"""The authors' reference data beside the project (``../shared/reference``); tests skip where it is absent."""

from pathlib import Path

import pytest

REFERENCE = Path(__file__).resolve().parents[1].parent / "shared" / "reference"


def reference_file(relative: str) -> Path:
    """Path of ``REFERENCE/relative``; skips the calling test with a reason if it is not available."""
    path = REFERENCE / relative
    if not path.exists():
        pytest.skip(f"reference file {path} not available")
    return path
