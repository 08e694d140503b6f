"""The HTTP interface of serve.py, a FastAPI application over a `engine.serving.service.MapService`.

Endpoints: ``POST /v1/saliency`` (an image as the multipart field ``file`` or as the raw body; ``?output=png``
(default: the 8-bit map), ``overlay`` (JPEG), ``cutout`` (RGBA PNG) or ``json`` (all three, base64, with the size
and timing)), ``GET /health`` (503 until the network is prepared, then 200), ``GET /v1/info`` (what runs) and
``GET /`` (the page of `engine/serving/page/index.html`) and ``/v1/stream`` (a WebSocket: live video, one frame's
map per message); the page's scripts (``GET /page.js`` ...), for its device mode ``/ort/<file>`` (onnxruntime-web) and
``/v1/model.onnx`` (the network at the served size, `engine.serving.browser`). Every response carries the
cross-origin isolation headers (COOP/COEP: threads for the browser's WASM). Every refused request gets a 4xx and a
one-line JSON reason (``{"error": ...}``) and the server goes on: a body over ``max_bytes`` (413), an image over the
pixel cap (413), not an image or a format we do not read (415), a damaged or cut-short image (400), too many
requests at once (503, Retry-After), past ``timeout`` seconds (504), a missing or wrong API key (401; every endpoint
but ``/health`` and the page's own files, which hold nothing private). Uploads stay in memory; nothing a client
sends names a file."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hmac
import re
import time
from dataclasses import dataclass
from email.parser import BytesParser
from email.policy import HTTP

import anyio
import numpy as np
from fastapi import FastAPI, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect, HTTPConnection

from data.atomic import encode_image
from data.guard import DataError, ImageTooLarge, NotAnImage, read_header
from engine.inference.predictor import Prepared
from engine.serving.admission import PixelBudget
from engine.serving.browser import ISOLATION_HEADERS, PAGE_DIR, PAGE_FILES, media_type, runtime_file
from engine.serving.service import MapService, QueueFull

__all__ = ["ServerLimits", "Endpoints", "create_app", "PAGE"]

PAGE = PAGE_DIR / "index.html"
OUTPUTS = {"png": "image/png", "overlay": "image/jpeg", "cutout": "image/png", "json": "application/json"}
# The files of each output (`engine.inference.Predictor.files`): json carries all three, base64-encoded.
OUTPUT_FILES = {"png": ("map",), "overlay": ("overlay",), "cutout": ("cutout",), "json": ("map", "overlay", "cutout")}
JSON_NAMES = {"map": "map_png", "overlay": "overlay_jpg", "cutout": "cutout_png"}


@dataclass(frozen=True)
class ServerLimits:
    """What a client may ask: ``max_bytes`` per upload, ``max_pixels_in_flight`` decoded pixels held at once by all
    requests (`engine.serving.admission.PixelBudget`), ``upload_timeout`` seconds for it to arrive (408),
    ``max_requests`` admitted at once once their upload is in (the rest: 503), ``timeout`` seconds per admitted
    request (504), ``idle_timeout`` seconds a live stream may send nothing (then it is closed), ``decoders`` images
    decoded at once, and the ``api_key`` (None: open)."""

    max_bytes: int = 20 * 2**20
    max_pixels_in_flight: int = 256 * 10**6
    upload_timeout: float = 10.0
    max_requests: int = 32
    timeout: float = 30.0
    idle_timeout: float = 60.0
    decoders: int = 2
    api_key: str | None = None


class Refused(Exception):
    """A request answered with ``status`` and a one-line reason."""

    def __init__(self, status: int, reason: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(reason)
        self.status, self.reason, self.headers = status, reason, headers or {}


async def _body(request: Request, max_bytes: int) -> bytes:
    """The request body, refused (413) as soon as it is known to exceed ``max_bytes``."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise Refused(413, f"upload of {int(declared)} bytes is over the limit of {max_bytes} bytes (--max-bytes)")
    chunks, total = [], 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > max_bytes:
            raise Refused(413, f"upload is over the limit of {max_bytes} bytes (--max-bytes)")
        chunks.append(chunk)
    return b"".join(chunks)


# An upload is one file: a multipart body of more parts than a form with a few fields is refused before it is
# parsed (150,000 tiny parts in 15 MiB took the email parser 18 s).
MAX_PARTS = 8


def _image_bytes(body: bytes, content_type: str) -> bytes:
    """The image of a request: the multipart field ``file``, or the raw body. Run off the event loop: parsing a
    multipart body is work in proportion to its size."""
    if not content_type.lower().startswith("multipart/form-data"):
        return body
    boundary = re.search(r'boundary="?([^";]+)"?', content_type)
    if boundary and body.count(b"--" + boundary.group(1).encode("latin-1")) > MAX_PARTS + 1:
        raise Refused(400, f"multipart body of more than {MAX_PARTS} parts (send the image as the field 'file', or "
                           "as the raw body)")
    message = BytesParser(policy=HTTP).parsebytes(b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n"
                                                  + body)
    if not message.is_multipart():
        raise Refused(400, "multipart body without parts (send the image as the field 'file', or as the raw body)")
    for part in message.iter_parts():
        if part.get_param("name", header="content-disposition") == "file":
            return part.get_payload(decode=True) or b""
    raise Refused(400, "multipart body without a field named 'file'")


def _authorised(request: HTTPConnection, api_key: str | None) -> bool:
    if api_key is None:
        return True
    given = request.headers.get("x-api-key") or request.query_params.get("api_key") or ""
    bearer = request.headers.get("authorization", "")
    if bearer.lower().startswith("bearer "):
        given = given or bearer[7:]
    return hmac.compare_digest(given.encode(), api_key.encode())


async def _refused(request: Request, err: Refused) -> JSONResponse:
    return JSONResponse({"error": err.reason}, status_code=err.status, headers=err.headers)


async def _http_error(request: Request, err: StarletteHTTPException) -> JSONResponse:
    """The framework's own refusals (404 an unknown path, 405 a wrong method) in the same one-line form."""
    reason = {404: f"no such endpoint: {request.url.path}",
              405: f"{request.method} is not allowed on {request.url.path}"}.get(err.status_code, str(err.detail))
    return JSONResponse({"error": reason}, status_code=err.status_code, headers=getattr(err, "headers", None))


class Endpoints:
    """What the application answers, over one ``service``: its state is the service, ``info`` (served at
    /v1/info), the ``limits``, the decoding threads and the count of requests being served."""

    def __init__(self, service: MapService, info: dict, limits: ServerLimits, wait_until_ready: bool,
                 onnx: bytes | None = None) -> None:
        self.service, self.info, self.limits, self.wait_until_ready = service, info, limits, wait_until_ready
        self.onnx = onnx
        self.decoders = anyio.CapacityLimiter(limits.decoders)
        self.pixels = PixelBudget(limits.max_pixels_in_flight)
        self.admitted = 0

    @contextlib.asynccontextmanager
    async def lifespan(self, app: FastAPI):
        self.service.start()
        if self.wait_until_ready:
            await anyio.to_thread.run_sync(self.service.wait_until_ready)
        yield
        self.service.close()

    async def check_key(self, request: Request, call_next):
        path = request.url.path
        public = path in ("/health", "/") or path[1:] in PAGE_FILES or path.startswith("/ort/")
        if not public and not _authorised(request, self.limits.api_key):
            response = JSONResponse({"error": "missing or wrong API key (X-API-Key header, Bearer token or "
                                              "?api_key=)"}, status_code=401)
        else:
            response = await call_next(request)
        response.headers.update(ISOLATION_HEADERS)
        return response

    async def health(self) -> JSONResponse:
        if self.service.failure is not None:
            return JSONResponse({"status": "failed", "error": self.service.failure}, status_code=503)
        ready = self.service.ready
        return JSONResponse({"status": "ready" if ready else "starting"}, status_code=200 if ready else 503)

    async def about(self) -> JSONResponse:
        return JSONResponse({**self.info, "ready": self.service.ready,
                             "in_flight": {"requests": self.admitted, "megapixels": self.pixels.held / 1e6,
                                           "megapixels_peak": self.pixels.peak / 1e6}})

    async def page(self) -> HTMLResponse:
        return HTMLResponse(PAGE.read_text())

    async def script(self, name: str) -> Response:
        if f"{name}.js" not in PAGE_FILES:
            raise Refused(404, f"no file {name}.js here")
        return Response((PAGE_DIR / f"{name}.js").read_bytes(), media_type=media_type(f"{name}.js"))

    async def runtime(self, name: str) -> Response:
        path = runtime_file(name)
        if path is None:
            raise Refused(404, f"no runtime file {name!r} here (the page's runtime is installed by `npm ci`)")
        return FileResponse(path, media_type=media_type(name))

    async def model(self) -> Response:
        if self.onnx is None:
            raise Refused(404, "this server has no network for the browser")
        return Response(self.onnx, media_type=media_type("model.onnx"))

    async def saliency(self, request: Request, output: str = "png") -> Response:
        """POST /v1/saliency: the upload must arrive within ``upload_timeout`` seconds (else 408); then it is
        admitted while fewer than ``max_requests`` are served (else 503), so a client that sends slowly or stops
        holds no place, and answered within ``timeout`` seconds (else 504)."""
        if output not in OUTPUTS:
            raise Refused(400, f"output={output}: choose one of {', '.join(OUTPUTS)}")
        self._refuse_unless_ready()  # before the upload is read
        start = time.perf_counter()
        try:
            body = await asyncio.wait_for(_body(request, self.limits.max_bytes), self.limits.upload_timeout)
        except TimeoutError:
            raise Refused(408, f"the upload did not arrive within {self.limits.upload_timeout:g} s "
                               "(--upload-timeout)") from None
        except ClientDisconnect:
            raise Refused(400, "the client went away during the upload") from None
        if self.admitted >= self.limits.max_requests:
            raise Refused(503, f"{self.limits.max_requests} requests are being served already", {"Retry-After": "1"})
        self.admitted += 1
        try:
            return await asyncio.wait_for(self._answer(request, body, output, start), self.limits.timeout)
        except TimeoutError:
            raise Refused(504, f"no answer within {self.limits.timeout:g} s (--timeout)") from None
        finally:
            self.admitted -= 1

    async def _answer(self, request: Request, body: bytes, output: str, start: float) -> Response:
        data = await anyio.to_thread.run_sync(_image_bytes, body, request.headers.get("content-type", ""),
                                              limiter=self.decoders)
        async with self._decoded_pixels(data):
            saliency_map, prepared = await self._map_of(data)
            files = await anyio.to_thread.run_sync(self.service.files, prepared, saliency_map, OUTPUT_FILES[output],
                                                   limiter=self.decoders)
        seconds = time.perf_counter() - start
        headers = {"X-Processing-Seconds": f"{seconds:.4f}"}
        if output == "json":
            height, width = saliency_map.shape
            return JSONResponse({"width": width, "height": height, "seconds": seconds,
                                 "salient_fraction": float(np.count_nonzero(saliency_map > 127)) / saliency_map.size,
                                 **{JSON_NAMES[kind]: base64.b64encode(content).decode()
                                    for kind, content in files.items()}},
                                headers=headers)
        return Response(files[OUTPUT_FILES[output][0]], media_type=OUTPUTS[output], headers=headers)

    async def stream(self, socket: WebSocket) -> None:
        """Live video: each binary message is one frame (an image file, e.g. a JPEG from a camera), answered
        with its map as PNG bytes, then a text message with the frame's size, the server's seconds and frames/s
        over the last 30 frames. Any other message (text, an empty frame, one over ``max_bytes``, not an image) is
        answered with a text message {"error": ...} and the stream goes on. A stream that sends nothing for
        ``idle_timeout`` seconds is told so ({"error": ...}) and closed (code 1000). (A video model sees each frame
        as a still clip, as on /v1/saliency.) Without the API key the handshake is answered 401, as HTTP is."""
        if not _authorised(socket, self.limits.api_key):
            await socket.send_denial_response(JSONResponse({"error": "missing or wrong API key"}, status_code=401))
            return
        await socket.accept()
        recent: list[float] = []
        try:
            while True:
                try:
                    message = await asyncio.wait_for(socket.receive(), self.limits.idle_timeout)
                except TimeoutError:
                    await socket.send_json({"error": f"no frame for {self.limits.idle_timeout:g} s (--idle-timeout): "
                                                     "the stream is closed"})
                    await socket.close(code=1000)
                    return
                if message["type"] == "websocket.disconnect":
                    return
                data = message.get("bytes")
                start = time.perf_counter()
                try:
                    if data is None:
                        raise Refused(400, "send each frame as a binary message (an image file's bytes), not text")
                    if not data:
                        raise Refused(400, "empty frame")
                    if len(data) > self.limits.max_bytes:
                        raise Refused(413, f"frame of {len(data)} bytes is over the limit of {self.limits.max_bytes} "
                                           "bytes (--max-bytes)")
                    async with self._decoded_pixels(data):
                        saliency_map, _ = await self._map_of(data)
                        encoded = await anyio.to_thread.run_sync(encode_image, saliency_map, ".png",
                                                                 limiter=self.decoders)
                except Refused as err:
                    await socket.send_json({"error": err.reason})
                    continue
                await socket.send_bytes(encoded)
                now = time.perf_counter()
                recent = [*recent[-29:], now]
                fps = (len(recent) - 1) / (recent[-1] - recent[0]) if len(recent) > 1 else 0.0
                height, width = saliency_map.shape
                await socket.send_json({"width": width, "height": height, "seconds": now - start, "fps": fps})
        except WebSocketDisconnect:  # the client left while its answer was sent
            return

    @contextlib.asynccontextmanager
    async def _decoded_pixels(self, data: bytes):
        """Hold the pixels ``data``'s header declares in the budget while the block runs (waiting for them first);
        what has no readable header holds none: decoding refuses it."""
        try:
            pixels = (await anyio.to_thread.run_sync(read_header, data, "upload")).pixels
        except DataError:
            pixels = 0
        async with self.pixels.hold(pixels):
            yield

    def _refuse_unless_ready(self) -> None:
        if self.service.failure is not None:
            raise Refused(503, f"the network could not be prepared: {self.service.failure}")
        if not self.service.ready:
            raise Refused(503, "the network is still being prepared", {"Retry-After": "1"})

    async def _map_of(self, data: bytes) -> tuple[np.ndarray, Prepared]:
        """The (H, W) uint8 map of one image's bytes, and the prepared request; `Refused` for what a client may
        not send."""
        self._refuse_unless_ready()
        try:
            prepared = await anyio.to_thread.run_sync(self.service.prepare, data, "upload", limiter=self.decoders)
        except ImageTooLarge as err:
            raise Refused(413, str(err)) from None
        except NotAnImage as err:
            raise Refused(415, str(err)) from None
        except DataError as err:
            raise Refused(400, str(err)) from None
        try:
            future = self.service.submit(prepared)
        except QueueFull as err:
            raise Refused(503, str(err), {"Retry-After": "1"}) from None
        try:
            network_output = await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            future.cancel()
            raise
        return await anyio.to_thread.run_sync(self.service.finish, prepared, network_output,
                                              limiter=self.decoders), prepared


def create_app(service: MapService, info: dict, limits: ServerLimits, wait_until_ready: bool = False,
               onnx: bytes | None = None) -> FastAPI:
    """The application: ``service`` started and stopped with it, ``info`` served at /v1/info, ``onnx`` (the network
    for the browser, `engine.serving.browser.network_onnx`; None: no device mode) at /v1/model.onnx. With
    ``wait_until_ready`` it takes no request before the network is prepared (processes sharing a port: the
    kernel hands a connection to any of them, so none may answer 503 while the others are ready); without, it
    answers from the start, /health 503 until then."""
    endpoints = Endpoints(service, info, limits, wait_until_ready, onnx)
    app = FastAPI(title="SDNet saliency maps", lifespan=endpoints.lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None)
    app.add_exception_handler(Refused, _refused)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.middleware("http")(endpoints.check_key)
    for path, endpoint in (("/health", endpoints.health), ("/v1/info", endpoints.about), ("/", endpoints.page),
                           ("/{name}.js", endpoints.script), ("/ort/{name}", endpoints.runtime),
                           ("/v1/model.onnx", endpoints.model)):
        app.add_api_route(path, endpoint, methods=["GET", "HEAD"])  # HEAD: GET's status and headers
    app.add_api_route("/v1/saliency", endpoints.saliency, methods=["POST"])
    app.add_api_websocket_route("/v1/stream", endpoints.stream)
    return app
