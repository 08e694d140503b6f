"""What a decompression bomb costs: predict.py and generate_salmaps_sod.py on two good photos and one hostile PNG,
with this code and with a base commit (a git worktree): wall time, peak memory (the command's process and the
loader workers it waited for) and exit status.

Usage: .venv/bin/python bench/bench_bad_input.py [--base c24422d] [--bomb 20000] [--md PATH]

The bomb is a grey PNG of --bomb x --bomb black pixels (20000: 400 megapixels in under 1 MB, the issue's "real
20000 x 20000 single-colour PNG"); the photos are two images of the bundled synthetic test set; the checkpoint has
random weights (SDNet), --size 64.
"""

from __future__ import annotations

import argparse
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def bomb_png(side: int) -> bytes:
    """A grey 8-bit PNG of side x side black pixels, compressed one row at a time."""
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    compressor, row = zlib.compressobj(9), bytes(side + 1)
    idat = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def measured(command: list[str], cwd: Path) -> dict:
    """Exit status, wall seconds and peak RSS (MiB) of ``command`` run through a fresh wrapper process."""
    wrapper = ("import resource, subprocess, sys; code = subprocess.call(sys.argv[1:], stdout=subprocess.DEVNULL, "
               "stderr=subprocess.DEVNULL); print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); "
               "sys.exit(code)")
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", wrapper, *command], cwd=cwd, capture_output=True, text=True,
                            env={"PYTHONPATH": str(cwd), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    return {"status": result.returncode, "seconds": time.perf_counter() - start,
            "peak_mib": int(result.stdout.split()[-1]) / 1024}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", default="c24422d", help="the commit to compare with")
    parser.add_argument("--bomb", type=int, default=20000, help="side of the hostile PNG in pixels")
    parser.add_argument("--md", default=None, help="also write the table to this Markdown file")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO))
    import torch

    from data.synthetic import SyntheticSizes, generate
    from models import build_model

    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        generate(scratch / "data", 0, SyntheticSizes(sod_train=1, sod_test=2, video_train=1, video_test=1,
                                                     min_frames=8, max_frames=8), workers=0)
        torch.manual_seed(0)
        torch.save(build_model("sdnet").state_dict(), scratch / "sdnet.pth")
        test_set = scratch / "data" / "sod" / "SYN-TE"
        folder = scratch / "photos"
        shutil.copytree(test_set / "images", folder)
        (test_set / "images" / "zz_bomb.png").write_bytes(bomb_png(args.bomb))
        (folder / "zz_bomb.png").write_bytes(bomb_png(args.bomb))
        base = scratch / "base"
        subprocess.run(["git", "worktree", "add", "--detach", str(base), args.base], cwd=REPO, check=True,
                       capture_output=True)
        try:
            for label, code in ((f"{args.base} (before)", base), ("this code", REPO)):
                python = str(REPO / ".venv" / "bin" / "python") if (REPO / ".venv").is_dir() else sys.executable
                commands = {
                    "predict.py": [python, "predict.py", "--checkpoint", str(scratch / "sdnet.pth"), "--size", "64",
                                   "--out", str(scratch / f"out_{len(rows)}"), str(folder)],
                    "generate_salmaps_sod.py": [python, "generate_salmaps_sod.py", "--evaluate",
                                                str(scratch / "sdnet.pth"), "--datadir", str(scratch / "data" / "sod"),
                                                "--testdata", "SYN-TE", "--savedir",
                                                str(scratch / f"maps_{len(rows)}"), "--size", "64"],
                }
                for script, command in commands.items():
                    rows.append((label, script, measured(command, code)))
                    print(rows[-1], flush=True)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(base)], cwd=REPO, check=True)
    lines = [f"| code | script (2 photos + one {args.bomb}x{args.bomb} PNG) | exit | wall s | peak MiB |",
             "|---|---|---:|---:|---:|"]
    lines += [f"| {label} | {script} | {r['status']} | {r['seconds']:.1f} | {r['peak_mib']:.0f} |"
              for label, script, r in rows]
    print("\n".join(lines))
    if args.md:
        Path(args.md).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
