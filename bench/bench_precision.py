"""fp32 against bf16 (``--precision bf16``, OpenVINO on CPUs with native bf16): the maps' accuracy and the speed, as
whole commands.

    .venv/bin/python bench/bench_precision.py [--root demo_data] [--results results] [--rounds 3] [--md PATH]

Needs ``make demo`` first (its synthetic data and its trained SDNet and STDNet). Three tables:

1. *Accuracy on the demo's data*: ``generate_salmaps_sod.py`` with the demo's converted SDNet on SYN-TE and
   ``generate_salmaps_vsod.py`` with its STDNet on SYN-V-test, at the demo's size, once with each precision, each
   evaluated by ``python -m Evaluation``: S-measure, MAE and max F, their differences, and the maps' difference in
   grey levels (mean and max over all pixels).
2. *The released checkpoints* (``../shared/reference``): the authors' SDNet and SDNet-A on their golden photos, and
   the golden STDNet / STDNet-A weights on the golden clip, at the inputs' sizes: bf16 maps against fp32 in grey
   levels (mean and max), through `engine.inference.Predictor` as the scripts run them.
3. *Speed as commands*: ``speed_sod.py --model sdnet --size 320`` and ``speed_vsod.py --model stdnet --size 256``
   with ``--precision fp32``, ``--precision bf16`` and ``--eager``, each in its own process, alternated for
   ``--rounds`` rounds: median FPS and the ratios.
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

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
REFERENCE = REPO.parent / "shared" / "reference"
PRECISIONS = ("fp32", "bf16")
RELEASED = {"sdnet": ("checkpoints/sdnet_from_scratch.pth", "golden/sdnet_golden_io.npz"),
            "sdneta": ("checkpoints/sdneta_from_pretrained.pth", "golden/sdneta_golden_io.npz"),
            "stdnet": ("golden/stdnet_golden_weights.pth", "golden/stdnet_golden_io.npz"),
            "stdneta": ("golden/stdneta_golden_weights.pth", "golden/stdneta_golden_io.npz")}
SPEED_COMMANDS = {"sdnet @320": ["speed_sod.py", "--model", "sdnet", "--config", "baseline", "-j", "1", "--size",
                                 "320"],
                  "stdnet @256": ["speed_vsod.py", "--model", "stdnet", "--config", "baseline", "-j", "1",
                                  "--size", "256"]}
VARIANTS = {"fp32": ["--precision", "fp32"], "bf16": ["--precision", "bf16"], "eager": ["--eager"]}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default=str(REPO / "demo_data"), help="the demo's synthetic data")
    parser.add_argument("--results", default=str(REPO / "results"), help="the demo's results folder")
    parser.add_argument("--rounds", type=int, default=3, help="alternated rounds of the speed commands (0: none)")
    parser.add_argument("--md", default=None, metavar="PATH", help="also write the tables to this Markdown file")
    return parser


def run(command: list[str]) -> None:
    done = subprocess.run([sys.executable, *command], cwd=REPO, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")


def grey_levels(first: Path, second: Path) -> tuple[float, int, int]:
    """Mean and max absolute difference in grey levels over the PNG maps below two folders, and the map count."""
    total, largest, pixels, count = 0.0, 0, 0, 0
    for path in sorted(first.rglob("*.png")):
        a = cv2.imread(str(path), cv2.IMREAD_UNCHANGED).astype(int)
        b = cv2.imread(str(second / path.relative_to(first)), cv2.IMREAD_UNCHANGED).astype(int)
        difference = np.abs(a - b)
        total, largest, pixels, count = total + difference.sum(), max(largest, int(difference.max())), \
            pixels + difference.size, count + 1
    return total / pixels, largest, count


def demo_accuracy(root: Path, results: Path, scratch: Path) -> list[dict]:
    """Table 1: the demo's SDNet on SYN-TE and STDNet on SYN-V-test with each precision."""
    sdnet = results / "demo_train_sdnet" / "sdnet_converted.pth"
    stdnet = results / "demo_train_stdnet" / "save_models" / "checkpoint_latest.pth"
    lists = root / "lists" / "test_video_lst.txt"
    rows = []
    for label, dataset, task in (("SDNet", "SYN-TE", "sod"), ("STDNet", "SYN-V-test", "vsod")):
        metrics = {}
        for precision in PRECISIONS:
            exp = f"precision_{task}_{precision}"
            if task == "sod":
                run(["generate_salmaps_sod.py", "--evaluate", str(sdnet), "--datadir", str(root / "sod"),
                     "--testdata", dataset, "--savedir", str(scratch / exp), "--size", "96", "-j", "1",
                     "--precision", precision, "--no-cache"])
                run(["-m", "Evaluation", "sod", dataset, exp, str(root / "sod"), "--results-dir", str(scratch)])
            else:
                run(["generate_salmaps_vsod.py", "--evaluate", str(stdnet), "--datadir", str(root), "--testdata",
                     dataset, "--test-lst", str(lists), "--savedir", str(scratch / exp), "--size", "96", "-j", "1",
                     "--tid", "cv", "cd", "ad", "--precision", precision, "--no-cache"])
                run(["-m", "Evaluation", "vsod", dataset, exp, str(root), "--results-dir", str(scratch),
                     "--test-lst", str(lists)])
            metrics[precision] = json.loads((scratch / exp / f"metrics_{task}.json").read_text())[dataset]
        mean, largest, count = grey_levels(scratch / f"precision_{task}_fp32" / dataset,
                                           scratch / f"precision_{task}_bf16" / dataset)
        rows.append({"model": label, "dataset": dataset, "maps": count, "grey_mean": mean, "grey_max": largest,
                     **{f"{key}_{p}": metrics[p][key] for key in ("Sm", "MAE", "maxF") for p in PRECISIONS}})
    return rows


def released_accuracy() -> list[dict]:
    """Table 2: bf16 against fp32 on the released checkpoints' golden inputs, in grey levels."""
    import torch

    from engine.inference import ModelInput, Predictor, prepare_for_inference
    from models import load_model

    rows = []
    for name, (checkpoint, golden) in RELEASED.items():
        video = name.startswith("st")
        model, description = load_model(REFERENCE / checkpoint, kind="video" if video else "image",
                                        tid=("cv", "cd", "ad") if video else None)
        inputs = torch.from_numpy(np.load(REFERENCE / golden)["input"])
        maps = {}
        for precision in PRECISIONS:
            predictor = Predictor(prepare_for_inference(model, "cpu", precision=precision),
                                  ModelInput.of(description, full_resolution=True))
            items = ((i, inputs[i], tuple(inputs.shape[2:])) for i in range(len(inputs)))
            found = predictor.clips(items) if video else ((i, m[None]) for i, m in predictor.images(items))
            maps[precision] = np.concatenate([out for _, out in found]).astype(int)
        difference = np.abs(maps["fp32"] - maps["bf16"])
        rows.append({"model": name, "checkpoint": checkpoint, "maps": len(difference),
                     "size": "x".join(map(str, inputs.shape[2:])), "grey_mean": float(difference.mean()),
                     "grey_max": int(difference.max()), "changed": float((difference > 0).mean())})
    return rows


def speed_rounds(rounds: int, scratch: Path) -> list[dict]:
    """Table 3: the speed commands with each variant, alternated; median FPS."""
    fps: dict[tuple[str, str], list[float]] = {}
    out = scratch / "speed.json"
    for index in range(rounds):
        for label, command in SPEED_COMMANDS.items():
            order = list(VARIANTS) if index % 2 == 0 else list(reversed(VARIANTS))
            for variant in order:
                run([*command, *VARIANTS[variant], "--json", str(out)])
                record = json.loads(out.read_text())
                assert record["path"] == ("eager+fp32" if variant == "eager" else f"openvino+{variant}"), record
                fps.setdefault((label, variant), []).append(record["fps"])
    rows = []
    for label, command in SPEED_COMMANDS.items():
        median = {variant: statistics.median(fps[(label, variant)]) for variant in VARIANTS}
        rows.append({"command": "python " + " ".join(command), **{f"fps_{v}": median[v] for v in VARIANTS},
                     "runs": {v: fps[(label, v)] for v in VARIANTS},
                     "bf16_vs_fp32": median["bf16"] / median["fp32"],
                     "fp32_vs_eager": median["fp32"] / median["eager"],
                     "bf16_vs_eager": median["bf16"] / median["eager"]})
    return rows


def markdown(demo: list[dict], released: list[dict], speed: list[dict]) -> str:
    lines = ["| model, data | maps | S fp32 / bf16 (ΔS) | MAE fp32 / bf16 (ΔMAE) | max F fp32 / bf16 (ΔF) | "
             "grey levels mean / max |", "|---|---:|---:|---:|---:|---:|"]
    for row in demo:
        cells = [f"{row[f'{k}_fp32']:.4f} / {row[f'{k}_bf16']:.4f} ({row[f'{k}_bf16'] - row[f'{k}_fp32']:+.4f})"
                 for k in ("Sm", "MAE", "maxF")]
        lines.append(f"| {row['model']} on {row['dataset']} | {row['maps']} | {' | '.join(cells)} | "
                     f"{row['grey_mean']:.3f} / {row['grey_max']} |")
    lines += ["", "| released weights | maps | size | grey levels mean / max | pixels changed |",
              "|---|---:|---:|---:|---:|"]
    for row in released:
        lines.append(f"| {row['model']} ({row['checkpoint']}) | {row['maps']} | {row['size']} | "
                     f"{row['grey_mean']:.3f} / {row['grey_max']} | {100 * row['changed']:.1f} % |")
    if speed:
        lines += ["", "| command | fp32 FPS | bf16 FPS | --eager FPS | bf16 / fp32 | fp32 / eager | bf16 / eager |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        for row in speed:
            lines.append(f"| `{row['command']}` | {row['fps_fp32']:.1f} | {row['fps_bf16']:.1f} | "
                         f"{row['fps_eager']:.1f} | {row['bf16_vs_fp32']:.2f}x | {row['fp32_vs_eager']:.2f}x | "
                         f"{row['bf16_vs_eager']:.2f}x |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    import torch

    from engine.inference.backends.openvino import native_bf16
    from engine.inference.speed import device_name

    if not native_bf16():
        raise SystemExit("bench_precision: this CPU has no native bf16 (AVX512-BF16 or AMX)")
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    with tempfile.TemporaryDirectory(prefix="bench-precision-") as scratch:
        demo = demo_accuracy(Path(args.root).resolve(), Path(args.results).resolve(), Path(scratch))
        released = released_accuracy()
        speed = speed_rounds(args.rounds, Path(scratch))
    header = (f"{started} to {time.strftime('%H:%M UTC', time.gmtime())}, {device_name(torch.device('cpu'))}, "
              f"torch {torch.__version__}")
    table = markdown(demo, released, speed)
    print(header + "\n\n" + table)
    if args.md:
        Path(args.md).write_text(header + "\n\n" + table + "\n")
    return {"header": header, "demo": demo, "released": released, "speed": speed}


if __name__ == "__main__":
    main()
