"""The page's device mode in a real browser (headless Chromium, Debian's, driven by Selenium): served by serve.py
with the released SDNet at 320, ``/?run=device`` loads onnxruntime-web and the network from the server's own origin,
runs WASM (SIMD, two threads: the page is cross-origin isolated), and the map it shows for a real photo is
predict.py's through ONNX Runtime within 1 grey level on average (the arithmetic is predict.py's; the runtimes sum
in their own orders, and a map value that lands by a hair on the other side of an integer truncates to the next
level), while no request carries the photo and none leaves 127.0.0.1 (the browser's own network log)."""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from test_onnxruntime import released_sdnet_and_real_photos
from test_serve import Server, request

import predict
from engine.serving.browser import RUNTIME_FILES, runtime_file

CHROMEDRIVER = shutil.which("chromedriver")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_browser = pytest.mark.skipif(not (CHROMEDRIVER and CHROMIUM), reason="no chromium/chromedriver (apt install "
                                   "chromium chromium-driver; .ci/run does)")
needs_runtime = pytest.mark.skipif(any(runtime_file(name) is None for name in RUNTIME_FILES),
                                   reason="onnxruntime-web absent (npm ci; make venv does)")


def chromium(*flags: str):
    """Headless Chromium with its network log on."""
    webdriver = pytest.importorskip("selenium.webdriver")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,900", *flags):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    return webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))


def requests_sent(driver) -> list[dict]:
    """Every request the page made, from the browser's network log: url, method and whether it had a body."""
    sent = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            made = message["params"]["request"]
            sent.append({"url": made["url"], "method": made["method"], "body": bool(made.get("hasPostData"))})
    return sent


def shown_map(driver) -> np.ndarray:
    """The map the page shows (its PNG, decoded), as 8-bit grey."""
    from selenium.webdriver.common.by import By

    source = driver.find_element(By.ID, "map").get_attribute("src")
    assert source.startswith("data:image/png;base64,")
    return cv2.imdecode(np.frombuffer(base64.b64decode(source.split(",", 1)[1]), np.uint8), cv2.IMREAD_GRAYSCALE)


def chromium_with_camera(clip: Path):
    """Headless Chromium whose camera is Chromium's fake one, fed from a real clip written to ``clip``."""
    from test_serve_page import y4m_clip

    y4m_clip(clip)
    return chromium("--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                    f"--use-file-for-fake-video-capture={clip}")


def finished(driver):
    """The page's status line once the photo's map is shown or an error is (120 s at most)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    status = driver.find_element(By.ID, "status")
    WebDriverWait(driver, 120).until(lambda d: status.get_attribute("data-done") == "1" or "error" in
                                     (status.get_attribute("class") or ""))
    return status


@pytest.fixture(scope="module")
def photos_and_server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("device")
    checkpoint = released_sdnet_and_real_photos(folder / "photos")
    server = Server("--checkpoint", checkpoint, "--size", "320", "--api-key", "secret")
    yield checkpoint, folder, server
    server.stop()


@needs_browser
@needs_runtime
def test_device_mode_computes_predict_pys_map_and_sends_no_photo(photos_and_server, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    checkpoint, folder, server = photos_and_server
    photo = folder / "photos" / "chelsea.png"
    predict.main(["--checkpoint", str(checkpoint), "--backend", "onnxruntime", "-j", "0", "--no-cache", str(photo),
                  "--out", str(tmp_path / "predicted")])
    expected = cv2.imread(str(tmp_path / "predicted" / "chelsea.png"), cv2.IMREAD_GRAYSCALE)
    assert request(f"{server.url}/")[0] == 200 and request(f"{server.url}/v1/model.onnx")[0] == 401  # key: API only
    driver = chromium()
    try:
        driver.get(f"{server.url}/?run=device&api_key=secret")
        WebDriverWait(driver, 30).until(lambda d: d.execute_script("return document.body.dataset.mode") == "device")
        assert driver.execute_script("return crossOriginIsolated") is True
        driver.find_element(By.ID, "file").send_keys(str(photo))
        status = finished(driver)
        assert status.get_attribute("data-done") == "1", status.text
        runtime = driver.find_element(By.ID, "runtime")
        assert runtime.get_attribute("data-runtime") == "WASM (SIMD, 2 threads)", runtime.text
        assert "computed on this device" in status.text and "nothing is uploaded" in runtime.text
        shown = shown_map(driver)
        assert shown.shape == expected.shape
        difference = np.abs(shown.astype(int) - expected)
        assert difference.mean() <= 1.0, (difference.mean(), difference.max())
        links = {name: driver.find_element(By.ID, f"{name}-link").get_attribute("download")
                 for name in ("map", "overlay", "cutout")}
        assert links == {"map": "chelsea_map.png", "overlay": "chelsea_overlay.jpg", "cutout": "chelsea_cutout.png"}
        sent = requests_sent(driver)
    finally:
        driver.quit()
    assert sent and all(item["url"].startswith((server.url + "/", "data:", "blob:")) for item in sent), sent
    assert not [item for item in sent if item["method"] != "GET" or item["body"]], sent
    assert any(item["url"].endswith("/v1/model.onnx") for item in sent)


def serve_folder(folder: Path, isolated: bool):
    """``folder`` served on 127.0.0.1 (a free port) in a thread, with the isolation headers or without them (as
    `python -m http.server` and GitHub Pages serve); returns the server (``shutdown()`` stops it)."""
    import functools
    import http.server
    import threading

    from engine.serving.site import IsolatedFiles

    base = IsolatedFiles if isolated else type("Plain", (http.server.SimpleHTTPRequestHandler,), {
        "extensions_map": IsolatedFiles.extensions_map, "log_message": lambda *args: None})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(base, directory=str(folder)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@needs_browser
@needs_runtime
def test_the_static_site_starts_in_device_mode_and_says_when_it_is_not_isolated(photos_and_server,
                                                                                 tmp_path: Path) -> None:
    """`python -m engine.serving.site` writes the page, the runtime and the network; served with its headers the
    page starts in device mode on two threads and gives predict.py's map; served without them (a host that cannot
    set headers) it runs on one thread and says why; a damaged model file is a message on the page."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from engine.serving import site

    checkpoint, folder, _ = photos_and_server
    photo = folder / "photos" / "coffee.png"
    site.main(["--checkpoint", str(checkpoint), "--size", "96", "--out", str(tmp_path / "site")])
    assert (tmp_path / "site" / "_headers").read_text().count("Cross-Origin-") == 3
    predict.main(["--checkpoint", str(checkpoint), "--size", "96", "--backend", "onnxruntime", "-j", "0",
                  "--no-cache", str(photo), "--out", str(tmp_path / "predicted")])
    expected = cv2.imread(str(tmp_path / "predicted" / "coffee.png"), cv2.IMREAD_GRAYSCALE)
    shutil.copytree(tmp_path / "site", tmp_path / "damaged")
    (tmp_path / "damaged" / "v1" / "model.onnx").write_bytes(b"not a model")
    for name, isolated, runtime_text in (("site", True, "WASM (SIMD, 2 threads)"),
                                         ("site", False, "WASM (SIMD, 1 thread: this page is not cross-origin "
                                                         "isolated, its host sends no COOP/COEP headers)"),
                                         ("damaged", True, None)):
        files = serve_folder(tmp_path / name, isolated)
        driver = chromium()
        try:
            driver.get(f"http://127.0.0.1:{files.server_address[1]}/")
            WebDriverWait(driver, 30).until(lambda d: d.execute_script("return document.body.dataset.mode"))
            assert driver.execute_script("return document.body.dataset.mode") == "device"
            assert driver.find_element(By.CSS_SELECTOR, 'input[value="server"]').get_attribute("disabled")
            driver.find_element(By.ID, "file").send_keys(str(photo))
            status = finished(driver)
            runtime = driver.find_element(By.ID, "runtime")
            if runtime_text is None:
                assert "error" in status.get_attribute("class") and "error" in runtime.get_attribute("class")
                assert runtime.text.startswith("the network could not be loaded in this browser: "), runtime.text
                continue
            assert status.get_attribute("data-done") == "1", status.text
            assert runtime.get_attribute("data-runtime") == runtime_text
            difference = np.abs(shown_map(driver).astype(int) - expected)
            assert difference.mean() <= 1.0, (difference.mean(), difference.max())
            sent = requests_sent(driver)
            assert all(item["url"].startswith((f"http://127.0.0.1:{files.server_address[1]}/", "data:", "blob:"))
                       and item["method"] == "GET" for item in sent), sent
        finally:
            driver.quit()
            files.shutdown()


@needs_browser
@needs_runtime
def test_the_camera_runs_on_the_device(photos_and_server, tmp_path: Path) -> None:
    """Chromium's fake camera from a real clip, in device mode: each frame's map computed in the browser, one in
    flight, frames/s shown; no WebSocket is opened and nothing is sent; "Stop the camera" stops it."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
    _, _, server = photos_and_server
    driver = chromium_with_camera(tmp_path / "clip.y4m")
    try:
        driver.get(f"{server.url}/?run=device&api_key=secret")
        WebDriverWait(driver, 30).until(lambda d: d.execute_script("return document.body.dataset.mode") == "device")
        button = driver.find_element(By.ID, "camera-button")
        button.click()
        status = driver.find_element(By.ID, "live-status")
        WebDriverWait(driver, 120).until(lambda d: int(status.get_attribute("data-frames") or 0) >= 3)
        assert status.text.startswith("320 x 240: ") and " frames/s on this device (the network took " in status.text
        assert float(status.text.split(": ")[1].split(" frames/s")[0]) > 0
        assert driver.find_element(By.ID, "live-map").get_attribute("src").startswith("data:image/png;base64,")
        assert button.text == "Stop the camera"
        button.click()
        assert button.text == "Use the camera" and not driver.find_element(By.ID, "live").is_displayed()
        frames = int(status.get_attribute("data-frames"))
        log = [json.loads(entry["message"])["message"] for entry in driver.get_log("performance")]
    finally:
        driver.quit()
    assert not [m for m in log if m["method"].startswith("Network.webSocket")]
    assert not [m for m in log if m["method"] == "Network.requestWillBeSent"
                and m["params"]["request"]["method"] != "GET"]
    assert frames >= 3


def test_serve_py_serves_https_with_a_given_certificate(tmp_path: Path) -> None:
    """--certfile / --keyfile: the page over HTTPS (browsers give the camera to secure pages only), with the
    isolation headers; a key that does not fit is one line, exit 2."""
    import os
    import ssl
    import subprocess
    import sys
    import time
    import urllib.request

    from test_serve import REPO, free_port

    checkpoint = released_sdnet_and_real_photos(tmp_path / "photos")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "2", "-subj", "/CN=127.0.0.1"], check=True, capture_output=True)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    bad = subprocess.run([sys.executable, str(REPO / "serve.py"), "--checkpoint", str(checkpoint), "--size", "64",
                          "--port", "0", "--certfile", str(cert), "--keyfile", str(cert)], capture_output=True,
                         text=True, env=env, timeout=120)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "--keyfile" in bad.stderr, bad.stderr
    port = free_port()
    process = subprocess.Popen([sys.executable, str(REPO / "serve.py"), "--checkpoint", str(checkpoint), "--size",
                                "64", "--port", str(port), "--certfile", str(cert), "--keyfile", str(key)], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    context = ssl.create_default_context(cafile=str(cert))
    context.check_hostname = False
    try:
        deadline, answer = time.monotonic() + 120, None
        while answer is None and time.monotonic() < deadline:
            try:
                answer = urllib.request.urlopen(f"https://127.0.0.1:{port}/", context=context, timeout=5)
            except OSError:
                assert process.poll() is None, process.communicate()[1]
                time.sleep(0.3)
        assert answer is not None and answer.status == 200 and b"<html" in answer.read()
        assert answer.headers["Cross-Origin-Embedder-Policy"] == "require-corp"
    finally:
        process.terminate()
        process.wait(20)


@needs_browser
@needs_runtime
def test_a_video_model_runs_on_the_device_on_clips(photos_and_server, tmp_path: Path) -> None:
    """STDNet (the golden weights) in device mode: a photo is a still clip of its 8 frames, its last map kept, as
    predict.py keeps it (within 1 grey level on average); the camera runs clips of the last 8 frames."""
    from reference import REFERENCE
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    weights = REFERENCE / "golden" / "stdnet_golden_weights.pth"
    if not weights.is_file():
        pytest.skip(f"reference data absent: {weights}")
    _, folder, _ = photos_and_server
    photo = folder / "photos" / "chelsea.png"
    flags = ["--checkpoint", str(weights), "--nframes", "8", "--size", "96"]
    predict.main([*flags, "--backend", "onnxruntime", "-j", "0", "--no-cache", str(photo), "--out",
                  str(tmp_path / "predicted")])
    expected = cv2.imread(str(tmp_path / "predicted" / "chelsea.png"), cv2.IMREAD_GRAYSCALE)
    server = Server(*flags)
    driver = chromium_with_camera(tmp_path / "clip.y4m")
    try:
        driver.get(f"{server.url}/?run=device")
        WebDriverWait(driver, 30).until(lambda d: d.execute_script("return document.body.dataset.mode") == "device")
        driver.find_element(By.ID, "file").send_keys(str(photo))
        status = finished(driver)
        assert status.get_attribute("data-done") == "1", status.text
        difference = np.abs(shown_map(driver).astype(int) - expected)
        assert difference.mean() <= 1.0, (difference.mean(), difference.max())
        driver.find_element(By.ID, "camera-button").click()
        live = driver.find_element(By.ID, "live-status")
        WebDriverWait(driver, 120).until(lambda d: int(live.get_attribute("data-frames") or 0) >= 3)
        assert " for the last clip of 8 frames, WASM (SIMD, 2 threads))" in live.text, live.text
    finally:
        driver.quit()
        server.stop()


@needs_browser
@needs_runtime
@pytest.mark.slow  # WebGPU on Chromium's software adapter (SwiftShader): 10-30 s a map; .ci/run runs it
def test_the_webgpu_path_gives_the_same_map(photos_and_server, tmp_path: Path) -> None:
    """Where the browser offers a WebGPU adapter (here Chromium's software one, SwiftShader, behind
    --enable-unsafe-webgpu) the page runs onnxruntime-web's WebGPU backend, says so with the adapter's name, and its
    map is predict.py's within 1 grey level on average."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    checkpoint, folder, _ = photos_and_server
    photo = folder / "photos" / "astronaut.png"
    predict.main(["--checkpoint", str(checkpoint), "--size", "96", "--backend", "onnxruntime", "-j", "0",
                  "--no-cache", str(photo), "--out", str(tmp_path / "predicted")])
    expected = cv2.imread(str(tmp_path / "predicted" / "astronaut.png"), cv2.IMREAD_GRAYSCALE)
    server = Server("--checkpoint", checkpoint, "--size", "96")
    driver = chromium("--enable-unsafe-webgpu")
    try:
        driver.get(f"{server.url}/?run=device")
        runtime = driver.find_element(By.ID, "runtime")
        WebDriverWait(driver, 120).until(lambda d: runtime.get_attribute("data-runtime"))
        assert runtime.get_attribute("data-runtime").startswith("WebGPU ("), runtime.text
        driver.find_element(By.ID, "file").send_keys(str(photo))
        status = finished(driver)
        assert status.get_attribute("data-done") == "1", status.text
        difference = np.abs(shown_map(driver).astype(int) - expected)
        assert difference.mean() <= 1.0, (difference.mean(), difference.max())
    finally:
        driver.quit()
        server.stop()


def test_the_site_command_writes_the_folder_and_serves_it_with_its_headers(tmp_path: Path) -> None:
    """`python -m engine.serving.site --out DIR --serve 0` as people run it: the folder written, then served on
    127.0.0.1 with the isolation headers (the port logged); an --out under a file is one line, exit 2."""
    import os
    import re
    import signal
    import subprocess
    import sys
    import urllib.request

    from test_serve import REPO

    checkpoint = released_sdnet_and_real_photos(tmp_path / "photos")
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    (tmp_path / "file").write_text("")
    bad = subprocess.run([sys.executable, "-m", "engine.serving.site", "--checkpoint", str(checkpoint), "--out",
                          str(tmp_path / "file" / "site")], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=120)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "--out" in bad.stderr, bad.stderr
    if any(runtime_file(name) is None for name in RUNTIME_FILES):
        pytest.skip("onnxruntime-web absent (npm ci; make venv does)")
    process = subprocess.Popen([sys.executable, "-m", "engine.serving.site", "--checkpoint", str(checkpoint),
                                "--size", "64", "--out", str(tmp_path / "site"), "--serve", "0"], cwd=REPO, env=env,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        port = None
        for line in process.stderr:
            if found := re.search(r"serving .* on http://127\.0\.0\.1:(\d+)/", line):
                port = int(found.group(1))
                break
        assert port is not None, "the site command ended without serving"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/info", timeout=10) as answer:
            assert json.loads(answer.read())["static"] is True
            assert answer.headers["Cross-Origin-Opener-Policy"] == "same-origin"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ort/ort-wasm-simd-threaded.wasm", timeout=10) as answer:
            assert answer.headers["Content-Type"] == "application/wasm"
        assert sorted(path.name for path in (tmp_path / "site").iterdir()) == \
            ["_headers", "compose.js", "device.js", "index.html", "ort", "page.js", "v1"]
    finally:
        os.killpg(process.pid, signal.SIGTERM)  # SIGINT may be ignored: pytest-xdist's workers pass that on
        process.wait(20)
