"""Data loading: list files and clips (`data.lists`), transforms (`data.transforms`), decoding
(`data.readers`), datasets (`data.datasets`), atomic file writing (`data.atomic`, used by every writer in the
project) and the synthetic data generator (`python -m data.synthetic`).

This package imports nothing from `models/`.
"""

from data.datasets import SODDataset, VSODDataset
from data.lists import (
    StillEntry,
    VideoEntry,
    annotated_frames,
    build_clips,
    dataset_names,
    read_video_list,
    select_videos,
)
from data.readers import DataError
from data.transforms import preprocess_test, preprocess_test_clip

__all__ = [
    "DataError",
    "SODDataset",
    "VSODDataset",
    "StillEntry",
    "VideoEntry",
    "annotated_frames",
    "build_clips",
    "dataset_names",
    "preprocess_test",
    "preprocess_test_clip",
    "read_video_list",
    "select_videos",
]
