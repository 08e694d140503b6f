"""The measures beyond the summary five equal PySODMetrics 1.6.2 within 1e-6: FmeasureV2 with every handler and
form, MSIoU, the size-invariant measures, human correction effort and the context measures, on the generated pairs
and their edge cases (tests/metric_pairs.py), per map and over a dataset."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from metric_pairs import extended_pairs

import Evaluation

py_sod_metrics = pytest.importorskip("py_sod_metrics")

PAIRS = extended_pairs()
HANDLERS = ("IOUHandler", "DICEHandler", "BERHandler", "KappaHandler", "OverallAccuracyHandler", "PrecisionHandler",
            "RecallHandler", "SpecificityHandler", "TNRHandler", "TPRHandler", "SensitivityHandler", "FPRHandler",
            "FmeasureHandler")
FORMS = [dict(with_dynamic=True, with_adaptive=True, with_binary=True, sample_based=True),
         dict(with_dynamic=True, with_adaptive=False, with_binary=True, sample_based=False),
         dict(with_dynamic=False, with_adaptive=True, with_binary=False)]


def assert_same_results(ours: dict, theirs: dict, where: str = "", atol: float = 1e-6) -> None:
    """The same keys, nesting, shapes and (within ``atol``) values, NaN where PySODMetrics has NaN."""
    assert type(ours) is type(theirs) or not isinstance(theirs, (dict, list)), where
    if isinstance(theirs, dict):
        assert list(ours) == list(theirs), where
        for key in theirs:
            assert_same_results(ours[key], theirs[key], f"{where}.{key}", atol)
    elif isinstance(theirs, list):
        assert len(ours) == len(theirs), where
        for index, (a, b) in enumerate(zip(ours, theirs)):
            assert_same_results(a, b, f"{where}[{index}]", atol)
    else:
        a, b = np.asarray(ours, dtype=np.float64), np.asarray(theirs, dtype=np.float64)
        assert a.shape == b.shape, where
        np.testing.assert_allclose(a, b, rtol=0, atol=atol, equal_nan=True, err_msg=where)


def run(metric, pairs, **step) -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for pred, gt in pairs:
            metric.step(pred, gt, **step)
        return metric.get_results()


def handlers(module, **kwargs) -> dict:
    made = {}
    for name in HANDLERS:
        for index, form in enumerate(FORMS):
            made[f"{name}_{index}"] = getattr(module, name)(**form)
    made["f1"] = module.FmeasureHandler(**FORMS[0], beta=1.0)
    return made


@pytest.mark.parametrize("index", range(len(PAIRS)))
def test_fmeasurev2_per_map(index: int) -> None:
    pair = [PAIRS[index]]
    assert_same_results(run(Evaluation.FmeasureV2(handlers(Evaluation)), pair),
                        run(py_sod_metrics.FmeasureV2(handlers(py_sod_metrics)), pair), f"pair {index}")


def test_fmeasurev2_over_the_dataset() -> None:
    ours = Evaluation.FmeasureV2()
    for name, handler in handlers(Evaluation).items():
        ours.add_handler(name, handler)
    assert_same_results(run(ours, PAIRS), run(py_sod_metrics.FmeasureV2(handlers(py_sod_metrics)), PAIRS))


MSIOU_FORMS = [dict(with_dynamic=True, with_adaptive=True, with_binary=True), dict(with_dynamic=False,
                                                                                  with_adaptive=True)]


@pytest.mark.parametrize("index", range(len(PAIRS)))
def test_msiou_per_map(index: int) -> None:
    pair = [PAIRS[index]]
    for form in MSIOU_FORMS:
        assert_same_results(run(Evaluation.MSIoU(**form), pair), run(py_sod_metrics.MSIoU(**form), pair),
                            f"pair {index} {form}")


def test_msiou_over_the_dataset_and_large_edge_counts() -> None:
    """Over the dataset, and a GT whose edge cells at the finest scales number more than float16 holds exactly."""
    rng = np.random.default_rng(3)
    noisy_gt = (rng.random((48, 64)) > 0.5).astype(np.uint8) * 255
    pairs = PAIRS[::6] + [(rng.integers(0, 256, noisy_gt.shape).astype(np.uint8), noisy_gt)]  # every map: above
    assert_same_results(run(Evaluation.MSIoU(**MSIOU_FORMS[0]), pairs),
                        run(py_sod_metrics.MSIoU(**MSIOU_FORMS[0]), pairs))


def full_gt(pairs):
    """Whether a pair's GT has no background pixel outside its objects' boxes (no size-invariant value)."""
    return [bool((gt > 128).all()) for _, gt in pairs]


SI_PAIRS = [pair for pair, full in zip(PAIRS, full_gt(PAIRS)) if not full]


@pytest.mark.parametrize("index", range(len(SI_PAIRS)))
def test_size_invariant_measures_per_map(index: int) -> None:
    pair = [SI_PAIRS[index]]
    assert_same_results(run(Evaluation.SizeInvarianceMAE(), pair), run(py_sod_metrics.SizeInvarianceMAE(), pair),
                        f"pair {index}")
    assert_same_results(run(Evaluation.SizeInvarianceFmeasureV2(handlers(Evaluation)), pair),
                        run(py_sod_metrics.SizeInvarianceFmeasureV2(handlers(py_sod_metrics)), pair), f"pair {index}")


def test_size_invariant_measures_over_the_dataset() -> None:
    assert_same_results(run(Evaluation.SizeInvarianceMAE(), SI_PAIRS),
                        run(py_sod_metrics.SizeInvarianceMAE(), SI_PAIRS))
    assert_same_results(run(Evaluation.SizeInvarianceFmeasureV2(handlers(Evaluation)), SI_PAIRS),
                        run(py_sod_metrics.SizeInvarianceFmeasureV2(handlers(py_sod_metrics)), SI_PAIRS))


def test_a_gt_without_background_has_no_size_invariant_value() -> None:
    """PySODMetrics fails on it (an assertion); ours says why."""
    pred, gt = np.full((20, 30), 100, np.uint8), np.full((20, 30), 255, np.uint8)
    with pytest.raises(AssertionError):
        py_sod_metrics.SizeInvarianceMAE().step(pred, gt)
    for metric in (Evaluation.SizeInvarianceMAE(), Evaluation.SizeInvarianceFmeasureV2(handlers(Evaluation))):
        with pytest.raises(ValueError, match="no background"):
            metric.step(pred, gt)


def test_skeletons_are_scikit_images() -> None:
    """Zhang-Suen thinning with scikit-image's table: the same skeleton on random masks, blobs and lines."""
    import cv2
    from skimage.morphology import skeletonize as reference

    from Evaluation.hce import skeletonize

    rng = np.random.default_rng(11)
    for trial in range(300):
        h, w = (int(v) for v in rng.integers(1, 48, 2))
        if trial % 3 == 0:
            mask = rng.random((h, w)) > rng.uniform(0.2, 0.8)
        else:
            canvas = np.zeros((h, w), np.uint8)
            for _ in range(int(rng.integers(1, 5))):
                cv2.ellipse(canvas, (int(rng.integers(0, w)), int(rng.integers(0, h))),
                            (int(rng.integers(1, 20)), int(rng.integers(1, 20))), float(rng.uniform(0, 180)), 0, 360,
                            1, int(rng.choice([-1, 1, 2])))
            mask = canvas > 0
        np.testing.assert_array_equal(skeletonize(mask), reference(mask), err_msg=f"trial {trial}")


def thin_structure_pairs() -> list[tuple[np.ndarray, np.ndarray]]:
    """GTs with lines and rings (skeleton parts the prediction misses) and holes, predictions of them."""
    import cv2

    rng = np.random.default_rng(12)
    pairs = []
    for _ in range(8):
        gt = np.zeros((64, 80), np.uint8)
        for _ in range(int(rng.integers(1, 6))):
            p1, p2 = (int(rng.integers(0, 80)), int(rng.integers(0, 64))), (int(rng.integers(0, 80)),
                                                                            int(rng.integers(0, 64)))
            cv2.line(gt, p1, p2, 255, int(rng.integers(1, 4)))
        cv2.circle(gt, (int(rng.integers(10, 70)), int(rng.integers(10, 54))), int(rng.integers(4, 14)), 255,
                   int(rng.choice([-1, 2])))
        pred = np.clip(cv2.GaussianBlur(gt.astype(np.float32), (0, 0), 1.2) + rng.normal(0, 40, gt.shape), 0, 255)
        pairs.append((pred.astype(np.uint8), gt))
    return pairs


HCE_PAIRS = PAIRS + thin_structure_pairs()


@pytest.mark.parametrize("index", range(len(HCE_PAIRS)))
def test_hce_per_map(index: int) -> None:
    pair = [HCE_PAIRS[index]]
    for options in ({}, {"relax": 2, "epsilon": 1.0}):
        assert_same_results(run(Evaluation.HumanCorrectionEffortMeasure(**options), pair),
                            run(py_sod_metrics.HumanCorrectionEffortMeasure(**options), pair), f"pair {index}")


@pytest.mark.parametrize("index", range(len(PAIRS)))
def test_context_measure_per_map(index: int) -> None:
    pair = [PAIRS[index]]
    for options in ({}, {"beta2": 0.5, "alpha": 3.0}):
        assert_same_results(run(Evaluation.ContextMeasure(**options), pair),
                            run(py_sod_metrics.ContextMeasure(**options), pair), f"pair {index}")


def test_per_map_means_merge_to_the_mean_over_all_maps() -> None:
    """HCE and the context measure kept in two parts (two worker processes) and merged hold every map once and give
    PySODMetrics' mean over all the maps (HCE, a mean of whole numbers, to the bit of one measure kept over all the
    maps); with no map the result is NaN."""
    pairs = PAIRS[:8]
    for ours, theirs in ((Evaluation.HumanCorrectionEffortMeasure, py_sod_metrics.HumanCorrectionEffortMeasure),
                         (Evaluation.ContextMeasure, py_sod_metrics.ContextMeasure)):
        whole, first, second = ours(), ours(), ours()
        run(whole, pairs), run(first, pairs[:3]), run(second, pairs[3:])
        parts = first.total + second.total
        first.merge(second)
        assert (first.count, first.total) == (len(pairs), parts)
        assert_same_results(first.get_results(), run(theirs(), pairs))
        assert ours is not Evaluation.HumanCorrectionEffortMeasure or first.get_results() == whole.get_results()
        assert np.isnan(next(iter(ours().get_results().values())))


def test_lab_and_ciede2000_are_scikit_images() -> None:
    from skimage.color import deltaE_ciede2000, rgb2lab

    from Evaluation.context import ciede2000, rgb_to_lab

    rng = np.random.default_rng(13)
    colours = rng.integers(0, 256, (2, 4000, 3)).astype(np.uint8)
    colours[1, :100] = colours[0, :100]  # equal colours
    colours[:, 100:200] = rng.integers(0, 256, (2, 100, 1))  # greys: zero chroma
    lab = [rgb_to_lab(c) for c in colours]
    for ours, theirs in zip(lab, (rgb2lab(c) for c in colours)):
        np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-10)
    np.testing.assert_allclose(ciede2000(*lab), deltaE_ciede2000(rgb2lab(colours[0]), rgb2lab(colours[1])),
                               rtol=0, atol=1e-9)


def camouflage_triples() -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(pred, gt, RGB image): objects textured like their background (camouflaged) or not, and no-patch cases."""
    import cv2

    rng = np.random.default_rng(14)
    triples = []
    for index in range(8):
        h, w = int(rng.integers(40, 80)), int(rng.integers(40, 100))
        texture = cv2.GaussianBlur(rng.integers(0, 256, (h, w, 3)).astype(np.uint8), (0, 0), 1.5)
        gt = np.zeros((h, w), np.uint8)
        cv2.ellipse(gt, (w // 2, h // 2), (w // 4, h // 5), float(rng.uniform(0, 180)), 0, 360, 255, -1)
        image = texture.copy()
        if index % 2:  # a visible object: shifted colours
            image[gt > 0] = np.clip(image[gt > 0].astype(int) + [60, -40, 20], 0, 255)
        pred = np.clip(cv2.GaussianBlur(gt.astype(np.float32), (0, 0), 2) + rng.normal(0, 30, gt.shape), 0, 255)
        triples.append((pred.astype(np.uint8), gt, image))
    tiny = np.zeros((30, 30), np.uint8)
    tiny[10:13, 10:13] = 255  # smaller than a patch: no camouflage degree
    triples.append((tiny.copy(), tiny, rng.integers(0, 256, (30, 30, 3)).astype(np.uint8)))
    empty = np.zeros((30, 30), np.uint8)
    triples.append((rng.integers(0, 256, (30, 30)).astype(np.uint8), empty, rng.integers(0, 256, (30, 30, 3),
                                                                                         dtype=np.uint8)))
    return triples


@pytest.mark.parametrize("index", range(10))
def test_camouflage_context_measure_per_map(index: int) -> None:
    pred, gt, image = camouflage_triples()[index]
    ours, theirs = Evaluation.CamouflageContextMeasure(), py_sod_metrics.CamouflageContextMeasure()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours.step(pred, gt, img=image)
        theirs.step(pred, gt, img=image)
    assert_same_results(ours.get_results(), theirs.get_results(), f"triple {index}")


def test_evaluation_is_a_drop_in_for_pysodmetrics() -> None:
    """Every public class of PySODMetrics is in Evaluation under its name, taking its constructor and ``step``
    arguments (ours may add keyword arguments with defaults, e.g. ``device``)."""
    import inspect

    public = [name for name in dir(py_sod_metrics) if inspect.isclass(getattr(py_sod_metrics, name))
              and getattr(py_sod_metrics, name).__module__.startswith("py_sod_metrics")]
    assert len(public) >= 24
    for name in public:
        theirs, ours = getattr(py_sod_metrics, name), getattr(Evaluation, name)
        for method in ("__init__", "step"):
            if not hasattr(theirs, method) or method == "step" and not hasattr(ours, "step"):
                continue
            expected = list(inspect.signature(getattr(theirs, method)).parameters.values())
            actual = inspect.signature(getattr(ours, method)).parameters
            for parameter in expected:
                assert parameter.name in actual, f"{name}.{method} lacks {parameter.name}"
                mine = actual[parameter.name]
                assert mine.kind == parameter.kind, f"{name}.{method}({parameter.name})"
                assert mine.default == parameter.default or parameter.default is inspect.Parameter.empty, \
                    f"{name}.{method}({parameter.name}) default"
            extra = [p for p in actual.values() if p.name not in {q.name for q in expected}]
            assert all(p.default is not inspect.Parameter.empty for p in extra), f"{name}.{method}"


def test_maps_of_another_size_are_refused_as_pysodmetrics_refuses_them() -> None:
    """PySODMetrics takes no prediction of another size than its GT (the evaluation command resizes it first)."""
    pred, gt = np.zeros((20, 30), np.uint8), np.zeros((20, 31), np.uint8)
    for name in ("FmeasureV2", "MSIoU", "SizeInvarianceMAE", "HumanCorrectionEffortMeasure", "ContextMeasure"):
        args = (handlers(py_sod_metrics),) if name == "FmeasureV2" else (True, True) if name == "MSIoU" else ()
        with pytest.raises(ValueError):
            getattr(py_sod_metrics, name)(*args).step(pred, gt)
        args = (handlers(Evaluation),) if name == "FmeasureV2" else (True, True) if name == "MSIoU" else ()
        with pytest.raises(ValueError, match="shape mismatch"):
            getattr(Evaluation, name)(*args).step(pred, gt)


def test_the_summary_five_have_one_name_and_their_keys_follow_the_table() -> None:
    from Evaluation.measures import SUMMARY_FIVE, summary_keys
    from Evaluation.metrics import SUMMARY_KEYS

    assert SUMMARY_KEYS == summary_keys(SUMMARY_FIVE)
