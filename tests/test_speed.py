"""Speed scripts and the fast inference path: same maps as eager, and the spec's parameter and MAC counts (§5, §13)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import speed_sod
import speed_vsod
import utils
from engine import inference, speed
from models import build_model, convert_model

VIDEO_MODELS = ("stdnet", "stdneta")


def randomised(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """``model`` with every parameter and buffer perturbed (BN statistics positive), so no term is trivially 0."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in list(model.named_parameters()) + list(model.named_buffers()):
            if not tensor.is_floating_point():
                continue
            noise = torch.rand(tensor.shape, generator=generator) if name.endswith("running_var") else \
                torch.randn(tensor.shape, generator=generator)
            tensor.add_(0.1 * noise)
    return model.eval()


@pytest.mark.parametrize(("name", "shape"), [
    ("sdnet", (2, 3, 64, 64)),
    ("sdnet", (1, 3, 50, 70)),  # full-resolution maps come in any size
    ("sdneta", (2, 3, 64, 64)),
    ("stdnet", (2, 24, 32, 48)),
    ("stdneta", (1, 24, 64, 32)),
])
def test_default_path_gives_the_eager_converted_maps(name: str, shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    training = randomised(build_model(name, bn=name in VIDEO_MODELS), seed=1)
    converted = convert_model(training).eval()
    x = torch.randn(shape)
    eager = inference.prepare_for_inference(converted, "cpu", backend="eager")
    fast = inference.prepare_for_inference(converted, "cpu")
    first = inference.prepare_for_inference(converted, "cpu", backend="channels_last")
    assert eager.path == "eager+fp32"
    assert fast.path == "openvino+fp32"  # the CPU default
    expected = eager(x)
    assert expected.shape == ((shape[0] * 8 if name in VIDEO_MODELS else shape[0]), 1, *shape[2:])
    maps = fast(x)
    torch.testing.assert_close(maps, expected, atol=1e-4, rtol=0)
    assert torch.equal(fast(x), maps)  # the same bytes on repeated calls
    torch.testing.assert_close(first(x), expected, atol=1e-4, rtol=0)


def compiled_matches_eager(name: str, shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    converted = convert_model(randomised(build_model(name, bn=name in VIDEO_MODELS), seed=3)).eval()
    x = torch.randn(shape)
    expected = inference.prepare_for_inference(converted, "cpu", backend="eager")(x)
    fast = inference.prepare_for_inference(converted, "cpu", backend="inductor")
    assert fast.path == "inductor+fp32"  # compiled at its first pass
    torch.testing.assert_close(fast(x), expected, atol=1e-4, rtol=0)
    assert set(fast._networks) == {(shape, torch.float32)}
    torch.testing.assert_close(fast(x), expected, atol=1e-4, rtol=0)


def test_compiled_default_path_gives_the_eager_converted_maps(monkeypatch: pytest.MonkeyPatch) -> None:
    """The steady state of the CPU path (TorchInductor, about 20 s to compile cold on 2 cores) for SDNet, traced with
    the weights frozen (inductor's `freezing` option alone does not reach dynamo, which then lifts them as inputs)."""
    import torch._dynamo.variables.builder as builder

    answers = []
    original = builder.is_parameter_freezing

    def spy() -> bool:
        answers.append(original())
        return answers[-1]

    monkeypatch.setattr(builder, "is_parameter_freezing", spy)
    compiled_matches_eager("sdnet", (2, 3, 32, 48))
    assert answers and all(answers)


@pytest.mark.parametrize(("name", "shape"), [("sdneta", (1, 3, 64, 64)), ("stdnet", (1, 24, 32, 32)),
                                             ("stdneta", (1, 24, 32, 32))])
def test_compiled_default_path_of_the_other_models(name: str, shape: tuple[int, ...]) -> None:
    compiled_matches_eager(name, shape)


def test_failed_compile_falls_back_to_the_eager_path(monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture) -> None:
    def broken_compile(*args, **kwargs):
        def run(x):
            raise RuntimeError("no C++ compiler\nmore detail")
        return run

    monkeypatch.setattr(torch, "compile", broken_compile)
    utils.setup_logger()
    model = build_model("sdnet", deploy=True)
    x = torch.randn(1, 3, 32, 32)
    fast = inference.prepare_for_inference(model, "cpu", backend="inductor")
    fast.warm_up(x, passes=2)
    expected = inference.prepare_for_inference(model, "cpu", backend="eager")(x)
    torch.testing.assert_close(fast(x), expected, atol=1e-4, rtol=0)
    assert fast.path == "channels_last+fp32"
    assert capsys.readouterr().err.count("compiling (inductor) failed (no C++ compiler): running channels_last "
                                         "eager") == 1


def test_an_error_of_the_model_is_not_taken_for_a_failed_compile(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_compile(*args, **kwargs):
        def run(x):
            raise RuntimeError("compiled graph failed")
        return run

    monkeypatch.setattr(torch, "compile", broken_compile)
    fast = inference.prepare_for_inference(build_model("sdnet", deploy=True), "cpu", backend="inductor")
    with pytest.raises(RuntimeError, match="Given groups=1, weight of size"):  # the model's own error
        fast(torch.randn(1, 4, 32, 32))


def test_the_backend_is_chosen_from_the_request_never_the_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same job on an idle or a busy machine (the clock made to jump by minutes per call) takes the same
    backend and gives the same bytes."""
    import time

    model = build_model("sdnet", deploy=True)
    x = torch.randn(1, 3, 32, 32)
    idle = inference.prepare_for_inference(model, "cpu")
    expected = [idle(x) for _ in range(4)]
    clock = iter(range(0, 10**6, 300))
    monkeypatch.setattr(time, "perf_counter", lambda: float(next(clock)))
    monkeypatch.setattr(time, "time", lambda: float(next(clock)))
    busy = inference.prepare_for_inference(model, "cpu")
    assert busy.path == idle.path == "openvino+fp32"
    for reference in expected:
        assert torch.equal(busy(x), reference)


def test_backend_choice() -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda", 0)
    assert inference.choose_backend(cpu) == "openvino"
    assert inference.choose_backend(cuda) == "cuda_graphs"
    assert inference.choose_backend(cpu, "inductor") == "inductor"
    with pytest.raises(ValueError, match="needs a CUDA device"):
        inference.choose_backend(cpu, "cuda_graphs")
    with pytest.raises(ValueError, match="runs on the CPU"):
        inference.choose_backend(cuda, "openvino")


def test_without_openvino_the_default_is_channels_last(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(inference, "openvino_available", lambda: False)
    assert inference.choose_backend(torch.device("cpu")) == "channels_last"
    with pytest.raises(ValueError, match="needs the openvino package"):
        inference.choose_backend(torch.device("cpu"), "openvino")


def test_openvino_runs_float32_on_the_requested_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    """OpenVINO's own default on CPUs with AVX512-BF16 or AMX is bf16 (maps moved by ~2e-4): the f32 hint is set
    explicitly, and the thread count is torch's (``--threads``)."""
    import openvino

    seen = []
    original = openvino.Core.compile_model

    def spy(self, model, device_name=None, config=None):
        compiled = original(self, model, device_name, config)
        seen.append((device_name, config, compiled.get_property("INFERENCE_PRECISION_HINT"),
                     compiled.get_property("INFERENCE_NUM_THREADS")))
        return compiled

    monkeypatch.setattr(openvino.Core, "compile_model", spy)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    runner = inference.prepare_for_inference(build_model("sdnet", deploy=True), "cpu", backend="openvino")
    runner(torch.randn(1, 3, 32, 32))
    assert runner.threads == 1
    [(device, config, precision, threads)] = seen
    assert device == "CPU" and config["INFERENCE_PRECISION_HINT"] == "f32" and config["INFERENCE_NUM_THREADS"] == 1
    assert str(precision) in ("f32", "<Type: 'float32'>") and threads == 1


def test_a_failed_export_falls_back_but_an_error_of_the_model_is_raised(monkeypatch: pytest.MonkeyPatch,
                                                                      capsys: pytest.CaptureFixture) -> None:
    utils.setup_logger()
    model = build_model("sdnet", deploy=True)
    runner = inference.prepare_for_inference(model, "cpu", backend="openvino")
    with pytest.raises(RuntimeError, match="Given groups=1, weight of size"):  # the model's own error
        runner(torch.randn(1, 4, 32, 32))

    def broken(*args, **kwargs):
        raise RuntimeError("unsupported operator\nmore detail")

    monkeypatch.setattr(inference, "export_onnx", broken)
    x = torch.randn(1, 3, 32, 32)
    runner = inference.prepare_for_inference(model, "cpu", backend="openvino")
    torch.testing.assert_close(runner(x), inference.prepare_for_inference(model, "cpu", backend="eager")(x),
                               atol=1e-4, rtol=0)
    assert runner.path == "channels_last+fp32"
    assert capsys.readouterr().err.count("compiling (openvino) failed (unsupported operator): running "
                                         "channels_last eager") == 1


def test_at_most_a_few_shapes_are_compiled() -> None:
    model = build_model("sdnet", deploy=True)
    runner = inference.prepare_for_inference(model, "cpu", backend="openvino")
    eager = inference.prepare_for_inference(model, "cpu", backend="eager")
    for size in range(16, 16 + 8 * (inference.CPU_COMPILE_SHAPES + 1), 8):
        x = torch.randn(1, 3, size, size)
        torch.testing.assert_close(runner(x), eager(x), atol=1e-4, rtol=0)
    assert len(runner._networks) == inference.CPU_COMPILE_SHAPES


@pytest.mark.parametrize(("name", "shape"), [("sdnet", (1, 3, 48, 40)), ("stdneta", (1, 24, 32, 32))])
def test_streams_give_the_bits_of_one_pass_at_a_time_in_order(name: str, shape: tuple[int, ...],
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Several inputs in flight, one thread each (OpenVINO streams): the same bits as `forward` on all threads, in
    the input order, None passed through, a new shape mid-stream compiled; channels_last streams alike."""
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    torch.manual_seed(0)
    model = convert_model(randomised(build_model(name, bn=name in VIDEO_MODELS), seed=4)).eval()
    runner = inference.prepare_for_inference(model, "cpu")
    assert runner.path == "openvino+fp32" and runner.threads == 2
    generator = torch.Generator().manual_seed(5)
    other = (*shape[:2], shape[2] + 8, shape[3])
    inputs = [torch.randn(other if i == 5 else shape, generator=generator) for i in range(8)]
    inputs[3] = None
    expected = [None if x is None else runner(x) for x in inputs]
    for backend in ("openvino", "channels_last"):
        fresh = inference.prepare_for_inference(model, "cpu", backend=backend)
        results = list(fresh.stream(enumerate(inputs)))
        assert [tag for tag, _ in results] == list(range(len(inputs)))
        for (_, out), reference in zip(results, expected):
            if reference is None:
                assert out is None
            elif backend == "openvino":
                assert torch.equal(out, reference)
            else:
                torch.testing.assert_close(out, reference, atol=1e-4, rtol=0)
        if backend == "openvino":
            assert sorted(map(len, fresh._networks)) == [3, 3]  # two shapes, each compiled with streams


def test_torchs_cuda_home_note_is_silenced_during_a_compile(caplog: pytest.LogCaptureFixture) -> None:
    import logging

    logger = logging.getLogger("torch.utils.cpp_extension")
    with caplog.at_level(logging.WARNING, logger=logger.name):
        with inference._quiet_cuda_home():
            logger.warning("No CUDA runtime is found, using CUDA_HOME='%s'", "/usr/local/cuda")
            logger.warning("another warning")
        assert [r.getMessage() for r in caplog.records] == ["another warning"]
        logger.warning("No CUDA runtime is found, using CUDA_HOME='%s'", "/usr/local/cuda")  # only during a compile
        assert len(caplog.records) == 2
    assert not logger.filters


def test_prepare_for_inference_leaves_the_callers_model_alone() -> None:
    model = build_model("sdnet", deploy=True).train()
    runner = inference.prepare_for_inference(model, "cpu")
    weight, fast_weight = model.init_block.weight, runner.model.init_block.weight  # (60, 3, 3, 3)
    assert not torch.backends.cudnn.benchmark  # nothing process-wide
    assert model.training and weight.requires_grad and weight.is_contiguous()
    assert fast_weight.is_contiguous(memory_format=torch.channels_last) and not fast_weight.is_contiguous()
    assert not runner.model.training and not any(p.requires_grad for p in runner.parameters())


def test_half_without_cuda_warns_and_runs_float32(capsys: pytest.CaptureFixture) -> None:
    utils.setup_logger()
    runner = inference.prepare_for_inference(build_model("sdnet", deploy=True), "cpu", half=True)
    assert runner.dtype == torch.float32 and runner.path == "openvino+fp32"
    assert "--half needs CUDA: running float32" in capsys.readouterr().err


# (script, model, size, params, MACs per frame in G as SPEC §5 / §13 writes them)
SPEC_COUNTS = [
    (speed_sod, "sdnet", 320, 705_725, "1.835"),
    (speed_sod, "sdneta", 320, 818_531, "2.001"),
    (speed_vsod, "stdnet", 256, 874_469, "2.219"),
    (speed_vsod, "stdneta", 256, 987_275, "2.325"),
]


@pytest.mark.parametrize(("script", "name", "size", "params", "gmacs"), SPEC_COUNTS)
def test_speed_script_reports_the_spec_counts(script, name: str, size: int, params: int, gmacs: str,
                                              tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "speed.json"
    result = script.main(["--model", name, "--config", "baseline", "-j", "1", "--size", str(size), "-n", "1",
                          "--warmup", "0", "--json", str(out)])
    log = capsys.readouterr().err
    assert json.loads(out.read_text()) == result
    assert result["params"] == params and f"params {params:,}" in log
    assert f"{result['macs_per_frame'] / 1e9:.3f}" == gmacs
    video = script is speed_vsod
    assert (f"= {gmacs} G per frame" if video else f"MACs {gmacs} G per image") in log
    assert result["input_shape"] == [1, 24 if video else 3, size, size]
    assert result["frames_per_pass"] == (8 if video else 1)
    assert result["macs_per_pass"] == result["macs_per_frame"] * result["frames_per_pass"]
    assert result["fps"] == pytest.approx(result["frames_per_pass"] / result["ms_median"] * 1e3)
    assert result["form"] == "converted" and result["path"] == "openvino+fp32"  # the CPU default


def test_training_form_and_eager_are_selectable(tmp_path: Path) -> None:
    result = speed_sod.main(["--model", "sdnet", "--config", "sdnet", "--size", "64", "-n", "2", "--warmup", "1",
                             "--eager"])
    assert result["form"] == "training" and result["path"] == "eager+fp32"
    # The training form is charged for its branches: 745,197 parameters (SPEC §13.2).
    assert result["params"] == 745_197 and result["passes"] == 2 and result["warmup"] == 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU fallback")
def test_gpu_flag_without_cuda_warns_once_and_uses_the_cpu(capsys: pytest.CaptureFixture) -> None:
    result = speed_sod.main(["--model", "sdnet", "--gpu", "0", "--size", "32", "-n", "1", "--warmup", "0"])
    assert result["device"] == "cpu"
    assert capsys.readouterr().err.count("CUDA is not available") == 1


@pytest.mark.parametrize("argv", [
    ["--model", "sdnet", "--size", "0"],
    ["--model", "sdnet", "--size", "32", "-n", "0"],
    ["--model", "sdnet"],  # --size is required, as in the release
    ["--model", "stdnet", "--size", "32"],  # a video model in the image script
])
def test_bad_flags_exit_with_status_2(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        speed_sod.main(argv)
    assert exit_info.value.code == 2


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", ["sdnet", "stdnet"])
def test_cuda_graph_path_gives_the_eager_maps(name: str) -> None:
    torch.manual_seed(0)
    converted = convert_model(randomised(build_model(name, bn=name in VIDEO_MODELS), seed=2))
    x = torch.randn(1, 24 if name in VIDEO_MODELS else 3, 64, 64, device="cuda")
    expected = inference.prepare_for_inference(converted, "cuda", backend="eager")(x)
    fast = inference.prepare_for_inference(converted, "cuda")
    for _ in range(inference.CUDA_GRAPH_AFTER + 3):  # eager passes first, then captured and replayed
        torch.testing.assert_close(fast(x), expected, atol=1e-4, rtol=0)
    assert len(fast._graphs) == 1
    half = inference.prepare_for_inference(converted, "cuda", half=True)
    assert half.path.endswith("fp16") and (half(x) - expected).abs().max().item() < 1e-2


def test_count_macs_counts_convolution_multiply_accumulates() -> None:
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
                                torch.nn.Conv2d(8, 4, 1, groups=2))
    # 8*3*9 per output pixel of the 8x8 conv output, then 4*(8/2) per pixel of the 4x4 pooled map.
    assert speed.count_macs(model, torch.randn(2, 3, 10, 10)) == 2 * (8 * 3 * 9 * 8 * 8 + 4 * 4 * 4 * 4)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine without CUDA")
def test_gpu_check_says_no_cuda_device() -> None:
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, str(repo / "bench" / "gpu_check.py")], capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.strip() == "gpu-check: no CUDA device"
