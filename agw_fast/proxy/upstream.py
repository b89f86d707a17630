"""The upstream side: one keep-alive HTTP/1.1 connection, relaying the response as bytes.

The response head is parsed once (`http1.parse_response_head`); body bytes go to the
exchange untouched while we only track where the message ends.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from typing import Protocol, cast

from agw_fast.core.http1 import (
    BODY_CHUNKED,
    BODY_CLOSE,
    BODY_LENGTH,
    BODY_NONE,
    MAX_RESPONSE_HEAD,
    ChunkedScanner,
    ResponseHead,
    UpstreamProtocolError,
    parse_response_head,
)
from agw_fast.log import logger

__all__ = ["ResponseSink", "UpstreamConnection"]


class ResponseSink(Protocol):
    """What an upstream connection reports to (the exchange using it)."""

    head_request: bool
    response_drop: frozenset[bytes]

    def on_response_head(self, head: ResponseHead) -> None: ...
    def flush_response_head(self) -> None: ...
    def on_response_body(self, data: bytes) -> None: ...
    def on_response_end(self, reusable: bool) -> None: ...
    def on_upstream_lost(self, message: str, response_started: bool, retryable: bool) -> None:
        ...
    def pause_request_body(self) -> None: ...
    def resume_request_body(self) -> None: ...


class UpstreamConnection(asyncio.Protocol):
    """One keep-alive connection to an upstream, attached to one exchange at a time.

    It parses only the response head and tracks where the body ends; body bytes go to the
    attached `ResponseSink` untouched. Idle in the pool it has no sink, and it never calls
    back into the pool: the pool sees `closed` and drops it.
    """

    __slots__ = (
        "key",
        "transport",
        "sink",
        "_buffer",
        "_head",
        "_framing",
        "_remaining",
        "_scanner",
        "idle_since",
        "requests",
        "closed",
        "_reusable",
        "payload",
    )

    def __init__(self, key: tuple[str, int, int]) -> None:
        self.key = key
        self.transport: asyncio.Transport | None = None
        self.sink: ResponseSink | None = None
        self._buffer = b""
        self._head: ResponseHead | None = None
        self._framing = BODY_NONE
        self._remaining = 0
        self._scanner: ChunkedScanner | None = None
        self.idle_since = 0.0
        self.requests = 0
        self.closed = False
        self._reusable = True
        # Payload bytes of the current response's body (chunk framing excluded), up to date
        # once it ended or was cut: see `_count_payload`.
        self.payload = 0

    # -- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            # Nagle would hold small request heads for up to 40 ms (the delayed-ACK interaction).
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        sink = self.sink
        if sink is None:
            return  # idle: the pool drops closed connections
        self.sink = None
        head = self._head
        if head is not None:
            self._count_payload()
        if head is not None and self._framing == BODY_CLOSE and exc is None:
            # Read-until-close framing: a clean close *is* the end of the message. A reset
            # (exc set) is not: the body may be cut short, an incomplete message (RFC 9112
            # §8), so it is a lost upstream like any other, and recorded as an error.
            sink.on_response_end(False)
            return
        reason = f"connection closed: {exc}" if exc is not None else "connection closed"
        # Resending is safe only if the server closed before answering anything at all.
        sink.on_upstream_lost(reason, head is not None, head is None and not self._buffer)

    def pause_writing(self) -> None:
        if self.sink is not None:
            self.sink.pause_request_body()

    def resume_writing(self) -> None:
        if self.sink is not None:
            self.sink.resume_request_body()

    def data_received(self, data: bytes) -> None:
        try:
            self._data_received(data)
        except Exception:
            # A bug must cost this exchange, not the worker: log it, end both sides.
            logger.exception("internal error on an upstream connection; closing it")
            self._fail("internal error")

    def _data_received(self, data: bytes) -> None:
        if self.sink is None:
            # Bytes on an idle connection: the server is not speaking HTTP/1.1 to us.
            self.close()
            return
        if self._head is None:
            data = self._read_head(data)
            sink = self.sink
            if sink is None:
                return
            if not data:
                # Only the head so far (an SSE stream's first event may be far away).
                if self._head is not None:
                    sink.flush_response_head()
                return
        self._relay(data)

    # -- response parsing -------------------------------------------------------------------

    def _read_head(self, data: bytes) -> bytes:
        """Consume head bytes; returns body bytes that followed the head (or b"")."""
        buffer = self._buffer + data if self._buffer else data
        while True:
            end = buffer.find(b"\r\n\r\n")
            if end == -1:
                if len(buffer) > MAX_RESPONSE_HEAD:
                    self._fail("response head too large")
                    return b""
                self._buffer = buffer
                return b""
            sink = self.sink
            assert sink is not None
            try:
                head = parse_response_head(buffer, end, sink.head_request, sink.response_drop)
            except UpstreamProtocolError as error:
                self._fail(str(error))
                return b""
            buffer = buffer[end + 4 :]
            if 100 <= head.status < 200:
                # Interim responses are ours to absorb: we answered 100-continue ourselves.
                if head.status == 101:
                    self._fail("unexpected protocol switch")
                    return b""
                continue
            break
        self._buffer = b""
        self._head = head
        self._framing = head.framing
        self._reusable = head.keep_alive
        if head.framing == BODY_LENGTH:
            self._remaining = head.content_length
        elif head.framing == BODY_CHUNKED:
            self._scanner = ChunkedScanner()
        sink.on_response_head(head)
        if head.framing == BODY_NONE:
            if buffer:
                self._reusable = False
            self._finish()
            return b""
        return buffer

    def set_payload_observer(self, observer: Callable[[bytes], None]) -> None:
        """Route de-chunked payload slices to `observer` (chunked responses only)."""
        if self._scanner is not None:
            self._scanner.on_payload = observer

    def _relay(self, data: bytes) -> None:
        sink = self.sink
        assert sink is not None
        framing = self._framing
        if framing == BODY_LENGTH:
            remaining = self._remaining
            if len(data) < remaining:
                self._remaining = remaining - len(data)
                sink.on_response_body(data)
                return
            if len(data) > remaining:
                self._reusable = False  # bytes past the body: never reuse this connection
                data = data[:remaining]
            self._remaining = 0
            sink.on_response_body(data)
            self._finish()
        elif framing == BODY_CHUNKED:
            scanner = self._scanner
            assert scanner is not None
            try:
                used = scanner.feed(data)
            except UpstreamProtocolError as error:
                self._fail(str(error))
                return
            if used == -1:
                sink.on_response_body(data)
                return
            if used < len(data):
                self._reusable = False
                data = data[:used]
            sink.on_response_body(data)
            self._finish()
        else:
            self.payload += len(data)  # read until close: every byte is payload
            sink.on_response_body(data)

    def _count_payload(self) -> None:
        """Bring `payload` up to date (framing lengths and the chunk scanner count it)."""
        framing = self._framing
        if framing == BODY_LENGTH:
            head = self._head
            if head is not None:
                self.payload = head.content_length - self._remaining
        elif framing == BODY_CHUNKED and self._scanner is not None:
            self.payload = self._scanner.payload

    def relayed_payload(self) -> int:
        """Payload bytes of the current response received so far (a response being cut)."""
        if self._head is not None:
            self._count_payload()
        return self.payload

    def _finish(self) -> None:
        sink = self.sink
        if sink is None:
            return
        self._count_payload()
        self.sink = None
        self._head = None
        self._scanner = None
        sink.on_response_end(self._reusable)

    def _fail(self, message: str) -> None:
        sink = self.sink
        if self._head is not None:
            self._count_payload()
        self.sink = None
        self.close()
        if sink is not None:
            # The server did answer, however badly: never resend (it may have acted on it).
            sink.on_upstream_lost(f"invalid response: {message}", self._head is not None, False)

    # -- used by the exchange and the pool ------------------------------------------------

    def attach(self, sink: ResponseSink) -> None:
        self.sink = sink
        self._head = None
        self._buffer = b""
        self._reusable = True
        self.payload = 0
        self.requests += 1

    def detach(self) -> None:
        """Forget the current exchange without closing (it is going back to the pool)."""
        self.sink = None

    def write(self, data: bytes) -> None:
        transport = self.transport
        assert transport is not None
        transport.write(data)

    def writelines(self, parts: list[bytes]) -> None:
        transport = self.transport
        assert transport is not None
        transport.writelines(parts)

    def close(self) -> None:
        """Close without ever returning to the pool (abort: unsent bytes are dropped)."""
        self.sink = None
        if not self.closed:
            self.closed = True
            if self.transport is not None:
                self.transport.abort()
