"""serve.py as people use it: a real server process on a free loopback port answering HTTP (the maps byte for byte
predict.py's, concurrent clients, a client that leaves mid-upload, every refusal's status and one-line JSON reason),
and the application in-process with a stand-in network for what depends on timing (503 before the network is
ready, a full queue, a timeout)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from test_guard import png

import utils
from data.atomic import encode_image
from data.synthetic import SyntheticSizes, generate
from engine.inference.predictor import ModelInput, Predictor
from engine.serving.admission import BYTES_PER_PIXEL, PixelBudget
from engine.serving.app import ServerLimits, create_app
from engine.serving.service import MapService
from models import build_model

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def request(url: str, body: bytes | None = None, headers: dict | None = None,
            timeout: float = 60) -> tuple[int, dict, bytes]:
    """(status, headers, body) of a GET (no body) or POST."""
    req = urllib.request.Request(url, data=body, headers=headers or {}, method="POST" if body is not None else "GET")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def multipart(field: str, data: bytes, filename: str = "photo.jpg") -> tuple[bytes, dict]:
    boundary = "sdnet-test-boundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{filename}\"\r\n"
            f"Content-Type: application/octet-stream\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


class Server:
    """serve.py in its own process group on a free port, stopped (SIGTERM, then SIGKILL) at the end."""

    def __init__(self, *flags: str | Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
        self.process = subprocess.Popen([sys.executable, str(REPO / "serve.py"), "--port", str(self.port),
                                         *map(str, flags)], cwd=REPO, env=env, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True, start_new_session=True)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"serve.py ended: {self.process.communicate()[1]}")
            try:
                if request(f"{self.url}/health", timeout=2)[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        self.stop()
        raise AssertionError("serve.py did not become ready in 120 s")

    def stop(self) -> str:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
        return self.process.communicate()[1]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("serve")
    generate(root / "data", 0, SyntheticSizes(sod_train=1, sod_test=4, video_train=1, video_test=1, min_frames=8,
                                              max_frames=8), workers=0)
    torch.manual_seed(0)
    torch.save(build_model("sdnet").state_dict(), root / "sdnet.pth")
    photos = root / "photos"
    shutil.copytree(root / "data" / "sod" / "SYN-TE" / "images", photos)
    return root


@pytest.fixture(scope="module")
def server(inputs: Path):
    running = Server("--checkpoint", inputs / "sdnet.pth", "--size", "64", "--max-bytes", "400000", "--api-key",
                     "secret", "--queue", "16")
    yield running
    log = running.stop()
    assert "Traceback" not in log, log


KEY = {"X-API-Key": "secret"}


def test_maps_are_predict_pys_bytes(server: Server, inputs: Path, tmp_path: Path) -> None:
    photos = sorted((inputs / "photos").iterdir())
    subprocess.run([sys.executable, str(REPO / "predict.py"), "--checkpoint", str(inputs / "sdnet.pth"), "--size",
                    "64", "--overlay", "--cutout", "--out", str(tmp_path), *map(str, photos)], check=True,
                   capture_output=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    for photo in photos:
        data = photo.read_bytes()
        expected = {"png": (tmp_path / f"{photo.stem}.png").read_bytes(),
                    "overlay": (tmp_path / f"{photo.stem}_overlay.jpg").read_bytes(),
                    "cutout": (tmp_path / f"{photo.stem}_cutout.png").read_bytes()}
        status, headers, body = request(f"{server.url}/v1/saliency", data, KEY)
        assert status == 200 and headers["content-type"] == "image/png" and body == expected["png"]
        assert float(headers["x-processing-seconds"]) > 0
        body, form = multipart("file", data)
        for output in ("overlay", "cutout"):
            status, _, answer = request(f"{server.url}/v1/saliency?output={output}", body, {**form, **KEY})
            assert status == 200 and answer == expected[output], output
        status, _, answer = request(f"{server.url}/v1/saliency?output=json", data, KEY)
        record = json.loads(answer)
        assert status == 200 and base64.b64decode(record["map_png"]) == expected["png"]
        assert base64.b64decode(record["overlay_jpg"]) == expected["overlay"]
        assert base64.b64decode(record["cutout_png"]) == expected["cutout"]


@pytest.mark.slow  # 7 s: .ci/run runs it
def test_a_video_model_serves_predict_pys_bytes(inputs: Path, tmp_path: Path) -> None:
    """STDNet too: the server sees a photo as predict.py does (a still clip of --nframes copies, its last map kept),
    through the same `Predictor`, so the map, overlay and cut-out are predict.py's bytes."""
    torch.manual_seed(1)
    torch.save(build_model("stdnet", bn=True, nframes=2).state_dict(), tmp_path / "stdnet.pth")
    flags = ["--checkpoint", str(tmp_path / "stdnet.pth"), "--size", "64", "--nframes", "2", "--tid", "cv", "cd",
             "ad"]
    photos = sorted((inputs / "photos").iterdir())[:2]
    subprocess.run([sys.executable, str(REPO / "predict.py"), *flags, "--overlay", "--cutout", "--out",
                    str(tmp_path / "out"), *map(str, photos)], check=True, capture_output=True,
                   env={**os.environ, "PYTHONPATH": str(REPO)})
    running = Server(*flags)
    try:
        for photo in photos:
            status, _, answer = request(f"{running.url}/v1/saliency?output=json", photo.read_bytes())
            record = json.loads(answer)
            assert status == 200
            assert base64.b64decode(record["map_png"]) == (tmp_path / "out" / f"{photo.stem}.png").read_bytes()
            assert base64.b64decode(record["overlay_jpg"]) == (tmp_path / "out" /
                                                               f"{photo.stem}_overlay.jpg").read_bytes()
            assert base64.b64decode(record["cutout_png"]) == (tmp_path / "out" /
                                                              f"{photo.stem}_cutout.png").read_bytes()
        status, _, answer = request(f"{running.url}/v1/info")
        assert status == 200 and json.loads(answer)["model"] == "stdnet"
    finally:
        log = running.stop()
    assert "Traceback" not in log, log


def test_a_body_of_many_parts_is_refused_at_once_and_health_stays_quick(inputs: Path) -> None:
    """An 8.6 MB multipart body of 150,000 tiny parts (under the default --max-bytes) is 400 without being parsed,
    and /health, asked all along, answers within 100 ms (median; 1 s at worst on a busy machine): nothing parses
    on the event loop."""
    parts = b"".join(b'--b\r\nContent-Disposition: form-data; name="f%d"\r\n\r\nx\r\n' % i for i in range(150_000))
    body = parts + b"--b--\r\n"
    assert 8 * 2**20 < len(body) < 20 * 2**20
    running = Server("--checkpoint", inputs / "sdnet.pth", "--size", "64")
    try:
        answer: dict = {}
        thread = threading.Thread(target=lambda: answer.update(result=request(
            f"{running.url}/v1/saliency", body, {"Content-Type": "multipart/form-data; boundary=b"})))
        thread.start()
        latencies = []
        while thread.is_alive() or not latencies:
            start = time.perf_counter()
            assert request(f"{running.url}/health", timeout=10)[0] == 200
            latencies.append(time.perf_counter() - start)
        thread.join()
        status, _, reply = answer["result"]
        assert status == 400 and json.loads(reply)["error"].startswith("multipart body of more than 8 parts")
        latencies.sort()
        assert latencies[len(latencies) // 2] < 0.1 and latencies[-1] < 1.0, latencies
        photo = sorted((inputs / "photos").iterdir())[0].read_bytes()
        assert request(f"{running.url}/v1/saliency", photo)[0] == 200
    finally:
        log = running.stop()
    assert "Traceback" not in log, log


def test_concurrent_clients_get_their_own_maps(server: Server, inputs: Path) -> None:
    photos = sorted((inputs / "photos").iterdir())
    single = {photo: request(f"{server.url}/v1/saliency", photo.read_bytes(), KEY)[2] for photo in photos}
    jobs = [photos[i % len(photos)] for i in range(48)]
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda photo: request(f"{server.url}/v1/saliency", photo.read_bytes(), KEY), jobs))
    assert [status for status, _, _ in answers] == [200] * len(jobs)
    assert all(body == single[photo] for photo, (_, _, body) in zip(jobs, answers, strict=True))


def test_what_a_client_may_not_do(server: Server, inputs: Path) -> None:
    """Each refusal: its status, a one-line JSON reason, and the server still serving."""
    photo = sorted((inputs / "photos").iterdir())[0].read_bytes()
    url = f"{server.url}/v1/saliency"
    cases = [
        (request(url, photo), 401, "missing or wrong API key"),
        (request(url, photo, {"X-API-Key": "wrong"}), 401, "missing or wrong API key"),
        (request(f"{server.url}/v1/info"), 401, "missing or wrong API key"),
        (request(url, bytes(400001), KEY), 413, "upload of 400001 bytes is over the limit of 400000 bytes"),
        (request(url, png(50000, 50000, rows=1), KEY), 413, "refused upload: PNG of 50000x50000 = 2500.0 megapixels"),
        (request(url, b"hello", KEY), 415, "cannot read upload: not an image"),
        (request(url, b"", KEY), 415, "empty file upload (0 bytes)"),
        (request(url, b"GIF89a" + bytes(20), KEY), 415, "cannot read upload: a GIF file"),
        (request(url, photo[:len(photo) // 2], KEY), 400, "cannot read upload: truncated JPEG file"),
        (request(f"{url}?output=svg", photo, KEY), 400, "output=svg: choose one of png, overlay, cutout, json"),
        (request(url, headers=KEY), 405, "GET is not allowed on /v1/saliency"),
        (request(f"{server.url}/v2/maps", photo, KEY), 404, "no such endpoint: /v2/maps"),
        (request(url, *(lambda b, h: (b, {**h, **KEY}))(*multipart("image", photo))), 400,
         "multipart body without a field named 'file'"),
    ]
    for (status, _, body), expected_status, reason in cases:
        assert status == expected_status, (status, body)
        answer = json.loads(body)
        assert list(answer) == ["error"] and "\n" not in answer["error"] and answer["error"].startswith(reason), body
    assert request(f"{server.url}/health")[0] == 200  # /health needs no key
    status, _, page = request(f"{server.url}/?api_key=secret")
    assert status == 200 and b"<title>SDNet saliency maps</title>" in page
    assert b"http://" not in page and b"https://" not in page  # nothing fetched from elsewhere
    assert request(url, photo, KEY)[0] == 200


def test_a_client_that_leaves_mid_upload_costs_nothing(server: Server, inputs: Path) -> None:
    photo = sorted((inputs / "photos").iterdir())[0].read_bytes()
    for _ in range(5):
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            sock.sendall(b"POST /v1/saliency HTTP/1.1\r\nHost: x\r\nX-API-Key: secret\r\nContent-Length: "
                         + str(len(photo)).encode() + b"\r\n\r\n" + photo[:len(photo) // 3])
    assert request(f"{server.url}/v1/saliency", photo, KEY)[0] == 200


class StandIn(torch.nn.Module):
    """A network answering zeros after ``delay`` seconds, as a runner's ``forward`` and ``stream`` do."""

    threads = 1

    def __init__(self, delay: float = 0.0, gate: threading.Event | None = None) -> None:
        super().__init__()
        self.delay, self.gate = delay, gate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.gate is not None:
            self.gate.wait(30)
        time.sleep(self.delay)
        return torch.zeros(x.shape[0], 1, x.shape[2], x.shape[3])

    def stream(self, inputs):
        for tag, x in inputs:
            yield tag, self(x)


def asgi(app, path: str, body: bytes = b"", method: str = "POST") -> tuple[int, bytes, dict]:
    """One HTTP request through the ASGI application, in this process."""
    async def call() -> tuple[int, bytes, dict]:
        sent, answer = [False], {"status": 0, "body": b"", "headers": {}}

        async def receive():
            if not sent[0]:
                sent[0] = True
                return {"type": "http.request", "body": body, "more_body": False}
            await asyncio.sleep(3600)

        async def send(message):
            if message["type"] == "http.response.start":
                answer["status"] = message["status"]
                answer["headers"] = {k.decode(): v.decode() for k, v in message["headers"]}
            elif message["type"] == "http.response.body":
                answer["body"] += message.get("body", b"")

        path_only, _, query = path.partition("?")
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
                 "path": path_only, "raw_path": path_only.encode(), "query_string": query.encode(),
                 "headers": [(b"content-length", str(len(body)).encode())], "client": ("127.0.0.1", 1),
                 "server": ("127.0.0.1", 80), "scheme": "http", "root_path": ""}
        await app(scope, receive, send)
        return answer["status"], answer["body"], answer["headers"]

    return asyncio.run(call())


def service(runner: torch.nn.Module, queue_size: int = 4) -> MapService:
    return MapService(Predictor(runner, ModelInput(32, video=False, nframes=1)), max_pixels=10**6,
                      queue_size=queue_size)


def photo_bytes() -> bytes:
    import cv2

    return cv2.imencode(".png", np.full((20, 30, 3), 90, np.uint8))[1].tobytes()


def test_health_is_503_until_the_network_is_ready() -> None:
    gate = threading.Event()
    maps = service(StandIn(gate=gate))
    app = create_app(maps, {}, ServerLimits())
    maps.start()
    try:
        assert asgi(app, "/health", method="GET")[:2] == (503, b'{"status":"starting"}')
        status, body, headers = asgi(app, "/v1/saliency", photo_bytes())
        assert status == 503 and headers["retry-after"] == "1"
        gate.set()
        deadline = time.monotonic() + 10
        while not maps.ready and time.monotonic() < deadline:
            time.sleep(0.01)
        assert asgi(app, "/health", method="GET")[:2] == (200, b'{"status":"ready"}')
        assert asgi(app, "/v1/saliency", photo_bytes())[0] == 200
    finally:
        gate.set()
        maps.close()


def test_a_full_house_is_503_and_a_slow_answer_504() -> None:
    maps = service(StandIn(delay=0.5))
    maps.start()
    try:
        while not maps.ready:
            time.sleep(0.01)
        status, body, _ = asgi(create_app(maps, {}, ServerLimits(timeout=0.1)), "/v1/saliency", photo_bytes())
        assert status == 504 and json.loads(body) == {"error": "no answer within 0.1 s (--timeout)"}
        busy = create_app(maps, {}, ServerLimits(max_requests=0))
        status, body, headers = asgi(busy, "/v1/saliency", photo_bytes())
        assert status == 503 and headers["retry-after"] == "1"
        assert json.loads(body) == {"error": "0 requests are being served already"}
    finally:
        maps.close()


def test_processes_share_the_port(inputs: Path) -> None:
    """--processes 2: two server processes on one port, each answering with the same bytes (the flag's earlier
    name --workers, in its = form, as well)."""
    import serve

    assert serve.one_process(["--size", "64", "--processes", "3", "--workers=2", "--port", "1"]) == [
        "--size", "64", "--port", "1"]
    assert serve.build_parser().parse_args(["--checkpoint", "x", "--workers", "3"]).processes == 3
    server = Server("--checkpoint", inputs / "sdnet.pth", "--size", "64", "--processes=2")
    try:
        photo = sorted((inputs / "photos").iterdir())[0].read_bytes()
        with ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(lambda _: request(f"{server.url}/v1/saliency", photo), range(16)))
        assert {status for status, _, _ in answers} == {200} and len({body for _, _, body in answers}) == 1
        assert json.loads(request(f"{server.url}/v1/info")[2])["processes"] == 2
        group = os.getpgid(server.process.pid)
        members = [pid for pid in os.listdir("/proc") if pid.isdigit() and _group_of(int(pid)) == group]
        assert len(members) >= 2
    finally:
        log = server.stop()
    assert "Traceback" not in log, log


def _group_of(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except OSError:
        return None


class Broken(StandIn):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("no such device\nsecond line")


def test_a_network_that_cannot_be_prepared_is_said_by_health() -> None:
    maps = service(Broken())
    app = create_app(maps, {}, ServerLimits(), wait_until_ready=True)
    maps.start()
    maps.wait_until_ready()
    try:
        assert asgi(app, "/health", method="GET")[:2] == (503, b'{"status":"failed","error":"no such device"}')
        status, body, _ = asgi(app, "/v1/saliency", photo_bytes())
        assert status == 503 and json.loads(body) == {"error": "the network could not be prepared: no such device"}
    finally:
        maps.close()


def test_live_video_over_a_websocket(server: Server, inputs: Path) -> None:
    """/v1/stream: each frame's map (the bytes /v1/saliency gives for the same image), then its timing; a message
    that is not a good frame (not an image, text, empty, over --max-bytes) is a one-line JSON error and the stream
    goes on; no key, no stream (401); no traceback in the server's log (the fixture checks)."""
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    photo = sorted((inputs / "photos").iterdir())[0].read_bytes()
    expected = request(f"{server.url}/v1/saliency", photo, KEY)[2]
    with connect(f"ws://127.0.0.1:{server.port}/v1/stream?api_key=secret") as socket_:
        for _ in range(3):
            socket_.send(photo)
            assert socket_.recv(timeout=60) == expected
            timing = json.loads(socket_.recv(timeout=60))
            assert set(timing) == {"width", "height", "seconds", "fps"} and timing["seconds"] > 0
        socket_.send(b"not an image")
        assert json.loads(socket_.recv(timeout=60)) == {
            "error": "cannot read upload: not an image (PNG, JPEG, BMP, WebP or TIFF are read)"}
        socket_.send(photo)
        assert socket_.recv(timeout=60) == expected
        assert "fps" in json.loads(socket_.recv(timeout=60))
        # what is not a good frame: one JSON error each, and the stream goes on
        for message, error in (("a text message", "send each frame as a binary message (an image file's bytes), "
                                                  "not text"),
                               (b"", "empty frame"),
                               (b"\xff" * 500_000, "frame of 500000 bytes is over the limit of 400000 bytes "
                                                    "(--max-bytes)")):
            socket_.send(message)
            assert json.loads(socket_.recv(timeout=60)) == {"error": error}
        socket_.send(photo)
        assert socket_.recv(timeout=60) == expected
    with pytest.raises(InvalidStatus) as refused:
        connect(f"ws://127.0.0.1:{server.port}/v1/stream")
    assert refused.value.response.status_code == 401  # as HTTP: missing or wrong API key
    assert json.loads(refused.value.response.body) == {"error": "missing or wrong API key"}


def test_a_stalled_upload_holds_no_place_and_is_408_in_time(inputs: Path) -> None:
    """--queue 1 --upload-timeout 1: an upload held half-sent holds no place (a second request is served, 200);
    past 1 s it is answered 408; the server goes on serving."""
    server = Server("--checkpoint", inputs / "sdnet.pth", "--size", "64", "--queue", "1", "--upload-timeout", "1")
    try:
        photo = sorted((inputs / "photos").iterdir())[0].read_bytes()
        with socket.create_connection(("127.0.0.1", server.port)) as held:
            held.sendall(b"POST /v1/saliency HTTP/1.1\r\nHost: x\r\nContent-Length: " + str(len(photo)).encode()
                         + b"\r\n\r\n" + photo[:100])
            time.sleep(0.3)
            assert request(f"{server.url}/v1/saliency", photo)[0] == 200
            held.settimeout(10)
            answer = b""
            while not answer.endswith(b"}") and (chunk := held.recv(65536)):  # headers and body may come apart
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 408 ")
        assert answer.endswith(b'{"error":"the upload did not arrive within 1 s (--upload-timeout)"}')
        assert request(f"{server.url}/v1/saliency", photo)[0] == 200
    finally:
        log = server.stop()
    assert "Traceback" not in log, log


@pytest.mark.slow  # a stall test: make test-ci-slow runs it in .ci/run
def test_stalled_uploads_and_silent_connections_do_not_stall_the_server(inputs: Path) -> None:
    """64 uploads that send 100 bytes of a declared 630 KB and then nothing, and 200 connections that never send a
    header, held open while 20 good requests come one after another: each is answered 200 within 2 s."""
    server = Server("--checkpoint", inputs / "sdnet.pth", "--size", "64", "--queue", "32")
    held: list[socket.socket] = []
    try:
        photo = sorted((inputs / "photos").iterdir())[0].read_bytes()
        for _ in range(64):
            stalled = socket.create_connection(("127.0.0.1", server.port))
            stalled.sendall(b"POST /v1/saliency HTTP/1.1\r\nHost: x\r\nContent-Length: 630000\r\n\r\n" + b"\0" * 100)
            held.append(stalled)
        held += [socket.create_connection(("127.0.0.1", server.port)) for _ in range(200)]
        time.sleep(0.5)
        for _ in range(20):
            start = time.perf_counter()
            assert request(f"{server.url}/v1/saliency", photo, timeout=10)[0] == 200
            assert time.perf_counter() - start < 2.0
    finally:
        for connection in held:
            connection.close()
        log = server.stop()
    assert "Traceback" not in log, log


def _read_until_closed(connection: socket.socket, limit: float) -> tuple[bytes, float]:
    """What the server sends on ``connection`` until it closes it, and the seconds that took (at most ``limit``)."""
    start, answer = time.perf_counter(), b""
    connection.settimeout(limit)
    with contextlib.suppress(TimeoutError, ConnectionResetError):
        while chunk := connection.recv(65536):
            answer += chunk
    return answer, time.perf_counter() - start


@pytest.mark.slow  # a stall test: make test-ci-slow runs it in .ci/run
def test_every_phase_of_a_connection_has_a_deadline(inputs: Path) -> None:
    """--upload-timeout 1 --idle-timeout 1: a connection that sends nothing is closed after 1 s without a word; one
    that sends part of its headers, or its headers a byte at a time, is answered 408 with the one-line reason at 1 s
    and closed; one answered before its body is in is closed once answered (a body sent a byte at a time holds
    nothing); an idle keep-alive connection is closed after 5 s; a live stream that sends no frame for 1 s is told
    so and closed (code 1000). Each within a second of its deadline."""
    from websockets.exceptions import ConnectionClosedOK
    from websockets.sync.client import connect

    server = Server("--checkpoint", inputs / "sdnet.pth", "--size", "64", "--upload-timeout", "1", "--idle-timeout",
                    "1")
    late = (b'{"error":"the request\'s headers did not arrive within 1 s (--upload-timeout)"}')
    try:
        photo = sorted((inputs / "photos").iterdir())[0].read_bytes()

        def silent() -> None:
            with socket.create_connection(("127.0.0.1", server.port)) as connection:
                answer, seconds = _read_until_closed(connection, 5)
            assert answer == b"" and 0.9 < seconds < 2.0, (answer, seconds)

        def partial_headers() -> None:
            with socket.create_connection(("127.0.0.1", server.port)) as connection:
                connection.sendall(b"POST /v1/saliency HTTP/1.1\r\nHost: x\r\n")
                answer, seconds = _read_until_closed(connection, 5)
            assert answer.startswith(b"HTTP/1.1 408 ") and answer.endswith(late) and seconds < 2.0, answer

        def byte_by_byte() -> None:
            with socket.create_connection(("127.0.0.1", server.port)) as connection:
                start = time.perf_counter()
                with contextlib.suppress(OSError):  # the server closes it while it still sends
                    for byte in b"GET /health HTTP/1.1\r\nHost: x\r\n":
                        connection.sendall(bytes([byte]))
                        time.sleep(0.2)
                answer = _read_until_closed(connection, 5)[0]
            assert answer.startswith(b"HTTP/1.1 408 ") and answer.endswith(late), answer
            assert time.perf_counter() - start < 2.5

        def body_never_read() -> None:  # an endpoint that takes no body, sent one slowly: answered, then closed
            with socket.create_connection(("127.0.0.1", server.port)) as connection:
                connection.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\nx")
                start = time.perf_counter()
                with contextlib.suppress(OSError):
                    for _ in range(10):
                        time.sleep(0.2)
                        connection.sendall(b"x")
                answer = _read_until_closed(connection, 5)[0]
            assert answer.startswith(b"HTTP/1.1 200 ") and time.perf_counter() - start < 2.5, answer

        def idle_keep_alive() -> None:
            with socket.create_connection(("127.0.0.1", server.port)) as connection:
                connection.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
                answer, seconds = _read_until_closed(connection, 10)
            assert answer.startswith(b"HTTP/1.1 200 ") and 4.9 < seconds < 6.0, (answer, seconds)

        def idle_stream() -> None:
            with connect(f"ws://127.0.0.1:{server.port}/v1/stream") as stream:
                start = time.perf_counter()
                assert json.loads(stream.recv(timeout=5)) == {
                    "error": "no frame for 1 s (--idle-timeout): the stream is closed"}
                with pytest.raises(ConnectionClosedOK):
                    stream.recv(timeout=5)
                assert stream.close_code == 1000 and time.perf_counter() - start < 2.0

        checks = (silent, partial_headers, byte_by_byte, body_never_read, idle_keep_alive, idle_stream)
        with ThreadPoolExecutor(len(checks)) as pool:
            for done in [pool.submit(check) for check in checks]:
                done.result()
        assert request(f"{server.url}/v1/saliency", photo)[0] == 200  # and the server goes on
    finally:
        log = server.stop()
    assert "Traceback" not in log, log


def test_the_pixel_budget_grants_in_order_and_takes_back_what_a_cancelled_request_held() -> None:
    """PixelBudget(100): a request of 60 is held; one of 50 waits, and one of 10 behind it waits too (in order of
    arrival, though it would fit); freeing the 60 grants both; a waiting request that is cancelled leaves no trace."""
    async def scenario() -> list:
        budget, events = PixelBudget(100), []

        async def request_of(pixels: int, name: str, release: asyncio.Event) -> None:
            async with budget.hold(pixels):
                events.append((name, budget.held))
                await release.wait()

        releases = {name: asyncio.Event() for name in "abcd"}
        first = asyncio.create_task(request_of(60, "a", releases["a"]))
        await asyncio.sleep(0.01)
        waiting = [asyncio.create_task(request_of(pixels, name, releases[name]))
                   for pixels, name in ((50, "b"), (10, "c"), (90, "d"))]
        await asyncio.sleep(0.01)
        events.append(("waiting", budget.held))
        waiting[2].cancel()  # d, behind the others, gives up
        releases["a"].set()
        await first
        await asyncio.sleep(0.01)
        releases["b"].set()
        releases["c"].set()
        await asyncio.gather(*waiting[:2])
        await asyncio.gather(waiting[2], return_exceptions=True)
        return [*events, ("end", budget.held, budget.peak)]

    assert asyncio.run(scenario()) == [("a", 60), ("waiting", 60), ("b", 60), ("c", 60), ("end", 0, 60)]


def test_decoded_pixels_in_flight_are_bounded(inputs: Path) -> None:
    """--max-megapixels 0.05 --max-megapixels-in-flight 0.05: eight concurrent uploads of 200 x 200 pixels (0.04
    megapixels) are all answered 200, one decoded at a time (the server's peak is one image's pixels); a budget
    under --max-megapixels is one line, exit 2."""
    refused = subprocess.run([sys.executable, "serve.py", "--checkpoint", str(inputs / "sdnet.pth"),
                              "--max-megapixels-in-flight", "10"], cwd=REPO, capture_output=True, text=True,
                             env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120)
    assert refused.returncode == 2 and refused.stderr.strip().splitlines()[-1].endswith(
        "--max-megapixels-in-flight 10 is under --max-megapixels 64: an image of the largest size admitted must fit")
    server = Server("--checkpoint", inputs / "sdnet.pth", "--size", "64", "--max-megapixels", "0.05",
                    "--max-megapixels-in-flight", "0.05")
    try:
        image = encode_image(np.random.default_rng(5).integers(0, 256, (200, 200, 3), dtype=np.uint8), ".png")
        with ThreadPoolExecutor(8) as pool:
            statuses = list(pool.map(lambda _: request(f"{server.url}/v1/saliency", image)[0], range(8)))
        assert statuses == [200] * 8
        info = json.loads(request(f"{server.url}/v1/info")[2])
        assert info["max_megapixels_in_flight"] == 0.05
        assert info["in_flight"] == {"requests": 0, "megapixels": 0.0, "megapixels_peak": 0.04}
    finally:
        log = server.stop()
    assert "Traceback" not in log, log


def _memory_kib(pid: int) -> dict[str, int]:
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {line.split(":")[0]: int(line.split()[1]) for line in status if line.startswith(("VmRSS:", "VmHWM:"))}


@pytest.mark.slow
def test_sixteen_62_megapixel_uploads_stay_within_the_budget_and_the_memory_returns(inputs: Path) -> None:
    """16 concurrent uploads of one 62-megapixel JPEG (1.4 MB, under every cap; ?output=json, the heaviest answer)
    with --max-megapixels-in-flight 124 (two such photos): all 200, and the server's peak resident memory over its
    idle size stays within the budget at BYTES_PER_PIXEL plus the 16 bodies (each held, and joined once from its
    chunks); 2 s after the last answer it is within glibc's free memory kept at the top of its arenas (8 per core,
    each trimmed above the server's 32 MiB threshold, utils.SERVER_KEEP_BYTES) of its idle size."""
    import cv2

    width, height = 9093, 6820
    ys, xs = np.mgrid[0:height:8, 0:width:8].astype(np.float32)
    small = np.dstack([xs / width * 255, ys / height * 255, (xs + ys) / (width + height) * 255]).astype(np.uint8)
    photo = encode_image(cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR), ".jpg")
    server = Server("--checkpoint", inputs / "sdnet.pth", "--max-megapixels-in-flight", "124", "--timeout", "600")
    try:
        assert request(f"{server.url}/v1/saliency", sorted((inputs / "photos").iterdir())[0].read_bytes())[0] == 200
        time.sleep(1)
        idle = _memory_kib(server.process.pid)["VmRSS"] * 1024
        Path(f"/proc/{server.process.pid}/clear_refs").write_text("5")  # the high-water mark starts again here
        with ThreadPoolExecutor(16) as pool:
            statuses = list(pool.map(lambda _: request(f"{server.url}/v1/saliency?output=json", photo,
                                                       timeout=600)[0], range(16)))
        assert statuses == [200] * 16
        peak = _memory_kib(server.process.pid)["VmHWM"] * 1024
        time.sleep(2)
        after = _memory_kib(server.process.pid)["VmRSS"] * 1024
        info = json.loads(request(f"{server.url}/v1/info")[2])
    finally:
        log = server.stop()
    assert "Traceback" not in log, log
    assert info["in_flight"]["megapixels_peak"] <= 124
    assert peak - idle <= 124e6 * BYTES_PER_PIXEL + 16 * 2 * len(photo), (idle, peak)
    assert after - idle <= 8 * (os.cpu_count() or 1) * utils.SERVER_KEEP_BYTES, (idle, after)


def test_head_answers_where_get_does(server: Server) -> None:
    """HEAD /, /health and /v1/info: GET's status and headers, no body (not 405)."""
    for path, key in (("/", KEY), ("/health", {}), ("/v1/info", KEY)):
        req = urllib.request.Request(f"{server.url}{path}", headers=key, method="HEAD")
        with urllib.request.urlopen(req, timeout=30) as response:
            assert response.status == 200 and response.read() == b"", path
            assert response.headers["content-type"].startswith("text/html" if path == "/" else "application/json")
