"""The screenshot of serve.py's page in the README (docs/serve_page.png): headless Chromium (Debian's chromium and
chromium-driver, Selenium) drops matplotlib's sample photograph (grace_hopper.jpg) into the page of a server
running the released SDNet (../shared/reference/checkpoints/sdnet_from_scratch.pth).

Usage: .venv/bin/python bench/page_screenshot.py [--checkpoint PATH] [--out docs/serve_page.png]
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
    parser.add_argument("--out", default=str(REPO / "docs" / "serve_page.png"))
    args = parser.parse_args(argv)
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
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1500,860"):
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
            driver.get(f"http://127.0.0.1:{port}/")
            driver.find_element(By.ID, "file").send_keys(str(photo))
            WebDriverWait(driver, 60).until(lambda d: d.find_element(By.ID, "status").get_attribute("data-done"))
            time.sleep(0.5)
            driver.save_screenshot(args.out)
    finally:
        if driver is not None:
            driver.quit()
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(30)
    print(args.out)


if __name__ == "__main__":
    main()
