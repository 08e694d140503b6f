"""Where an inference pass spends its time: torch.profiler over passes of one inference path, grouped by op.

Usage: python bench/profile_inference.py [--model sdnet] [--config baseline] [--path inductor] [--size 320]
       [--passes 20] [--top 12] [--gemm]

Random weights as the speed scripts (design §8), batch 1; ``--config baseline`` is the DCR-converted network, a
training op table (``sdnet``) its multi-branch training form. ``--path``: a PyTorch backend of
`engine.inference.prepare_for_inference`, warmed up to its steady state: ``inductor`` (compiled), ``channels_last``
or ``eager``; ``openvino`` (the default CPU backend, outside torch.profiler's view) is read from OpenVINO's own
per-layer counters instead (``PERF_COUNT``, the network compiled as the backend compiles it), grouped by layer type.
``--gemm`` also times a 2048x2048 float32 ``torch.mm``, the machine's practical float32 peak in GMAC/s.
Prints the median wall time per pass without the profiler, then, per pass under the profiler: the self time of
the ops taking most of it (by op and input shapes), the convolutions' share of all op time, and the MAC rate of
each 1x1 convolution shape (stride 1, so its MACs are exact: N H W C_out C_in / groups). The profiler perturbs
what it measures: its total exceeds the plain pass time, and the first op of a pass also carries the worker
threads' start (the input convolution times there several times its time in isolation).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from torch.profiler import profile  # noqa: E402

import configs  # noqa: E402
import utils  # noqa: E402
from engine import inference  # noqa: E402
from engine.inference import speed  # noqa: E402
from models import build_model  # noqa: E402

CONVOLUTION_OPS = ("convolution", "conv2d")
# The ops that do a convolution's arithmetic (not the dispatching wrappers around them), for the MAC rates.
CONVOLUTION_KERNELS = ("mkldnn", "cudnn", "slow_conv", "thnn_conv")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Profile of one inference path, grouped by op.")
    parser.add_argument("--model", default="sdnet", choices=sorted(configs.MODELS))
    parser.add_argument("--config", default="baseline", choices=sorted(configs.OP_TABLES),
                        help="'baseline': the converted network; a training op table: the training form")
    parser.add_argument("--path", default="inductor", choices=["inductor", "channels_last", "eager", "openvino"])
    parser.add_argument("--size", type=int, default=None, help="input size (default: 320 images, 256 videos)")
    parser.add_argument("--passes", type=int, default=20, help="timed and profiled passes")
    parser.add_argument("--top", type=int, default=12, help="ops listed")
    parser.add_argument("--gpu", default="", help="CUDA device, e.g. 0 ('' = CPU)")
    parser.add_argument("--gemm", action="store_true", help="also time a 2048x2048 float32 torch.mm (GMAC/s)")
    return parser


def gemm_rate(size: int = 2048, passes: int = 10) -> float:
    """GMAC/s of a size x size float32 matrix product on torch's CPU threads (median of ``passes``)."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    times = speed.time_passes(lambda x: x @ b, a, passes=passes, warmup=3)
    return size**3 / statistics.median(times) / 1e9


def openvino_profile(model: torch.nn.Module, x: torch.Tensor, passes: int, top: int, logger) -> dict:
    """OpenVINO's per-layer counters over ``passes`` passes of ``model`` compiled for ``x`` as the openvino
    backend compiles it (its compile settings, torch's threads), with PERF_COUNT on; logged by layer type."""
    import tempfile

    from engine.inference.backends import Settings
    from engine.inference.backends.openvino import OpenVINOBackend, openvino_core
    from engine.inference.export import export_onnx

    backend = OpenVINOBackend(model, Settings(torch.device("cpu"), threads=torch.get_num_threads()))
    with tempfile.TemporaryDirectory(prefix="sdnet-profile-") as folder:
        path = Path(folder) / "network.onnx"
        export_onnx(backend.model, x, path, any_size=True)  # as the backend exports and compiles it
        graph = openvino_core().read_model(path)
    graph.reshape(list(x.shape))
    config = {**backend.compile_config(streams=1), "PERF_COUNT": True}
    request = openvino_core().compile_model(graph, "CPU", config).create_infer_request()
    inputs = [x.numpy()]
    for _ in range(3):
        request.infer(inputs)
    wall = statistics.median(speed.time_passes(lambda batch: request.infer(inputs), x, passes=passes, warmup=0))
    by_type: dict[tuple[str, str], list[float]] = {}
    for _ in range(passes):
        request.infer(inputs)
        for layer in request.profiling_info:
            entry = by_type.setdefault((layer.node_type, layer.exec_type), [0.0, 0])
            entry[0] += layer.real_time.total_seconds() * 1e3 / passes
            entry[1] += 1
    total = sum(ms for ms, _ in by_type.values())
    conv = sum(ms for (node, _), (ms, _) in by_type.items() if node in ("Convolution", "GroupConvolution"))
    logger.info("%s, path openvino+fp32, input %s: %.2f ms per pass without the counters; %.2f ms of layer time per "
                "pass, %.2f ms (%.0f %%) of it convolutions", type(model).__name__, "x".join(map(str, x.shape)),
                wall * 1e3, total, conv, 100 * conv / total)
    for (node, kernel), (ms, count) in sorted(by_type.items(), key=lambda item: -item[1][0])[:top]:
        logger.info("%8.2f ms/pass %4d layers  %-18s %s", ms, count // passes, node, kernel)
    return {"wall_ms": wall * 1e3, "op_ms": total, "conv_ms": conv,
            "by_type_ms": {f"{node} {kernel}": ms for (node, kernel), (ms, _) in by_type.items()}}


def one_by_one_macs(shapes: list) -> int | None:
    """MACs of a stride-1 1x1 convolution from its profiled input shapes (the weight (C_out, C_in/groups, 1, 1)
    right after the activation (N, C_in, H, W); fused-add variants list the other summand first), else None."""
    for i in range(1, len(shapes)):
        weight, activation = shapes[i], shapes[i - 1]
        if len(weight) == 4 and len(activation) == 4 and tuple(weight[2:]) == (1, 1):
            (n, _, h, w), (c_out, c_in_per_group) = activation, weight[:2]
            return n * h * w * c_out * c_in_per_group
    return None


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    logger = utils.setup_logger()
    device = utils.select_device(args.gpu)
    spec = configs.MODELS[args.model]
    video = spec["kind"] == "video"
    size = args.size or (256 if video else 320)
    torch.manual_seed(0)
    converted = args.config == "baseline"
    model = build_model(args.model, None if converted else args.config, deploy=converted)
    x = torch.randn(1, 3 * (8 if video else 1), size, size, device=device)
    gemm = {}
    if args.gemm:
        gemm = {"gemm_gmacs": gemm_rate()}
        logger.info("float32 2048x2048 torch.mm: %.0f GMAC/s on %d threads", gemm["gemm_gmacs"],
                    torch.get_num_threads())
    if args.path == "openvino":
        return {**openvino_profile(model, x, args.passes, args.top, logger), **gemm}
    backend = "cuda_graphs" if device.type == "cuda" and args.path == "inductor" else args.path
    runner = inference.prepare_for_inference(model, device, backend=backend)
    runner.warm_up(x, 3)
    wall = statistics.median(speed.time_passes(runner, x, passes=args.passes, warmup=0))
    with profile(record_shapes=True) as prof:
        speed.time_passes(runner, x, passes=args.passes, warmup=0)
    rows = [event for event in prof.key_averages(group_by_input_shape=True) if event.self_cpu_time_total > 0]
    total = sum(event.self_cpu_time_total for event in rows) / args.passes / 1e3
    conv = sum(event.self_cpu_time_total for event in rows
               if any(name in event.key for name in CONVOLUTION_OPS)) / args.passes / 1e3
    logger.info("%s, config %s, path %s, input %s: %.2f ms per pass without the profiler; under it %.2f ms of op "
                "self time per pass, %.2f ms (%.0f %%) of it convolutions", args.model, args.config, runner.path,
                "x".join(map(str, x.shape)), wall * 1e3, total, conv, 100 * conv / total)
    for event in sorted(rows, key=lambda e: -e.self_cpu_time_total)[:args.top]:
        logger.info("%8.2f ms/pass %4d calls/pass  %-34s %s", event.self_cpu_time_total / args.passes / 1e3,
                    event.count // args.passes, event.key[:34], str(event.input_shapes)[:90])
    rates = []
    for event in rows:
        macs = one_by_one_macs(event.input_shapes) if any(n in event.key for n in CONVOLUTION_KERNELS) else None
        if macs and event.self_cpu_time_total > 0:
            rates.append(macs * event.count / (event.self_cpu_time_total * 1e-6) / 1e9)
    if rates:
        logger.info("1x1 convolutions: %d shapes at %.0f-%.0f GMAC/s (median %.0f)", len(rates), min(rates),
                    max(rates), statistics.median(rates))
    return {"wall_ms": wall * 1e3, "op_ms": total, "conv_ms": conv, "one_by_one_gmacs": rates, **gemm}


if __name__ == "__main__":
    main()
