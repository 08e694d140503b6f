"""INT8 on request, never silently worse (`engine.inference.quantization`): a network quantized on a calibration set
is kept only if its S-measure and MAE on the gate set are each no worse than fp32's by more than the tolerance
(better passes), checked here against
PySODMetrics (the metric oracle) on the maps predict.py writes; a network calibrated to fail (one flat grey image) is
one line and exit 2, with nothing written or cached; the same calibration gives the same bytes, quantized afresh or
loaded from the cache. The refusals run at 96 pixels in seconds; the passes at the model's 320 on the fixed set are
slow (15 s to a minute a quantization) and run in `make test-ci-slow`."""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import py_sod_metrics
import pytest
import torch
from reference import REFERENCE
from test_bad_input import errors, run_main

import export_onnx
import predict
from data.synthetic import make_image
from data.transforms import preprocess_test, saliency_to_uint8
from engine.inference.quantization import DEFAULT_TOLERANCE, int8_sets
from utils import LOGGER_NAME

CHECKPOINT = REFERENCE / "checkpoints" / "sdnet_from_scratch.pth"
SIZE = "96"


def released_sdnet() -> Path:
    if not CHECKPOINT.is_file():
        pytest.skip(f"reference data absent: {CHECKPOINT}")
    return CHECKPOINT


def synthetic_set(folder: Path, part: str, count: int) -> Path:
    """``count`` synthetic scenes of ``part`` as a test set: folder/images/*.png and folder/GT/*.png."""
    for sub in ("images", "GT"):
        (folder / sub).mkdir(parents=True)
    for index in range(count):
        rgb, gt = make_image(11, index, part)
        assert cv2.imwrite(str(folder / "images" / f"{index:02d}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        assert cv2.imwrite(str(folder / "GT" / f"{index:02d}.png"), gt)
    return folder


def oracle_measures(maps: Path, gate: Path) -> tuple[float, float]:
    """PySODMetrics' S-measure and MAE of the maps in ``maps`` against the masks of the test set ``gate``."""
    smeasure, mae = py_sod_metrics.Smeasure(), py_sod_metrics.MAE()
    for mask in sorted((gate / "GT").iterdir()):
        saliency = cv2.imread(str(maps / mask.name), cv2.IMREAD_GRAYSCALE)
        gt = cv2.imread(str(mask), cv2.IMREAD_GRAYSCALE)
        smeasure.step(saliency, gt)
        mae.step(saliency, gt)
    return smeasure.get_results()["sm"], mae.get_results()["mae"]


def fixed_gate_set(folder: Path) -> Path:
    """The gate images of the project's fixed set with their masks, written as a test set (PNG: the same pixels)."""
    for sub in ("images", "GT"):
        (folder / sub).mkdir(parents=True)
    for index, (rgb, gt) in enumerate(int8_sets().gate):
        assert cv2.imwrite(str(folder / "images" / f"{index:02d}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        assert cv2.imwrite(str(folder / "GT" / f"{index:02d}.png"), gt)
    return folder


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["openvino", "executorch"])
def test_int8_passes_its_gate_by_the_oracle_and_gives_the_same_bytes_every_run(tmp_path: Path, backend: str) -> None:
    """--precision int8 on the project's fixed calibration set with the fixed gate set written out as --gate: the
    maps of the gate's images, measured by PySODMetrics, are no worse than fp32's by more than the default tolerance
    (0.005) on S-measure and MAE (the gate's promise, checked by the oracle rather than by the gate's own
    arithmetic); a second run loading the quantized network from the cache and a third quantizing it afresh write
    the same bytes as the first. (Slow: an NNCF quantization with its gate takes 15 s, a PT2E one a minute.)"""
    checkpoint = released_sdnet()
    gate = fixed_gate_set(tmp_path / "gate")
    common = ["--checkpoint", checkpoint, "-j", "0", gate / "images"]
    int8 = ["--backend", backend, "--precision", "int8", "--gate", gate]
    runs = {"fp32": ["--backend", "eager", "--no-cache"], "int8": [*int8, "--cache-dir", tmp_path / "cache"],
            "cached": [*int8, "--cache-dir", tmp_path / "cache"], "afresh": [*int8, "--no-cache"]}
    for name, flags in runs.items():
        predict.main([str(arg) for arg in [*common, *flags, "--out", tmp_path / name]])
    (s_fp32, mae_fp32), (s_int8, mae_int8) = (oracle_measures(tmp_path / name / "images", gate)
                                              for name in ("fp32", "int8"))
    assert s_int8 >= s_fp32 - DEFAULT_TOLERANCE and mae_int8 <= mae_fp32 + DEFAULT_TOLERANCE
    first = sorted((tmp_path / "int8" / "images").iterdir())
    assert len(first) == 40
    for name in ("cached", "afresh"):
        assert [path.read_bytes() for path in first] == \
            [(tmp_path / name / "images" / path.name).read_bytes() for path in first], name
    # shipped: export_onnx.py writes the same quantized network, which its runtime alone runs to the same maps
    shipped = tmp_path / ("sdnet-int8.xml" if backend == "openvino" else "sdnet-int8.pte")
    export_onnx.main([str(arg) for arg in ["--checkpoint", checkpoint, "--format", backend, "--precision", "int8",
                                           "--gate", gate, "--out", shipped]])
    run = runtime_alone(shipped)
    for path in first:
        rgb = cv2.cvtColor(cv2.imread(str(gate / "images" / path.name)), cv2.COLOR_BGR2RGB)
        saliency = saliency_to_uint8(run(preprocess_test(rgb, 320)[None]), rgb.shape[:2])[0]
        assert np.array_equal(saliency, cv2.imread(str(path), cv2.IMREAD_UNCHANGED)), path.name


def runtime_alone(path: Path):
    """The shipped file ``path`` (OpenVINO's .xml, or an ExecuTorch .pte) run by its runtime alone, as a function
    of one input (1, 3, H, W) -> (1, 1, H, W)."""
    if path.suffix == ".xml":
        import openvino

        # f32 where not quantized: OpenVINO's own default on CPUs with AMX or AVX512-BF16 is bf16 (docs/runtime.md)
        request = openvino.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"}
                                                ).create_infer_request()
        return lambda x: torch.from_numpy(request.infer([x.numpy()])[0].copy())
    from executorch.runtime import Runtime

    program = Runtime.get().load_program(path.read_bytes())
    method = program.load_method("forward")  # valid while its program lives: the function holds both
    return lambda x, program=program: method.execute([x])[0]


def test_the_gate_refuses_a_network_calibrated_on_one_flat_grey_image(tmp_path: Path, capsys) -> None:
    """A calibration set of one flat grey image quantizes every activation to a sliver of its range: the gate
    refuses the network with one line giving both figures (exit 2), and neither a map nor a cache entry is
    written; serve.py refuses it at start."""
    checkpoint = released_sdnet()
    (tmp_path / "flat").mkdir()
    assert cv2.imwrite(str(tmp_path / "flat" / "grey.png"), np.full((64, 64, 3), 128, np.uint8))
    gate = synthetic_set(tmp_path / "gate", "sod-test", 6)
    logging.getLogger(LOGGER_NAME).setLevel(logging.INFO)
    status, lines = run_main("predict.py", ["--checkpoint", checkpoint, "--size", SIZE, "-j", "0", "--precision",
                                            "int8", "--calibration", tmp_path / "flat", "--gate", gate, "--cache-dir",
                                            tmp_path / "cache", gate / "images", "--out", tmp_path / "out"], capsys)
    [message] = errors(lines)
    assert status == 2 and "failed the accuracy gate on --gate" in message and "(fp32 " in message, message
    assert not (tmp_path / "out").exists()
    assert not [path for path in (tmp_path / "cache").rglob("*") if path.is_file()]
    # serve.py quantizes and gates at start: refused before it serves anything
    status, lines = run_main("serve.py", ["--checkpoint", checkpoint, "--size", SIZE, "--port", "0", "--precision",
                                          "int8", "--calibration", tmp_path / "flat", "--gate", gate, "--no-cache"],
                             capsys)
    [message] = errors(lines)
    assert status == 2 and "failed the accuracy gate on --gate" in message, message


def test_calibration_and_gate_folders_are_checked_in_one_line(tmp_path: Path, capsys) -> None:
    """A --gate folder whose image has no mask, an empty --calibration folder, and --calibration without
    --precision int8: one line naming the flag, exit 2."""
    checkpoint = released_sdnet()
    gate = synthetic_set(tmp_path / "gate", "sod-test", 2)
    (gate / "GT" / "01.png").unlink()
    (tmp_path / "empty").mkdir()
    cases = {"--gate": (["--gate", gate], "01.png has no mask GT/01.png"),
             "--calibration": (["--calibration", tmp_path / "empty"], "no images"),
             "fp32": (["--precision", "fp32", "--calibration", gate], "is for --precision int8")}
    for name, (flags, expected) in cases.items():
        precision = [] if name == "fp32" else ["--precision", "int8"]
        status, lines = run_main("predict.py", ["--checkpoint", checkpoint, *precision, *flags, gate / "images",
                                                "--out", tmp_path / "out"], capsys)
        [message] = errors(lines)
        assert status == 2 and expected in message, (name, message)


def test_the_fixed_set_is_built_and_held_out() -> None:
    """The default sets are built, not shipped (`data.synthetic`): 60 calibration images and 40 gate images with
    their masks, none of them a calibration image."""
    sets = int8_sets()
    assert (len(sets.calibration), len(sets.gate)) == (60, 40)
    assert all(gt.shape == rgb.shape[:2] and gt.dtype == np.uint8 and gt.max() == 255 for rgb, gt in sets.gate)
    calibration = {image.tobytes() for image in sets.calibration}
    assert not any(rgb.tobytes() in calibration for rgb, _ in sets.gate)


def test_the_gate_refuses_worse_and_passes_better() -> None:
    """The gate is one-sided: a network whose S-measure is lower or whose MAE is higher than fp32's by more than the
    tolerance is refused; one better than fp32 on both passes (a quantization-aware network runs better quantized
    than in float, BENCHMARKS.md). Stand-ins for the networks: the gate's own masks (perfect maps) and a flat map."""
    from engine.inference.backends import BackendError
    from engine.inference.quantization import Int8Sets, check_gate

    pairs = tuple(make_image(3, index, "sod-test") for index in range(3))
    sets = Int8Sets(calibration=(), gate=pairs, tolerance=DEFAULT_TOLERANCE)
    shape = (1, 3, 64, 64)

    def maps(kind: str):
        masks = iter([gt for _, gt in pairs] * 2)

        def run(x: torch.Tensor) -> torch.Tensor:
            gt = torch.from_numpy(cv2.resize(next(masks), shape[2:][::-1], interpolation=cv2.INTER_NEAREST))
            return (gt > 128).float()[None, None] if kind == "perfect" else torch.full((1, 1, *shape[2:]), 0.5)
        return run

    moved = check_gate(maps("flat"), maps("perfect"), sets, shape, "--backend test")
    assert moved[0] > DEFAULT_TOLERANCE and moved[1] < -DEFAULT_TOLERANCE  # far better on both: passes
    with pytest.raises(BackendError, match="worse than fp32 by more than --gate-tolerance 0.005"):
        check_gate(maps("perfect"), maps("flat"), sets, shape, "--backend test")


@pytest.mark.slow  # four quantizations (10 s): .ci/run runs it
def test_openvino_tries_the_depthwise_convolutions_quantized_first_where_the_cpu_has_int8_dot_products(
        monkeypatch: pytest.MonkeyPatch, caplog) -> None:
    """With VNNI or AMX (`engine.hardware.cpu_has_int8_dot_products`), OpenVINO quantizes the depthwise convolutions
    first and keeps them in float only when that network fails the gate (a failure stood in for here, the real gate
    then passing the second network); without them, in float at once. Both keep the one-channel convolutions in
    float; a network failing the last recipe is the gate's one line (tests above)."""
    from test_backends import converted

    from engine.inference import runner as inference
    from engine.inference.backends import openvino as backend
    from engine.inference.quantization import GateFailed, Int8Sets, check_gate

    model = converted("sdnet")
    pairs = tuple(make_image(5, index, "sod-test") for index in range(2))
    sets = Int8Sets(calibration=tuple(rgb for rgb, _ in pairs), gate=pairs, tolerance=1.0)
    shape = (1, 3, 32, 40)
    graph = backend.OpenVINOBackend(model, backend.Settings(torch.device("cpu")))._export(shape)
    ops = list(graph.get_ordered_ops())
    depthwise = {op.get_friendly_name() for op in ops if op.get_type_name() == "GroupConvolution"}
    one_channel = {op.get_friendly_name() for op in ops
                   if op.get_type_name() == "Convolution" and op.output(0).get_partial_shape()[1] == 1}
    assert len(depthwise) == 15 and len(one_channel) == 5
    [(_, in_float)] = backend.int8_recipes(graph, int8_dot_products=False)
    assert set(in_float) == one_channel | depthwise
    (_, first), (_, second) = backend.int8_recipes(graph, int8_dot_products=True)
    assert set(first) == one_channel and set(second) == one_channel | depthwise

    def quantized_inputs(graph) -> set[str]:
        """The convolutions whose input comes through a FakeQuantize (a max-pooling between them)."""
        def source(op):
            op = op.input_value(0).get_node()
            return source(op) if op.get_type_name() == "MaxPool" else op
        return {op.get_friendly_name() for op in graph.get_ordered_ops()
                if op.get_type_name() in ("Convolution", "GroupConvolution")
                and source(op).get_type_name() == "FakeQuantize"}

    gates = []

    def first_fails(reference, quantized, sets, shape, what):
        gates.append(what)
        if len(gates) == 1:
            raise GateFailed("stand-in failure", (-0.5, 0.5))
        return check_gate(reference, quantized, sets, shape, what)

    monkeypatch.setattr(backend, "check_gate", first_fails)
    caplog.set_level(logging.INFO, logger=LOGGER_NAME)

    def kept_network(dot_products: bool, first_gate_fails: bool):
        gates[:] = [] if first_gate_fails else ["no stand-in failure"]
        monkeypatch.setattr(backend, "cpu_has_int8_dot_products", lambda: dot_products)
        runner = inference.prepare_for_inference(model, "cpu", precision="int8", threads=1, int8=sets)
        runner(torch.zeros(shape))
        [kept] = runner.backend._int8_graphs.values()
        assert not quantized_inputs(kept) & one_channel
        return len(gates) - (not first_gate_fails), quantized_inputs(kept) & depthwise

    assert kept_network(dot_products=True, first_gate_fails=False)[1] == depthwise  # passes: all quantized
    assert kept_network(dot_products=True, first_gate_fails=True) == (2, set())  # fails: all in float
    assert "failed the accuracy gate (S-measure -0.5000, MAE +0.5000 of fp32's); trying the one-channel and the " \
           "depthwise convolutions in float" in caplog.text
    assert kept_network(dot_products=False, first_gate_fails=False) == (1, set())  # AVX2 alone: in float at once
