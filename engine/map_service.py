"""Maps of uploaded images for a long-running service (serve.py): image bytes in, the map, overlay and cut-out that
predict.py writes for the same file out, through one inference thread that serves every request.

Each request's image passes the decode guard (`data.readers.rgb_from_bytes`, its pixel cap) and is preprocessed
by the caller's thread (`MapService.prepare`); the network passes run on one thread of the service, which takes
whatever requests are waiting (at most ``queue_size``; more are refused with `QueueFull`) and runs them through the
runner's `stream` (several in flight on OpenVINO's streams). A map depends on its own input only, so it is the map
predict.py writes, whatever else the service is doing. Memory is bounded by the queue, never by the load.
"""

from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from torch import nn

from data.readers import rgb_from_bytes
from data.transforms import cutout, display_rgb, overlay, preprocess_test, saliency_to_uint8

__all__ = ["QueueFull", "Prepared", "MapService", "encode"]


class QueueFull(RuntimeError):
    """The service has ``queue_size`` requests waiting already."""


@dataclass
class Prepared:
    """One request, ready for the network: ``input`` (1, 3, S, S), or (1, 3T, S, S) for a video model (the image as
    a still clip, as predict.py gives it), the upright RGB image (H, W, 3) uint8 and its (H, W)."""

    input: torch.Tensor
    rgb: np.ndarray
    shape: tuple[int, int]


def encode(image: np.ndarray, suffix: str) -> bytes:
    """``image`` (OpenCV channel order) as the bytes of a ``suffix`` (.png / .jpg) file, exactly as
    `data.atomic.write_image_atomic` writes it."""
    ok, data = cv2.imencode(suffix, image)
    if not ok:
        raise RuntimeError(f"cannot encode a {suffix} image")
    return data.tobytes()


class MapService:
    """A runner (`engine.inference`) serving maps. ``start`` starts the inference thread and prepares the network
    for the service's input shape (``ready`` turns True after that first pass); ``maps`` takes a `Prepared`
    request to its (H, W) uint8 map; ``close`` stops the thread."""

    def __init__(self, runner: nn.Module, *, size: int, video: bool, nframes: int, max_pixels: int,
                 queue_size: int = 32) -> None:
        self.runner, self.size, self.video, self.nframes = runner, size, video, nframes
        self.max_pixels, self.queue_size = max_pixels, queue_size
        self._jobs: queue.Queue = queue.Queue(maxsize=queue_size)
        self._thread: threading.Thread | None = None
        self._prepared = threading.Event()
        self.warm_up_seconds: float | None = None
        self.failure: str | None = None  # why the network could not be prepared

    @property
    def ready(self) -> bool:
        return self._prepared.is_set() and self.failure is None

    def wait_until_ready(self) -> None:
        """Block until the first pass is done or has failed (`start` first)."""
        self._prepared.wait()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._serve, name="sdnet-inference", daemon=True)
        self._thread.start()

    def close(self) -> None:
        if self._thread is not None:
            self._jobs.put(None)
            self._thread.join()
            self._thread = None

    def prepare(self, data: bytes, name: str) -> Prepared:
        """Guard, decode (upright by EXIF, as predict.py) and preprocess an upload; `data.DataError` (or its
        `ImageTooLarge` / `NotAnImage`) for what cannot be read."""
        rgb = rgb_from_bytes(data, name, orient=True, max_pixels=self.max_pixels)
        image = preprocess_test(rgb, self.size)[None]
        if self.video:
            image = image.repeat(1, self.nframes, 1, 1)
        return Prepared(image, display_rgb(rgb), rgb.shape[:2])

    def submit(self, prepared: Prepared) -> Future:
        """A future of the network's output for ``prepared``; `QueueFull` when ``queue_size`` requests wait."""
        future: Future = Future()
        try:
            self._jobs.put_nowait((prepared.input, future))
        except queue.Full:
            raise QueueFull(f"{self.queue_size} requests are waiting already") from None
        return future

    def finish(self, prepared: Prepared, output: torch.Tensor) -> np.ndarray:
        """The (H, W) uint8 map of a request from its network output (for a clip: its last frame's, as
        predict.py)."""
        return saliency_to_uint8(output, prepared.shape)[-1]

    def _serve(self) -> None:
        warm = torch.zeros(1, 3 * (self.nframes if self.video else 1), self.size, self.size)
        start = time.perf_counter()
        try:
            self.runner(warm)
        except Exception as err:  # noqa: BLE001 - reported by /health and to every request
            self.failure = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        self.warm_up_seconds = time.perf_counter() - start
        self._prepared.set()
        if self.failure is not None:
            return
        while True:
            job = self._jobs.get()
            if job is None:
                return
            jobs = [job]
            while len(jobs) < 2 * max(1, getattr(self.runner, "threads", 1)):
                try:
                    job = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if job is None:
                    self._jobs.put(None)  # stop after these
                    break
                jobs.append(job)
            live = [(x, future) for x, future in jobs if future.set_running_or_notify_cancel()]
            try:
                for future, output in self.runner.stream((future, x) for x, future in live):
                    future.set_result(output)
            except Exception as err:  # noqa: BLE001 - every waiting request learns of it
                for _, future in live:
                    if not future.done():
                        future.set_exception(err)


def visualisations(prepared: Prepared, saliency: np.ndarray, kinds: tuple[str, ...]) -> dict[str, bytes]:
    """The files predict.py writes for an image, those of ``kinds``: 'map' (.png), 'overlay' (``--overlay``, .jpg)
    and 'cutout' (``--cutout``, .png)."""
    files = {}
    for kind in kinds:
        if kind == "map":
            files[kind] = encode(saliency, ".png")
        elif kind == "overlay":
            files[kind] = encode(overlay(prepared.rgb, saliency), ".jpg")
        else:
            files[kind] = encode(cutout(prepared.rgb, saliency), ".png")
    return files
