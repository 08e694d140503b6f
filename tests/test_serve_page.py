"""The page of serve.py in a real browser: headless Chromium (Debian's chromium and chromium-driver, driven by
Selenium; nothing downloaded at run time) opens it, a real photo is picked with its file input, and the map the
page shows is the server's map, byte for byte (that is, predict.py's); a screenshot of it goes to the test's
folder."""

from __future__ import annotations

import base64
import shutil
import time
from pathlib import Path

import pytest
from test_serve import KEY, Server, inputs, request  # noqa: F401  (inputs: the module fixture)

CHROMEDRIVER = shutil.which("chromedriver")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(not (CHROMEDRIVER and CHROMIUM), reason="no chromium/chromedriver (apt install chromium "
                    "chromium-driver; .ci/run does)")
def test_the_page_shows_the_servers_map(inputs: Path, tmp_path: Path) -> None:  # noqa: F811
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    server = Server("--checkpoint", inputs / "sdnet.pth", "--size", "64", "--api-key", "secret")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,900"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    try:
        photo = sorted((inputs / "photos").iterdir())[1]
        driver.get(f"{server.url}/?api_key=secret")
        driver.find_element(By.ID, "file").send_keys(str(photo))
        WebDriverWait(driver, 60).until(lambda d: d.find_element(By.ID, "status").get_attribute("data-done") == "1")
        shown = driver.find_element(By.ID, "map").get_attribute("src")
        assert shown.startswith("data:image/png;base64,")
        expected = request(f"{server.url}/v1/saliency", photo.read_bytes(), KEY)[2]
        assert base64.b64decode(shown.split(",", 1)[1]) == expected
        assert "the server took" in driver.find_element(By.ID, "status").text
        for image in ("overlay", "cutout"):
            assert driver.find_element(By.ID, image).get_attribute("src").startswith("data:image/")
        time.sleep(0.2)  # let the images paint before the screenshot
        driver.save_screenshot(str(tmp_path / "page.png"))
    finally:
        driver.quit()
        server.stop()
