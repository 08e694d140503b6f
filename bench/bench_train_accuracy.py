"""Accuracy of the training step settings, as whole commands: the demo's SDNet trained with ``--train-form separate``
(the authors' arithmetic), the default fast path (fused) and fused with ``--precision bf16``, each then converted,
run on SYN-TE and evaluated.

    .venv/bin/python bench/bench_train_accuracy.py [--root demo_data] [--out results/train_accuracy] [--md PATH]

The training command is ``make demo``'s (SDNet with ``--bn``, 3 epochs of four passes at 96 px, batch 8, seed 0,
one loader process, one torch thread as the demo runs it), with the variant's flags appended; maps by
``generate_salmaps_sod.py`` at 96 px in fp32; figures by ``python -m Evaluation sod``. Prints (and with ``--md``
writes) a table: training wall time, S-measure, MAE, max F, and the differences from the separate form. The data
is written with ``python -m data.synthetic`` when ``--root`` has none.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VARIANTS = (("separate", ["--train-form", "separate"]), ("fused (default)", []),
            ("fused bf16", ["--precision", "bf16"]))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default="demo_data", help="the demo's synthetic data (written if missing)")
    parser.add_argument("--out", default="results/train_accuracy", help="runs, maps and metrics of each variant")
    parser.add_argument("--variants", nargs="+", default=[name for name, _ in VARIANTS],
                        choices=[name for name, _ in VARIANTS])
    parser.add_argument("--md", default=None, help="also write the table to this Markdown file")
    return parser


def run(args: list[str]) -> float:
    """``python ARGS`` from the repository root with one torch thread (as make demo trains); its wall seconds."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    if done.returncode:
        raise SystemExit(f"{' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    root, out = Path(args.root).resolve(), Path(args.out).resolve()
    if not (root / "sod" / "SYN-TR").is_dir():
        run(["-m", "data.synthetic", "--root", str(root)])
    rows = []
    for name, flags in VARIANTS:
        if name not in args.variants:
            continue
        tag = name.split()[0] + ("_bf16" if "bf16" in name else "")
        savedir = out / f"train_{tag}"
        seconds = run(["train_sod.py", "--model", "sdnet", "--config", "sdnet", "--bn", "--datadir",
                       str(root / "sod"), "--train-data", "SYN-TR", "--val-data", "SYN-TE", "--savedir",
                       str(savedir), "--epochs", "3", "--batch-size", "8", "--size", "96", "--warmup", "1", "--seed",
                       "0", "-j", "1", "--print-freq", "0", *flags])
        converted = savedir / "sdnet_converted.pth"
        run(["convert.py", "--model", "sdnet", "--train-config", "sdnet", "--bn", "--checkpoint",
             str(savedir / "save_models" / "checkpoint_latest.pth"), "--out", str(converted)])
        run(["generate_salmaps_sod.py", "--evaluate", str(converted), "--datadir", str(root / "sod"), "--testdata",
             "SYN-TE", "--savedir", str(out / f"maps_{tag}"), "--size", "96", "-j", "1", "--no-cache"])
        run(["-m", "Evaluation", "sod", "SYN-TE", f"maps_{tag}", str(root / "sod"), "--results-dir", str(out)])
        metrics = json.loads((out / f"maps_{tag}" / "metrics_sod.json").read_text())["SYN-TE"]
        rows.append({"variant": name, "seconds": seconds, **{key: metrics[key] for key in ("Sm", "MAE", "maxF")}})
        print(json.dumps(rows[-1]), flush=True)
    reference = rows[0]
    lines = ["| variant | training s | S-measure | MAE | max F | dS vs separate | dMAE vs separate |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {row['variant']} | {row['seconds']:.0f} | {row['Sm']:.4f} | {row['MAE']:.4f} | {row['maxF']:.4f} | "
              f"{row['Sm'] - reference['Sm']:+.4f} | {row['MAE'] - reference['MAE']:+.4f} |" for row in rows]
    print("\n".join(lines))
    if args.md:
        Path(args.md).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
