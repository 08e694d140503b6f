"""Evaluation of a dataset's pairs in fixed chunks: each chunk's maps are decoded, grouped into batches of equal size
and fed to `SODMetrics` (PySODMetrics' protocol), `ReleaseMetrics` (the authors' scripts, design §7.3) and the other
measures asked for (`Evaluation.measures.Extras`); the chunks' running sums are merged in order, so memory does not
grow with the number of maps.

On the CPU the chunks run in ``workers`` processes (decoding and metrics together: both cores busy), elsewhere in
this process; the chunks and their merge order are the same either way, so the figures do not depend on the
number of workers. Image datasets give one result of each protocol; video datasets one per video (a chunk is whole
videos), averaged over videos (`average_over_videos`, `average_release_over_videos`).
"""

from __future__ import annotations

import multiprocessing

import cv2
import numpy as np
import torch
from tqdm import tqdm

from data.readers import DEFAULT_MAX_PIXELS
from Evaluation.batch import prepare_batch
from Evaluation.inputs import DatasetPairs, EvaluationError, Pair, PairDataset
from Evaluation.measures import SUMMARY_FIVE, Extras, summarize, uncomputable
from Evaluation.metrics import SODMetrics, average_over_videos
from Evaluation.release import ReleaseMetrics, average_release_over_videos

CHUNK_MAPS = 64  # maps per chunk (image datasets): the unit of work and of merging


def _chunks(pairs: list[Pair], is_video: bool) -> list[list[Pair]]:
    """Consecutive pairs, CHUNK_MAPS at a time; for videos whole videos, as many as fit in CHUNK_MAPS maps."""
    chunks: list[list[Pair]] = []
    for pair in pairs:
        full = bool(chunks) and len(chunks[-1]) >= CHUNK_MAPS
        if not chunks or (full and (not is_video or pair.group != chunks[-1][-1].group)):
            chunks.append([])
        chunks[-1].append(pair)
    return chunks


def _evaluate_chunk(task: tuple) -> tuple[list[tuple[SODMetrics, ReleaseMetrics, Extras]], int, list[str], int]:
    """Decode and evaluate one chunk: accumulators per video (one for an image chunk), the number of predictions
    resized to their GT, the pairs skipped (``skip_uncomputable``: a chosen measure has no value for them), as
    one line each, and the number of 1-pixel maps. Raises `EvaluationError` naming an unreadable file, or a file a
    measure cannot judge."""
    pairs, device, dtype, batch_size, is_video, names, max_pixels, skip_uncomputable = task
    reader = PairDataset(pairs, max_pixels)
    skipped: list[str] = []
    one_pixel = 0
    groups: list[tuple[SODMetrics, ReleaseMetrics, Extras]] = []
    preds, gts, images, group, resized = [], [], [], None, 0

    def flush() -> None:
        if preds:
            batch = prepare_batch(np.stack(preds), np.stack(gts), device)  # one histogram serves every measure
            ours, release, extras = groups[-1]
            ours.update(batch)
            release.update(batch)
            extras.update(batch, images if images and images[0] is not None else None)
            preds.clear()
            gts.clear()
            images.clear()

    for index, pair in enumerate(pairs):
        pred, gt, was_resized, error, image = reader[index]
        if error:
            raise EvaluationError(error)
        if (why := uncomputable(names, gt)) is not None:
            line = f"{pair.pred}: {why[0]} cannot be computed: {why[1]} (GT {pair.gt})"
            if not skip_uncomputable:
                raise EvaluationError(f"{line}; --skip-uncomputable evaluates without such maps")
            skipped.append(line)
            continue
        if not groups or pair.group != group:
            flush()
            groups.append((SODMetrics(device, dtype), ReleaseMetrics(device, smeasure=is_video),
                           Extras(names, device)))
            group = pair.group
        if preds and (pred.shape != preds[0].shape or len(preds) == batch_size):
            flush()
        preds.append(pred)
        gts.append(gt)
        images.append(image)
        resized += bool(was_resized)
        one_pixel += gt.size == 1
    flush()
    return groups, resized, skipped, one_pixel


def _average_extras(per_video: list[dict]) -> dict:
    """`Extras.results` of a video dataset: values and curves averaged over videos (as the F / E curves)."""
    return {"values": {key: float(np.mean([r["values"][key] for r in per_video])) for key in per_video[0]["values"]},
            "curves": {key: np.mean([r["curves"][key] for r in per_video], axis=0) for key in per_video[0]["curves"]}}


def _start_worker(threads: int) -> None:
    torch.set_num_threads(threads)
    cv2.setNumThreads(threads)


def evaluate_dataset(dataset: DatasetPairs, device: torch.device, dtype: torch.dtype = torch.float32,
                     batch_size: int = 16, workers: int = 2, progress: bool = False,
                     names: tuple[str, ...] = SUMMARY_FIVE, max_pixels: int = DEFAULT_MAX_PIXELS,
                     skip_uncomputable: bool = False) -> dict:
    """Metrics of one dataset (see `SODMetrics.get_results` / `average_over_videos`), plus ``release`` (the authors'
    figures: images MAE, maxF, meanF, AP; videos MAE, Sm, maxF), ``extra`` (the keys of the measures ``names`` adds
    to the summary five, `Evaluation.measures.summarize`), ``resized`` (predictions resized to their GT size) and
    ``missing`` (GT maps without a prediction, left out) and ``skipped`` (lines naming the pairs left out with
    ``skip_uncomputable``) and ``one_pixel`` (maps of 1 pixel, on which the E-measure is 1/eps:
    docs/bad_input.md). A video dataset (pairs with a ``group``) is evaluated per video and averaged over videos.
    Files are read under the pixel cap ``max_pixels`` (`data.guard`). Raises `EvaluationError` naming an unreadable
    file, or a file a chosen measure cannot judge (unless ``skip_uncomputable``).
    """
    if not dataset.pairs:
        raise EvaluationError(f"{dataset.name}: no prediction/GT pair to evaluate")
    is_video = bool(dataset.pairs[0].group)
    chunks = _chunks(dataset.pairs, is_video)
    tasks = [(chunk, device, dtype, batch_size, is_video, names, max_pixels, skip_uncomputable) for chunk in chunks]
    bar = tqdm(total=len(dataset.pairs), desc=dataset.name, unit="map", disable=not progress)
    per_group: list[tuple[SODMetrics, ReleaseMetrics, Extras]] = []
    resized, skipped, one_pixel = 0, [], 0
    pool = None
    if workers > 0 and device.type == "cpu" and len(chunks) > 1:
        # fork: the workers start at once with the modules already imported; one thread each
        pool = multiprocessing.get_context("fork").Pool(min(workers, len(chunks)), _start_worker, (1,))
    try:
        results = pool.imap(_evaluate_chunk, tasks) if pool else map(_evaluate_chunk, tasks)
        for chunk, (groups, chunk_resized, chunk_skipped, chunk_one_pixel) in zip(chunks, results, strict=True):
            skipped += chunk_skipped
            one_pixel += chunk_one_pixel
            if not is_video and per_group and groups:
                for mine, theirs in zip(per_group[0], groups[0], strict=True):
                    mine.merge(theirs)
            else:
                per_group += groups
            resized += chunk_resized
            bar.update(len(chunk))
    finally:
        bar.close()
        if pool:
            pool.terminate()
    if not per_group:
        raise EvaluationError(f"{dataset.name}: every map was skipped (--skip-uncomputable); nothing to evaluate")
    ours = [metrics.get_results() for metrics, _, _ in per_group]
    release = [metrics.get_results() for _, metrics, _ in per_group]
    extras = [metrics.results() for _, _, metrics in per_group]
    result = average_over_videos(ours) if is_video else ours[0]
    release = average_release_over_videos(release) if is_video else release[0]
    keys = ("MAE", "Sm", "maxF") if is_video else ("MAE", "maxF", "meanF", "AP")
    result.update(resized=resized, missing=len(dataset.missing), skipped=skipped, one_pixel=one_pixel,
                  release={key: release[key] for key in keys},
                  extra=summarize(_average_extras(extras) if is_video else extras[0]))
    return result
