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


@pytest.fixture(scope="module")
def page_server(inputs: Path):  # noqa: F811
    server = Server("--checkpoint", inputs / "sdnet.pth", "--size", "64", "--api-key", "secret")
    yield server
    server.stop()


@pytest.mark.skipif(not (CHROMEDRIVER and CHROMIUM), reason="no chromium/chromedriver (apt install chromium "
                    "chromium-driver; .ci/run does)")
def test_the_page_shows_the_servers_map(inputs: Path, tmp_path: Path, page_server: Server) -> None:  # noqa: F811
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    server = page_server
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


def y4m_clip(path: Path, frames: int = 20) -> None:
    """A YUV4MPEG2 clip (4:2:0, 10 frames/s) of a real photograph moving across the frame: Chromium's fake camera."""
    import cv2
    import matplotlib.cbook
    import numpy as np

    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as sample:
        photo = cv2.imdecode(np.frombuffer(sample.read(), np.uint8), cv2.IMREAD_COLOR)
    photo = cv2.resize(photo, (240, 280))
    with open(path, "wb") as file:
        file.write(b"YUV4MPEG2 W320 H240 F10:1 Ip A1:1 C420jpeg\n")
        for t in range(frames):
            frame = np.full((240, 320, 3), 40, np.uint8)
            frame[:, 4 * t:4 * t + 240] = photo[20:260]
            file.write(b"FRAME\n" + cv2.cvtColor(frame, cv2.COLOR_BGR2YUV_I420).tobytes())


@pytest.mark.skipif(not (CHROMEDRIVER and CHROMIUM), reason="no chromium/chromedriver (apt install chromium "
                    "chromium-driver; .ci/run does)")
def test_the_page_streams_the_camera(inputs: Path, tmp_path: Path, page_server: Server) -> None:  # noqa: F811
    """Chromium's fake camera, fed from a real clip: the page sends its frames over the WebSocket and shows the
    maps as they come, with the server's frames/s."""
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    y4m_clip(tmp_path / "clip.y4m")
    server = page_server
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--use-fake-ui-for-media-stream",
                 "--use-fake-device-for-media-stream", f"--use-file-for-fake-video-capture={tmp_path / 'clip.y4m'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    try:
        driver.get(f"{server.url}/?api_key=secret")
        driver.find_element(By.ID, "camera-button").click()
        status = driver.find_element(By.ID, "live-status")
        WebDriverWait(driver, 60).until(lambda d: int(status.get_attribute("data-frames") or 0) >= 10)
        assert "320 x 240: " in status.text and " frames/s (the server took " in status.text
        fps = float(status.text.split(": ")[1].split(" frames/s")[0])
        assert fps > 0
        # each map replaces the image's source, which then decodes in the background: read it once one has
        shown_size = "const img = document.getElementById('live-map'); return [img.naturalWidth, img.naturalHeight];"
        shown = WebDriverWait(driver, 30).until(lambda d: (size := d.execute_script(shown_size))[0] > 0 and size)
        assert shown == [320, 240]
    finally:
        driver.quit()


@pytest.mark.skipif(not (CHROMEDRIVER and CHROMIUM), reason="no chromium/chromedriver (apt install chromium "
                    "chromium-driver; .ci/run does)")
def test_a_map_video_plays_in_the_browser(tmp_path: Path) -> None:
    """A map video as predict.py writes it (`data.video.write_map_video`) plays in Chromium's <video>: it loads
    without error at its size and duration, plays, and the frame the browser shows is the map within the codec's
    error (CRF 17: a few grey levels, 8 bounds it for this smooth map), the video range's rounding (1) and
    Chromium's conversion to RGB (1)."""
    import functools
    import http.server
    import threading

    import numpy as np

    from data.video import write_map_video

    webdriver = pytest.importorskip("selenium.webdriver")
    ys, xs = np.mgrid[0:120, 0:160]
    maps = np.stack([((np.sin(xs / 11 + t / 4) * np.cos(ys / 17) + 1) * 127.5).astype(np.uint8) for t in range(25)])
    write_map_video(tmp_path / "maps.mp4", iter(maps), 25.0)
    (tmp_path / "index.html").write_text(
        '<video id="v" src="maps.mp4" muted playsinline></video><canvas id="c" width="160" height="120"></canvas>')
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

    handler = functools.partial(Quiet, directory=str(tmp_path))
    files = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=files.serve_forever, daemon=True).start()
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                 "--autoplay-policy=no-user-gesture-required"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    try:
        driver.get(f"http://127.0.0.1:{files.server_address[1]}/index.html")
        driver.set_script_timeout(60)
        shown = driver.execute_async_script("""
            const done = arguments[arguments.length - 1], video = document.getElementById('v');
            const report = () => {
                const context = document.getElementById('c').getContext('2d');
                context.drawImage(video, 0, 0);
                const pixels = context.getImageData(0, 0, 160, 120).data, red = [];
                for (let i = 0; i < pixels.length; i += 4) red.push(pixels[i]);
                video.play().then(() => done({width: video.videoWidth, height: video.videoHeight,
                                               duration: video.duration, red: red}),
                                  (err) => done({error: String(err)}));
            };
            video.onerror = () => done({error: String(video.error && video.error.message)});
            if (video.readyState >= 2) report(); else video.addEventListener('loadeddata', report, {once: true});
        """)
    finally:
        driver.quit()
        files.shutdown()
    assert "error" not in shown, shown
    assert (shown["width"], shown["height"]) == (160, 120) and abs(shown["duration"] - 1.0) < 0.05
    assert np.abs(np.array(shown["red"]).reshape(120, 160) - maps[0].astype(int)).max() <= 10
