"""Streaming evaluation of a dataset's pairs: maps are decoded by DataLoader workers, grouped into batches of equal
size and fed to `SODMetrics`; only running sums are kept, so memory does not grow with the number of maps.

Image datasets give one `SODMetrics` result; video datasets one per video, averaged with `average_over_videos`.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from Evaluation.inputs import DatasetPairs, EvaluationError, PairDataset
from Evaluation.metrics import SODMetrics, average_over_videos


def _keep_sample(sample: tuple) -> tuple:
    return sample


class _BatchFeeder:
    """Collects consecutive maps of one size into batches of at most ``batch_size`` for one accumulator."""

    def __init__(self, metrics: SODMetrics, batch_size: int) -> None:
        self.metrics = metrics
        self.batch_size = batch_size
        self.preds: list[np.ndarray] = []
        self.gts: list[np.ndarray] = []

    def add(self, pred: np.ndarray, gt: np.ndarray) -> None:
        if self.preds and (pred.shape != self.preds[0].shape or len(self.preds) == self.batch_size):
            self.flush()
        self.preds.append(pred)
        self.gts.append(gt)

    def flush(self) -> None:
        if self.preds:
            self.metrics.step(np.stack(self.preds), np.stack(self.gts))
            self.preds, self.gts = [], []


def evaluate_dataset(dataset: DatasetPairs, device: torch.device, dtype: torch.dtype = torch.float32,
                     batch_size: int = 16, workers: int = 2, progress: bool = False) -> dict:
    """Metrics of one dataset (see `SODMetrics.get_results` / `average_over_videos`), plus ``resized`` (predictions
    resized to their GT size) and ``missing`` (GT maps without a prediction, left out). A video dataset (pairs with a
    ``group``) is evaluated per video and averaged over videos. Raises `EvaluationError` naming an unreadable file.
    """
    if not dataset.pairs:
        raise EvaluationError(f"{dataset.name}: no prediction/GT pair to evaluate")
    loader = DataLoader(PairDataset(dataset.pairs), batch_size=None, shuffle=False, num_workers=workers,
                        collate_fn=_keep_sample)
    per_group: list[dict] = []
    feeder, group, resized = None, None, 0
    samples = tqdm(loader, total=len(dataset.pairs), desc=dataset.name, unit="map", disable=not progress)
    for pair, (pred, gt, was_resized, error) in zip(dataset.pairs, samples, strict=True):
        if error:
            raise EvaluationError(error)
        if feeder is None or pair.group != group:
            if feeder is not None:
                feeder.flush()
                per_group.append(feeder.metrics.get_results())
            feeder, group = _BatchFeeder(SODMetrics(device, dtype), batch_size), pair.group
        feeder.add(pred, gt)
        resized += bool(was_resized)
    feeder.flush()
    per_group.append(feeder.metrics.get_results())
    is_video = bool(dataset.pairs[0].group)
    result = average_over_videos(per_group) if is_video else per_group[0]
    result.update(resized=resized, missing=len(dataset.missing))
    return result
