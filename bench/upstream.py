"""Fallback bench upstream: the 345 B chat completion, or an SSE stream when asked for one.

Used only when nginx is not installed (plain JSON upstream) or when the project's own mock LLM
(`python -m agw_fast mock-llm`) is not available (SSE upstream). The run's JSON records which
upstream served each scenario, because their costs differ.

    python -m bench.upstream --port P [--chunks N] [--chunk-delay S]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
from typing import cast

from bench.payloads import RESPONSE_BODY, sse_event, sse_final_events

__all__ = ["main"]

_CONTENT_LENGTH = re.compile(rb"(?im)^content-length:[ \t]*([0-9]+)[ \t]*\r?$")
_STREAM = re.compile(rb'"stream"\s*:\s*true')

_JSON_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n"
    % len(RESPONSE_BODY)
)
_SSE_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
    b"cache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n"
)


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


class _UpstreamProtocol(asyncio.Protocol):
    """Answers requests in order; a streaming answer holds the connection until it ends."""

    def __init__(self, chunks: int, delay: float) -> None:
        self._chunks = chunks
        self._delay = delay
        self._buf = b""
        self._busy = False
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None

    def data_received(self, data: bytes) -> None:
        self._buf += data
        self._serve()

    def _serve(self) -> None:
        while not self._busy and self._transport is not None:
            end = self._buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self._buf[: end + 4]
            match = _CONTENT_LENGTH.search(head)
            length = int(match.group(1)) if match else 0
            if len(self._buf) < end + 4 + length:
                return
            body = self._buf[end + 4 : end + 4 + length]
            self._buf = self._buf[end + 4 + length :]
            if _STREAM.search(body):
                self._busy = True
                self._transport.write(_SSE_HEAD + _chunk(sse_event(0)))
                self._next_event(1)
            else:
                self._transport.write(_JSON_HEAD + RESPONSE_BODY)

    def _next_event(self, index: int) -> None:
        if self._transport is None:
            return
        if index < self._chunks:
            asyncio.get_running_loop().call_later(self._delay, self._send_event, index)
            return
        self._transport.write(_chunk(sse_final_events(self._chunks)) + b"0\r\n\r\n")
        self._busy = False
        self._serve()

    def _send_event(self, index: int) -> None:
        if self._transport is not None:
            self._transport.write(_chunk(sse_event(index)))
            self._next_event(index + 1)


async def _serve(host: str, port: int, chunks: int, delay: float) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _UpstreamProtocol(chunks, delay), host, port)
    print(f"bench upstream listening on http://{host}:{port}", flush=True)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--chunks", type=int, default=3, help="SSE events per stream")
    parser.add_argument("--chunk-delay", type=float, default=0.001, help="seconds between events")
    args = parser.parse_args(argv)
    try:
        import uvloop  # optional speed-up; stdlib asyncio otherwise

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:
        runner = asyncio.Runner()
    with runner, contextlib.suppress(KeyboardInterrupt):
        runner.run(_serve(args.host, args.port, args.chunks, args.chunk_delay))


if __name__ == "__main__":
    main()
