"""Small HTTP/1.1 clients for what wrk cannot measure: SSE TTFB, idle connections, warm-up.

`ResponseFramer` is sans-IO: it finds where each response ends (Content-Length, chunked, or
close-delimited), so the blocking clients here and the asyncio open-loop generator share it.
"""

from __future__ import annotations

import contextlib
import math
import re
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass

from agw_fast.core.http1 import ChunkedScanner, UpstreamProtocolError
from bench.payloads import CHAT_PATH, REQUEST_BODY, STREAM_REQUEST_BODY, request_bytes

__all__ = [
    "ClientError",
    "ResponseFramer",
    "count_sse_events",
    "hold_idle_connections",
    "percentiles",
    "send_requests",
    "sse_ttfb",
]

_HEAD, _LENGTH, _CHUNKED_BODY, _UNTIL_CLOSE = range(4)
_CONTENT_LENGTH = re.compile(rb"(?im)^content-length:[ \t]*([0-9]+)[ \t]*\r?$")
_CHUNKED = re.compile(rb"(?im)^transfer-encoding:[^\r\n]*chunked")
_STATUS = re.compile(rb"HTTP/1\.[01] ([0-9]{3})")
SECONDS = 1.0


class ClientError(RuntimeError):
    pass


class ResponseFramer:
    """Feed response bytes; `feed()` returns how many responses completed in them.

    `status` is the status code of the most recent response head seen. 1xx heads are
    skipped. A response without a length (close-delimited) completes on `eof()`.
    """

    __slots__ = ("_buf", "_chunks", "_remaining", "_state", "status")

    def __init__(self) -> None:
        self._buf = b""
        self._state = _HEAD
        self._remaining = 0
        self._chunks = ChunkedScanner()  # the gateway's own chunk scanner (RFC 9112 §7.1)
        self.status = 0

    def feed(self, data: bytes) -> int:
        self._buf += data
        done = 0
        while True:
            if self._state == _HEAD:
                end = self._buf.find(b"\r\n\r\n")
                if end < 0:
                    return done
                head = self._buf[: end + 4]
                self._buf = self._buf[end + 4 :]
                match = _STATUS.match(head)
                if match is None:
                    raise ClientError(f"bad response head: {head[:80]!r}")
                self.status = int(match.group(1))
                if 100 <= self.status < 200:
                    continue
                length = _CONTENT_LENGTH.search(head)
                if _CHUNKED.search(head):
                    self._state = _CHUNKED_BODY
                elif length is not None:
                    self._state, self._remaining = _LENGTH, int(length.group(1))
                elif self.status in (204, 304):
                    done += 1
                else:
                    self._state = _UNTIL_CLOSE
            elif self._state == _LENGTH:
                take = min(self._remaining, len(self._buf))
                self._remaining -= take
                self._buf = self._buf[take:]
                if self._remaining:
                    return done
                self._state = _HEAD
                done += 1
            elif self._state == _CHUNKED_BODY:
                try:
                    used = self._chunks.feed(self._buf)
                except UpstreamProtocolError as exc:
                    raise ClientError(f"bad chunked body: {exc}") from None
                if used == -1:
                    self._buf = b""
                    return done
                self._buf = self._buf[used:]
                self._state = _HEAD
                done += 1
            else:  # _UNTIL_CLOSE
                self._buf = b""
                return done

    def eof(self) -> int:
        """The peer closed: completes a close-delimited response."""
        if self._state == _UNTIL_CLOSE:
            self._state = _HEAD
            return 1
        return 0


def _connect(port: int, timeout: float) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _read_one(sock: socket.socket, framer: ResponseFramer) -> None:
    while True:
        data = sock.recv(65536)
        if not data:
            if framer.eof():
                return
            raise ClientError("connection closed before the response ended")
        if framer.feed(data):
            return


def send_requests(
    port: int,
    count: int,
    *,
    body: bytes | None = None,
    conns: int = 1,
    headers: dict[str, str] | None = None,
) -> None:
    """Warm-up: `count` sequential requests spread over `conns` keep-alive connections."""
    request = request_bytes(
        f"127.0.0.1:{port}", body=REQUEST_BODY if body is None else body, headers=headers
    )
    sockets = [_connect(port, 10 * SECONDS) for _ in range(max(1, conns))]
    try:
        for i in range(count):
            sock = sockets[i % len(sockets)]
            sock.sendall(request)
            framer = ResponseFramer()
            _read_one(sock, framer)
            if framer.status >= 400:
                raise ClientError(f"warm-up request answered {framer.status}")
    finally:
        for sock in sockets:
            sock.close()


@dataclass(frozen=True)
class TtfbResult:
    samples_us: list[float]
    events_per_response: int


def sse_ttfb(
    port: int,
    requests: int,
    *,
    warmup: int = 10,
    path: str = CHAT_PATH,
    headers: dict[str, str] | None = None,
) -> TtfbResult:
    """Sequential streaming POSTs on one keep-alive connection: send → first `data:` byte;
    `headers` replace or add request fields (e.g. `anthropic-version` for /v1/messages)."""
    request = request_bytes(f"127.0.0.1:{port}", path, STREAM_REQUEST_BODY, headers=headers)
    samples: list[float] = []
    events = 0
    sock = _connect(port, 10 * SECONDS)
    try:
        for i in range(warmup + requests):
            framer = ResponseFramer()
            seen = b""
            first: float | None = None
            start = time.perf_counter()
            sock.sendall(request)
            while True:
                data = sock.recv(65536)
                if not data:
                    raise ClientError("connection closed during a stream")
                if first is None:
                    seen += data
                    if b"data:" in seen:
                        first = time.perf_counter()
                elif i == 0:
                    seen += data
                if framer.feed(data):
                    break
            if framer.status != 200 or first is None:
                raise ClientError(f"stream answered {framer.status} without a data: event")
            if i == 0:
                events = count_sse_events(seen)
            if i >= warmup:
                samples.append((first - start) * 1e6)
    finally:
        sock.close()
    return TtfbResult(samples, events)


def count_sse_events(raw: bytes) -> int:
    """`data:` lines in a raw (possibly chunk-framed) response."""
    return len(re.findall(rb"(?m)^data:", raw))


@contextlib.contextmanager
def hold_idle_connections(port: int, count: int) -> Iterator[list[socket.socket]]:
    """Open `count` keep-alive connections, make one request on each, keep them open."""
    request = request_bytes(f"127.0.0.1:{port}")
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = _connect(port, 10 * SECONDS)
            sockets.append(sock)
            sock.sendall(request)
            _read_one(sock, ResponseFramer())
        yield sockets
    finally:
        for sock in sockets:
            sock.close()


def percentiles(samples: list[float], points: tuple[float, ...]) -> dict[str, float]:
    """Nearest-rank percentiles, keyed `p50`, `p99`, `p999` (for 99.9)."""
    if not samples:
        return {}
    ordered = sorted(samples)
    out: dict[str, float] = {}
    for point in points:
        rank = max(0, min(len(ordered) - 1, math.ceil(point / 100 * len(ordered)) - 1))
        out["p" + f"{point:g}".replace(".", "")] = ordered[rank]
    return out
