"""Every control of the page, driven in headless Chromium in both modes (server and device) and checked by what it
shows (pixels decoded from the page's images) or writes (the downloaded files): several photos at once, the views
and the before/after slider, the cut-out's threshold, feather and backgrounds, actual size, pasting a photo,
Download all with names from the photos, and the API key field. The released SDNet at 96 px (real maps, fast)."""

from __future__ import annotations

import base64
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from test_onnxruntime import released_sdnet_and_real_photos
from test_page_device import chromium, finished, needs_browser, needs_runtime
from test_serve import KEY, Server, request

SET_VALUE = """const [id, value, event] = arguments; const element = document.getElementById(id);
element.value = value; element.dispatchEvent(new Event(event, {bubbles: true}));"""


@pytest.fixture(scope="module")
def photos_and_server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("controls")
    checkpoint = released_sdnet_and_real_photos(folder / "photos")
    server = Server("--checkpoint", checkpoint, "--size", "96", "--api-key", "secret")
    yield folder / "photos", server
    server.stop()


def decoded(driver, element_id: str) -> np.ndarray:
    """The pixels of the page's image ``element_id`` (a data URL), BGRA."""
    source = driver.find_element("id", element_id).get_attribute("src")
    data = base64.b64decode(source.split(",", 1)[1])
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGRA)
    return image if image.shape[2] == 4 else cv2.cvtColor(image, cv2.COLOR_BGR2BGRA)


@needs_browser
@needs_runtime
@pytest.mark.parametrize("mode", ["server", "device"])
def test_every_control_of_the_page(photos_and_server, tmp_path: Path, mode: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    photos, server = photos_and_server
    chelsea, coffee = photos / "chelsea.png", photos / "coffee.png"
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    driver = chromium()
    driver.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    try:
        # the API key: asked for on the page, a wrong one refused, kept for the tab, never in the address
        driver.get(f"{server.url}/" + ("?run=device" if mode == "device" else ""))
        WebDriverWait(driver, 30).until(lambda d: d.find_element(By.ID, "key-form").is_displayed())
        driver.find_element(By.ID, "key").send_keys("wrong\n")
        WebDriverWait(driver, 30).until(lambda d: "refused" in d.find_element(By.ID, "model").text)
        driver.find_element(By.ID, "key").send_keys("secret\n")
        WebDriverWait(driver, 30).until(lambda d: d.execute_script("return document.body.dataset.mode") == mode)
        assert not driver.find_element(By.ID, "key-form").is_displayed() and "secret" not in driver.current_url
        assert "sdnet at 96 px" in driver.find_element(By.ID, "model").text
        # several photos at once: one large, a strip of both
        driver.find_element(By.ID, "file").send_keys(f"{chelsea}\n{coffee}")
        status = finished(driver)
        assert status.get_attribute("data-done") == "1", status.text
        assert len(driver.find_elements(By.CSS_SELECTOR, "#thumbs button")) == 2
        assert driver.find_element(By.ID, "count").text == "2 photos"
        driver.find_elements(By.CSS_SELECTOR, "#thumbs button")[0].click()
        assert driver.find_element(By.ID, "map-link").get_attribute("download") == "chelsea_map.png"
        photo = cv2.cvtColor(cv2.imread(str(chelsea)), cv2.COLOR_BGR2BGRA)
        saliency = decoded(driver, "map")[..., 0]
        assert saliency.shape == photo.shape[:2] and saliency.min() < 64 and saliency.max() > 192
        if mode == "server":  # the server's map is predict.py's bytes
            shown = base64.b64decode(driver.find_element(By.ID, "map").get_attribute("src").split(",", 1)[1])
            assert shown == request(f"{server.url}/v1/saliency", chelsea.read_bytes(), KEY)[2]
        # the cut-out: the map as alpha by default, the photo's colours where it is opaque
        cutout = decoded(driver, "cutout")
        assert np.array_equal(cutout[..., 3], saliency)
        # a canvas keeps colours premultiplied by alpha: at alpha a, a colour comes back within 255 / a / 2 (< 1 from
        # a = 200 up) rounded, so at most 1 grey level off
        opaque = saliency >= 200
        assert opaque.any()
        assert np.abs(cutout[opaque][:, :3].astype(int) - photo[opaque][:, :3]).max() <= 1
        # threshold 128 over a green background: the photo where the map is 128 or more, green elsewhere
        driver.execute_script(SET_VALUE, "background", "colour", "change")
        driver.execute_script(SET_VALUE, "bg-colour", "#00ff00", "input")
        driver.execute_script(SET_VALUE, "threshold", "128", "input")
        assert driver.find_element(By.ID, "threshold-value").text == "128"
        cutout, kept = decoded(driver, "cutout"), saliency >= 128
        assert np.array_equal(cutout[kept][:, :3], photo[kept][:, :3])
        assert (cutout[~kept][:, :3] == [0, 255, 0]).all() and (cutout[..., 3] == 255).all()
        # feather: the mask's edge blurred, so pixels between the photo and green
        driver.execute_script(SET_VALUE, "feather", "4", "input")
        cutout = decoded(driver, "cutout")
        between = ~(cutout[..., :3] == photo[..., :3]).all(axis=2) & ~(cutout[..., :3] == [0, 255, 0]).all(axis=2)
        assert between.sum() > 100
        # the photo blurred behind it: opaque, the object as in the photo, the rest not the photo
        driver.execute_script(SET_VALUE, "feather", "0", "input")
        driver.execute_script(SET_VALUE, "background", "blur", "change")
        blurred = decoded(driver, "cutout")
        assert (blurred[..., 3] == 255).all() and np.array_equal(blurred[kept][:, :3], photo[kept][:, :3])
        assert (blurred[~kept][:, :3] != photo[~kept][:, :3]).any(axis=1).mean() > 0.5
        # an image behind it: the object as in the photo, the rest neither the photo nor its blur
        driver.execute_script(SET_VALUE, "background", "image", "change")
        driver.find_element(By.ID, "bg-image").send_keys(str(coffee))
        WebDriverWait(driver, 30).until(lambda d: (decoded(d, "cutout")[~kept] != blurred[~kept]).any())
        cutout = decoded(driver, "cutout")
        assert np.array_equal(cutout[kept][:, :3], photo[kept][:, :3])
        assert (cutout[~kept][:, :3] != photo[~kept][:, :3]).any(axis=1).mean() > 0.5
        # the views and the before/after slider
        driver.find_element(By.CSS_SELECTOR, '#views figure[data-view="map"] img').click()
        assert driver.find_element(By.ID, "after-view").get_attribute("src") == \
            driver.find_element(By.ID, "map").get_attribute("src")
        driver.execute_script(SET_VALUE, "split", "30", "input")
        assert "70%" in driver.find_element(By.ID, "before-view").value_of_css_property("clip-path")
        zoom = driver.find_element(By.ID, "zoom")
        zoom.click()
        assert "actual" in driver.find_element(By.ID, "viewer").get_attribute("class") and \
            zoom.text == "fit the window"
        # a pasted photo is a third one
        driver.execute_async_script("""
            const done = arguments[arguments.length - 1];
            fetch(document.getElementById('photo').src).then(r => r.blob()).then(blob => {
              const transfer = new DataTransfer();
              transfer.items.add(new File([blob], 'pasted.png', {type: 'image/png'}));
              document.dispatchEvent(new ClipboardEvent('paste', {clipboardData: transfer, bubbles: true}));
              done();
            });""")
        WebDriverWait(driver, 60).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#thumbs button")) == 3)
        finished(driver)
        # Download all: each photo's three files, named after it
        driver.find_element(By.ID, "download-all").click()
        expected = {f"{stem}_{kind}" for stem in ("chelsea", "coffee", "pasted")
                    for kind in ("map.png", "overlay.jpg", "cutout.png")}
        deadline = time.monotonic() + 60
        while {path.name for path in downloads.iterdir()} != expected and time.monotonic() < deadline:
            time.sleep(0.2)
        assert {path.name for path in downloads.iterdir()} == expected
        assert np.array_equal(cv2.imread(str(downloads / "chelsea_map.png"), cv2.IMREAD_GRAYSCALE), saliency)
    finally:
        driver.quit()
