"""DownstreamProtocol + Exchange + UpstreamConnection driven through fake transports.

No sockets and no running loop: the upstream connection is pre-made and pooled, so every
step is a synchronous callback and each test sees exactly which writes happened.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from dataclasses import dataclass

import h11
import pytest
import uvloop

from agw_fast.config.model import (
    Bind,
    Config,
    HostBackend,
    Listener,
    PathMatch,
    Route,
    RouteBackend,
    RouteMatch,
)
from agw_fast.core.http1 import ChunkedScanner
from agw_fast.core.rewrite import local_response
from agw_fast.plan import RuntimeBackend, RuntimeBind, compile_config
from agw_fast.proxy.downstream import DownstreamProtocol, _header_triples, parser_reason
from agw_fast.proxy.upstream import UpstreamConnection
from agw_fast.server.worker import WorkerContext
from agw_fast.telemetry.metrics import MetricsRegistry
from agw_fast.telemetry.recorder import Recorder


class FakeTransport:
    """Records what a protocol does to its transport; `writelines` is one write (syscall)."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False
        self.aborted = False
        self.eof = False  # write_eof(): the half-close of a lingering close
        self.reading_paused = False

    @property
    def data(self) -> bytes:
        return b"".join(self.writes)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        assert not self.closed, "write after close"
        self.writes.append(bytes(data))

    def writelines(self, parts: Iterator[bytes] | tuple[bytes, ...] | list[bytes]) -> None:
        assert not self.closed, "write after close"
        self.writes.append(b"".join(bytes(p) for p in parts))

    def close(self) -> None:
        self.closed = True

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        assert not self.closed, "write_eof after close"
        self.eof = True

    @property
    def ending(self) -> bool:
        """Closed, or half-closed and lingering (the loop's timer closes it later)."""
        return self.closed or self.eof

    def abort(self) -> None:
        self.closed = True
        self.aborted = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        self.reading_paused = True

    def resume_reading(self) -> None:
        self.reading_paused = False

    def get_extra_info(self, name: str, default: object = None) -> object:
        return ("127.0.0.1", 50000) if name == "peername" else default


@dataclass
class Harness:
    ctx: WorkerContext
    bind: RuntimeBind
    backend: RuntimeBackend
    down: DownstreamProtocol
    client: FakeTransport

    def upstream(self) -> tuple[UpstreamConnection, FakeTransport]:
        """A fresh idle upstream connection, put in the pool for the backend."""
        connection = UpstreamConnection(self.backend.pool_key)
        transport = FakeTransport()
        connection.connection_made(transport)  # type: ignore[arg-type]
        self.ctx.pool.put(connection)
        return connection, transport

    def idle(self) -> list[UpstreamConnection]:
        return self.ctx.pool.idle.get(self.backend.pool_key, [])

    def feed(self, data: bytes, *, bytewise: bool = False) -> None:
        if bytewise:
            for index in range(len(data)):
                self.down.data_received(data[index : index + 1])
        else:
            self.down.data_received(data)


_CONFIG = Config(
    binds=(
        Bind(
            8080,
            (
                Listener(
                    "main",
                    routes=(
                        Route(
                            name="api",
                            matches=(RouteMatch(PathMatch("prefix", "/v1")),),
                            backends=(RouteBackend(HostBackend("up.example", 9000)),),
                        ),
                    ),
                ),
            ),
        ),
    )
)


@pytest.fixture(params=["uvloop", "asyncio"])
def loop(request: pytest.FixtureRequest) -> Iterator[asyncio.AbstractEventLoop]:
    # Never run: the loop only provides time() and call_later() for the context.
    new = uvloop.new_event_loop() if request.param == "uvloop" else asyncio.new_event_loop()
    yield new
    new.close()


@pytest.fixture
def harness(loop: asyncio.AbstractEventLoop) -> Harness:
    (bind,) = compile_config(_CONFIG)
    # No access log: it would schedule a flush on the (idle) loop.
    ctx = WorkerContext(loop, _CONFIG, Recorder(MetricsRegistry(), None))
    assert bind.single is not None
    (route,) = bind.single.routes()
    (backend,) = route.backends
    down = DownstreamProtocol(ctx, bind)
    client = FakeTransport()
    down.connection_made(client)  # type: ignore[arg-type]
    return Harness(ctx, bind, backend, down, client)


POST = b"POST /v1/chat?x=1 HTTP/1.1\r\nHost: gw.local:8080\r\nContent-Length: 5\r\n\r\nhello"
POST_UPSTREAM = (
    b"POST /v1/chat?x=1 HTTP/1.1\r\nhost: up.example:9000\r\ncontent-length: 5\r\n\r\nhello"
)
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok"
RESPONSE_DOWN = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\n\r\nok"


def _get(path: bytes) -> bytes:
    return b"GET " + path + b" HTTP/1.1\r\nHost: gw.local\r\n\r\n"


def _get_upstream(path: bytes) -> bytes:
    return b"GET " + path + b" HTTP/1.1\r\nhost: up.example:9000\r\n\r\n"


def _reply(body: bytes, *headers: bytes) -> bytes:
    extra = b"".join(h + b"\r\n" for h in headers)
    return b"HTTP/1.1 200 OK\r\n" + extra + b"Content-Length: %d\r\n\r\n%b" % (len(body), body)


def _reply_down(body: bytes, *headers: bytes) -> bytes:
    extra = b"".join(h.lower() + b"\r\n" for h in headers)
    return b"HTTP/1.1 200 OK\r\n" + extra + b"content-length: %d\r\n\r\n%b" % (len(body), body)


# -- one request, one write each way -----------------------------------------------------------


def test_request_in_one_piece_is_one_upstream_write(harness: Harness) -> None:
    upstream, server = harness.upstream()
    harness.feed(POST)
    assert server.writes == [POST_UPSTREAM]
    assert harness.idle() == []
    assert harness.client.writes == []

    upstream.data_received(RESPONSE)
    assert harness.client.writes == [RESPONSE_DOWN]
    assert harness.idle() == [upstream]
    assert not harness.client.closed
    assert harness.down.exchange is None


@pytest.mark.parametrize("response_bytewise", [False, True])
def test_request_byte_at_a_time(harness: Harness, response_bytewise: bool) -> None:
    upstream, server = harness.upstream()
    harness.feed(POST, bytewise=True)
    assert server.data == POST_UPSTREAM
    assert harness.client.writes == []

    if response_bytewise:
        for index in range(len(RESPONSE)):
            upstream.data_received(RESPONSE[index : index + 1])
    else:
        upstream.data_received(RESPONSE)
    assert harness.client.data == RESPONSE_DOWN
    if not response_bytewise:
        assert harness.client.writes == [RESPONSE_DOWN]
    assert harness.idle() == [upstream]
    assert not harness.client.closed


@pytest.mark.parametrize("split", range(1, len(RESPONSE)))
def test_response_split_anywhere(harness: Harness, split: int) -> None:
    upstream, _ = harness.upstream()
    harness.feed(POST)
    upstream.data_received(RESPONSE[:split])
    upstream.data_received(RESPONSE[split:])
    assert harness.client.data == RESPONSE_DOWN
    assert harness.idle() == [upstream]


def test_connection_is_reused_for_the_next_request(harness: Harness) -> None:
    upstream, server = harness.upstream()
    for number in range(3):
        harness.feed(_get(b"/v1/n%d" % number))
        assert server.writes[-1] == _get_upstream(b"/v1/n%d" % number)
        upstream.data_received(_reply(b"%d" % number))
        assert harness.client.writes[-1] == _reply_down(b"%d" % number)
    assert len(server.writes) == 3
    assert upstream.requests == 3
    assert harness.idle() == [upstream]


# -- pipelining --------------------------------------------------------------------------------


def test_pipelined_request_waits_for_the_first_response(harness: Harness) -> None:
    upstream, server = harness.upstream()
    harness.feed(_get(b"/v1/first") + _get(b"/v1/second"))
    assert server.writes == [_get_upstream(b"/v1/first")]

    upstream.data_received(_reply(b"one"))
    assert harness.client.writes == [_reply_down(b"one")]
    # The first response is complete: now, and only now, the second request goes out.
    assert server.writes == [_get_upstream(b"/v1/first"), _get_upstream(b"/v1/second")]

    upstream.data_received(_reply(b"two"))
    assert harness.client.writes == [_reply_down(b"one"), _reply_down(b"two")]
    assert harness.idle() == [upstream]
    assert not harness.client.closed


def test_pipelined_bytes_arriving_during_the_response(harness: Harness) -> None:
    upstream, server = harness.upstream()
    harness.feed(_get(b"/v1/first"))
    harness.feed(_get(b"/v1/second")[:10])
    harness.feed(_get(b"/v1/second")[10:])
    assert server.writes == [_get_upstream(b"/v1/first")]
    upstream.data_received(_reply(b"one"))
    assert server.writes[1:] == [_get_upstream(b"/v1/second")]
    upstream.data_received(_reply(b"two"))
    assert harness.client.data == _reply_down(b"one") + _reply_down(b"two")


# -- local answers -----------------------------------------------------------------------------


@pytest.mark.parametrize("bytewise", [False, True])
def test_unknown_route_is_404_and_keeps_the_connection(harness: Harness, bytewise: bool) -> None:
    upstream, server = harness.upstream()
    harness.feed(_get(b"/nope"), bytewise=bytewise)
    assert harness.client.writes == [local_response(404, b"route not found")]
    assert harness.client.writes == [
        b"HTTP/1.1 404 Not Found\r\ncontent-type: text/plain\r\n"
        b"content-length: 15\r\n\r\nroute not found"
    ]
    assert not harness.client.closed
    assert server.writes == []

    harness.feed(_get(b"/v1/ok"), bytewise=bytewise)
    assert server.writes == [_get_upstream(b"/v1/ok")]
    upstream.data_received(_reply(b"ok"))
    assert harness.client.writes[1:] == [_reply_down(b"ok")]
    assert not harness.client.closed


def test_404_with_body_then_pipelined_request(harness: Harness) -> None:
    upstream, server = harness.upstream()
    bad = b"POST /nope HTTP/1.1\r\nHost: gw.local\r\nContent-Length: 3\r\n\r\nabc"
    harness.feed(bad + _get(b"/v1/next"))
    assert harness.client.writes == [local_response(404, b"route not found")]
    assert server.writes == [_get_upstream(b"/v1/next")]
    upstream.data_received(_reply(b"n"))
    assert harness.client.writes[1:] == [_reply_down(b"n")]


def test_content_length_with_transfer_encoding_is_400_and_close(harness: Harness) -> None:
    _, server = harness.upstream()
    harness.feed(
        b"POST /v1/x HTTP/1.1\r\nHost: gw.local\r\nContent-Length: 5\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n" + _get(b"/v1/smuggled")
    )
    assert harness.client.writes == [
        local_response(400, b"both transfer-encoding and content-length", close=True)
    ]
    assert harness.client.writes == [
        b"HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain\r\ncontent-length: 41\r\n"
        b"connection: close\r\n\r\nboth transfer-encoding and content-length"
    ]
    assert harness.client.ending and not harness.client.aborted  # a lingering close
    assert server.writes == []


def test_malformed_request_is_400_and_close(harness: Harness) -> None:
    harness.feed(b"GET /v1/x HTTP/1.1\r\nBad Header\r\n\r\n")
    assert len(harness.client.writes) == 1
    assert harness.client.writes[0].startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert b"connection: close\r\n" in harness.client.writes[0]
    assert harness.client.ending and not harness.client.aborted  # a lingering close


# -- request bodies ----------------------------------------------------------------------------

CHUNKED_POST = (
    b"POST /v1/up HTTP/1.1\r\nHost: gw.local\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5;ext=x\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n"
)
CHUNKED_HEAD = (
    b"POST /v1/up HTTP/1.1\r\nhost: up.example:9000\r\ntransfer-encoding: chunked\r\n\r\n"
)


def test_chunked_request_is_rechunked(harness: Harness) -> None:
    upstream, server = harness.upstream()
    harness.feed(CHUNKED_POST)
    assert server.writes == [CHUNKED_HEAD + b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"]
    upstream.data_received(_reply(b"ok"))
    assert harness.client.writes == [_reply_down(b"ok")]
    assert harness.idle() == [upstream]


def test_chunked_request_byte_at_a_time(harness: Harness) -> None:
    upstream, server = harness.upstream()
    harness.feed(CHUNKED_POST, bytewise=True)
    sent = server.data
    assert sent.startswith(CHUNKED_HEAD)
    payload: list[bytes] = []
    body = sent[len(CHUNKED_HEAD) :]
    # The re-chunked body is valid chunked framing that ends exactly at the last byte.
    assert ChunkedScanner(payload.append).feed(body) == len(body)
    assert b"".join(payload) == b"hello world"
    upstream.data_received(_reply(b"ok"))
    assert harness.client.data == _reply_down(b"ok")


def test_body_split_across_reads(harness: Harness) -> None:
    upstream, server = harness.upstream()
    head, body = POST[: -len(b"hello")], b"hello"
    harness.feed(head + body[:2])
    assert server.writes == [POST_UPSTREAM[:-3]]
    harness.feed(body[2:])
    assert server.data == POST_UPSTREAM
    upstream.data_received(RESPONSE)
    assert harness.client.writes == [RESPONSE_DOWN]


# -- upstream connection fate ------------------------------------------------------------------


@pytest.mark.parametrize(
    "response",
    [
        _reply(b"ok", b"Connection: close"),
        # Read-until-close framing can never be reused.
        b"HTTP/1.1 200 OK\r\n\r\nok",
        # Bytes after the response: the connection is out of step.
        _reply(b"ok") + b"HTTP/1.1 200 OK\r\n",
        b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
    ],
)
def test_non_reusable_upstream_is_not_pooled(harness: Harness, response: bytes) -> None:
    upstream, server = harness.upstream()
    harness.feed(_get(b"/v1/x"))
    upstream.data_received(response)
    if b"Content-Length" in response:
        assert harness.client.writes == [_reply_down(b"ok")]
        assert not harness.client.closed
    else:
        upstream.connection_lost(None)  # the server closes: that ends the body
        assert harness.client.data == b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nok"
        assert harness.client.closed
    assert harness.idle() == []
    assert upstream.closed
    assert harness.ctx.pool.take(harness.backend.pool_key) is None


def test_connection_close_from_upstream_keeps_the_client_connection(harness: Harness) -> None:
    upstream, server = harness.upstream()
    harness.feed(_get(b"/v1/x"))
    upstream.data_received(_reply(b"ok", b"Connection: close"))
    assert server.aborted  # closed on our side too, never pooled
    assert harness.idle() == []
    assert not harness.client.closed
    # The next request needs a new upstream connection.
    second, second_server = harness.upstream()
    harness.feed(_get(b"/v1/y"))
    assert second_server.writes == [_get_upstream(b"/v1/y")]
    second.data_received(_reply(b"2"))
    assert harness.client.writes[-1] == _reply_down(b"2")


def test_upstream_lost_mid_body_closes_the_client(harness: Harness) -> None:
    upstream, server = harness.upstream()
    harness.feed(_get(b"/v1/x"))
    upstream.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
    assert harness.client.writes == [b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc"]
    upstream.connection_lost(ConnectionResetError("reset"))
    # Closed after what was relayed (a flushing close, not an abort): the client keeps the
    # bytes and sees the body end short of its Content-Length.
    assert harness.client.closed and not harness.client.aborted
    assert harness.idle() == []
    assert harness.down.exchange is None


def test_upstream_lost_after_head_only_closes_the_client(harness: Harness) -> None:
    upstream, _ = harness.upstream()
    harness.feed(_get(b"/v1/x"))
    upstream.data_received(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    assert harness.client.writes == [b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"]
    upstream.connection_lost(None)
    assert harness.client.closed and not harness.client.aborted  # no terminating chunk


def test_upstream_lost_before_the_head_is_503(harness: Harness) -> None:
    upstream, _ = harness.upstream()
    harness.feed(_get(b"/v1/x"))
    upstream.connection_lost(None)
    assert harness.client.writes == [
        local_response(503, b"upstream call failed: connection closed")
    ]
    assert not harness.client.closed


def test_invalid_upstream_response_is_503(harness: Harness) -> None:
    upstream, server = harness.upstream()
    harness.feed(_get(b"/v1/x"))
    upstream.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n")
    assert harness.client.writes == [
        local_response(503, b"upstream call failed: invalid response: conflicting content-length")
    ]
    assert server.aborted
    assert harness.idle() == []


def test_chunked_response_relayed_untouched(harness: Harness) -> None:
    upstream, _ = harness.upstream()
    harness.feed(_get(b"/v1/x"))
    body = b"3\r\nabc\r\n0\r\n\r\n"
    upstream.data_received(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + body)
    assert harness.client.writes == [
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n" + body
    ]
    assert harness.idle() == [upstream]


def test_client_gone_mid_response_closes_upstream(harness: Harness) -> None:
    upstream, server = harness.upstream()
    harness.feed(_get(b"/v1/x"))
    upstream.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
    harness.down.connection_lost(None)
    assert server.aborted
    assert upstream.closed
    assert harness.idle() == []


def test_head_request_response_has_no_body(harness: Harness) -> None:
    upstream, server = harness.upstream()
    harness.feed(b"HEAD /v1/x HTTP/1.1\r\nHost: gw.local\r\n\r\n")
    assert server.writes == [b"HEAD /v1/x HTTP/1.1\r\nhost: up.example:9000\r\n\r\n"]
    upstream.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n")
    assert harness.client.writes == [b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n"]
    assert harness.idle() == [upstream]
    assert not harness.client.closed


def test_http10_client_gets_dechunked_body_and_close(harness: Harness) -> None:
    upstream, server = harness.upstream()
    harness.feed(b"GET /v1/x HTTP/1.0\r\n\r\n")
    assert server.writes == [_get_upstream(b"/v1/x")]
    upstream.data_received(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
    )
    assert harness.client.data == b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nabcde"
    assert harness.client.closed
    # The upstream side was a complete keep-alive exchange.
    assert harness.idle() == [upstream]


def test_client_connection_close_is_honoured(harness: Harness) -> None:
    upstream, server = harness.upstream()
    harness.feed(b"GET /v1/x HTTP/1.1\r\nHost: gw.local\r\nConnection: close\r\n\r\n")
    assert server.writes == [_get_upstream(b"/v1/x")]
    upstream.data_received(_reply(b"ok"))
    assert harness.client.writes == [
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"
    ]
    assert harness.client.closed
    assert harness.idle() == [upstream]


def test_expect_100_continue(harness: Harness) -> None:
    upstream, server = harness.upstream()
    harness.feed(
        b"POST /v1/x HTTP/1.1\r\nHost: gw.local\r\nExpect: 100-continue\r\n"
        b"Content-Length: 2\r\n\r\n"
    )
    assert harness.client.writes == [b"HTTP/1.1 100 Continue\r\n\r\n"]
    head = b"POST /v1/x HTTP/1.1\r\nhost: up.example:9000\r\ncontent-length: 2\r\n\r\n"
    assert server.writes == [head]
    harness.feed(b"hi")
    assert server.data == head + b"hi"
    upstream.data_received(_reply(b"ok"))
    assert harness.client.writes[1:] == [_reply_down(b"ok")]


# -- the h11 fast path -------------------------------------------------------------------------


def _parsed(raw: bytes) -> h11.Request:
    connection = h11.Connection(h11.SERVER)
    connection.receive_data(raw)
    event = connection.next_event()
    assert isinstance(event, h11.Request)
    return event


@pytest.mark.parametrize(
    "request_",
    [
        _parsed(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
        _parsed(
            b"POST /a HTTP/1.1\r\nHOST: x\r\nX-Mixed-Case: V\r\nx-mixed-case: W\r\n"
            b"Content-Length: 0\r\nAuthorization: Bearer T\r\n\r\n"
        ),
        h11.Request(method="GET", target="/", headers=[("Host", "x"), ("X-A", "1")]),
        h11.Request(method="GET", target="/", headers=[], http_version="1.0"),
    ],
)
def test_header_triples_match_public_api(request_: h11.Request) -> None:
    # `_header_triples` reads h11's private `_full_items`; if h11 changes it, this fails.
    assert hasattr(request_.headers, "_full_items")
    pairs = [(name, value) for _, name, value in _header_triples(request_.headers)]
    assert pairs == list(request_.headers)
    assert all(isinstance(n, bytes) and isinstance(v, bytes) for n, v in pairs)
    assert all(n == n.lower() for n, _ in pairs)


def test_internal_error_costs_only_that_connection(
    harness: Harness, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    upstream, server = harness.upstream()
    broken = harness.down

    original = DownstreamProtocol._on_request

    def explode(self: DownstreamProtocol, request: h11.Request) -> None:
        if self is broken:
            raise RuntimeError("a bug")
        original(self, request)

    monkeypatch.setattr(DownstreamProtocol, "_on_request", explode)
    caplog.set_level(logging.ERROR, logger="agw_fast")
    harness.feed(_get(b"/v1/x"))
    assert harness.client.aborted
    assert "internal error on a client connection" in caplog.text
    assert broken not in harness.ctx.connections or harness.client.closed

    # Another client of the same worker is served normally.
    other = DownstreamProtocol(harness.ctx, harness.bind)
    client = FakeTransport()
    other.connection_made(client)  # type: ignore[arg-type]
    other.data_received(_get(b"/v1/ok"))
    assert server.writes == [_get_upstream(b"/v1/ok")]
    upstream.data_received(_reply(b"ok"))
    assert client.writes == [_reply_down(b"ok")]


def test_internal_error_on_the_upstream_side_closes_both(
    harness: Harness, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    upstream, _ = harness.upstream()
    harness.feed(_get(b"/v1/x"))

    def explode(self: UpstreamConnection, data: bytes) -> bytes:
        raise RuntimeError("a bug")

    monkeypatch.setattr(UpstreamConnection, "_read_head", explode)
    caplog.set_level(logging.ERROR, logger="agw_fast")
    upstream.data_received(_reply(b"ok"))
    assert "internal error on an upstream connection" in caplog.text
    assert upstream.closed
    # Nothing was relayed yet, so the client gets a clean 503 rather than a cut.
    assert harness.client.writes[-1].startswith(b"HTTP/1.1 503 ")


def test_http10_keep_alive_request_is_answered_then_closed(harness: Harness) -> None:
    # `ab -k` sends HTTP/1.0 with Connection: keep-alive and reads until the close when the
    # answer does not confirm keep-alive: closing keeps such clients correct.
    upstream, server = harness.upstream()
    harness.feed(b"GET /v1/x HTTP/1.0\r\nHost: gw.local\r\nConnection: keep-alive\r\n\r\n")
    assert b"keep-alive" not in server.writes[0].lower()  # hop-by-hop: not forwarded
    upstream.data_received(_reply(b"ok"))
    assert harness.client.writes[-1].endswith(b"ok")
    assert b"connection: close\r\n" in harness.client.writes[-1]
    assert harness.client.closed


def test_discarded_bodies_are_counted_per_request(harness: Harness) -> None:
    # Three 404s whose bodies are each under the discard limit keep the connection open.
    body = b"x" * 400_000
    for _ in range(3):
        harness.feed(b"POST /nope HTTP/1.1\r\nHost: gw.local\r\nContent-Length: 400000\r\n\r\n")
        harness.feed(body)
    assert not harness.client.closed
    assert len(harness.client.writes) == 3


def test_an_invalid_answer_on_a_reused_connection_is_not_resent(harness: Harness) -> None:
    upstream, server = harness.upstream()
    harness.feed(_get(b"/v1/a"))
    upstream.data_received(_reply(b"ok"))
    harness.feed(_get(b"/v1/b"))  # reuses the pooled connection (its second request)
    upstream.data_received(b"HTTP/1.1 200 OK\r\nbad header line\r\n\r\n")
    assert harness.client.writes[-1].startswith(b"HTTP/1.1 503 ")
    assert harness.ctx.tasks == set()  # no second attempt was started
    assert server.writes == [_get_upstream(b"/v1/a"), _get_upstream(b"/v1/b")]


def test_content_length_zero_is_forwarded(harness: Harness) -> None:
    _, server = harness.upstream()
    harness.feed(b"POST /v1/x HTTP/1.1\r\nHost: gw.local\r\nContent-Length: 0\r\n\r\n")
    assert server.writes == [
        b"POST /v1/x HTTP/1.1\r\nhost: up.example:9000\r\ncontent-length: 0\r\n\r\n"
    ]



def test_lingering_close_drops_late_bytes_then_closes(
    harness: Harness, loop: asyncio.AbstractEventLoop, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An early answer to a client still uploading: FIN after the answer, what keeps coming
    # is read and dropped (no RST that could destroy the answer), and the socket closes soon.
    monkeypatch.setattr("agw_fast.proxy.downstream.LINGER_SECONDS", 0.01)
    _, server = harness.upstream()
    harness.feed(
        b"POST /v1/x HTTP/1.1\r\nHost: gw.local\r\nContent-Length: 5\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    assert harness.client.eof and not harness.client.closed
    harness.feed(b"5\r\nhello\r\n0\r\n\r\n" + _get(b"/v1/smuggled"))
    assert len(harness.client.writes) == 1 and server.writes == []
    loop.run_until_complete(asyncio.sleep(0.05))
    assert harness.client.closed and not harness.client.aborted


def test_stalled_requests_expire_but_a_wait_on_the_upstream_does_not(harness: Harness) -> None:
    # A client that sent a head and then nothing more expires with the idle timeout; one whose
    # request is complete and waits for its upstream is left to the timeout policies.
    harness.upstream()
    harness.feed(b"POST /v1/x HTTP/1.1\r\nHost: gw.local\r\nContent-Length: 9\r\n\r\n")
    stalled = harness.down
    waiting = DownstreamProtocol(harness.ctx, harness.bind)
    waiting_client = FakeTransport()
    waiting.connection_made(waiting_client)  # type: ignore[arg-type]
    harness.upstream()  # a second pooled connection for the second client
    waiting.data_received(_get(b"/v1/slow"))
    assert waiting.exchange is not None and waiting.exchange.request_done
    long_ago = harness.ctx.loop.time() - harness.ctx.idle_timeout - 1
    stalled.last_active = waiting.last_active = long_ago
    harness.ctx.housekeeping()
    assert harness.client.aborted
    assert not waiting_client.closed


# -- the strict request edge (RFC 9112 rules h11 leaves to us) ---------------------------------


@pytest.mark.parametrize("version", [b"2.0", b"9.9", b"1.2", b"0.9"])
def test_unsupported_http_version_is_505_and_close(harness: Harness, version: bytes) -> None:
    _, server = harness.upstream()
    harness.feed(b"GET /v1/x HTTP/" + version + b"\r\nHost: gw.local\r\n\r\n" + _get(b"/v1/next"))
    assert harness.client.writes == [
        local_response(505, b"HTTP version not supported", close=True)
    ]
    assert harness.client.writes[0].startswith(b"HTTP/1.1 505 HTTP Version Not Supported\r\n")
    assert harness.client.ending
    assert server.writes == []


def test_http10_request_with_transfer_encoding_is_400(harness: Harness) -> None:
    _, server = harness.upstream()
    harness.feed(
        b"POST /v1/x HTTP/1.0\r\nHost: gw.local\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n0\r\n\r\n"
    )
    assert harness.client.writes == [
        local_response(400, b"transfer-encoding in an HTTP/1.0 request", close=True)
    ]
    assert harness.client.ending and server.writes == []


@pytest.mark.parametrize(
    ("length", "forwarded"),
    [(b"9223372036854775807", True), (b"9223372036854775808", False),
     (b"18446744073709551621", False)],
)
def test_content_length_must_fit_in_63_bits(
    harness: Harness, length: bytes, forwarded: bool
) -> None:
    _, server = harness.upstream()
    harness.feed(b"POST /v1/x HTTP/1.1\r\nHost: gw.local\r\nContent-Length: " + length
                 + b"\r\n\r\nhello")
    if forwarded:
        assert server.data.startswith(b"POST /v1/x HTTP/1.1\r\nhost: up.example:9000\r\n"
                                      b"content-length: " + length + b"\r\n\r\nhello")
        assert harness.client.writes == []
    else:
        assert harness.client.writes == [
            local_response(400, b"content-length too large", close=True)
        ]
        assert server.writes == []


def test_field_names_with_underscores_are_dropped(harness: Harness) -> None:
    _, server = harness.upstream()
    harness.feed(
        b"POST /v1/x HTTP/1.1\r\nHost: gw.local\r\nTransfer_Encoding: chunked\r\n"
        b"X-Keep: 1\r\nContent_Length: 99\r\nx_api_key: k\r\nContent-Length: 5\r\n\r\nhello"
    )
    assert server.writes == [
        b"POST /v1/x HTTP/1.1\r\nhost: up.example:9000\r\nx-keep: 1\r\ncontent-length: 5\r\n"
        b"\r\nhello"
    ]


def test_invalid_chunk_mid_body_is_answered_400(harness: Harness) -> None:
    # The head and first chunk went upstream; the broken chunk line closes that connection
    # (the upstream never sees a complete request) and the client gets an answer.
    upstream, server = harness.upstream()
    harness.feed(CHUNKED_POST.split(b"6\r\n")[0])
    assert server.data.startswith(CHUNKED_HEAD)
    harness.feed(b"zz\r\n")
    assert len(harness.client.writes) == 1
    assert harness.client.writes[0].startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert b"illegal chunk header" in harness.client.writes[0]
    assert b"connection: close\r\n" in harness.client.writes[0]
    assert harness.client.ending and not harness.client.aborted  # a lingering close
    assert server.closed and harness.idle() == []
    assert not server.data.endswith(b"0\r\n\r\n")


def test_invalid_chunk_after_the_response_went_out_closes(harness: Harness) -> None:
    upstream, server = harness.upstream()
    harness.feed(CHUNKED_POST.split(b"6\r\n")[0])
    upstream.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello")
    assert harness.client.writes  # the head and half the body are out
    sent = harness.client.data
    harness.feed(b"zz\r\n")
    assert harness.client.data == sent  # no second response inside the first
    assert harness.client.closed and server.closed


def test_invalid_chunk_in_a_body_already_answered_gets_no_second_answer(
    harness: Harness,
) -> None:
    harness.feed(
        b"POST /nope HTTP/1.1\r\nHost: gw.local\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\nzz\r\n"
    )
    assert harness.client.writes == [local_response(404, b"route not found")]
    assert harness.client.ending


@pytest.mark.parametrize("split", range(1, len(CHUNKED_POST)))
def test_chunked_request_split_anywhere(harness: Harness, split: int) -> None:
    upstream, server = harness.upstream()
    harness.feed(CHUNKED_POST[:split])
    harness.feed(CHUNKED_POST[split:])
    payload: list[bytes] = []
    body = server.data[len(CHUNKED_HEAD) :]
    assert server.data.startswith(CHUNKED_HEAD)
    assert ChunkedScanner(payload.append).feed(body) == len(body)
    assert b"".join(payload) == b"hello world"


def test_slow_head_expires_from_its_first_byte(harness: Harness) -> None:
    # Every byte arrives in time, but the head as a whole may take no longer than the idle
    # timeout (agentgateway's header read timeout).
    harness.feed(b"GET /v1/x HTTP/1.1\r\nHost: gw.local\r\n")
    down = harness.down
    now = harness.ctx.loop.time()
    assert down.head_started
    down.head_started = now - harness.ctx.idle_timeout - 1  # the first byte, long ago
    down.last_active = now  # the latest byte, just now
    harness.ctx.housekeeping()
    assert harness.client.aborted


def test_head_time_resets_for_each_request(harness: Harness) -> None:
    upstream, _ = harness.upstream()
    harness.feed(_get(b"/v1/one"))
    assert harness.down.head_started == 0.0  # a complete head: nothing to time
    upstream.data_received(_reply(b"1"))
    harness.feed(b"GET /v1/two HTTP/1.1\r\n")
    started = harness.down.head_started
    assert started
    harness.feed(b"Host: gw.local\r\n")
    assert harness.down.head_started == started  # later bytes do not restart it
    harness.feed(b"\r\n")
    assert harness.down.head_started == 0.0


def test_pipelined_head_is_timed_from_the_next_cycle(harness: Harness) -> None:
    upstream, _ = harness.upstream()
    harness.feed(_get(b"/v1/one") + b"GET /v1/two HTTP/1.1\r\n")
    assert harness.down.head_started == 0.0  # behind a request in flight: not yet a head
    upstream.data_received(_reply(b"1"))
    assert harness.down.head_started  # now it is the head being read


@pytest.mark.parametrize(
    "wire",
    [
        b"GET / HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sk-secret\r\n  sk-more\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nX sk-secret: v\r\n\r\n",
        b"GET /sk-secret\x01 HTTP/1.1\r\n\r\n",
    ],
)
def test_parser_reason_never_quotes_the_request(wire: bytes) -> None:
    # h11 quotes the offending line; it may hold a credential, and the reason is logged and
    # sent back in the 400's body.
    connection = h11.Connection(h11.SERVER)
    connection.receive_data(wire)
    with pytest.raises(h11.RemoteProtocolError) as caught:
        connection.next_event()
    assert "sk-" in str(caught.value)
    reason = parser_reason(caught.value)
    assert "sk-" not in reason
    assert reason in ("illegal header line", "illegal request line")
