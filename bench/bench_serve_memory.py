"""The memory of serve.py under large photos: N concurrent uploads of one M-megapixel JPEG (all under every cap),
the server's resident memory sampled every 20 ms: idle before, peak (and the kernel's high-water mark), and after
(2 s and 10 s after the last answer), with the answers' statuses. Bounded: N requests, each with a 300 s timeout.

Usage: .venv/bin/python bench/bench_serve_memory.py [--concurrent 16] [--megapixels 62] [--output png]
       [--env NAME=VALUE ...] [-- serve.py flags ...]

The photo is drawn (smooth gradients and shapes, JPEG quality 90: about 2 MB at 62 megapixels, as a phone's
photo); the checkpoint is random SDNet weights (memory does not depend on them).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def drawn_photo(megapixels: float) -> bytes:
    """A JPEG of about ``megapixels`` (4:3), smooth like a photo, so that it is small as a file and large decoded."""
    import cv2
    import numpy as np

    width = int(round((megapixels * 1e6 * 4 / 3) ** 0.5))
    height = int(round(megapixels * 1e6 / width))
    ys, xs = np.mgrid[0:height:8, 0:width:8].astype(np.float32)
    small = np.dstack([xs / width * 255, ys / height * 255, (xs + ys) / (width + height) * 255]).astype(np.uint8)
    image = cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)
    for index in range(12):
        centre = (width * (index + 1) // 13, height * ((index * 5) % 11 + 1) // 12)
        cv2.circle(image, centre, min(width, height) // 9, (40 * index % 255, 200, 90), -1)
    return cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()


def memory_kib(pid: int) -> dict[str, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            fields[line.split(":")[0]] = int(line.split()[1])
    return fields


def post(url: str, data: bytes) -> int:
    request = urllib.request.Request(url, data=data, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=300) as response:
            response.read()
            return response.status
    except urllib.error.HTTPError as err:
        return err.code
    except OSError:
        return -1


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    serve_flags = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concurrent", type=int, default=16)
    parser.add_argument("--megapixels", type=float, default=62.0)
    parser.add_argument("--output", default="png", choices=("png", "overlay", "cutout", "json"))
    parser.add_argument("--env", action="append", default=[], help="NAME=VALUE in the server's environment")
    args = parser.parse_args(argv)
    python = str(REPO / ".venv" / "bin" / "python") if (REPO / ".venv").is_dir() else sys.executable
    env = {**os.environ, "PYTHONPATH": str(REPO), **dict(item.split("=", 1) for item in args.env)}
    photo = drawn_photo(args.megapixels)
    with tempfile.TemporaryDirectory() as scratch:
        checkpoint = Path(scratch) / "sdnet.pth"
        subprocess.run([python, "-c", "import torch; from models import build_model; torch.manual_seed(0); "
                        f"torch.save(build_model('sdnet').state_dict(), {str(checkpoint)!r})"], check=True,
                       cwd=REPO, env=env)
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        server = subprocess.Popen([python, "serve.py", "--checkpoint", str(checkpoint), "--port", str(port),
                                   "--timeout", "600", *serve_flags], cwd=REPO, env=env, stderr=subprocess.PIPE,
                                  text=True, start_new_session=True)
        url = f"http://127.0.0.1:{port}"
        samples: list[int] = []
        try:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                try:
                    with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                        if response.status == 200:
                            break
                except OSError:
                    time.sleep(0.2)
            startup = [server.stderr.readline().strip().split(" INFO ")[-1] for _ in range(2)]
            time.sleep(1)
            idle = memory_kib(server.pid)["VmRSS"]
            done = threading.Event()

            def sample() -> None:
                while not done.is_set():
                    samples.append(memory_kib(server.pid)["VmRSS"])
                    time.sleep(0.02)

            sampler = threading.Thread(target=sample)
            sampler.start()
            start = time.perf_counter()
            with ThreadPoolExecutor(args.concurrent) as pool:
                statuses = list(pool.map(lambda _: post(f"{url}/v1/saliency?output={args.output}", photo),
                                         range(args.concurrent)))
            seconds = time.perf_counter() - start
            done.set()
            sampler.join()
            time.sleep(2)
            after_2 = memory_kib(server.pid)
            time.sleep(8)
            after_10 = memory_kib(server.pid)["VmRSS"]
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(30)
    mib = 1 / 1024
    result = {"megapixels": args.megapixels, "photo_bytes": len(photo), "concurrent": args.concurrent,
              "output": args.output, "serve_flags": serve_flags, "env": args.env, "startup": startup,
              "statuses": {str(code): statuses.count(code) for code in sorted(set(statuses))},
              "seconds": round(seconds, 1), "idle_mib": round(idle * mib), "peak_mib": round(max(samples) * mib),
              "high_water_mib": round(after_2["VmHWM"] * mib), "after_2s_mib": round(after_2["VmRSS"] * mib),
              "after_10s_mib": round(after_10 * mib)}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
