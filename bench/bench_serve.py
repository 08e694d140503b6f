"""Load on serve.py: N concurrent clients posting real photos of several sizes over loopback, against predict.py on a
folder of the same photos; requests/s, latency percentiles, errors, and the server's resident memory every
``--rss-every`` requests. Bounded in requests and in time; it stops by itself.

Usage: .venv/bin/python bench/bench_serve.py [--checkpoint PATH] [--clients 8] [--requests 5000] [--max-seconds 900]
       [--size 320] [--md PATH]

The photos: matplotlib's sample photograph (grace_hopper.jpg, 512 x 600) at 0.5x, 1x and 2x, and turned, so that
the requests have four sizes. The checkpoint defaults to the released SDNet (../shared/reference/checkpoints/
sdnet_from_scratch.pth) where present, else random SDNet weights. predict.py runs once over a folder holding each
photo ``--folder-copies`` times (its images/s, reading and writing included, is the throughput to compare with).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RELEASED = REPO.parent / "shared" / "reference" / "checkpoints" / "sdnet_from_scratch.pth"


def photos(folder: Path) -> list[Path]:
    """The sample photograph at four sizes, as JPEG files in ``folder``."""
    import cv2
    import matplotlib.cbook

    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as file:
        data = file.read()
    import numpy as np

    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    variants = {"half": cv2.resize(image, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA), "full": image,
                "double": cv2.resize(image, None, fx=2, fy=2, interpolation=cv2.INTER_LINEAR),
                "turned": cv2.rotate(image, cv2.ROTATE_90_CLOCKWISE)}
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, variant in variants.items():
        paths.append(folder / f"{name}.jpg")
        cv2.imwrite(str(paths[-1]), variant, [cv2.IMWRITE_JPEG_QUALITY, 92])
    return paths


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def wait_until_ready(url: str, seconds: float) -> None:
    """Poll ``url``/health until the server says it is ready, for at most ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.2)


def post(url: str, data: bytes) -> int:
    request = urllib.request.Request(url, data=data, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            response.read()
            return response.status
    except urllib.error.HTTPError as err:
        return err.code
    except OSError:
        return -1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", default=None, help="default: the released SDNet, else random weights")
    parser.add_argument("--size", type=int, default=320)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=5000, help="requests in all (the bound)")
    parser.add_argument("--max-seconds", type=float, default=900, help="the other bound: stop after this long")
    parser.add_argument("--rss-every", type=int, default=500, help="read the server's RSS every this many requests")
    parser.add_argument("--folder-copies", type=int, default=25, help="copies of each photo in predict.py's folder")
    parser.add_argument("--md", default=None, help="also write the table to this Markdown file")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    python = str(REPO / ".venv" / "bin" / "python") if (REPO / ".venv").is_dir() else sys.executable
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        checkpoint = Path(args.checkpoint) if args.checkpoint else RELEASED
        if not checkpoint.is_file():
            checkpoint = scratch / "sdnet.pth"
            subprocess.run([python, "-c", "import torch; from models import build_model; torch.manual_seed(0); "
                            f"torch.save(build_model('sdnet').state_dict(), {str(checkpoint)!r})"], check=True,
                           cwd=REPO, env=env)
        images = photos(scratch / "photos")
        folder = scratch / "folder"
        folder.mkdir()
        for copy in range(args.folder_copies):
            for image in images:
                shutil.copy(image, folder / f"{image.stem}_{copy:03d}.jpg")
        count = len(list(folder.iterdir()))
        start = time.perf_counter()
        subprocess.run([python, "predict.py", "--checkpoint", str(checkpoint), "--size", str(args.size), "--out",
                        str(scratch / "maps"), str(folder)], check=True, cwd=REPO, env=env, capture_output=True)
        predict_rate = count / (time.perf_counter() - start)
        print(f"predict.py: {count} photos, {predict_rate:.2f} images/s (reading, network and writing)", flush=True)

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        server = subprocess.Popen([python, "serve.py", "--checkpoint", str(checkpoint), "--size", str(args.size),
                                   "--port", str(port)], cwd=REPO, env=env, stderr=subprocess.PIPE, text=True,
                                  start_new_session=True)
        url = f"http://127.0.0.1:{port}"
        try:
            wait_until_ready(url, 120)
            bodies = [image.read_bytes() for image in images]
            for body in bodies:  # every shape prepared once, as predict.py's run prepares its own
                post(f"{url}/v1/saliency", body)
            latencies, statuses, rss, lock = [], [], [], threading.Lock()
            issued = [0]
            stop_at = time.monotonic() + args.max_seconds

            def client() -> None:
                while True:
                    with lock:
                        if issued[0] >= args.requests or time.monotonic() > stop_at:
                            return
                        index = issued[0]
                        issued[0] += 1
                    began = time.perf_counter()
                    status = post(f"{url}/v1/saliency", bodies[index % len(bodies)])
                    with lock:
                        latencies.append(time.perf_counter() - began)
                        statuses.append(status)
                        if len(statuses) % args.rss_every == 0:
                            rss.append((len(statuses), rss_mib(server.pid)))

            start = time.perf_counter()
            threads = [threading.Thread(target=client) for _ in range(args.clients)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            seconds = time.perf_counter() - start
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(30)
    done = len(statuses)
    errors = sum(status != 200 for status in statuses)
    quantiles = statistics.quantiles(latencies, n=100)
    result = {"checkpoint": checkpoint.name, "size": args.size, "clients": args.clients, "requests": done,
              "errors": errors, "seconds": seconds, "requests_per_s": done / seconds,
              "predict_images_per_s": predict_rate, "ratio_to_predict": done / seconds / predict_rate,
              "latency_p50_s": quantiles[49], "latency_p95_s": quantiles[94], "latency_p99_s": quantiles[98],
              "rss_mib": rss}
    print(json.dumps(result, indent=1))
    lines = ["| clients | requests | errors | requests/s | predict.py images/s | ratio | p50 s | p95 s | p99 s | "
             "RSS at first / last reading |", "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
             f"| {args.clients} | {done} | {errors} | {done / seconds:.2f} | {predict_rate:.2f} | "
             f"{done / seconds / predict_rate:.2f} | {quantiles[49]:.3f} | {quantiles[94]:.3f} | "
             f"{quantiles[98]:.3f} | "
             + (f"{rss[0][1]:.0f} MiB at {rss[0][0]} / {rss[-1][1]:.0f} MiB at {rss[-1][0]}" if rss else "-") + " |"]
    print("\n".join(lines))
    if args.md:
        Path(args.md).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
