"""The inference runtime: every backend gives the eager converted maps, a map depends on its own input only, the
backend is fixed by the request, streams, the compiled-network cache and bf16."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import bounds
import pytest
import torch

import utils
from engine.inference import backends, network_cache
from engine.inference import runner as inference
from engine.inference.backends import BackendError
from engine.inference.backends import openvino as openvino_backend
from models import build_model, convert_model

VIDEO_MODELS = ("stdnet", "stdneta")
NATIVE_BF16 = openvino_backend.native_bf16()


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


def converted(name: str, seed: int = 1) -> torch.nn.Module:
    torch.manual_seed(0)
    return convert_model(randomised(build_model(name, bn=name in VIDEO_MODELS), seed=seed)).eval()


@pytest.mark.parametrize(("name", "shapes"), [
    ("sdnet", [(2, 3, 64, 64), (1, 3, 50, 70), (1, 3, 33, 17)]),  # full-resolution maps come in any size
    ("sdneta", [(2, 3, 64, 64), (1, 3, 50, 70), (1, 3, 33, 17)]),  # MobileViT blocks resize odd sizes
    ("stdnet", [(2, 24, 32, 48), (1, 24, 40, 24)]),
    ("stdneta", [(1, 24, 64, 32), (1, 24, 33, 47)]),
])
def test_default_path_gives_the_eager_converted_maps(name: str, shapes: list[tuple[int, ...]]) -> None:
    """One export serves every size: each shape's network (compiled from it) gives the eager maps."""
    model = converted(name)
    eager = inference.prepare_for_inference(model, "cpu", backend="eager")
    fast = inference.prepare_for_inference(model, "cpu")
    channels_last = inference.prepare_for_inference(model, "cpu", backend="channels_last")
    assert eager.path == "eager+fp32" and fast.path == "openvino+fp32"  # the CPU default
    for shape in shapes:
        x = torch.randn(shape)
        expected = eager(x)
        assert expected.shape == ((shape[0] * 8 if name in VIDEO_MODELS else shape[0]), 1, *shape[2:])
        maps = fast(x)
        torch.testing.assert_close(maps, expected, atol=bounds.MAP_FLOAT32, rtol=0)
        assert torch.equal(fast(x), maps)  # the same bytes on repeated calls
        torch.testing.assert_close(channels_last(x), expected, atol=bounds.MAP_FLOAT32, rtol=0)


def inputs_of_many_shapes(channels: int) -> list[torch.Tensor]:
    """Inputs of 6 distinct shapes (more than the runner keeps networks for), some met again after others."""
    generator = torch.Generator().manual_seed(7)
    sizes = [(40, 32), (32, 48), (48, 40), (40, 32), (56, 32), (32, 32), (32, 48), (40, 56), (40, 32)]
    return [torch.randn(1, channels, h, w, generator=generator) for h, w in sizes]


# OpenVINO's case compiles 6 shapes x 2 stream counts three times (15 s): in the slow set, which .ci/run runs;
# test_streams_give_the_bits_of_one_pass_at_a_time_in_order keeps its streams in the default set.
@pytest.mark.parametrize(("name", "backend"), [pytest.param("sdnet", "openvino", marks=pytest.mark.slow),
                                               ("sdnet", "onnxruntime"), ("sdneta", "channels_last")])
def test_a_map_never_depends_on_the_other_inputs(name: str, backend: str, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Inputs of more distinct shapes than the runner keeps networks for, in one run, one at a time and streamed,
    with and without the on-disk cache: each output is, bit for bit, what the input gives alone in a new runner (of
    one thread, for OpenVINO's streams of one thread each: on two threads its kernels may sum in another order)."""
    monkeypatch.setattr(inference, "RUNNER_NETWORKS", 2)
    model = converted(name, seed=2)
    inputs = inputs_of_many_shapes(24 if name in VIDEO_MODELS else 3)
    alone = [inference.prepare_for_inference(model, "cpu", backend=backend, threads=2)(x) for x in inputs]
    alone_streamed = alone if backend != "openvino" else \
        [inference.prepare_for_inference(model, "cpu", backend=backend, threads=1)(x) for x in inputs]
    for cache in (None, tmp_path / "cache", tmp_path / "cache"):  # no cache, cold, warm
        runner = inference.prepare_for_inference(model, "cpu", backend=backend, threads=2, cache=cache)
        for x, expected in zip(inputs, alone):
            assert torch.equal(runner(x), expected)
        assert len(runner._networks) == 2
        streamed = list(runner.stream(enumerate(inputs)))
        assert [tag for tag, _ in streamed] == list(range(len(inputs)))
        assert all(torch.equal(out, expected) for (_, out), expected in zip(streamed, alone_streamed))
    assert backend != "openvino" or len(list((tmp_path / "cache").glob("*.bin"))) == 12  # 6 shapes x (1, 2 streams)


@pytest.mark.parametrize(("name", "shape"), [("sdnet", (1, 3, 48, 40)), ("stdneta", (1, 24, 32, 32))])
def test_streams_give_the_bits_of_one_pass_at_a_time_in_order(name: str, shape: tuple[int, ...]) -> None:
    """Several inputs in flight, one thread each (OpenVINO streams): the same bits as `forward` on one thread, in
    the input order, None passed through, a new shape mid-stream; channels_last streams alike; grad mode stays the
    caller's between outputs."""
    model = converted(name, seed=4)
    runner = inference.prepare_for_inference(model, "cpu", threads=1)
    assert runner.path == "openvino+fp32" and runner.threads == 1
    generator = torch.Generator().manual_seed(5)
    other = (*shape[:2], shape[2] + 8, shape[3])
    inputs = [torch.randn(other if i == 5 else shape, generator=generator) for i in range(8)]
    inputs[3] = None
    expected = [None if x is None else runner(x) for x in inputs]
    stream = inference.prepare_for_inference(model, "cpu", threads=2).stream(enumerate(inputs))
    next(stream)
    assert torch.is_grad_enabled() and not torch.is_inference_mode_enabled()  # a suspended stream leaks no mode
    stream.close()
    for backend in ("openvino", "channels_last"):
        fresh = inference.prepare_for_inference(model, "cpu", backend=backend, threads=2)
        results = list(fresh.stream(enumerate(inputs)))
        assert [tag for tag, _ in results] == list(range(len(inputs)))
        for (_, out), reference in zip(results, expected):
            if reference is None:
                assert out is None
            elif backend == "openvino":
                assert torch.equal(out, reference)
            else:
                torch.testing.assert_close(out, reference, atol=bounds.MAP_FLOAT32, rtol=0)
        if backend == "openvino":
            assert sorted(network.slots for network in fresh._networks.values()) == [2, 2]  # streams, two shapes


def test_stopping_a_stream_early_leaves_the_runner_usable() -> None:
    model = converted("sdnet", seed=6)
    runner = inference.prepare_for_inference(model, "cpu", threads=2)
    generator = torch.Generator().manual_seed(8)
    inputs = [(i, torch.randn(1, 3, 40, 40, generator=generator)) for i in range(6)]
    one_thread = inference.prepare_for_inference(model, "cpu", threads=1)  # what a stream of one-thread passes gives
    expected = [one_thread(x) for _, x in inputs]
    stream = runner.stream(iter(inputs))
    tag, first = next(stream)  # a second input is in flight now
    assert tag == 0 and torch.equal(first, expected[0])
    stream.close()
    [network] = [n for (shape, streams), n in runner._networks.items() if streams == 2]
    assert len(network.idle) == network.slots == 2  # every request back in the pool
    for _ in range(2):  # streams again, to the end and stopped by an exception of the consumer
        assert all(torch.equal(out, reference) for (_, out), reference in zip(runner.stream(iter(inputs)), expected))
    with pytest.raises(KeyError):
        for _ in runner.stream(iter(inputs)):
            raise KeyError("the consumer failed")
    assert len(network.idle) == 2


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


def test_backend_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda", 0)
    choose = backends.choose_backend
    assert choose(cpu) == "openvino" and choose(cuda) == "cuda_graphs"
    assert choose(cpu, "inductor") == "inductor" and choose(cpu, precision="bf16") == "openvino"
    assert choose(cuda, precision="fp16") == "cuda_graphs"
    for device, request, precision, message in [
            (cpu, "cuda_graphs", "fp32", "needs a CUDA device"), (cuda, "openvino", "fp32", "runs on the CPU"),
            (cpu, "eager", "bf16", "--precision bf16 runs on the CPU with the openvino backend, not --backend eager"),
            (cuda, "auto", "bf16", "on CUDA: --precision fp16"),
            (cpu, "auto", "fp16", r"fp16 \(--half\) runs on CUDA only"),
            (cpu, "tpu", "fp32", "--backend tpu: choose from")]:
        with pytest.raises(BackendError, match=message):
            choose(device, request, precision)
    monkeypatch.setattr(backends, "openvino_available", lambda: False)
    assert choose(cpu) == "channels_last"
    with pytest.raises(BackendError, match="needs the openvino package"):
        choose(cpu, "openvino")


def test_openvino_runs_float32_on_the_requested_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    """OpenVINO's own default on CPUs with AVX512-BF16 or AMX is bf16 (maps moved by ~2e-4): the f32 hint is set
    explicitly, and the thread count is the runner's."""
    seen = []
    core = openvino_backend.openvino_core()
    original = type(core).compile_model

    def spy(self, model, device_name=None, config=None):
        compiled = original(self, model, device_name, config)
        seen.append((device_name, config, compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name(),
                     compiled.get_property("INFERENCE_NUM_THREADS")))
        return compiled

    monkeypatch.setattr(type(core), "compile_model", spy)
    runner = inference.prepare_for_inference(build_model("sdnet", deploy=True), "cpu", threads=1)
    runner(torch.randn(1, 3, 32, 32))
    assert runner.threads == 1 and runner.precision == "fp32"
    [(device, config, precision, threads)] = seen
    assert device == "CPU" and config["INFERENCE_PRECISION_HINT"] == "f32" and config["INFERENCE_NUM_THREADS"] == 1
    assert precision == "f32" and threads == 1


def test_a_backend_that_cannot_prepare_is_an_error_but_an_error_of_the_model_is_raised(
        monkeypatch: pytest.MonkeyPatch) -> None:
    model = build_model("sdnet", deploy=True)
    runner = inference.prepare_for_inference(model, "cpu", backend="openvino")
    with pytest.raises(RuntimeError, match="Given groups=1, weight of size"):  # the model's own error
        runner(torch.randn(1, 4, 32, 32))

    def broken(*args, **kwargs):
        raise RuntimeError("unsupported operator\nmore detail")

    monkeypatch.setattr(openvino_backend, "export_onnx", broken)
    runner = inference.prepare_for_inference(model, "cpu", backend="openvino")
    with pytest.raises(BackendError) as failure:
        runner(torch.randn(1, 3, 32, 32))
    assert str(failure.value) == ("--backend openvino: exporting the network failed (unsupported operator); "
                                  "--backend eager runs without OpenVINO")
    assert runner.path == "openvino+fp32"  # never switched to another backend


@pytest.mark.slow  # 9-10 s of compiling on 2 cores; inductor is not the default backend anywhere
def test_inductor_compiles_every_shape_past_dynamos_recompile_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    """One code object per shape: with the recompile limit at 2, four shapes are all compiled (a shared function
    would have run the third and fourth eagerly), weights frozen while dynamo traces."""
    import torch._dynamo
    import torch._dynamo.utils
    import torch._dynamo.variables.builder as builder

    answers = []
    original = builder.is_parameter_freezing

    def spy() -> bool:
        answers.append(original())
        return answers[-1]

    monkeypatch.setattr(builder, "is_parameter_freezing", spy)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(4, 1, 1))
    runner = inference.prepare_for_inference(model, "cpu", backend="inductor")
    eager = inference.prepare_for_inference(model, "cpu", backend="eager")
    graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    with torch._dynamo.config.patch(recompile_limit=2):
        for size in (8, 9, 10, 11):
            x = torch.randn(1, 3, size, size)
            # two float32 layers of at most 27 products: sqrt(27) u x sqrt(2) x magnitudes below 10 = 4e-6
            torch.testing.assert_close(runner(x), eager(x), atol=1e-5, rtol=0)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] - graphs == 4
    assert answers and all(answers) and runner.path == "inductor+fp32"


@pytest.mark.slow  # the opt-in inductor backend compiles for 20 s on 2 cores (a video model longer)
@pytest.mark.parametrize("name", ["sdnet"])
def test_inductor_gives_the_eager_converted_maps(name: str) -> None:
    model = converted(name, seed=3)
    x = torch.randn(1, 24 if name in VIDEO_MODELS else 3, 32, 48)
    expected = inference.prepare_for_inference(model, "cpu", backend="eager")(x)
    fast = inference.prepare_for_inference(model, "cpu", backend="inductor")
    torch.testing.assert_close(fast(x), expected, atol=bounds.MAP_FLOAT32, rtol=0)
    torch.testing.assert_close(fast(x), expected, atol=bounds.MAP_FLOAT32, rtol=0)


def test_a_failed_inductor_compile_is_an_error_and_an_error_of_the_model_is_raised(
        monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_compile(*args, **kwargs):
        def run(x):
            raise RuntimeError("no C++ compiler\nmore detail")
        return run

    monkeypatch.setattr(torch, "compile", broken_compile)
    runner = inference.prepare_for_inference(build_model("sdnet", deploy=True), "cpu", backend="inductor")
    with pytest.raises(BackendError) as failure:
        runner(torch.randn(1, 3, 32, 32))
    assert str(failure.value) == ("--backend inductor: compiling failed (no C++ compiler); --backend eager runs "
                                  "without compiling")
    with pytest.raises(RuntimeError, match="Given groups=1, weight of size"):  # the model's own error
        runner(torch.randn(1, 4, 32, 32))


def test_torchs_cuda_home_note_is_silenced_during_a_compile(caplog: pytest.LogCaptureFixture) -> None:
    from engine.inference.backends.inductor import quiet_cuda_home

    logger = logging.getLogger("torch.utils.cpp_extension")
    with caplog.at_level(logging.WARNING, logger=logger.name):
        with quiet_cuda_home():
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
    assert not torch.backends.cudnn.benchmark and torch.get_num_threads() == 1  # nothing process-wide
    assert model.training and weight.requires_grad and weight.is_contiguous()
    assert fast_weight.is_contiguous(memory_format=torch.channels_last) and not fast_weight.is_contiguous()
    assert not runner.model.training and not any(p.requires_grad for p in runner.parameters())


def test_the_release_aliases_resolve_in_one_place(capsys: pytest.CaptureFixture) -> None:
    """--eager is --backend eager and --half --precision fp16 (RunnerFlags.from_args); --half without CUDA warns and
    runs float32, as the release's commands expect, and an alias contradicting its flag is one line."""
    utils.setup_logger()
    parser = __import__("argparse").ArgumentParser()
    inference.add_device_args(parser)
    flags = inference.RunnerFlags.from_args(parser.parse_args(["--eager", "--half", "--no-cache"]))
    assert (flags.backend, flags.precision, flags.half, flags.cache) == ("eager", "fp16", True, None)
    runner = inference.runner_from_flags(build_model("sdnet", deploy=True),
                                         inference.RunnerFlags.from_args(parser.parse_args(["--half"])))
    assert runner.dtype == torch.float32 and runner.path == "openvino+fp32"
    assert "--half needs CUDA: running float32" in capsys.readouterr().err
    for argv, why in ((["--half", "--precision", "bf16"], "--half and --precision bf16: give one of them"),
                      (["--eager", "--backend", "openvino"], "--eager and --backend openvino: give one of them")):
        with pytest.raises(SystemExit):
            inference.RunnerFlags.from_args(parser.parse_args(argv))
        assert why in capsys.readouterr().err
    with pytest.raises(inference.BackendError, match="fp16 .*runs on CUDA only"):
        inference.prepare_for_inference(build_model("sdnet", deploy=True), "cpu", precision="fp16")


# --- the compiled-network cache ----------------------------------------------------------------------------------


def cached_run(model: torch.nn.Module, cache: Path, x: torch.Tensor, **options) -> tuple[torch.Tensor, list[str]]:
    """The output of a new runner on ``x`` with ``cache``, and how its network was made ('compiled' / 'loaded')."""
    made = []
    handler = logging.Handler()
    handler.emit = lambda record: made.append("loaded" if "loaded from the cache" in record.getMessage()
                                              else "compiled")
    logger = logging.getLogger(utils.LOGGER_NAME)
    handlers, level = logger.handlers, logger.level
    logger.handlers = [handler]
    logger.setLevel(logging.DEBUG)  # setLevel, not the attribute: it clears the logger's cache of enabled levels
    try:
        out = inference.prepare_for_inference(model, "cpu", cache=cache, **options)(x)
    finally:
        logger.handlers = handlers
        logger.setLevel(level)
    return out, made


def test_a_later_run_loads_the_network_and_nothing_stale_is_reused(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    model = converted("sdnet", seed=9)
    x = torch.randn(1, 3, 40, 48)
    cache = tmp_path / "cache"
    cold, made = cached_run(model, cache, x)
    assert made == ["compiled"] and len(list(cache.glob("*.bin"))) == 1
    warm, made = cached_run(model, cache, x)
    assert made == ["loaded"] and torch.equal(warm, cold)
    changed = converted("sdnet", seed=10)  # other weights, same architecture
    assert cached_run(changed, cache, x)[1] == ["compiled"]
    assert cached_run(model, cache, torch.randn(1, 3, 48, 40))[1] == ["compiled"]  # another shape
    assert cached_run(model, cache, x, threads=2)[1] == ["compiled"]  # other compile settings
    import openvino

    monkeypatch.setattr(openvino, "get_version", lambda: "2099.0.0-other")
    assert cached_run(model, cache, x)[1] == ["compiled"]  # another OpenVINO
    monkeypatch.undo()
    assert cached_run(model, cache, x)[1] == ["loaded"]
    assert len(list(cache.glob("*.bin"))) == 5 and not list(cache.glob(".*"))  # no temporary files left


@pytest.mark.parametrize("damage", ["truncated", "flipped", "not openvino"])
def test_a_damaged_cache_entry_is_rebuilt(damage: str, tmp_path: Path) -> None:
    model = converted("sdnet", seed=11)
    x = torch.randn(1, 3, 32, 40)
    cache = tmp_path / "cache"
    expected, _ = cached_run(model, cache, x)
    [entry] = cache.glob("*.bin")
    data = entry.read_bytes()
    if damage == "truncated":
        entry.write_bytes(data[: len(data) // 2])
    elif damage == "flipped":
        entry.write_bytes(data[:-100] + bytes([data[-100] ^ 0xFF]) + data[-99:])
    else:  # a valid entry whose payload OpenVINO cannot load
        network_cache.NetworkCache(cache).put(entry.stem, b"not a compiled network")
    out, made = cached_run(model, cache, x)
    assert made == ["compiled"] and torch.equal(out, expected)
    out, made = cached_run(model, cache, x)  # rebuilt
    assert made == ["loaded"] and torch.equal(out, expected)


def test_the_cache_can_be_turned_off_and_stays_within_its_size(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SDNET_CACHE_DIR", "off")
    assert network_cache.default_cache_dir() is None
    monkeypatch.delenv("SDNET_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert network_cache.default_cache_dir() == tmp_path / "xdg" / "sdnet"
    cache = network_cache.NetworkCache(tmp_path / "small", max_bytes=400)  # two entries of 100 bytes
    for index in range(5):
        cache.put(f"key{index}", bytes(100))
        os.utime(cache.folder / f"key{index}.bin", (index, index))  # older first
    assert sorted(path.stem for path in cache.folder.glob("*.bin")) == ["key3", "key4"]
    assert cache.get("key4") == bytes(100) and cache.get("key0") is None


def test_a_cache_folder_that_cannot_be_written_keeps_nothing_and_the_run_goes_on(tmp_path: Path) -> None:
    """A cache path under a file (or a read-only folder): the maps of a run without a cache, one warning."""
    model = converted("sdnet", seed=12)
    x = torch.randn(1, 3, 32, 40)
    expected = inference.prepare_for_inference(model, "cpu", cache=None)(x)
    (tmp_path / "a_file").write_bytes(b"")
    messages = []
    handler = logging.Handler()
    handler.emit = lambda record: messages.append((record.levelname, record.getMessage()))
    logger = logging.getLogger(utils.LOGGER_NAME)
    logger.addHandler(handler)
    try:
        out = inference.prepare_for_inference(model, "cpu", cache=tmp_path / "a_file" / "cache")(x)
    finally:
        logger.removeHandler(handler)
    assert torch.equal(out, expected)
    warnings = [text for level, text in messages if level == "WARNING"]
    assert len(warnings) == 1 and warnings[0].startswith("compiled networks are not kept: cannot write")
    assert network_cache.NetworkCache(tmp_path / "a_file" / "cache").put("key", b"x").startswith("cannot write")
    assert [path.name for path in tmp_path.iterdir()] == ["a_file"]


# --- bf16 ---------------------------------------------------------------------------------------------------------


@pytest.mark.skipif(not NATIVE_BF16, reason="this CPU has no native bf16 (AVX512-BF16 or AMX)")
@pytest.mark.parametrize("name", ["sdnet", "stdnet"])
def test_bf16_runs_on_request_close_to_fp32(name: str) -> None:
    model = converted(name, seed=12)
    x = torch.randn(1, 24 if name in VIDEO_MODELS else 3, 64, 64)
    fp32 = inference.prepare_for_inference(model, "cpu")
    bf16 = inference.prepare_for_inference(model, "cpu", precision="bf16")
    assert bf16.path == "openvino+bf16"
    out = bf16(x)
    assert bf16.precision == "bf16"  # read back from the compiled network
    difference = (out - fp32(x)).abs().max().item()
    assert 0 < difference < bounds.MAP_BF16 and out.dtype == torch.float32


def test_bf16_where_the_cpu_has_none_is_a_one_line_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(openvino_backend, "native_bf16", lambda: False)
    with pytest.raises(BackendError) as failure:
        inference.prepare_for_inference(build_model("sdnet", deploy=True), "cpu", precision="bf16")
    assert str(failure.value) == ("--precision bf16 needs a CPU with native bf16 (AVX512-BF16 or AMX), which this "
                                  "one has not; --precision fp32 runs here")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", ["sdnet", "stdnet"])
def test_cuda_graph_path_gives_the_eager_maps(name: str) -> None:
    from engine.inference.backends.cuda_graphs import CUDA_GRAPH_AFTER

    model = converted(name, seed=2)
    x = torch.randn(1, 24 if name in VIDEO_MODELS else 3, 64, 64, device="cuda")
    expected = inference.prepare_for_inference(model, "cuda", backend="eager")(x)
    fast = inference.prepare_for_inference(model, "cuda")
    for _ in range(CUDA_GRAPH_AFTER + 3):  # eager passes first, then captured and replayed
        torch.testing.assert_close(fast(x), expected, atol=bounds.MAP_FLOAT32, rtol=0)
    [network] = fast._networks.values()
    assert network.graph is not None
    half = inference.prepare_for_inference(model, "cuda", precision="fp16")
    assert half.path.endswith("fp16") and (half(x) - expected).abs().max().item() < bounds.MAP_FP16
