"""The page's device mode in headless Chromium against OpenVINO fp32 on the same cores, in one run.

    .venv/bin/python bench/bench_browser.py [--sizes 320 224] [--threads 1 2] [--rounds 5] [--passes 10] [--md PATH]
        [--checkpoint PATH [--nframes T]]

For the released SDNet (or ``--checkpoint``: a video model runs a photo as a still clip of its ``--nframes``, the
cost of each map in the camera's clips too) at each size: the static site (`python -m engine.serving.site`) served
on 127.0.0.1 with its isolation headers; for each WASM thread count a fresh browser opens ``/?threads=N`` (device
mode), and the page's own clock gives the *cold first map*: the page's navigation start to its network loaded (page,
runtime, model: ``data-loaded-at``) plus the first pass on a real photo (scikit-image's chelsea, 451 x 300: resize,
network, map at the photo's size). Then rounds alternate, each ``--passes`` maps through the browser (each thread
count, its page kept open) and as many through `engine.inference.prepare_for_inference` with OpenVINO fp32 on the
same thread counts: *warm per map* is the median over the rounds of each round's median, for the network pass alone
(``network``) and for the whole map (``total``: the page's resize and upsampling included; OpenVINO's runner pass is
its network alone). Chromium's version and the CPU model are printed with the table.
"""

from __future__ import annotations

import argparse
import base64
import functools
import http.server
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
CHECKPOINT = REPO.parent / "shared" / "reference" / "checkpoints" / "sdnet_from_scratch.pth"

# One map through the page's loaded network: the photo's pixels decoded once, then `passes` runs timed in the page.
_RUN_PASSES = """
const [photo, passes, done] = arguments;
(async () => {
  const {device, loaded} = await deviceNetwork();
  const blob = await (await fetch(photo)).blob();
  const picture = await device.decode(blob);
  const times = [];
  for (let i = 0; i < passes; i++) {
    const answer = await loaded.run(picture.rgba, picture.width, picture.height);
    times.push(answer.seconds);
  }
  done({runtime: loaded.runtime, times, loadedAt: Number(document.getElementById("runtime").dataset.loadedAt)});
})().catch(err => done({error: String(err)}));
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[320, 224])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--passes", type=int, default=10)
    parser.add_argument("--md", default=None, metavar="PATH", help="also write the Markdown table here")
    parser.add_argument("--checkpoint", default=str(CHECKPOINT), help="default: the released SDNet")
    parser.add_argument("--nframes", type=int, default=None, help="a video model's frames per clip (default: 8)")
    return parser


def chromium():
    from selenium import webdriver

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or shutil.which("chromium-browser")
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options,
                              service=webdriver.ChromeService(executable_path=shutil.which("chromedriver")))
    driver.set_script_timeout(600)
    return driver


def photo_data_url() -> str:
    import cv2
    import skimage.data

    ok, png = cv2.imencode(".png", cv2.cvtColor(skimage.data.chelsea(), cv2.COLOR_RGB2BGR))
    return "data:image/png;base64," + base64.b64encode(png.tobytes()).decode()


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    import torch

    from engine import inference
    from engine.inference.speed import device_name
    from engine.serving import site
    from engine.serving.site import IsolatedFiles
    from models import load_model

    photo = photo_data_url()
    options = {"nframes": args.nframes} if args.nframes else {}
    model, description = load_model(args.checkpoint, **options)
    frames = (description.nframes or 8) if description.kind == "video" else 1
    name = {"sdnet": "SDNet", "sdneta": "SDNet-A", "stdnet": "STDNet", "stdneta": "STDNet-A"}[description.model] + \
        (f", clip of {frames}" if frames > 1 else "")
    version = subprocess.run([shutil.which("chromium") or "chromium", "--version"], capture_output=True,
                             text=True).stdout.strip()
    rows = []
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    for size in args.sizes:
        with tempfile.TemporaryDirectory(prefix="sdnet-site-") as folder:
            site.main(["--checkpoint", str(args.checkpoint), "--size", str(size), "--out", folder,
                       *(["--nframes", str(frames)] if frames > 1 else [])])
            handler = functools.partial(IsolatedFiles, directory=folder)
            files = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
            threading.Thread(target=files.serve_forever, daemon=True).start()
            url = f"http://127.0.0.1:{files.server_address[1]}/"
            drivers, cold, browser, openvino = {}, {}, {}, {}
            try:
                for threads in args.threads:
                    driver = drivers[threads] = chromium()
                    driver.get(f"{url}?threads={threads}")
                    first = driver.execute_async_script(_RUN_PASSES, photo, 1)
                    assert "error" not in first, first
                    cold[threads] = (first["loadedAt"] / 1000 + first["times"][0]["total"], first["runtime"])
                    runners = inference.prepare_for_inference(model, "cpu", backend="openvino", threads=threads)
                    x = torch.randn(1, 3 * frames, size, size)
                    runners(x)
                    openvino[threads] = (functools.partial(runners, x), [])
                    browser[threads] = []
                for _ in range(args.rounds):
                    for threads in args.threads:
                        answer = drivers[threads].execute_async_script(_RUN_PASSES, photo, args.passes)
                        assert "error" not in answer, answer
                        browser[threads].append((statistics.median(t["network"] for t in answer["times"]),
                                                 statistics.median(t["total"] for t in answer["times"])))
                        run, times = openvino[threads]
                        with torch.inference_mode():
                            passes = []
                            for _ in range(args.passes):
                                begin = time.perf_counter()
                                run()
                                passes.append(time.perf_counter() - begin)
                        times.append(statistics.median(passes))
            finally:
                for driver in drivers.values():
                    driver.quit()
                files.shutdown()
            for threads in args.threads:
                network = statistics.median(b[0] for b in browser[threads])
                total = statistics.median(b[1] for b in browser[threads])
                ov = statistics.median(openvino[threads][1])
                rows.append(f"| {name} @{size} | {threads} | {cold[threads][1]} | {cold[threads][0]:.2f} | "
                            f"{network * 1000:.1f} | {total * 1000:.1f} | {ov * 1000:.1f} | {network / ov:.2f}x |")
    table = "\n".join([
        f"{started}, {device_name(torch.device('cpu'))}, {version}, batch 1, chelsea 451 x 300",
        "",
        "| network | threads | browser runtime | cold first map s | warm network ms | warm map ms (with resize) | "
        "OpenVINO fp32 ms | network / OpenVINO |",
        "|---|---:|---|---:|---:|---:|---:|---:|", *rows])
    print(table)
    if args.md:
        Path(args.md).parent.mkdir(parents=True, exist_ok=True)
        Path(args.md).write_text(table + "\n")


if __name__ == "__main__":
    main()
