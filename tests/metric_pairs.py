"""Prediction / GT pairs shared by the metric oracle tests: generated blobs of varied sizes and the edge cases (empty
GT, full GT, constant maps, binary maps, one-pixel objects, objects touching the last row/column, 1-pixel-wide
images)."""

from __future__ import annotations

import cv2
import numpy as np


def blob_pair(rng: np.random.Generator, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    gt = np.zeros((height, width), np.uint8)
    for _ in range(int(rng.integers(1, 4))):
        centre = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        axes = (int(rng.integers(1, max(2, width // 2))), int(rng.integers(1, max(2, height // 2))))
        cv2.ellipse(gt, centre, axes, float(rng.uniform(0, 180)), 0, 360, 255, -1, lineType=cv2.LINE_AA)
    noisy = cv2.GaussianBlur(gt.astype(np.float32), (0, 0), 2) + rng.normal(0, 30, gt.shape)
    return np.clip(noisy, 0, 255).astype(np.uint8), gt


def edge_cases(rng: np.random.Generator) -> list[tuple[np.ndarray, np.ndarray]]:
    h, w = 23, 31
    pred, gt = blob_pair(rng, h, w)
    zeros, full = np.zeros((h, w), np.uint8), np.full((h, w), 255, np.uint8)
    binary = (rng.random((h, w)) > 0.6).astype(np.uint8) * 255
    last_row, last_col, one_pixel = zeros.copy(), zeros.copy(), zeros.copy()
    last_row[-1, 5:9] = 255  # centroid on the last row: S-measure NaN, as in PySODMetrics and MATLAB
    last_col[3:7, -1] = 255
    one_pixel[11, 17] = 255
    corner = zeros.copy()
    corner[:4, :5] = 255
    return [
        (pred, zeros), (pred, full),  # empty and full GT
        (zeros, gt), (full, gt), (np.full((h, w), 77, np.uint8), gt),  # constant maps
        (np.full((h, w), 200, np.uint8), corner), (np.full((h, w), 13, np.uint8), corner),  # constant quadrants
        (zeros, zeros), (full, full), (zeros, full), (full, zeros), (np.full((h, w), 128, np.uint8), zeros),
        (binary, gt), (gt, gt), (255 - gt, gt),  # binary predictions, perfect and inverted
        (pred, last_row), (pred, last_col), (pred, one_pixel),
        (rng.integers(0, 256, (h, w)).astype(np.uint8), rng.integers(0, 256, (h, w)).astype(np.uint8)),  # noise GT
        (np.where(gt > 0, 128, 127).astype(np.uint8), gt),  # two grey levels (ties at the adaptive threshold)
        (rng.integers(0, 256, (1, 40)).astype(np.uint8), (rng.random((1, 40)) > 0.5).astype(np.uint8) * 255),
        (rng.integers(0, 256, (40, 1)).astype(np.uint8), (rng.random((40, 1)) > 0.5).astype(np.uint8) * 255),
        (np.array([[200]], np.uint8), np.array([[255]], np.uint8)),
        (np.array([[10, 250], [30, 90]], np.uint8), np.array([[255, 0], [0, 0]], np.uint8)),
    ]


def pairs() -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(20250101)
    pairs = edge_cases(rng)
    for _ in range(40):
        pairs.append(blob_pair(rng, int(rng.integers(2, 96)), int(rng.integers(2, 128))))
    return pairs


PAIRS = pairs()


def many_objects_pair(rng: np.random.Generator, height: int, width: int, objects: int) -> tuple[np.ndarray,
                                                                                                  np.ndarray]:
    """A GT with ``objects`` small discs and squares of varied sizes (1 to 8 px; some touching or overlapping), and a
    noisy blurred prediction of it."""
    gt = np.zeros((height, width), np.uint8)
    for _ in range(objects):
        centre = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        size = int(rng.integers(0, 8))
        if rng.random() < 0.5:
            cv2.circle(gt, centre, size, 255, -1)
        else:
            gt[centre[1]:centre[1] + size + 1, centre[0]:centre[0] + size + 1] = 255
    noisy = cv2.GaussianBlur(gt.astype(np.float32), (0, 0), 1.5) + rng.normal(0, 25, gt.shape)
    return np.clip(noisy, 0, 255).astype(np.uint8), gt


def extended_pairs() -> list[tuple[np.ndarray, np.ndarray]]:
    """`PAIRS` and maps with many small objects (the size-invariant measures' case), one of them one pixel."""
    rng = np.random.default_rng(20261204)
    extra = [many_objects_pair(rng, int(rng.integers(24, 90)), int(rng.integers(24, 120)), int(rng.integers(2, 12)))
             for _ in range(10)]
    single = np.zeros((30, 40), np.uint8)
    single[[3, 10, 20], [5, 30, 12]] = 255  # three one-pixel objects
    extra.append((rng.integers(0, 256, single.shape).astype(np.uint8), single))
    return PAIRS + extra
