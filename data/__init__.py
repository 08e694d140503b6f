"""Data: decoding (`data.readers`), list files and clips (`data.lists`), transforms (`data.transforms`), datasets
for training, validation and inference (`data.datasets`), videos (`data.video`), atomic file writing (`data.atomic`,
used by every writer in the project) and the synthetic data generator (`python -m data.synthetic`).

This package imports nothing from `models/` or `engine/`.
"""

from data.readers import DataError

__all__ = ["DataError"]
