"""The HTTP/1.1 connection of serve.py: uvicorn's h11 protocol with a deadline on each request's headers.

uvicorn starts no timer before a request's headers are in: a connection that sends nothing, or its headers a byte
at a time, stays open for ever (its keep-alive timer runs only between requests, and any byte received stops it).
`deadlined_protocol` gives each request a deadline for its headers, from the moment the connection opens (the
first request) or the first byte of a later one arrives (until then uvicorn's keep-alive timer closes an idle
connection): past it, a connection that has sent part of a request is answered 408 with the one-line JSON reason of
every refusal, one that has sent nothing is closed, as nginx's ``client_header_timeout`` does. The body of an upload
has its own deadline in the application (`engine.serving.app`, ``--upload-timeout``); a connection answered
before its body is in (a refusal, an endpoint that takes none) is closed once the answer is sent, so a body sent a
byte at a time holds nothing.
"""

from __future__ import annotations

import asyncio
import json

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

__all__ = ["deadlined_protocol"]


class _DeadlinedH11Protocol(H11Protocol):
    header_timeout: float = 10.0
    flag: str = "--upload-timeout"

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._deadline: asyncio.TimerHandle | None = None
        self._started = False  # a byte of the awaited request has arrived
        self._arm()

    def data_received(self, data: bytes) -> None:
        if data and self.conn.their_state is h11.IDLE and not self._started:
            self._started = True
            if self._deadline is None:  # a later request's first byte
                self._arm()
        super().data_received(data)
        self._disarm_if_headers_are_in()

    def on_response_complete(self) -> None:
        if self.conn.their_state is h11.SEND_BODY:  # answered before its body was read: it is not read at all
            self.transport.close()
            return
        super().on_response_complete()
        self._disarm_if_headers_are_in()  # a pipelined request may have been taken at once
        if self.conn.their_state is h11.IDLE:
            self._started = bool(self.conn.trailing_data[0])
            if self._started:  # part of a pipelined request is in
                self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(self.header_timeout, self._headers_late)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _disarm_if_headers_are_in(self) -> None:
        if self.conn.their_state is not h11.IDLE:
            self._disarm()
            self._started = False

    def _headers_late(self) -> None:
        self._deadline = None
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE or self.conn.our_state is not h11.IDLE:
            return
        if self._started:
            reason = json.dumps({"error": f"the request's headers did not arrive within {self.header_timeout:g} s "
                                          f"({self.flag})"}, separators=(",", ":")).encode()
            # Written as bytes: h11 sends no response to a request it has not seen.
            self.transport.write(b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
                                 b"content-length: " + str(len(reason)).encode() + b"\r\nconnection: close\r\n\r\n"
                                 + reason)
        self.transport.close()


def deadlined_protocol(header_timeout: float, flag: str = "--upload-timeout") -> type[H11Protocol]:
    """uvicorn's h11 protocol class (for ``uvicorn.Config(http=...)``) whose connections get ``header_timeout``
    seconds to send each request's headers (``flag`` names the setting in the 408's reason)."""
    return type("DeadlinedH11Protocol", (_DeadlinedH11Protocol,), {"header_timeout": header_timeout, "flag": flag})
