"""Speed ratios of inference paths, measured in one run with the variants interleaved; memory over 1,000 passes.

Usage: python bench/bench_speed.py [--gpu 0] [--rounds 5] [--passes 10] [--json PATH]

Rows (random weights, batch 1, input on the device, median seconds per pass, design §8):
- SDNet @320 and STDNet @256 with 8-frame clips, converted: default path (`inference.prepare_for_inference`, warmed up
  to its steady state: OpenVINO on the CPU, CUDA graph on a GPU) vs ``--eager`` (plain eager NCHW float32), and,
  on the CPU, channels_last eager; the max abs difference between their maps;
- DCR ablation: SDNet @320 converted vs its multi-branch training form, both on the default path, both eager and,
  on the CPU, both channels_last eager;
- ``--script-rounds``: the speed scripts themselves, each command in its own process (as a user runs them), default
  vs ``--eager`` and converted vs training form, alternated for that many rounds: median FPS of each command;
- memory: ``--memory-passes`` passes of the default-path converted SDNet @320, resident set (CPU) or allocated
  CUDA memory after 10, 100, ... passes, and the peak.
Each round times every variant for ``--passes`` passes, in an order that alternates between rounds, so load from
other processes on a shared machine hits all variants alike. In one process the default path's allocator setting
(`utils.MALLOC_KEEP_BYTES`) also speeds up the eager variants, so the in-process ratios are conservative; the
script rounds show the ratio a user sees. The compile time of the default path on the CPU (its
first warm-up pass) is recorded too. bench/bench_backends.py compares every CPU backend in fresh processes.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

import utils  # noqa: E402
from data.atomic import write_json_atomic  # noqa: E402
from engine import inference  # noqa: E402
from engine.inference import speed  # noqa: E402
from models import build_model, convert_model, count_parameters  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Interleaved speed ratios of the inference paths, and memory.")
    parser.add_argument("--gpu", default="", help="CUDA device, e.g. 0 ('' = CPU)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds per comparison")
    parser.add_argument("--passes", type=int, default=10, help="timed passes per variant and round")
    parser.add_argument("--warmup", type=int, default=3, help="untimed passes per variant before the first round")
    parser.add_argument("--memory-passes", type=int, default=1000, help="passes of the memory run (0: skip it)")
    parser.add_argument("--script-rounds", type=int, default=0,
                        help="rounds of speed_sod.py / speed_vsod.py runs, default vs --eager (0: skip them)")
    parser.add_argument("--skip", nargs="*", default=[], choices=["sdnet", "dcr", "stdnet", "memory"],
                        help="comparisons to leave out")
    parser.add_argument("--json", default=None, metavar="PATH", help="also write the results to this JSON file")
    return parser


def first_stage(model: torch.nn.Module, device: torch.device) -> inference.InferenceRunner:
    """Eager without compiling or graph capture: channels_last on the CPU, NCHW on CUDA."""
    return inference.prepare_for_inference(model, device, backend="eager" if device.type == "cuda" else
                                           "channels_last")


def warm_up_all(variants: dict[str, inference.InferenceRunner], x: torch.Tensor, passes: int) -> dict[str, float]:
    """Warm every variant up (compiling / capturing the default path); seconds each took."""
    seconds = {}
    for name, runner in variants.items():
        start = time.perf_counter()
        runner.warm_up(x, max(passes, 1))
        seconds[name] = time.perf_counter() - start
    return seconds


def interleaved(variants: dict[str, object], x: torch.Tensor, args: argparse.Namespace) -> dict[str, dict]:
    """Median and fastest seconds per pass of each variant, timed in ``args.rounds`` alternating-order rounds."""
    times: dict[str, list[float]] = {name: [] for name in variants}
    order = list(variants)
    for round_index in range(args.rounds):
        for name in order if round_index % 2 == 0 else reversed(order):
            times[name] += speed.time_passes(variants[name], x, passes=args.passes, warmup=0)
    return {name: {"median": statistics.median(values), "min": min(values)} for name, values in times.items()}


def speedup(seconds: dict[str, dict], slow: str, fast: str) -> dict[str, float]:
    """Ratio of the ``slow`` variant's time to the ``fast`` one's, from the medians and from the fastest passes."""
    return {stat: seconds[slow][stat] / seconds[fast][stat] for stat in ("median", "min")}


def compare_paths(name: str, x: torch.Tensor, device: torch.device, args: argparse.Namespace) -> dict:
    """Converted ``name``: default path vs eager (and its first stage), timings, ratio and max abs map difference."""
    torch.manual_seed(0)
    model = build_model(name, deploy=True).eval()
    variants = {"default": inference.prepare_for_inference(model, device),
                "eager": inference.prepare_for_inference(model, device, backend="eager")}
    if device.type == "cpu":
        variants["channels_last"] = first_stage(model, device)
    record = {"model": name, "input_shape": list(x.shape), "path": variants["default"].path,
              "warm_up_s": warm_up_all(variants, x, args.warmup)}
    record["max_abs_diff"] = max((run(x) - variants["eager"](x)).abs().max().item() for run in variants.values())
    record["seconds"] = interleaved(variants, x, args)
    record["speedup_default_vs_eager"] = speedup(record["seconds"], "eager", "default")
    return record


def compare_dcr(x: torch.Tensor, device: torch.device, args: argparse.Namespace) -> dict:
    """SDNet training form (multi-branch, no BN) vs its DCR conversion, each on the default and the eager path."""
    torch.manual_seed(0)
    training = build_model("sdnet", "sdnet").eval()
    converted = convert_model(training).eval()
    variants = {"converted": inference.prepare_for_inference(converted, device),
                "training": inference.prepare_for_inference(training, device),
                "converted_eager": inference.prepare_for_inference(converted, device, backend="eager"),
                "training_eager": inference.prepare_for_inference(training, device, backend="eager")}
    if device.type == "cpu":  # the default path's first stage, which short runs stay on
        variants["converted_channels_last"] = first_stage(converted, device)
        variants["training_channels_last"] = first_stage(training, device)
    record = {"model": "sdnet", "input_shape": list(x.shape), "warm_up_s": warm_up_all(variants, x, args.warmup),
              "params": {"converted": count_parameters(converted), "training": count_parameters(training)},
              "max_abs_diff": (variants["converted"](x) - variants["training_eager"](x)).abs().max().item()}
    record["seconds"] = interleaved(variants, x, args)
    record["speedup_converted_vs_training"] = speedup(record["seconds"], "training", "converted")
    record["speedup_converted_vs_training_eager"] = speedup(record["seconds"], "training_eager", "converted_eager")
    if device.type == "cpu":
        record["speedup_converted_vs_training_channels_last"] = speedup(
            record["seconds"], "training_channels_last", "converted_channels_last")
    return record


SOD_COMMAND = ["speed_sod.py", "--model", "sdnet", "--config", "baseline", "-j", "1", "--size", "320"]
VSOD_COMMAND = ["speed_vsod.py", "--model", "stdnet", "--config", "baseline", "-j", "1", "--size", "256"]
# comparison -> (fast command, slow command), each completed by --gpu and --json
SCRIPT_PAIRS = {
    "sdnet default vs --eager": (SOD_COMMAND, SOD_COMMAND + ["--eager"]),
    "stdnet default vs --eager": (VSOD_COMMAND, VSOD_COMMAND + ["--eager"]),
    "sdnet converted vs training form (--config sdnet)": (SOD_COMMAND, [*SOD_COMMAND[:4], "sdnet", *SOD_COMMAND[5:]]),
}


def script_rounds(gpu: str, rounds: int) -> dict:
    """Median FPS of the two speed-script commands of each SCRIPT_PAIRS entry, run in fresh processes, alternating."""
    root = Path(__file__).resolve().parents[1]
    fps: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name in SCRIPT_PAIRS}
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "speed.json"
        for round_index in range(rounds):
            for name, commands in SCRIPT_PAIRS.items():
                for which in (0, 1) if round_index % 2 == 0 else (1, 0):
                    subprocess.run([sys.executable, *commands[which], "--gpu", gpu, "--json", str(out)], cwd=root,
                                   check=True, capture_output=True)
                    fps[name][which].append(json.loads(out.read_text())["fps"])
    results = {}
    for name, (fast, slow) in fps.items():
        commands = [" ".join(["python", *command, "--gpu", gpu or "''"]) for command in SCRIPT_PAIRS[name]]
        results[name] = {"commands": commands, "fps": [statistics.median(fast), statistics.median(slow)],
                         "fps_runs": [fast, slow], "speedup": statistics.median(fast) / statistics.median(slow)}
    return results


def resident_mb() -> float:
    """Current resident set of this process in MiB (Linux /proc)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def memory_run(device: torch.device, passes: int) -> dict:
    """Memory after 10, 100, ... ``passes`` default-path passes of converted SDNet @320, and the peak."""
    torch.manual_seed(0)
    runner = inference.prepare_for_inference(build_model("sdnet", deploy=True), device)
    x = torch.randn(1, 3, 320, 320, device=device)
    runner.warm_up(x)
    cuda = device.type == "cuda"
    checkpoints = sorted({n for n in (10, 100, 250, 500, passes) if n <= passes})
    memory, done = {}, 0
    for checkpoint in checkpoints:
        speed.time_passes(runner, x, passes=checkpoint - done, warmup=0)
        done = checkpoint
        memory[checkpoint] = torch.cuda.memory_allocated(device) / 2**20 if cuda else resident_mb()
    return {"passes": passes, "measure": "cuda_allocated_mb" if cuda else "rss_mb", "after_passes": memory,
            "peak_mb": speed.peak_memory_mb(device), "growth_mb_after_100": memory[passes] - memory.get(100, 0.0)}


def report(results: dict) -> str:
    """Markdown lines summarising ``results``."""
    lines = [f"device {results['device']} ({results['device_name']}), torch {results['torch']}, "
             f"{results['threads']} threads, {results['rounds']} rounds x {results['passes']} passes per variant"]
    for key in ("sdnet", "stdnet"):
        if key in results:
            r = results[key]
            frames = r["input_shape"][1] // 3
            times = ", ".join(f"{name} {1e3 * s['median']:.1f} ms ({frames / s['median']:.1f} frames/s, fastest "
                              f"{1e3 * s['min']:.1f} ms)" for name, s in r["seconds"].items())
            ratio = r["speedup_default_vs_eager"]
            lines.append(f"{key} {'x'.join(map(str, r['input_shape']))}: {times}; default/eager speed-up "
                         f"{ratio['median']:.2f}x (fastest passes: {ratio['min']:.2f}x), max abs diff "
                         f"{r['max_abs_diff']:.1e}; warm-up (compile) {r['warm_up_s']['default']:.1f} s")
    if "dcr" in results:
        r = results["dcr"]
        times = ", ".join(f"{name} {1e3 * s['median']:.1f} ms (fastest {1e3 * s['min']:.1f})"
                          for name, s in r["seconds"].items())
        default, eager = r["speedup_converted_vs_training"], r["speedup_converted_vs_training_eager"]
        lines.append(f"DCR sdnet @320: {times}; converted/training speed-up {default['median']:.2f}x (fastest "
                     f"passes: {default['min']:.2f}x) on the default path, {eager['median']:.2f}x ("
                     f"{eager['min']:.2f}x) eager; max abs diff {r['max_abs_diff']:.1e}")
        if "speedup_converted_vs_training_channels_last" in r:
            first = r["speedup_converted_vs_training_channels_last"]
            lines[-1] += f"; {first['median']:.2f}x ({first['min']:.2f}x) channels_last without compiling"
    for name, r in results.get("scripts", {}).items():
        lines.append(f"{name}: {r['speedup']:.2f}x ({r['commands'][0]}: {r['fps'][0]:.1f} FPS; {r['commands'][1]}: "
                     f"{r['fps'][1]:.1f} FPS; medians of {len(r['fps_runs'][0])} runs each)")
    if "memory" in results:
        r = results["memory"]
        after = ", ".join(f"{n}: {mb:.1f}" for n, mb in r["after_passes"].items())
        lines.append(f"memory ({r['measure']}) after passes {after}; peak {r['peak_mb']:.1f} MiB")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.passes < 1 or min(args.warmup, args.memory_passes, args.script_rounds) < 0:
        parser.error("--rounds and --passes must be at least 1, --warmup, --memory-passes and --script-rounds at "
                     "least 0")
    logger = utils.setup_logger()
    device = utils.select_device(args.gpu)
    results = {"device": str(device), "device_name": speed.device_name(device), "torch": torch.__version__,
               "threads": torch.get_num_threads(), "rounds": args.rounds, "passes": args.passes,
               "date": time.strftime("%Y-%m-%d %H:%M")}
    image = torch.randn(1, 3, 320, 320, device=device)
    if "sdnet" not in args.skip:
        results["sdnet"] = compare_paths("sdnet", image, device, args)
    if "dcr" not in args.skip:
        results["dcr"] = compare_dcr(image, device, args)
    if "stdnet" not in args.skip:
        results["stdnet"] = compare_paths("stdnet", torch.randn(1, 24, 256, 256, device=device), device, args)
    if args.script_rounds:
        results["scripts"] = script_rounds(args.gpu, args.script_rounds)
    if "memory" not in args.skip and args.memory_passes:
        results["memory"] = memory_run(device, args.memory_passes)
    for line in report(results).splitlines():
        logger.info(line)
    if args.json:
        write_json_atomic(args.json, results)
    return results


if __name__ == "__main__":
    main()
