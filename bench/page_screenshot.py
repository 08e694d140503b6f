"""The screenshots of serve.py's page in docs/serving.md (docs/serve_page.png, and in device mode
docs/page_device.png): headless Chromium (Debian's chromium and chromium-driver, Selenium) drops matplotlib's sample
photograph (grace_hopper.jpg) into the page of a server running the released SDNet
(../shared/reference/checkpoints/sdnet_from_scratch.pth); ``--mode device`` opens ``/?run=device``, where the map
is computed in the browser.

Usage: .venv/bin/python bench/page_screenshot.py [--checkpoint PATH] [--mode server|device] [--out PATH]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_serve import wait_until_ready  # bench/ is the script's folder, first on sys.path

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", default=str(REPO.parent / "shared" / "reference" / "checkpoints" /
                                                    "sdnet_from_scratch.pth"))
    parser.add_argument("--mode", choices=("server", "device"), default="server")
    parser.add_argument("--out", default=None, help="default: docs/serve_page.png (device: docs/page_device.png)")
    args = parser.parse_args(argv)
    out = args.out or str(REPO / "docs" / ("serve_page.png" if args.mode == "server" else "page_device.png"))
    import matplotlib.cbook
    from selenium import webdriver
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen([sys.executable, "serve.py", "--checkpoint", args.checkpoint, "--port", str(port)],
                              cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, start_new_session=True)
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1400"):
        options.add_argument(flag)
    driver = None
    try:
        wait_until_ready(f"http://127.0.0.1:{port}", 120)
        with tempfile.TemporaryDirectory() as scratch:
            photo = Path(scratch) / "grace_hopper.jpg"
            with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as sample:
                photo.write_bytes(sample.read())
            driver = webdriver.Chrome(options=options,
                                      service=webdriver.ChromeService(executable_path=shutil.which("chromedriver")))
            driver.get(f"http://127.0.0.1:{port}/" + ("?run=device" if args.mode == "device" else ""))
            WebDriverWait(driver, 60).until(lambda d: d.execute_script("return document.body.dataset.mode"))
            driver.find_element(By.ID, "file").send_keys(str(photo))
            WebDriverWait(driver, 60).until(lambda d: d.find_element(By.ID, "status").get_attribute("data-done"))
            time.sleep(0.5)
            driver.save_screenshot(out)
    finally:
        if driver is not None:
            driver.quit()
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(30)
    print(out)


if __name__ == "__main__":
    main()
