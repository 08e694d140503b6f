"""The paper's protocol (the authors' evaluation scripts, design §7.3) against a reference derived from the text.

The reference below transcribes design §7.3 literally, one map at a time, pixel by pixel in float32 torch as the
release does: P = PNG / 255 and G = GT / 255 (grey values kept), MAE on the raw P; P min-max normalised with
+1e-20; a loop over the 255 thresholds ``linspace(0, 1 - 1e-10, 255)``; the per-map curves averaged; AP in float64;
the video S-measure with its 1e-20 guards and its 0-based centroid. `ReleaseMetrics` computes the same from
histograms and must agree within 1e-4.

Edge cases and how the data reproduces them: an empty GT (all 0: recall 0, so F is 0/0 -> 0, and S = 1 - mean Pn),
a full GT (all 255: S = mean Pn), constant predictions of levels 0, 128 and 255 (min = max, so Pn is exactly 0
everywhere: every pixel passes only the threshold 0), GT with grey (anti-aliased, blurred) edges, several map sizes
in one dataset, and predictions written at another size and resized to the GT (PIL bilinear) by the evaluation.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from Evaluation.__main__ import main
from Evaluation.release import ReleaseMetrics


def reference_map(pred: np.ndarray, gt: np.ndarray) -> dict:
    """design §7.3 for one map, literally (float32 torch, pixel by pixel)."""
    p = torch.from_numpy(pred.copy()).float() / 255
    g = torch.from_numpy(gt.copy()).float() / 255
    mae = (p - g).abs().mean()
    p = (p - p.min()) / (p.max() - p.min() + 1e-20)
    precision, recall = torch.zeros(255), torch.zeros(255)
    for k, threshold in enumerate(torch.linspace(0, 1 - 1e-10, 255)):
        binary = (p >= threshold).float()
        true_positive = (binary * g).sum()
        precision[k], recall[k] = true_positive / (binary.sum() + 1e-20), true_positive / (g.sum() + 1e-20)
    fmeasure = 1.3 * precision * recall / (0.3 * precision + recall)
    fmeasure[fmeasure != fmeasure] = 0
    return {"MAE": float(mae), "precision": precision.double().numpy(), "recall": recall.double().numpy(),
            "fmeasure": fmeasure.double().numpy(), "Sm": reference_smeasure(p, g)}


def reference_smeasure(p: torch.Tensor, g: torch.Tensor) -> float:
    """The video script's S-measure (alpha 0.5) of a normalised map ``p`` and a grey GT ``g`` in [0, 1]."""
    mean_g = g.mean()
    if mean_g == 0:
        return float(1 - p.mean())
    if mean_g == 1:
        return float(p.mean())
    g = (g >= 0.5).float()

    def similarity(values: torch.Tensor) -> torch.Tensor:
        return 2 * values.mean() / (values.mean() ** 2 + 1 + values.std() + 1e-20)

    u = g.mean()
    object_score = u * similarity(p[g == 1]) + (1 - u) * similarity((1 - p)[g == 0])
    height, width = g.shape
    if g.sum() == 0:
        x, y = round(width / 2), round(height / 2)
    else:
        x = int(torch.round((g.sum(0) * torch.arange(width).float()).sum() / g.sum() + 1e-20))
        y = int(torch.round((g.sum(1) * torch.arange(height).float()).sum() / g.sum() + 1e-20))
    area = height * width
    w1 = torch.tensor(float(x)) * y / area
    w2 = (width - torch.tensor(float(x))) * y / area
    w3 = torch.tensor(float(x)) * (height - y) / area
    weights = [w1, w2, w3, 1 - w1 - w2 - w3]
    blocks = [(slice(0, y), slice(0, x)), (slice(0, y), slice(x, width)), (slice(y, height), slice(0, x)),
              (slice(y, height), slice(x, width))]
    region_score = 0
    for (rows, cols), weight in zip(blocks, weights, strict=True):
        a, b = p[rows, cols], g[rows, cols]
        n = a.numel()
        mx, my = a.mean(), b.mean()
        sx = ((a - mx) ** 2).sum() / (n - 1 + 1e-20)
        sy = ((b - my) ** 2).sum() / (n - 1 + 1e-20)
        sxy = ((a - mx) * (b - my)).sum() / (n - 1 + 1e-20)
        alpha, beta = 4 * mx * my * sxy, (mx**2 + my**2) * (sx + sy)
        score = alpha / (beta + 1e-20) if alpha != 0 else (1.0 if beta == 0 else 0.0)
        region_score = region_score + weight * score
    return float(torch.clamp(0.5 * object_score + 0.5 * region_score, min=0))


def reference_ap(precision: np.ndarray, recall: np.ndarray) -> float:
    r, p = np.concatenate([[0.0], recall, [1.0]]), np.concatenate([[0.0], precision, [0.0]])
    order = np.argsort(r)
    r, p = r[order], p[order]
    for i in range(len(p) - 1, 0, -1):
        p[i - 1] = max(p[i], p[i - 1])
    return float(sum((r[i + 1] - r[i]) * p[i + 1] for i in range(len(r) - 1) if r[i + 1] != r[i]))


def reference_dataset(pairs: list[tuple[np.ndarray, np.ndarray]]) -> dict:
    maps = [reference_map(pred, gt) for pred, gt in pairs]
    curves = {key: np.mean([m[key] for m in maps], axis=0) for key in ("precision", "recall", "fmeasure")}
    return {"MAE": np.mean([m["MAE"] for m in maps]), "Sm": np.mean([m["Sm"] for m in maps]),
            "maxF": curves["fmeasure"].max(), "meanF": curves["fmeasure"].mean(),
            "AP": reference_ap(curves["precision"], curves["recall"]), "curve": curves["fmeasure"]}


def grey_edged_pair(rng: np.random.Generator, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """An anti-aliased, blurred ellipse GT (grey edges) and a noisy blurred prediction of it."""
    gt = np.zeros((height * 4, width * 4), np.uint8)
    cv2.ellipse(gt, (int(rng.integers(width, 3 * width)), int(rng.integers(height, 3 * height))),
                (int(rng.integers(8, 2 * width)), int(rng.integers(8, 2 * height))), float(rng.uniform(0, 180)),
                0, 360, 255, -1, cv2.LINE_AA)
    gt = cv2.GaussianBlur(cv2.resize(gt, (width, height), interpolation=cv2.INTER_AREA), (0, 0), 1.0)
    pred = np.clip(cv2.GaussianBlur(gt.astype(np.float32), (0, 0), 2) + rng.normal(0, 40, gt.shape), 0, 255)
    return pred.astype(np.uint8), gt


def edge_pairs(rng: np.random.Generator) -> list[tuple[np.ndarray, np.ndarray]]:
    """Empty GT, full GT, and constant predictions (levels 0, 128, 255) on an ordinary GT."""
    pred, gt = grey_edged_pair(rng, 30, 40)
    return [(pred, np.zeros_like(gt)), (pred, np.full_like(gt, 255))] + [
        (np.full_like(gt, level), gt) for level in (0, 128, 255)]


def test_release_metrics_equal_the_reference() -> None:
    rng = np.random.default_rng(0)
    groups = {size: [grey_edged_pair(rng, *size) for _ in range(4)] for size in ((30, 40), (25, 33), (41, 29))}
    groups[(30, 40)] += edge_pairs(rng)
    metrics = ReleaseMetrics(smeasure=True)
    for pairs in groups.values():
        metrics.step(np.stack([p for p, _ in pairs]), np.stack([g for _, g in pairs]))
    ours = metrics.get_results()
    expected = reference_dataset([pair for pairs in groups.values() for pair in pairs])
    assert ours["images"] == 17
    for key in ("MAE", "maxF", "meanF", "AP", "Sm"):
        assert ours[key] == pytest.approx(expected[key], abs=1e-4), key
    np.testing.assert_allclose(ours["curves"]["fmeasure"], expected["curve"], atol=1e-4, rtol=0)
    # a map whose F-curve is 0 everywhere (empty GT) and a constant map pass only the threshold 0
    empty = ReleaseMetrics()
    empty.step(*edge_pairs(rng)[0])
    assert empty.get_results()["maxF"] == 0.0


def _write(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), image)


def test_evaluation_commands_store_the_release_figures(tmp_path: Path) -> None:
    """eval_sod's and eval_vsod's "release" entries, with resized predictions and per-video averaging."""
    rng = np.random.default_rng(1)
    root, results = tmp_path / "root", tmp_path / "results"
    pairs = []
    for index, size in enumerate([(30, 40)] * 3 + [(25, 33)] * 2 + [(41, 29)]):
        pred, gt = grey_edged_pair(rng, *size)
        _write(root / "sod" / "DS" / "GT" / f"{index}.png", gt)
        if index == 4:  # written at another size: the evaluation resizes it to the GT (PIL bilinear)
            pred = cv2.resize(pred, (size[1] + 6, size[0] - 5), interpolation=cv2.INTER_LINEAR)
            _write(results / "exp" / "DS" / f"{index}.png", pred)
            pred = np.asarray(Image.fromarray(pred).resize(size[::-1], Image.BILINEAR))
        else:
            _write(results / "exp" / "DS" / f"{index}.png", pred)
        pairs.append((pred, gt))
    pairs.append(edge_pairs(rng)[2])
    _write(root / "sod" / "DS" / "GT" / "edge.png", pairs[-1][1])
    _write(results / "exp" / "DS" / "edge.png", pairs[-1][0])
    main(["sod", "DS", "exp", str(root / "sod"), "--results-dir", str(results), "--workers", "0"])
    entry = json.loads((results / "exp" / "metrics_sod.json").read_text())["DS"]["release"]
    expected = reference_dataset(sorted(pairs, key=lambda pair: pair[1].shape))
    assert set(entry) == {"MAE", "maxF", "meanF", "AP"}
    for key in entry:
        assert entry[key] == pytest.approx(expected[key], abs=1e-4), key

    lines, videos = [], {}
    for video, frames in (("v1", 5), ("v2", 3), ("v3", 6)):
        lines.append(f"vsod/V/{video}/Imgs .png vsod/V/{video}/GT_object_level .png")
        videos[video] = [grey_edged_pair(rng, 28, 36) for _ in range(frames)]
        for frame, (pred, gt) in enumerate(videos[video]):
            _write(root / "vsod" / "V" / video / "Imgs" / f"{frame:05d}.png", np.dstack([gt] * 3))
            _write(root / "vsod" / "V" / video / "GT_object_level" / f"{frame:05d}.png", gt)
            _write(results / "exp" / "V" / video / f"{frame:05d}.png", pred)
    (tmp_path / "list.txt").write_text("\n".join(lines) + "\n")
    main(["vsod", "V", "exp", str(root), "--test-lst", str(tmp_path / "list.txt"), "--results-dir", str(results),
          "--workers", "0"])
    entry = json.loads((results / "exp" / "metrics_vsod.json").read_text())["V"]["release"]
    per_video = [reference_dataset(frames[1:-1]) for frames in videos.values()]  # first and last frame skipped
    assert entry["MAE"] == pytest.approx(np.mean([v["MAE"] for v in per_video]), abs=1e-4)
    assert entry["Sm"] == pytest.approx(np.mean([v["Sm"] for v in per_video]), abs=1e-4)
    assert entry["maxF"] == pytest.approx(np.mean([v["curve"] for v in per_video], axis=0).max(), abs=1e-4)
