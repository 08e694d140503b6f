"""Streaming evaluation of a dataset's pairs: maps are decoded by DataLoader workers, grouped into batches of equal
size and fed to `SODMetrics` (PySODMetrics' protocol) and `ReleaseMetrics` (the authors' scripts, SPEC §7.3); only
running sums are kept, so memory does not grow with the number of maps.

Image datasets give one result of each; video datasets one per video, averaged over videos (`average_over_videos`,
`average_release_over_videos`).
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from Evaluation.inputs import DatasetPairs, EvaluationError, PairDataset
from Evaluation.metrics import SODMetrics, average_over_videos, prepare_batch
from Evaluation.release import ReleaseMetrics, average_release_over_videos


def _keep_sample(sample: tuple) -> tuple:
    return sample


class _BatchFeeder:
    """Collects consecutive maps of one size into batches of at most ``batch_size`` for the accumulators."""

    def __init__(self, metrics: list[SODMetrics | ReleaseMetrics], batch_size: int) -> None:
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
            # one pixel index and histogram serve both protocols
            batch = prepare_batch(np.stack(self.preds), np.stack(self.gts), self.metrics[0].device)
            for metrics in self.metrics:
                metrics.update(batch)
            self.preds, self.gts = [], []


def evaluate_dataset(dataset: DatasetPairs, device: torch.device, dtype: torch.dtype = torch.float32,
                     batch_size: int = 16, workers: int = 2, progress: bool = False) -> dict:
    """Metrics of one dataset (see `SODMetrics.get_results` / `average_over_videos`), plus ``release`` (the authors'
    figures: images MAE, maxF, meanF, AP; videos MAE, Sm, maxF), ``resized`` (predictions resized to their GT size)
    and ``missing`` (GT maps without a prediction, left out). A video dataset (pairs with a ``group``) is evaluated
    per video and averaged over videos. Raises `EvaluationError` naming an unreadable file.
    """
    if not dataset.pairs:
        raise EvaluationError(f"{dataset.name}: no prediction/GT pair to evaluate")
    loader = DataLoader(PairDataset(dataset.pairs), batch_size=None, shuffle=False, num_workers=workers,
                        collate_fn=_keep_sample)
    is_video = bool(dataset.pairs[0].group)
    per_group: list[tuple[dict, dict]] = []
    feeder, group, resized = None, None, 0
    samples = tqdm(loader, total=len(dataset.pairs), desc=dataset.name, unit="map", disable=not progress)
    for pair, (pred, gt, was_resized, error) in zip(dataset.pairs, samples, strict=True):
        if error:
            raise EvaluationError(error)
        if feeder is None or pair.group != group:
            if feeder is not None:
                feeder.flush()
                per_group.append(tuple(metrics.get_results() for metrics in feeder.metrics))
            metrics = [SODMetrics(device, dtype), ReleaseMetrics(device, smeasure=is_video)]
            feeder, group = _BatchFeeder(metrics, batch_size), pair.group
        feeder.add(pred, gt)
        resized += bool(was_resized)
    feeder.flush()
    per_group.append(tuple(metrics.get_results() for metrics in feeder.metrics))
    ours, release = zip(*per_group, strict=True)
    result = average_over_videos(list(ours)) if is_video else ours[0]
    release = average_release_over_videos(list(release)) if is_video else release[0]
    keys = ("MAE", "Sm", "maxF") if is_video else ("MAE", "maxF", "meanF", "AP")
    result.update(resized=resized, missing=len(dataset.missing), release={key: release[key] for key in keys},
                  release_curves=release["curves"])
    return result
