"""How much decoded image serve.py holds at once: a budget of pixels in flight.

A request's memory follows its decoded size, not its upload: a 2 MB JPEG of 62 megapixels takes about 10 bytes a
pixel while it is answered (the RGB image, kept for the overlay and cut-out, and the map upsampled to it in
float32; measured in BENCHMARKS.md), so a queue of such uploads would take whatever memory the clients choose.
`PixelBudget` admits requests by the pixels their headers declare, in order of arrival: one that would exceed the
budget waits until enough is freed (within the request's ``--timeout``, then 504). The default budget is derived
from the memory available at start (`default_megapixels_in_flight`).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import AsyncIterator

__all__ = ["BYTES_PER_PIXEL", "PixelBudget", "available_memory", "default_megapixels_in_flight"]

# The most a request holds per pixel of its image while it is answered, rounded up from the measured 8-bit RGB
# photo (BENCHMARKS.md, bench/bench_serve_memory.py); a 16-bit image holds more.
BYTES_PER_PIXEL = 16
# The part of the memory available at start that the images in flight of all server processes may take.
MEMORY_SHARE = 0.25


def available_memory() -> int | None:
    """Bytes of memory available to new work (Linux's MemAvailable), None where unknown."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    return None


def default_megapixels_in_flight(max_megapixels: float, processes: int, available: int | None) -> float:
    """The budget of one of ``processes`` server processes: its part of `MEMORY_SHARE` of ``available`` bytes at
    `BYTES_PER_PIXEL`, in megapixels (one decimal, rounded down), and never under ``max_megapixels`` (one largest
    image must fit); ``max_megapixels`` when the memory is unknown."""
    if available is None:
        return max_megapixels
    share = int(available * MEMORY_SHARE / processes / BYTES_PER_PIXEL / 1e5) / 10
    return max(max_megapixels, share)


class PixelBudget:
    """At most ``capacity`` pixels held at once by the requests inside `hold`, granted in order of arrival."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.held = 0
        self.peak = 0
        self._waiting: collections.deque[tuple[int, asyncio.Future]] = collections.deque()

    @contextlib.asynccontextmanager
    async def hold(self, pixels: int) -> AsyncIterator[None]:
        """Hold ``pixels`` (at most the capacity) while the block runs, waiting first until they fit behind every
        earlier request."""
        pixels = min(pixels, self.capacity)
        await self._acquire(pixels)
        try:
            yield
        finally:
            self.held -= pixels
            self._grant()

    async def _acquire(self, pixels: int) -> None:
        if not self._waiting and self.held + pixels <= self.capacity:
            self._take(pixels)
            return
        granted = asyncio.get_running_loop().create_future()
        self._waiting.append((pixels, granted))
        try:
            await granted
        except asyncio.CancelledError:
            if granted.done() and not granted.cancelled():  # granted as it was cancelled: give it back
                self.held -= pixels
            else:
                self._waiting.remove((pixels, granted))
            self._grant()
            raise

    def _take(self, pixels: int) -> None:
        self.held += pixels
        self.peak = max(self.peak, self.held)

    def _grant(self) -> None:
        while self._waiting and self.held + self._waiting[0][0] <= self.capacity:
            pixels, granted = self._waiting.popleft()
            if not granted.done():
                self._take(pixels)
                granted.set_result(None)

