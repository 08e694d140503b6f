"""One training epoch as a whole command: ``train_sod.py`` for one epoch on the demo's synthetic SYN-TR with
validation on SYN-TE, with this checkout's code and, for comparison, another commit's (checked out in a temporary
git worktree), the same flags; the wall time of each command.

    .venv/bin/python bench/bench_train_epoch.py [--root demo_data] [--base 70045c3] [--md PATH]

Rows: the base commit with the flags alone; this code with the flags alone, ``--precision bf16`` (where the CPU has
native bf16), ``-j 2`` and ``--threads 1``. Each command runs in its own process with this repository's Python;
the data is written with ``python -m data.synthetic`` when ``--root`` has none. Prints (and with ``--md`` writes)
a table: wall time, the epoch's own seconds and training images/s from ``log.jsonl``, the SYN-TE MAE.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FLAGS = ["--train-data", "SYN-TR", "--val-data", "SYN-TE", "--size", "160", "--batch-size", "8", "--epochs", "1",
         "--seed", "0", "--print-freq", "0", "-j", "4"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default="demo_data", help="the demo's synthetic data (written if missing)")
    parser.add_argument("--base", default="70045c3", help="the commit to compare with (its train_sod.py)")
    parser.add_argument("--md", default=None, help="also write the table to this Markdown file")
    return parser


def epoch(code: Path, root: Path, savedir: Path, extra: list[str]) -> dict:
    """Run one epoch with the ``train_sod.py`` of ``code``; wall seconds and the epoch's log.jsonl line."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "train_sod.py", "--datadir", str(root / "sod"), "--savedir", str(savedir),
                           *FLAGS, *extra], cwd=code, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"train_sod.py {' '.join(extra)} in {code} failed:\n{done.stderr[-3000:]}")
    line = json.loads((savedir / "log.jsonl").read_text().splitlines()[0])
    return {"wall": wall, "seconds": line["seconds"], "images_per_s": line["images_per_s"],
            "mae": line["val_mae"]["SYN-TE"]}


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    sys.path.insert(0, str(REPO))
    from engine.hardware import cpu_has_native_bf16

    root = Path(args.root).resolve()
    if not (root / "sod" / "SYN-TR").is_dir():
        subprocess.run([sys.executable, "-m", "data.synthetic", "--root", str(root)], cwd=REPO, check=True)
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        base = scratch / "base"
        subprocess.run(["git", "worktree", "add", "--detach", str(base), args.base], cwd=REPO, check=True,
                       capture_output=True)
        try:
            rows.append((f"{args.base} (before)", epoch(base, root, scratch / "run_base", [])))
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(base)], cwd=REPO, check=True)
        variants = [("this code, default", [])]
        if cpu_has_native_bf16():
            variants.append(("this code, --precision bf16", ["--precision", "bf16"]))
        variants += [("this code, -j 2", ["-j", "2"]), ("this code, --threads 1", ["--threads", "1"])]
        for index, (label, extra) in enumerate(variants):
            rows.append((label, epoch(REPO, root, scratch / f"run_{index}", extra)))
            print(label, json.dumps(rows[-1][1]), flush=True)
    before = rows[0][1]["wall"]
    lines = ["| code, flags | wall time | vs before | epoch s | training images/s | SYN-TE MAE |",
             "|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {label} | {row['wall']:.1f} s | {before / row['wall']:.2f}x | {row['seconds']:.1f} | "
              f"{row['images_per_s']:.1f} | {row['mae']:.4f} |" for label, row in rows]
    print("\n".join(lines))
    if args.md:
        Path(args.md).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
