"""INT8 on request, never silently worse: the images a network is quantized on (the calibration set), the images it
is judged on (the accuracy gate), and the gate itself. The backends that quantize ("openvino" through NNCF,
"executorch" through PyTorch's PT2E quantization for XNNPACK) take an `Int8Sets` and keep a quantized network only
if `check_gate` passes it.

The sets: the folders the user names (``--calibration DIR``: images; ``--gate DIR``: ``images/`` and ``GT/<stem>.png``,
a test set's layout), else the project's own fixed set, built here from `data.synthetic` (60 calibration images and
40 held-out gate images with their masks, the same pixels on every machine). A network is quantized for one input
shape on the calibration images resized to it, so its maps are a function of its input and the calibration set
alone: the same calibration gives the same bytes.

The gate: the quantized network's S-measure and MAE on the gate set, each no worse than the float32 model's at the
same input shape by more than ``tolerance`` (default 0.005); else `GateFailed` (a `BackendError`) with both
figures, and nothing is kept.

What stays in float (docs/runtime.md has the measurements): every convolution with one output channel, the
saliency head and the attention maps, each of which feeds a sigmoid. Quantizing the head's logits moved the released
SDNet's S-measure on a real photo by 0.005-0.015; keeping them in float costs nothing measurable in speed. OpenVINO
also keeps the depthwise convolutions in float where quantizing them does not pay or fails the gate
(`engine.inference.backends.openvino.int8_recipes`).
"""

from __future__ import annotations

import argparse
import functools
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from data.readers import IMAGE_EXTENSION_TEXT, DataError, decode_image, list_images, read_rgb
from data.synthetic import make_image
from data.transforms import preprocess_test, saliency_to_uint8
from engine.inference.backends import BackendError
from Evaluation.metrics import MAE, Smeasure
from utils import float_between

__all__ = ["DEFAULT_TOLERANCE", "Int8Sets", "int8_sets", "network_inputs", "check_gate", "gate_measures", "gate_fails",
           "GateFailed", "FIXED_SET", "add_int8_args"]

DEFAULT_TOLERANCE = 0.005
# The project's fixed set: synthetic scenes of data.synthetic, calibration from its training part and the gate from
# its test part (held out), under a seed of their own.
_FIXED_SEED, _FIXED_CALIBRATION, _FIXED_GATE = 2025, 60, 40
FIXED_SET = "the project's fixed set"


class GateFailed(BackendError):
    """A quantized network worse than float32 on the gate set; ``moved``: its (S-measure, MAE) minus fp32's."""

    def __init__(self, message: str, moved: tuple[float, float]) -> None:
        super().__init__(message)
        self.moved = moved


@dataclass(frozen=True, eq=False)
class Int8Sets:
    """The calibration images (RGB (H, W, 3) uint8), the gate's images with their masks ((H, W) uint8, > 128 is
    foreground), the gate's ``tolerance`` on S-measure and MAE, and what each set is (for messages)."""

    calibration: tuple[np.ndarray, ...]
    gate: tuple[tuple[np.ndarray, np.ndarray], ...]
    tolerance: float = DEFAULT_TOLERANCE
    calibration_source: str = FIXED_SET
    gate_source: str = FIXED_SET

    @functools.cached_property
    def digest(self) -> str:
        """A digest of every pixel and the tolerance: part of the key of a quantized network in the cache."""
        digest = hashlib.sha256(f"{self.tolerance!r}".encode())
        for array in (*self.calibration, *(a for pair in self.gate for a in pair)):
            digest.update(f"{array.shape}".encode())
            digest.update(np.ascontiguousarray(array).tobytes())
        return digest.hexdigest()


@functools.lru_cache(maxsize=1)
def _fixed_set(tolerance: float) -> Int8Sets:
    """The project's fixed set (3-4 s to build; kept for the process's later runners, e.g. a server's)."""
    calibration = tuple(make_image(_FIXED_SEED, i, "sod-train")[0] for i in range(_FIXED_CALIBRATION))
    return Int8Sets(calibration, tuple(make_image(_FIXED_SEED, i, "sod-test") for i in range(_FIXED_GATE)),
                    tolerance)


def _images_of(folder: Path, flag: str) -> list[Path]:
    images = list_images(folder / "images" if (folder / "images").is_dir() else folder)
    if not images:
        raise DataError(f"{flag} {folder}: no images ({IMAGE_EXTENSION_TEXT}) in it")
    return images


def int8_sets(calibration: str | Path | None = None, gate: str | Path | None = None,
              tolerance: float = DEFAULT_TOLERANCE) -> Int8Sets:
    """The sets of ``--calibration`` (a folder of images, or of a test set's ``images/``) and ``--gate`` (a test set:
    ``images/`` and ``GT/<stem>.png``), each the project's fixed set where not given. Raises `data.DataError` (one
    line naming the folder or file) for a folder without images or an image without its mask."""
    fixed = _fixed_set(tolerance) if calibration is None or gate is None else None
    if calibration is None:
        images = fixed.calibration
    else:
        images = tuple(read_rgb(path, orient=True) for path in _images_of(Path(calibration), "--calibration"))
    if gate is None:
        pairs = fixed.gate
    else:
        pairs = []
        for path in _images_of(Path(gate), "--gate"):
            mask = path.parent.parent / "GT" / f"{path.stem}.png"
            if path.parent.name != "images" or not mask.is_file():
                raise DataError(f"--gate {gate}: {path.name} has no mask GT/{path.stem}.png (a gate set holds "
                                "images/ and GT/)")
            rgb, gt = read_rgb(path, orient=True), decode_image(mask, cv2.IMREAD_GRAYSCALE)
            if gt.shape != rgb.shape[:2]:
                raise DataError(f"--gate {gate}: the mask of {path.name} is {gt.shape[1]}x{gt.shape[0]}, the image "
                                f"{rgb.shape[1]}x{rgb.shape[0]}")
            pairs.append((rgb, gt))
    return Int8Sets(images, tuple(pairs), tolerance, f"--calibration {calibration}" if calibration else FIXED_SET,
                    f"--gate {gate}" if gate else FIXED_SET)


def network_inputs(images: Sequence[np.ndarray], shape: tuple[int, ...]) -> list[torch.Tensor]:
    """RGB images -> network inputs of ``shape`` (1, 3T, H, W): each resized to (H, W) by the test preprocessing, as
    a still clip of T copies for a video model (as `engine.inference.Predictor` shows it a photo)."""
    frames = shape[1] // 3
    return [preprocess_test(rgb, tuple(shape[2:]))[None].repeat(1, frames, 1, 1) for rgb in images]


def gate_measures(run: Callable[[torch.Tensor], torch.Tensor], sets: Int8Sets, shape: tuple[int, ...]
                  ) -> tuple[float, float]:
    """S-measure and MAE of the maps ``run`` ((1, 3T, H, W) -> (T, 1, H, W)) gives the gate's images at ``shape``
    (a clip's last map), as the gate measures them."""
    smeasure, mae = Smeasure(), MAE()
    inputs = network_inputs([rgb for rgb, _ in sets.gate], shape)
    for (_, gt), x in zip(sets.gate, inputs, strict=True):
        saliency = saliency_to_uint8(run(x)[-1:].float(), gt.shape)[0]
        smeasure.step(saliency, gt)
        mae.step(saliency, gt)
    return float(smeasure.get_results()["sm"]), float(mae.get_results()["mae"])


def gate_fails(moved: tuple[float, float], tolerance: float) -> bool:
    """Whether an INT8 network that moved S-measure and MAE by ``moved`` from fp32's is worse by more than
    ``tolerance``: S-measure lower, or MAE higher, by more than it (better is no failure)."""
    return -moved[0] > tolerance or moved[1] > tolerance


def check_gate(reference: Callable[[torch.Tensor], torch.Tensor], quantized: Callable[[torch.Tensor], torch.Tensor],
               sets: Int8Sets, shape: tuple[int, ...], what: str) -> tuple[float, float]:
    """The accuracy gate: S-measure and MAE of ``quantized`` on the gate set at ``shape``, each no worse than
    ``reference``'s (the float32 model; both (1, 3T, H, W) -> (T, 1, H, W) maps) by more than the sets' tolerance:
    S-measure at least fp32's minus it, MAE at most fp32's plus it. Better is no failure: a network fine-tuned
    quantization-aware (`engine.training.qat`) is meant to run quantized, and its float32 maps are the worse ones
    (BENCHMARKS.md, "Quantization-aware fine-tuning"). Returns the quantized network's differences (S-measure, MAE);
    raises `GateFailed` naming ``what`` (the backend's flag) with both figures when either is worse by more than the
    tolerance."""
    s_float, mae_float = gate_measures(reference, sets, shape)
    s_int8, mae_int8 = gate_measures(quantized, sets, shape)
    moved = (s_int8 - s_float, mae_int8 - mae_float)
    if gate_fails(moved, sets.tolerance):
        raise GateFailed(f"{what} --precision int8 (calibrated on {sets.calibration_source}) failed the accuracy "
                           f"gate on {sets.gate_source} at {'x'.join(map(str, shape))}: "
                           f"S-measure {s_int8:.4f} (fp32 {s_float:.4f}), MAE "
                           f"{mae_int8:.4f} (fp32 {mae_float:.4f}): worse than fp32 by more than --gate-tolerance "
                           f"{sets.tolerance:g}; "
                           "other --calibration images may pass it, --precision fp32 runs as trained", moved)
    return moved


def add_int8_args(group: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """The flags of ``--precision int8`` (`int8_sets` reads them): ``--calibration``, ``--gate``,
    ``--gate-tolerance``."""
    group.add_argument("--calibration", default=None, metavar="DIR",
                       help="--precision int8: the images the network is quantized on (default: the project's fixed "
                            "set of synthetic scenes, docs/runtime.md)")
    group.add_argument("--gate", default=None, metavar="DIR",
                       help="--precision int8: the accuracy gate's test set, DIR/images/ and DIR/GT/<stem>.png "
                            "(default: the project's fixed set)")
    group.add_argument("--gate-tolerance", type=float_between(0.0, 1.0, low_open=True), default=DEFAULT_TOLERANCE,
                       help="--precision int8: how much worse than fp32's the quantized network's S-measure and MAE "
                            "on the gate set may each be (default: %(default)s)")
