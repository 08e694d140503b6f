"""Test-time preprocessing equals the authors' (skimage resize, golden inputs); training transforms stay aligned."""


import numpy as np
import pytest
import torch
from reference import REFERENCE

from data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Augmentation,
    preprocess_test,
    resize_bilinear_reflect,
    train_gt,
    train_image,
)

GOLDEN = REFERENCE / "golden"


@pytest.mark.parametrize("shape, out", [
    ((7, 5, 3), (13, 11)),        # upsampling: mirror padding at the borders
    ((300, 451, 3), (320, 320)),  # mixed: up in H, down in W
    ((97, 61), (40, 23)),         # downsampling, 2-D
    ((1, 5, 3), (4, 9)),          # a single row
    ((24, 24, 24), (37, 11)),     # a clip's 3T channels at once
])
def test_resize_matches_skimage(shape, out):
    transform = pytest.importorskip("skimage.transform")
    image = np.random.default_rng(0).random(shape)
    expected = transform.resize(image, out, order=1, mode="reflect", anti_aliasing=False)
    np.testing.assert_allclose(resize_bilinear_reflect(image, *out), expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("name, size", [("sdnet", 320), ("sdneta", 384)])
def test_preprocess_test_matches_golden_input(name, size):
    skdata = pytest.importorskip("skimage.data")
    path = GOLDEN / f"{name}_golden_io.npz"
    if not path.exists():
        pytest.skip(f"reference data absent: {path}")
    golden = np.load(path)["input"]
    ours = torch.stack([preprocess_test(skdata.chelsea(), size), preprocess_test(skdata.coffee(), size)])
    assert ours.dtype == torch.float32 and ours.shape == golden.shape
    assert np.abs(ours.numpy() - golden).max() < 1e-6


def test_preprocess_test_grey_uint16_full_resolution_and_clip():
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    out = preprocess_test(grey, None)
    assert out.shape == (3, 3, 4)
    expected = (grey / 255.0 - IMAGENET_MEAN[1]) / IMAGENET_STD[1]
    np.testing.assert_allclose(out[1].numpy(), expected.astype(np.float32), rtol=0, atol=0)
    deep = grey.astype(np.uint16) * 257  # same values in 16 bits
    np.testing.assert_array_equal(preprocess_test(deep, 5).numpy(), preprocess_test(grey, 5).numpy())
    # A clip's 3T channels resized at once (as the authors did) equal its frames resized one by one.
    frames = [np.random.default_rng(i).integers(0, 256, (9, 7, 3), dtype=np.uint8) for i in range(3)]
    together = resize_bilinear_reflect(np.concatenate(frames, axis=2) / 255.0, 6, 6)
    for t, frame in enumerate(frames):
        np.testing.assert_array_equal(together[:, :, 3 * t: 3 * t + 3], resize_bilinear_reflect(frame / 255.0, 6, 6))


def _whole_image_resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """skimage's bilinear 'reflect' resize written plainly: the whole image in float64, rows, then columns."""
    def taps(size_in, size_out):
        coord = (np.arange(size_out) + 0.5) * (size_in / size_out) - 0.5
        low = np.floor(coord).astype(np.int64)
        weight, high = coord - low, low + 1
        if size_in == 1:
            return np.zeros_like(low), np.zeros_like(high), weight
        return np.abs(low), np.where(high > size_in - 1, 2 * (size_in - 1) - high, high), weight
    low, high, weight = taps(image.shape[0], height)
    weight = weight.reshape((-1,) + (1,) * (image.ndim - 1))
    rows = image[low] * (1 - weight) + image[high] * weight
    low, high, weight = taps(image.shape[1], width)
    weight = weight.reshape((1, -1) + (1,) * (image.ndim - 2))
    return rows[:, low] * (1 - weight) + rows[:, high] * weight


@pytest.mark.parametrize("shape, dtype, size", [
    ((481, 373, 3), np.uint8, 320), ((97, 1001), np.uint8, 64), ((50, 70, 3), np.uint16, 320),
    ((1, 900, 3), np.uint8, 64), ((900, 1, 3), np.uint8, 64), ((33, 44, 3), np.float32, 16)])
def test_preprocessing_samples_before_converting_and_gives_the_same_values(shape, dtype, size):
    """The test preprocessing converts only the pixels the resize samples to float64: exactly the values of
    converting the whole image first (the same products and sums of the same numbers)."""
    top = {np.uint8: 255, np.uint16: 65535, np.float32: 1}[dtype]
    image = (np.random.default_rng(3).random(shape) * top).astype(dtype)
    whole = image / float(top) if dtype != np.float32 else image.astype(np.float64)
    whole = np.repeat(whole[:, :, None], 3, axis=2) if whole.ndim == 2 else whole
    expected = (_whole_image_resize(whole, size, size) - IMAGENET_MEAN) / IMAGENET_STD
    np.testing.assert_array_equal(preprocess_test(image, size).numpy(), expected.transpose(2, 0, 1).astype(np.float32))


def test_preprocessing_a_large_photo_takes_memory_of_the_output_not_the_photo():
    """A 12-megapixel photo (36 MB as uint8; 288 MB as float64) preprocessed to 320 x 320: the float64 arrays are of
    the sampled pixels, (320, at most 640, 3) each, and at most six live at once: 6 x 8 x 320 x 640 x 3 B = 29.5 MB."""
    import tracemalloc

    photo = np.random.default_rng(4).integers(0, 256, (3000, 4000, 3), dtype=np.uint8)
    tracemalloc.start()
    try:
        preprocess_test(photo, 320)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak <= 6 * 8 * 320 * 640 * 3, peak


def _known_pair(height=60, width=80):
    """A textured image and a GT drawn from it: the GT is the image's red channel in [0, 1]."""
    image = np.random.default_rng(1).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return image, image[:, :, 0] / np.float32(255)


def _red(tensor):
    return tensor[0].numpy() * np.float32(IMAGENET_STD[0]) + np.float32(IMAGENET_MEAN[0])


@pytest.mark.parametrize("flip", [None, "lr", "ud"])
@pytest.mark.parametrize("size", [43, 86, 20])  # identity, up- and downsampling
def test_train_transform_keeps_image_and_gt_aligned(flip, size):
    image, gt = _known_pair()
    augmentation = Augmentation(top=3, bottom=14, left=10, right=27, flip=flip)  # a 43 x 43 crop
    image_t, gt_t = train_image(image, augmentation, size), train_gt(gt, augmentation, size)
    assert image_t.shape == (3, size, size) and gt_t.shape == (1, size, size)
    np.testing.assert_allclose(gt_t[0].numpy(), _red(image_t), rtol=0, atol=2e-6)
    if size == 43:
        expected = image[3:46, 10:53, 0] / 255.0
        expected = {None: expected, "lr": expected[:, ::-1], "ud": expected[::-1]}[flip]
        np.testing.assert_allclose(_red(image_t), expected, rtol=0, atol=2e-6)


def test_augmentation_draw_is_reproducible_and_in_range():
    draws = [Augmentation.draw(np.random.default_rng([5, 0, i])) for i in range(400)]
    again = [Augmentation.draw(np.random.default_rng([5, 0, i])) for i in range(400)]
    assert draws == again
    crops = np.array([[d.top, d.bottom, d.left, d.right] for d in draws])
    assert crops.min() == 0 and crops.max() == 14
    flips = [d.flip for d in draws]
    assert 0.4 < flips.count(None) / 400 < 0.6
    assert abs(flips.count("lr") - flips.count("ud")) < 60
