"""A bench-local OTLP/HTTP collector that only says yes: every POST is answered 200.

The `--policy-costs` tracing targets export their spans here (`config.tracing` with
`otlpProtocol: http`), so the gateway pays for building, encoding and sending each span while
nothing downstream of it is measured. The sink runs in its own process, so its CPU is never
counted as the proxy's.

It also counts what it received, for the bench to check that spans did leave the gateway:
`GET /stats` answers `{"posts": N, "bytes": N, "spans": N}` (spans counted by decoding each
export with the OpenTelemetry protobuf classes when they are importable, else -1).

    python -m bench.otlp_sink --port 4318
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
from collections.abc import Callable

__all__ = ["SinkStats", "main", "serve"]

# RFC 9110 §15.3.1; an empty body is a valid, empty ExportTraceServiceResponse (OTLP/HTTP
# answers a full success with one).
_OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\nContent-Length: 0\r\n\r\n"
_BAD = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
_MAX_HEAD = 64 * 1024


class SinkStats:
    __slots__ = ("posts", "bytes", "spans", "_count_spans")

    def __init__(self) -> None:
        self.posts = 0
        self.bytes = 0
        self.spans = 0
        self._count_spans = _span_counter()
        if self._count_spans is None:
            self.spans = -1

    def record(self, body: bytes) -> None:
        self.posts += 1
        self.bytes += len(body)
        if self._count_spans is not None:
            self.spans += self._count_spans(body)

    def json(self) -> bytes:
        return json.dumps({"posts": self.posts, "bytes": self.bytes, "spans": self.spans}).encode()


def _span_counter() -> Callable[[bytes], int] | None:
    try:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
        )
    except ImportError:
        return None

    def count(body: bytes) -> int:
        message = ExportTraceServiceRequest()
        try:
            message.ParseFromString(body)
        except Exception:  # a body that is not OTLP protobuf: counted as a post, no spans
            return 0
        return sum(len(s.spans) for r in message.resource_spans for s in r.scope_spans)

    return count


class _Connection(asyncio.Protocol):
    """HTTP/1.1 keep-alive, Content-Length bodies (what the OTLP exporter sends)."""

    def __init__(self, stats: SinkStats) -> None:
        self.stats = stats
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while self.transport is not None:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buffer) > _MAX_HEAD:
                    self._close(_BAD)
                return
            head = bytes(self.buffer[:end]).lower()
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip() == b"content-length":
                    try:
                        length = int(value.strip())
                    except ValueError:
                        self._close(_BAD)
                        return
                elif name.strip() == b"transfer-encoding":
                    self._close(_BAD)  # the exporter never chunks; nothing else talks to us
                    return
            if len(self.buffer) < end + 4 + length:
                return
            body = bytes(self.buffer[end + 4 : end + 4 + length])
            del self.buffer[: end + 4 + length]
            if head.startswith(b"get /stats"):
                payload = self.stats.json()
                self.transport.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    + f"Content-Length: {len(payload)}\r\n\r\n".encode()
                    + payload
                )
                continue
            if head.startswith(b"post "):
                self.stats.record(body)
            self.transport.write(_OK)

    def _close(self, answer: bytes) -> None:
        if self.transport is not None:
            self.transport.write(answer)
            self.transport.close()
            self.transport = None


async def serve(host: str, port: int, stats: SinkStats | None = None) -> None:
    """Serve until SIGTERM or SIGINT."""
    loop = asyncio.get_running_loop()
    stats = stats or SinkStats()
    server = await loop.create_server(lambda: _Connection(stats), host, port)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"otlp sink listening on http://{host}:{port}", flush=True)
    async with server:
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="OTLP/HTTP sink: answers every POST with 200")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    asyncio.run(serve(args.host, args.port))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
