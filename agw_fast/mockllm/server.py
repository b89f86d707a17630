"""The mock upstream's connection protocol and listening socket.

Everything runs in `asyncio.Protocol` callbacks: a complete reply is one `transport.write`, SSE
events are paced with `loop.call_later`, and large bodies are produced from `resume_writing`.
No Task is created per request. Requests on one connection are answered strictly in order: while a
long reply is in flight, later (pipelined) requests wait in the parser's buffer.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import weakref
from ssl import SSLContext
from typing import cast

from .parser import ParseError, RequestParser
from .responses import (
    BLOCK_SIZE,
    RESET,
    BulkReply,
    MockApp,
    MockLLMConfig,
    RequestLog,
    StreamReply,
    error_reply,
    random_block,
)

__all__ = ["MockLLMProtocol", "bind_socket", "create_mock_server", "request_log", "serve_mock_llm"]

KiB = 1024
_SLICE = 64 * KiB  # bulk body piece; BLOCK_SIZE is a multiple, so a piece never wraps the block
_PIPELINE_BUFFER = 1024 * KiB  # unread bytes held while busy before reading pauses
_BACKLOG = 1024
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
# SO_LINGER on with a zero timeout: close() then sends RST instead of FIN (abortive close).
_LINGER_RESET = struct.pack("ii", 1, 0)

_LOGS: weakref.WeakKeyDictionary[asyncio.AbstractServer, RequestLog] = weakref.WeakKeyDictionary()


class MockLLMProtocol(asyncio.Protocol):
    """One client connection."""

    __slots__ = (
        "_app", "_loop", "_transport", "_parser", "_tls", "_busy", "_processing", "_closed",
        "_eof", "_keep_alive", "_write_paused", "_read_paused", "_events", "_next", "_delay",
        "_timer", "_bulk_left", "_bulk_offset", "_bulk_chunked",
    )

    def __init__(self, app: MockApp, loop: asyncio.AbstractEventLoop) -> None:
        self._app = app
        self._loop = loop
        self._transport: asyncio.Transport | None = None
        self._parser = RequestParser()
        self._tls = False
        self._busy = False  # a StreamReply or BulkReply is still being written
        self._processing = False  # inside _process(): completion must not re-enter it
        self._closed = False
        self._eof = False
        self._keep_alive = True  # of the reply in flight
        self._write_paused = False
        self._read_paused = False
        self._events: tuple[bytes, ...] = ()
        self._next = 0
        self._delay = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._bulk_left = -1  # -1: no bulk reply in flight
        self._bulk_offset = 0
        self._bulk_chunked = False

    # -- asyncio callbacks -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement the interface without subclassing asyncio.Transport.
        self._transport = cast(asyncio.Transport, transport)
        self._tls = transport.get_extra_info("sslcontext") is not None

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._busy = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._events = ()

    def data_received(self, data: bytes) -> None:
        parser = self._parser
        parser.feed(data)
        if not self._busy and not self._write_paused:
            self._process()
        elif parser.buffered > _PIPELINE_BUFFER and not self._read_paused:
            assert self._transport is not None
            self._transport.pause_reading()
            self._read_paused = True

    def eof_received(self) -> bool | None:
        self._eof = True
        # Keep the write side open so an in-flight reply can finish (half-close); TLS transports
        # cannot do that, and an idle connection has nothing left to send.
        return not self._tls and (self._busy or self._write_paused)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._bulk_left >= 0:
            self._pump()
        elif not self._busy and not self._closed:
            self._process()

    # -- request loop ------------------------------------------------------------------------

    def _process(self) -> None:
        transport = self._transport
        assert transport is not None
        parser = self._parser
        handle = self._app.handle
        self._processing = True
        try:
            while not self._closed:
                try:
                    request = parser.next_request()
                except ParseError as exc:
                    self._close_with(error_reply(None, exc.status, exc.message))
                    return
                if request is None:
                    if parser.expect_continue:
                        parser.expect_continue = False
                        transport.write(_CONTINUE)
                    if self._eof:
                        transport.close()
                        self._closed = True
                    elif self._read_paused:
                        self._read_paused = False
                        transport.resume_reading()
                    return
                reply = handle(request)
                if type(reply) is bytes:
                    transport.write(reply)
                elif type(reply) is StreamReply:
                    self._start_stream(reply, request.keep_alive)
                elif reply is RESET:
                    self._reset()
                    return
                else:
                    assert isinstance(reply, BulkReply)
                    self._keep_alive = request.keep_alive
                    self._busy = True
                    transport.write(reply.head)
                    self._bulk_left = reply.size
                    self._bulk_offset = 0
                    self._bulk_chunked = reply.chunked
                    self._pump()
                if self._busy or self._closed:
                    return  # a long reply resumes the loop when it finishes
                if not request.keep_alive:
                    transport.close()
                    self._closed = True
                    return
                if self._write_paused:
                    return  # resume_writing() continues with the buffered requests
        finally:
            self._processing = False

    def _reset(self) -> None:
        """Abort the connection with a TCP RST, as a crashing upstream would: the client sees a
        connection error (ECONNRESET), not a response."""
        transport = self._transport
        assert transport is not None
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
        transport.abort()
        self._closed = True

    def _close_with(self, data: bytes) -> None:
        assert self._transport is not None
        self._transport.write(data)
        self._transport.close()
        self._closed = True

    def _reply_done(self) -> None:
        """A long reply wrote its last byte: close, or serve what was pipelined meanwhile."""
        self._busy = False
        if not self._keep_alive:
            assert self._transport is not None
            self._transport.close()
            self._closed = True
        elif not self._processing and not self._write_paused:
            self._process()

    # -- SSE ---------------------------------------------------------------------------------

    def _start_stream(self, reply: StreamReply, keep_alive: bool) -> None:
        assert self._transport is not None
        events = reply.events
        if reply.delay <= 0.0 or len(events) == 1:
            self._transport.write(reply.head + b"".join(events))
            return
        # The first event leaves with the head, so time-to-first-byte does not include a delay.
        self._transport.write(reply.head + events[0])
        self._keep_alive = keep_alive
        self._busy = True
        self._events = events
        self._next = 1
        self._delay = reply.delay
        self._timer = self._loop.call_later(reply.delay, self._send_event)

    def _send_event(self) -> None:
        self._timer = None
        if self._closed:
            return
        assert self._transport is not None
        events = self._events
        index = self._next
        self._transport.write(events[index])
        index += 1
        if index < len(events):
            self._next = index
            self._timer = self._loop.call_later(self._delay, self._send_event)
        else:
            self._events = ()
            self._reply_done()

    # -- bulk bodies -------------------------------------------------------------------------

    def _pump(self) -> None:
        """Write body pieces until the transport asks to pause or the body is complete."""
        transport = self._transport
        assert transport is not None
        view = memoryview(random_block())
        chunked = self._bulk_chunked
        left = self._bulk_left
        offset = self._bulk_offset
        while left > 0 and not self._write_paused and not self._closed:
            start = offset % BLOCK_SIZE
            size = min(_SLICE, left)
            piece = view[start : start + size]
            if chunked:
                transport.writelines((b"%x\r\n" % size, piece, b"\r\n"))
            else:
                transport.write(piece)
            offset += size
            left -= size
        self._bulk_left = left
        self._bulk_offset = offset
        if left == 0 and not self._closed:
            self._bulk_left = -1
            if chunked:
                transport.write(b"0\r\n\r\n")
            self._reply_done()


def bind_socket(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    """A bound, non-blocking TCP socket for `host:port` (not yet listening).

    It is created with `proto=IPPROTO_TCP` and TCP_NODELAY: stdlib asyncio only disables Nagle on
    accepted sockets whose protocol is TCP, and with Nagle a keep-alive client stalls for the
    40 ms delayed ACK on every small reply.
    """
    infos = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP, flags=socket.AI_PASSIVE
    )
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind(address)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


async def create_mock_server(
    host: str,
    port: int,
    config: MockLLMConfig,
    ssl: SSLContext | None = None,
    *,
    sock: socket.socket | None = None,
) -> asyncio.Server:
    """`serve_mock_llm`, or with `sock`, on a socket already bound (as `--workers` hands each
    worker its own SO_REUSEPORT socket); `host` and `port` are then unused."""
    loop = asyncio.get_running_loop()
    app = MockApp(config)
    if sock is None:
        sock = bind_socket(host, port)
    try:
        server = await loop.create_server(
            lambda: MockLLMProtocol(app, loop), sock=sock, ssl=ssl, backlog=_BACKLOG
        )
    except BaseException:
        sock.close()
        raise
    _LOGS[server] = app.log
    return server


async def serve_mock_llm(
    host: str, port: int, config: MockLLMConfig, ssl: SSLContext | None = None
) -> asyncio.Server:
    """Start the mock upstream on `host:port` (0 picks a free port; read it from
    `server.sockets`). It is serving when this returns; close it with `server.close()`."""
    return await create_mock_server(host, port, config, ssl)


def request_log(server: asyncio.AbstractServer) -> RequestLog:
    """The requests a server started with `MockLLMConfig(record=True)` has received."""
    try:
        return _LOGS[server]
    except KeyError:
        raise ValueError("not a server started by serve_mock_llm") from None
