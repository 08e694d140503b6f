"""Our torch metrics equal PySODMetrics 1.6.2: every metric, per image and dataset-averaged, on generated pairs of
varied sizes covering the edge cases (empty GT, full GT, constant maps, binary maps, one-pixel objects, objects
touching the last row/column, 1-pixel-wide images), to 1e-6 in float64 and 1e-4 in the default float32 path."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from metric_pairs import PAIRS, blob_pair

import Evaluation.spatial as spatial
from Evaluation.batch import prepare_batch
from Evaluation.metrics import MAE, Emeasure, Fmeasure, Smeasure, SODMetrics, WeightedFmeasure, average_over_videos

py_sod_metrics = pytest.importorskip("py_sod_metrics")
scipy_ndimage = pytest.importorskip("scipy.ndimage")

CLASSES = ("MAE", "Fmeasure", "Emeasure", "Smeasure", "WeightedFmeasure")
OURS = {"MAE": MAE, "Fmeasure": Fmeasure, "Emeasure": Emeasure, "Smeasure": Smeasure,
        "WeightedFmeasure": WeightedFmeasure}


def _flatten(results: dict) -> np.ndarray:
    out = []
    for value in results.values():
        out.extend(_flatten(value) if isinstance(value, dict) else np.ravel(np.asarray(value, dtype=np.float64)))
    return np.asarray(out)


_REFERENCE_CACHE: dict[tuple[str, int], dict] = {}


def _reference_pair(name: str, index: int) -> dict:
    if (name, index) not in _REFERENCE_CACHE:
        _REFERENCE_CACHE[name, index] = _reference(name, [PAIRS[index]])
    return _REFERENCE_CACHE[name, index]


def _reference(name: str, pairs: list[tuple[np.ndarray, np.ndarray]]) -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Fmeasure's deprecation note; NumPy's empty-slice warnings (NaN S)
        metric = getattr(py_sod_metrics, name)()
        for pred, gt in pairs:
            metric.step(pred, gt)
        return metric.get_results()


def _ours(name: str, pairs: list[tuple[np.ndarray, np.ndarray]], dtype: torch.dtype) -> dict:
    metric = OURS[name](dtype=dtype)
    for pred, gt in pairs:
        metric.step(pred, gt)
    return metric.get_results()


def _assert_close(ours: dict, reference: dict, atol: float) -> None:
    a, b = _flatten(ours), _flatten(reference)
    assert a.shape == b.shape
    np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
    np.testing.assert_allclose(a, b, rtol=0, atol=atol, equal_nan=True)


def test_enough_pairs_of_varied_sizes():
    assert len(PAIRS) >= 50
    assert len({pred.shape for pred, _ in PAIRS}) >= 30


@pytest.mark.parametrize("name", CLASSES)
@pytest.mark.parametrize("dtype, atol", [(torch.float64, 1e-6), (torch.float32, 1e-4)])
def test_each_pair_equals_pysodmetrics(name, dtype, atol):
    for index, (pred, gt) in enumerate(PAIRS):
        try:
            _assert_close(_ours(name, [(pred, gt)], dtype), _reference_pair(name, index), atol)
        except AssertionError as err:
            raise AssertionError(f"{name} pair {index} {pred.shape}: {err}") from None


@pytest.mark.parametrize("dtype, atol", [(torch.float64, 1e-6), (torch.float32, 1e-4)])
def test_dataset_average_equals_pysodmetrics(dtype, atol):
    pairs = [pair for index, pair in enumerate(PAIRS) if not _is_nan_s(index)]  # one NaN image: the S mean is NaN
    combined = SODMetrics(dtype=dtype)
    for pred, gt in pairs:
        combined.step(pred, gt)
    results = combined.get_results()
    reference = {name: _reference(name, pairs) for name in CLASSES}
    for name in CLASSES:
        _assert_close(_ours(name, pairs, dtype), reference[name], atol)
    fm, em = reference["Fmeasure"]["fm"]["curve"], reference["Emeasure"]["em"]["curve"]
    expected = {"MAE": reference["MAE"]["mae"], "maxF": fm.max(), "meanF": fm.mean(),
                "adpF": reference["Fmeasure"]["fm"]["adp"], "wF": reference["WeightedFmeasure"]["wfm"],
                "Sm": reference["Smeasure"]["sm"], "maxE": em.max(), "meanE": em.mean(),
                "adpE": reference["Emeasure"]["em"]["adp"]}
    for key, value in expected.items():
        assert results[key] == pytest.approx(value, abs=atol), key
    assert results["images"] == len(pairs)
    np.testing.assert_allclose(results["curves"]["precision"], reference["Fmeasure"]["pr"]["p"], atol=atol)
    np.testing.assert_allclose(results["curves"]["recall"], reference["Fmeasure"]["pr"]["r"], atol=atol)


def _is_nan_s(index: int) -> bool:
    return bool(np.isnan(_reference_pair("Smeasure", index)["sm"]))


def test_nan_s_measure_is_counted():
    nan_pairs = [pair for index, pair in enumerate(PAIRS) if _is_nan_s(index)]
    assert len(nan_pairs) >= 2  # the last-row and last-column objects
    metric = Smeasure()
    for pred, gt in PAIRS:
        metric.step(pred, gt)
    assert metric.nan_count == len(nan_pairs)
    assert np.isnan(metric.get_results()["sm"])


def test_batch_equals_one_by_one():
    rng = np.random.default_rng(3)
    pairs = [blob_pair(rng, 37, 53) for _ in range(6)]
    pairs.append((np.full((37, 53), 9, np.uint8), np.zeros((37, 53), np.uint8)))
    one_by_one, batched = SODMetrics(dtype=torch.float64), SODMetrics(dtype=torch.float64)
    for pred, gt in pairs:
        one_by_one.step(pred, gt)
    batched.step(np.stack([p for p, _ in pairs]), torch.from_numpy(np.stack([g for _, g in pairs])))
    a, b = one_by_one.get_results(), batched.get_results()
    for key in ("MAE", "maxF", "meanF", "adpF", "wF", "Sm", "maxE", "meanE", "adpE"):
        assert a[key] == pytest.approx(b[key], abs=1e-12), key


def test_torch_spatial_path_equals_pysodmetrics(monkeypatch):
    """The GPU code path (torch EDT, torch nearest-pixel band, conv2d), run on the CPU."""
    monkeypatch.setattr(spatial, "_use_opencv", lambda tensor: False)
    pairs = PAIRS[:12] + PAIRS[-12:]
    _assert_close(_ours("WeightedFmeasure", pairs, torch.float64), _reference("WeightedFmeasure", pairs), 1e-6)


def _random_masks(rng: np.random.Generator) -> list[np.ndarray]:
    masks = []
    for _ in range(12):
        h, w = int(rng.integers(1, 70)), int(rng.integers(1, 70))
        mask = rng.random((h, w)) < rng.uniform(0.002, 0.2)  # sparse points: many equidistant ties
        mask[int(rng.integers(0, h)), int(rng.integers(0, w))] = True
        masks.append(mask)
    big = np.zeros((1100, 1000), bool)  # 1100^2 + 1000^2 > 2^21: the SciPy fallback of the CPU path
    big[rng.integers(0, 1100, 30), rng.integers(0, 1000, 30)] = True
    return masks + [big]


@pytest.mark.parametrize("opencv", [True, False])
def test_squared_distance_is_exact(monkeypatch, opencv):
    monkeypatch.setattr(spatial, "_use_opencv", lambda tensor: opencv)
    for mask in _random_masks(np.random.default_rng(5))[: None if opencv else -1]:
        expected = scipy_ndimage.distance_transform_edt(~mask) ** 2
        ours = spatial.squared_distance_to_foreground(torch.from_numpy(mask)[None])[0].numpy()
        np.testing.assert_array_equal(ours, np.rint(expected).astype(np.int64))


@pytest.mark.parametrize("opencv", [True, False])
def test_nearest_foreground_breaks_ties_like_scipy(monkeypatch, opencv):
    monkeypatch.setattr(spatial, "_use_opencv", lambda tensor: opencv)
    rng = np.random.default_rng(8)
    for mask in _random_masks(rng)[:-1]:
        values = rng.random(mask.shape)
        _, (rows, cols) = scipy_ndimage.distance_transform_edt(~mask, return_indices=True)
        expected = values[rows, cols]
        fg = torch.from_numpy(mask)[None]
        distance = spatial.squared_distance_to_foreground(fg)
        ours = spatial.replace_with_nearest_foreground_(torch.from_numpy(values.copy())[None], fg, distance)[0]
        band = (distance[0].numpy() <= spatial.BAND_SQUARED_RADIUS)
        np.testing.assert_array_equal(ours.numpy()[band], expected[band])
        np.testing.assert_array_equal(ours.numpy()[~band], values[~band])


def test_gaussian_filter_equals_scipy_convolve(monkeypatch):
    values = np.random.default_rng(1).random((2, 19, 26))
    kernel = py_sod_metrics.WeightedFmeasure().matlab_style_gauss2D((7, 7), sigma=5)
    np.testing.assert_allclose(spatial.matlab_gaussian_kernel(), kernel, rtol=0, atol=1e-17)
    expected = np.stack([scipy_ndimage.convolve(v, kernel, mode="constant") for v in values])
    for opencv in (True, False):
        monkeypatch.setattr(spatial, "_use_opencv", lambda tensor, opencv=opencv: opencv)
        np.testing.assert_allclose(spatial.gaussian_filter(torch.from_numpy(values)).numpy(), expected, atol=1e-15)


def test_normalisation_and_binning_are_bit_identical_to_numpy():
    """For every (min, max) pair of grey levels: the normalised value and the uint8 bin of each level in range."""
    low, high = np.triu_indices(256)
    levels = np.arange(256)
    for start in range(0, low.size, 8192):
        lo, hi = low[start:start + 8192, None], high[start:start + 8192, None]
        rows = np.clip(levels[None], lo, hi).astype(np.uint8)  # each row holds every level of [lo, hi]
        expected = rows / 255
        span = expected.max(1, keepdims=True) - expected.min(1, keepdims=True)
        expected = np.where(span > 0, (expected - expected.min(1, keepdims=True)) / np.where(span > 0, span, 1),
                            expected)
        batch = prepare_batch(rows[:, None, :], np.zeros_like(rows)[:, None, :])
        values = np.take_along_axis(batch.values.numpy(), rows.astype(np.int64), 1)
        bins = np.take_along_axis(batch.bins.numpy(), rows.astype(np.int64), 1)
        np.testing.assert_array_equal(values, expected)
        np.testing.assert_array_equal(bins, (expected * 255).astype(np.uint8))


def test_state_does_not_grow_with_images():
    metrics = SODMetrics()
    rng = np.random.default_rng(0)
    pred, gt = blob_pair(rng, 20, 30)
    metrics.step(pred, gt)
    sizes = [sum(t.numel() for t in m._sums.values()) for m in (metrics.mae, metrics.fm, metrics.em, metrics.sm,
                                                                metrics.wfm)]
    for _ in range(20):
        metrics.step(pred, gt)
    assert sizes == [sum(t.numel() for t in m._sums.values()) for m in (metrics.mae, metrics.fm, metrics.em,
                                                                         metrics.sm, metrics.wfm)]
    assert metrics.get_results()["images"] == 21


def test_video_average_uses_mean_curves():
    rng = np.random.default_rng(4)
    videos = [[blob_pair(rng, 30, 40) for _ in range(n)] for n in (2, 5, 3)]
    per_video = []
    for frames in videos:
        metric = SODMetrics(dtype=torch.float64)
        for pred, gt in frames:
            metric.step(pred, gt)
        per_video.append(metric.get_results())
    result = average_over_videos(per_video)
    fm_curves = [_reference("Fmeasure", frames)["fm"]["curve"] for frames in videos]
    em_curves = [_reference("Emeasure", frames)["em"]["curve"] for frames in videos]
    assert result["maxF"] == pytest.approx(np.mean(fm_curves, axis=0).max(), abs=1e-12)
    assert result["maxF"] < np.mean([c.max() for c in fm_curves])  # differs from averaging per-video maxima
    assert result["maxE"] == pytest.approx(np.mean(em_curves, axis=0).max(), abs=1e-12)
    assert result["meanF"] == pytest.approx(np.mean(fm_curves), abs=1e-12)
    assert result["MAE"] == pytest.approx(np.mean([_reference("MAE", f)["mae"] for f in videos]), abs=1e-12)
    assert result["Sm"] == pytest.approx(np.mean([_reference("Smeasure", f)["sm"] for f in videos]), abs=1e-12)
    assert result["images"] == 10 and result["videos"] == 3


def test_bad_inputs_are_rejected():
    with pytest.raises(ValueError, match="shape mismatch"):
        MAE().step(np.zeros((3, 4), np.uint8), np.zeros((4, 3), np.uint8))
    with pytest.raises(TypeError, match="uint8"):
        MAE().step(np.zeros((3, 4), np.float32), np.zeros((3, 4), np.uint8))
