"""Maps of uploaded images for a long-running service (serve.py): a queue and the one inference thread that serves
every request, over a `engine.inference.Predictor`, which does the rest (decoding through the guard,
preprocessing, the map, the files predict.py writes), so the server's bytes are predict.py's by construction.

Each request's image is prepared by the caller's thread (`MapService.prepare`: `Predictor.prepare` with the
service's pixel cap); the network passes run on one thread of the service, which takes whatever requests are
waiting (at most ``queue_size``; more are refused with `QueueFull`) and runs them through the runner's `stream`
(several in flight on OpenVINO's streams). A map depends on its own input only, so it is the map predict.py writes,
whatever else the service is doing. Memory is bounded by the queue, never by the load.
"""

from __future__ import annotations

import queue
import threading
from concurrent.futures import Future

import numpy as np
import torch

from engine.inference.predictor import Predictor, Prepared

__all__ = ["QueueFull", "MapService"]


class QueueFull(RuntimeError):
    """The service has ``queue_size`` requests waiting already."""


class MapService:
    """A `Predictor` serving maps. ``start`` starts the inference thread and prepares the network for the
    service's input shape (``ready`` turns True after that first pass); `prepare`, `submit` and `finish` take an
    upload to its (H, W) uint8 map; `files` gives predict.py's files of it; ``close`` stops the thread."""

    def __init__(self, predictor: Predictor, *, max_pixels: int, queue_size: int = 32) -> None:
        self.predictor, self.max_pixels, self.queue_size = predictor, max_pixels, queue_size
        self._jobs: queue.Queue = queue.Queue(maxsize=queue_size)
        self._thread: threading.Thread | None = None
        self._prepared = threading.Event()
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
        """Guard, decode (upright by EXIF, as predict.py) and preprocess an upload (`Predictor.prepare`);
        `data.DataError` (or its `ImageTooLarge` / `NotAnImage`) for what cannot be read."""
        return self.predictor.prepare(data, name=name, max_pixels=self.max_pixels)

    def submit(self, prepared: Prepared) -> Future:
        """A future of the network's output for ``prepared``; `QueueFull` when ``queue_size`` requests wait."""
        future: Future = Future()
        try:
            self._jobs.put_nowait((prepared.input, future))
        except queue.Full:
            raise QueueFull(f"{self.queue_size} requests are waiting already") from None
        return future

    def finish(self, prepared: Prepared, output: torch.Tensor) -> np.ndarray:
        """The (H, W) uint8 map of a request from its network output (`Predictor.saliency`)."""
        return self.predictor.saliency(output, prepared.shape)

    def files(self, prepared: Prepared, saliency: np.ndarray, kinds: tuple[str, ...]) -> dict[str, bytes]:
        """The files predict.py writes for the request's image, those of ``kinds`` (`Predictor.files`)."""
        return self.predictor.files(prepared.rgb, saliency, kinds)

    def _serve(self) -> None:
        runner = self.predictor.runner
        try:
            runner(torch.zeros(self.predictor.input.shape()))
        except Exception as err:  # noqa: BLE001 - reported by /health and to every request
            self.failure = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        self._prepared.set()
        if self.failure is not None:
            return
        while True:
            job = self._jobs.get()
            if job is None:
                return
            jobs = [job]
            while len(jobs) < 2 * max(1, getattr(runner, "threads", 1)):
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
                for future, output in runner.stream((future, x) for x, future in live):
                    future.set_result(output)
            except Exception as err:  # noqa: BLE001 - every waiting request learns of it
                for _, future in live:
                    if not future.done():
                        future.set_exception(err)

