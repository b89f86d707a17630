"""The client side: h11 parses every request; routing and local answers happen here.

h11 owns request framing and its strictness (smuggling rules, 400/431 via
`error_status_hint`), made stricter where RFC 9112 asks by `core.h11_strict` (chunk
extensions, obsolete line folding); `_on_request` adds the rules h11 leaves to its caller
(HTTP version, Content-Length range, Transfer-Encoding on HTTP/1.0, both framings at once,
field names with `_`). The response never passes through h11: it is relayed as framed bytes
(h11 would re-validate every header of a response it writes, a measured ~10 µs a request we
do not need: the upstream's framing is checked in core/http1), so h11's parser is driven
without its two-party state machine (`core.h11_request`), and after each response it goes
on with the bytes that were pipelined behind the request.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from enum import IntEnum
from functools import partial
from typing import Protocol, cast

import h11

from agw_fast.config.model import RequestRedirect
from agw_fast.core.h11_request import RequestParser
from agw_fast.core.h11_strict import harden_h11
from agw_fast.core.http1 import connection_tokens
from agw_fast.core.reason import Reason
from agw_fast.core.rewrite import (
    apply_authority_rewrite,
    apply_path_rewrite,
    local_response,
    redirect_response,
    split_target,
    without_body,
)
from agw_fast.core.routing import RequestView, host_without_port, select_listener
from agw_fast.errors import ProxyError
from agw_fast.log import logger
from agw_fast.plan import (
    RouteLabels,
    RuntimeBackend,
    RuntimeBind,
    RuntimeListener,
    RuntimeRoute,
)
from agw_fast.policies import DEFER, PolicyAnswer, PolicyRequest, run_steps
from agw_fast.proxy.exchange import Exchange, ReadPause, Services
from agw_fast.proxy.mirror import send_mirror
from agw_fast.telemetry.metrics import (
    CONNECT_DURATION_BUCKETS,
    CONNECTIONS,
    RECEIVED_BYTES,
    SENT_BYTES,
    TLS_HANDSHAKE,
    Hist,
    observe,
)
from agw_fast.telemetry.record import RequestRecord
from agw_fast.telemetry.tracing import PendingSpan, Tracer

__all__ = ["ConnectionServices", "DownstreamProtocol", "LiveBind", "parser_reason"]

harden_h11()

MAX_REQUEST_HEAD = 32 * 1024
# Bytes of an unwanted request body we read and drop to keep a connection alive after a
# local answer; a larger body costs more than a new connection, so we close instead.
MAX_DISCARD = 1024 * 1024
# Pipelined bytes buffered while a response is in flight before we stop reading.
MAX_PIPELINED = 64 * 1024
# How long a closing connection keeps reading (and dropping) what the client still sends.
LINGER_SECONDS = 2.0
# The largest Content-Length we forward: what a signed 64-bit length field holds, so no
# upstream can read it as a different (wrapped) number.
MAX_CONTENT_LENGTH = 2**63 - 1

class RequestMode(IntEnum):
    """What the events of the request being read are for."""

    IDLE = 0  # between requests (or closing): nothing is being read for a request
    PROXY = 1  # its body goes to the exchange
    ANSWERED = 2  # answered locally: its body is read and dropped (up to MAX_DISCARD)
    DELAYED = 3  # held by a `delay` policy: its events wait in h11's buffer


_IDLE, _PROXY, _ANSWERED, _DELAYED = (
    RequestMode.IDLE, RequestMode.PROXY, RequestMode.ANSWERED, RequestMode.DELAYED,
)

_HOST, _CONTENT_LENGTH, _TRANSFER_ENCODING, _CONNECTION, _EXPECT, _CONTENT_ENCODING = range(6)
_SPECIAL_FIELDS = {
    b"host": _HOST,
    b"content-length": _CONTENT_LENGTH,
    b"transfer-encoding": _TRANSFER_ENCODING,
    b"connection": _CONNECTION,
    b"expect": _EXPECT,
    b"content-encoding": _CONTENT_ENCODING,
}


class ConnectionServices(Services, Protocol):
    """What the worker lends each client connection (and, through it, each exchange)."""

    connections: set[DownstreamProtocol]  # open client connections: idle expiry, draining
    # Client connections whose protocol exists: counted by the protocol factory (which runs
    # as the connection is accepted, before `connection_made`) and here in `connection_lost`.
    open_clients: int
    stopping: bool  # the worker is draining: every connection closes after its answer
    tracer: Tracer | None  # config.tracing / frontendPolicies.tracing; None: off

    def log_protocol_error(self, peer: str, status: int, message: str) -> None: ...


class LiveBind:
    """A bind as a worker serves it now. A reload swaps `bind` (every connection reads it as
    a request begins, so the next request on a keep-alive connection sees the new config,
    while one in flight keeps what it started with) or `retire`s it (the bind is gone from
    the config: its connections close after their current response)."""

    __slots__ = ("bind", "retired")

    def __init__(self, bind: RuntimeBind) -> None:
        self.bind = bind
        self.retired = False


class DownstreamProtocol(asyncio.Protocol):
    """One client connection: parses requests with h11, routes them, answers or proxies.

    For each request it either answers locally (errors, direct responses, redirects) or
    hands the request to an `Exchange`, which it implements the `Client` interface for.
    Between requests the parser goes on with whatever was pipelined.
    """

    __slots__ = (
        "ctx",
        "live",
        "loop",
        "transport",
        "h11",
        "cycle",
        "exchange",
        "mode",
        "keep_alive",
        "http11",
        "closing",
        "writing_paused",
        "read_pauses",
        "buffered",
        "discarded",
        "last_active",
        "made_at",
        "counted",
        "head_started",
        "peer",
        "lingering",
        "sni_listener",
        "sni_bind",
        "delay_timer",
        "received",
        "sent",
        "connection_series",
        "accepted_at",
        "span",
    )

    def __init__(self, ctx: ConnectionServices, bind: LiveBind | RuntimeBind) -> None:
        self.ctx = ctx
        self.live = bind if isinstance(bind, LiveBind) else LiveBind(bind)
        self.loop = ctx.loop
        self.transport: asyncio.Transport | None = None
        self.h11 = RequestParser(MAX_REQUEST_HEAD)
        self.cycle = 0  # requests begun on this connection: `_process_events` sees a new one
        self.exchange: Exchange | None = None
        self.mode = _IDLE
        self.keep_alive = True
        self.http11 = True
        self.closing = False
        self.writing_paused = False
        self.read_pauses = 0
        self.buffered = 0
        self.discarded = 0
        self.last_active = 0.0
        # Counted in the worker's `open_clients`: at accept for plain HTTP, once the TLS
        # handshake is done for HTTPS (a failed handshake never reaches this protocol).
        self.counted = False
        self.made_at = 0.0  # `last_active` still equals it: not a byte received yet
        # When the first byte of the request head being read arrived (0.0: not in a head).
        # The housekeeping sweep closes a connection whose head takes longer than the idle
        # timeout, however steadily its bytes trickle in (slowloris).
        self.head_started = 0.0
        self.peer = ""
        self.lingering = False
        # HTTPS: the listener the client's SNI chose during the handshake.
        self.sni_listener: RuntimeListener | None = None
        self.sni_bind: RuntimeBind | None = None  # the bind (config) it belongs to
        # A `delay` policy holding the current request (see `_defer`).
        self.delay_timer: asyncio.TimerHandle | None = None
        # Telemetry: bytes received and sent (as the application sees them: decrypted),
        # added to this connection's CONNECTION record as it closes (agentgateway counts
        # them per connection, at its end); when an HTTPS connection was accepted.
        self.received = 0
        self.sent = 0
        self.connection_series: Hist | None = None
        self.accepted_at = 0.0
        # The current request's trace span (config with tracing, request sampled), until
        # its exchange or local answer takes it.
        self.span: PendingSpan | None = None

    # -- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        self.last_active = self.made_at = self.loop.time()
        ctx = self.ctx
        ctx.connections.add(self)
        if not self.counted:
            self.counted = True
            ctx.open_clients += 1
        live = self.live
        if ctx.stopping or live.retired:
            # Accepted before the stop began (or the bind left the config), made after
            # (uvloop defers connection_made), so `begin_stop` did not see it: one answer,
            # then close, like every other one.
            self.closing = True
        bind = live.bind
        by_context = bind.tls_listeners
        if by_context is not None:
            ssl_object = transport.get_extra_info("ssl_object")
            # None when the handshake began under a config a reload has since replaced.
            listener = self.sni_listener = by_context.get(ssl_object.context)
            self.sni_bind = bind
            series = ctx.recorder.connection_series(
                bind.labels if listener is None else listener.labels, "https"
            )
            if self.accepted_at:
                handshake = time.monotonic() - self.accepted_at
                observe(series, TLS_HANDSHAKE, CONNECT_DURATION_BUCKETS, handshake)
        else:
            series = ctx.recorder.connection_series(bind.labels, "http")
        series[CONNECTIONS] += 1
        self.connection_series = series

    def connection_lost(self, exc: Exception | None) -> None:
        ctx = self.ctx
        ctx.connections.discard(self)
        series = self.connection_series
        if series is not None:
            self.connection_series = None
            series[RECEIVED_BYTES] += self.received
            series[SENT_BYTES] += self.sent
        if self.counted:
            ctx.open_clients -= 1
        timer = self.delay_timer
        if timer is not None:
            self.delay_timer = None
            timer.cancel()
        exchange = self.exchange
        if exchange is not None:
            exchange.abort()
        self.transport = None

    def eof_received(self) -> bool:
        # A client that half-closes mid-exchange has gone away for our purposes (like nginx
        # without proxy_ignore_client_abort): stop the upstream work and close.
        return False

    def pause_writing(self) -> None:
        self.writing_paused = True
        if self.exchange is not None:
            self.exchange.pause_response()

    def resume_writing(self) -> None:
        self.writing_paused = False
        if self.exchange is not None:
            self.exchange.resume_response()

    def data_received(self, data: bytes) -> None:
        self.received += len(data)
        try:
            self._data_received(data)
        except Exception:
            self._internal_error()

    def _internal_error(self) -> None:
        """A bug must cost one connection, not the worker (nor an upstream callback or timer
        that reached it): log it and cut this connection."""
        logger.exception("internal error on a client connection; closing it")
        exchange = self.exchange
        if exchange is not None:
            exchange.abort()
        self.abort()

    def _data_received(self, data: bytes) -> None:
        if self.lingering:
            return  # the answer is out and the connection is closing: drop what comes in
        now = self.last_active = self.loop.time()
        self.h11.receive_data(data)
        if self.mode == _IDLE:
            if not self.head_started:
                self.head_started = now
            self._process()
        elif self.exchange is None:
            if self.mode != _DELAYED:
                self._process()
            else:
                self._hold(data)  # the delayed request's body waits for `_resume`
        elif not self.exchange.request_done:
            self._process()
        else:
            # Pipelined request bytes wait in h11's buffer until this response is done.
            self._hold(data)

    def _hold(self, data: bytes) -> None:
        """Leave `data` in h11's buffer for later, and stop reading once there is enough."""
        self.buffered += len(data)
        if self.buffered > MAX_PIPELINED:
            self.pause_reading(ReadPause.PIPELINE)

    # -- helpers used by the exchange --------------------------------------------------------

    def write(self, data: bytes) -> None:
        transport = self.transport
        if transport is not None:
            self.sent += len(data)
            transport.write(data)

    def writelines(self, first: bytes, second: bytes) -> None:
        transport = self.transport
        if transport is not None:
            self.sent += len(first) + len(second)
            transport.writelines((first, second))

    def abort(self) -> None:
        transport = self.transport
        if transport is not None:
            transport.abort()

    def close(self) -> None:
        """Flush what was written, then close (used to cut a response mid-body)."""
        self._close()

    def pause_reading(self, reason: int) -> None:
        if not self.read_pauses and self.transport is not None:
            self.transport.pause_reading()
        self.read_pauses |= reason

    def resume_reading(self, reason: int) -> None:
        if self.read_pauses & reason:
            self.read_pauses &= ~reason
            if not self.read_pauses and self.transport is not None:
                self.transport.resume_reading()
                # The idle timeout counts from here: while paused, the client waited on us.
                self.last_active = self.loop.time()

    def _sni_after_reload(self, bind: RuntimeBind) -> RuntimeListener | None:
        """The listener of `bind` (a reloaded config) with the hostname of the one the
        client's SNI chose under the config it connected with (once per connection and
        reload, off the common path: only when the Host disagrees with the old one)."""
        old, sni = self.sni_bind, self.sni_listener
        assert old is not None
        name = next((key for key, value in old.listeners.items() if value is sni), None)
        self.sni_listener = None if name is None else bind.listeners.get(name)
        self.sni_bind = bind
        return self.sni_listener

    def stop_taking_requests(self) -> None:
        """Draining: close now if idle between requests, else after the current response
        (a request whose head has begun to arrive included). A connection that has not
        sent a byte yet is left to `WorkerContext.housekeeping`: it may have been accepted
        a moment ago, with its first request on the way."""
        self.closing = True
        if self.between_requests() and self.last_active != self.made_at:
            self.abort()

    def between_requests(self) -> bool:
        """No request in progress, not even the first bytes of a head."""
        return self.exchange is None and self.mode == _IDLE and not self.head_started

    def exchange_finished(self, keep_alive: bool) -> None:
        """The response is complete (or failed locally): prepare for the next request."""
        exchange = self.exchange
        self.exchange = None
        if self.read_pauses & (ReadPause.PENDING | ReadPause.UPSTREAM):
            self.resume_reading(ReadPause.PENDING | ReadPause.UPSTREAM)
        # An exchange keeps the connection alive only if its request was read whole: skipping
        # an unknown amount of body is not worth the connection.
        if not keep_alive or self.closing:
            if exchange is not None and not exchange.request_done:
                self._linger()
            else:
                self._close()
            return
        self._next_cycle()

    # -- request processing ------------------------------------------------------------------

    def _close(self) -> None:
        """Flush what was written, then close; nothing more is read or processed."""
        self.mode = _IDLE
        transport = self.transport
        if transport is not None:
            self.transport = None
            transport.close()

    def _linger(self) -> None:
        """Close after an answer the client may still be sending a body to.

        Closing a socket with unread bytes makes the kernel send RST, which can destroy the
        answer before the client reads it (an early 413, say). So: half-close (FIN after the
        answer), keep reading and dropping for a while, then close (nginx's lingering close).
        """
        transport = self.transport
        if transport is None or transport.is_closing() or not transport.can_write_eof():
            self._close()
            return
        self.mode = _IDLE
        self.lingering = True
        self.transport = None  # nothing more is written or processed
        transport.write_eof()
        self.loop.call_later(LINGER_SECONDS, transport.close)

    def _next_cycle(self) -> None:
        self.mode = _IDLE
        self.discarded = 0
        now = self.last_active = self.loop.time()
        parser = self.h11
        parser.next_cycle()
        self.cycle += 1
        self.buffered = 0
        if self.read_pauses & ReadPause.PIPELINE:
            self.resume_reading(ReadPause.PIPELINE)
        if parser.buffered or parser.closed:
            # Pipelined bytes are (the start of) the next head: its time starts now.
            self.head_started = now
            self._process()

    def _process(self) -> None:
        exchange = self.exchange
        if exchange is not None:
            exchange.corked = True
        try:
            self._process_events()
        except Exception:
            # Also reached from upstream callbacks and timers (a finished exchange moves on to
            # the next pipelined request): a bug costs this connection, never the caller's.
            self._internal_error()
        finally:
            exchange = self.exchange
            if exchange is not None and exchange.corked:
                exchange.uncork()

    def _process_events(self) -> None:
        connection = self.h11
        cycle = self.cycle
        while self.transport is not None and cycle == self.cycle:
            try:
                event = connection.next_event()
            except h11.RemoteProtocolError as error:
                self._protocol_error(error)
                return
            kind = type(event)
            if kind is h11.Data:
                mode = self.mode
                if mode == _PROXY:
                    assert self.exchange is not None
                    self.exchange.on_request_body(event.data)  # type: ignore[union-attr]
                elif mode == _ANSWERED:
                    self.discarded += len(event.data)  # type: ignore[union-attr]
                    if self.discarded > MAX_DISCARD:
                        self._linger()
                        return
            elif kind is h11.Request:
                self.head_started = 0.0
                self._on_request(event)  # type: ignore[arg-type]
                if self.mode == _DELAYED:
                    return  # the rest waits for `_resume`
            elif kind is h11.EndOfMessage:
                mode = self.mode
                if mode == _PROXY:
                    assert self.exchange is not None
                    self.exchange.on_request_end()
                    # Whatever follows is a pipelined request: it waits in h11's buffer
                    # until this response is done (asking now would only return PAUSED).
                    return
                if mode == _ANSWERED:
                    if self.closing or not self.keep_alive:
                        self._close()
                        return
                    self._next_cycle()
                    return
            elif event is h11.NEED_DATA or event is h11.PAUSED:
                return
            else:  # ConnectionClosed
                self._close()
                return

    def _protocol_error(self, error: h11.RemoteProtocolError) -> None:
        message = parser_reason(error)
        exchange = self.exchange
        if exchange is not None:
            # The request body's framing broke (RFC 9112 §7.1): the exchange answers if the
            # client has seen nothing yet, and the connection ends (nothing sane can follow).
            exchange.request_body_invalid(message)
            self.ctx.log_protocol_error(self.peer_name(), exchange.status, message)
            return
        if self.mode != _IDLE:
            # The body of a request already answered: one answer is all a request gets.
            logger.info("invalid request body from %s after its answer: %s", self.peer_name(),
                        message)
            self._linger()
            return
        status = error.error_status_hint
        self.ctx.log_protocol_error(self.peer_name(), status, message)
        self.write(local_response(status, message.encode(), close=True))
        self._linger()

    def peer_name(self) -> str:
        if not self.peer and self.transport is not None:
            peer = self.transport.get_extra_info("peername")
            if not peer:
                self.peer = "-"
            elif ":" in peer[0]:
                self.peer = f"[{peer[0]}]:{peer[1]}"  # IPv6, written as a socket address
            else:
                self.peer = f"{peer[0]}:{peer[1]}"
        return self.peer

    def _local(
        self,
        request: h11.Request,
        status: int,
        body: bytes,
        started: float,
        labels: RouteLabels,
        reason: str,
        extra_headers: bytes = b"",
        log_request: PolicyRequest | None = None,
    ) -> None:
        response = local_response(status, body, extra_headers=extra_headers)
        self._answer(request, response, status, started, labels, reason, body, None, log_request)

    def _reject(
        self, request: h11.Request, status: int, body: bytes, started: float, close: bool = True
    ) -> None:
        """Refuse a request before routing: its head is one we will not forward, and unless
        `close` is False its framing is not one we can skip past on this connection."""
        if close:
            self.keep_alive = False
        self._local(request, status, body, started, self.live.bind.labels, Reason.INVALID_REQUEST)

    def _answer(
        self,
        request: h11.Request,
        response: bytes,
        status: int,
        started: float,
        labels: RouteLabels,
        reason: str,
        body: bytes = b"",
        backend: RuntimeBackend | None = None,
        log_request: PolicyRequest | None = None,
    ) -> None:
        """Send a response the gateway makes itself (error, direct response, redirect).

        `response` is complete and says nothing of the connection: `connection: close` is
        added here when the connection ends after it, and a HEAD request gets the head only.
        `labels` and `reason` name it for telemetry.
        """
        self.mode = _ANSWERED
        if not self.keep_alive or self.closing:
            head_end = response.index(b"\r\n\r\n") + 2
            response = response[:head_end] + b"connection: close\r\n" + response[head_end:]
        if request.method == b"HEAD":
            response = without_body(response)
        self.write(response)
        self._record_local(request, status, started, labels, reason, body, backend, log_request)
        if self.h11.waiting_for_continue or not self.keep_alive:
            # A client waiting for 100-continue will not send the body we must skip, and a
            # non-keep-alive client is done: either way this connection ends here.
            self._linger()

    def _record_local(
        self,
        request: h11.Request,
        status: int,
        started: float,
        labels: RouteLabels,
        reason: str,
        body: bytes,
        backend: RuntimeBackend | None,
        log_request: PolicyRequest | None,
    ) -> None:
        # A local answer is rare: what the record needs is recomputed from the request here
        # rather than carried through the common path.
        host = b""
        for name, value in request.headers:
            if name == b"host":
                host = value
                break
        target = request.target
        if not target.startswith(b"/"):
            target = _origin_form(target) or target
        path = split_target(target)[0]
        record: RequestRecord = (
            labels,
            backend.name if backend is not None else None,
            None,
            "http",
            request.method,
            host,
            path,
            "HTTP/1.1" if self.http11 else "HTTP/1.0",
            self.peer_name(),
            status,
            reason,
            body.decode("latin-1") if status >= 400 and body else None,
            time.monotonic() - started,
            None,
            0,
            log_request,
            len(body) if request.method != b"HEAD" else 0,
            None,
            None,
        )
        self.ctx.recorder.record(record)
        span = self.span
        if span is not None:
            self.span = None
            span.finish(record)

    def _on_request(self, request: h11.Request) -> None:
        started = time.monotonic()
        method = request.method
        target = request.target
        http11 = self.http11 = request.http_version == b"1.1"
        if not http11 and request.http_version != b"1.0":
            # h11 takes any HTTP/d.d; we speak 1.0 and 1.1 only (RFC 9110 §15.6.6). hyper
            # answers 400 here; 505 says why. An HTTP/2 prior-knowledge preface
            # (`PRI * HTTP/2.0`) lands here too: we do not speak HTTP/2.
            self._reject(request, 505, b"HTTP version not supported", started)
            return
        keep_alive = http11
        host = b""
        length = -1
        chunked = False
        expect = False
        content_encoding: bytes | None = None
        headers: list[tuple[bytes, bytes]] = []
        append = headers.append
        head_size = len(target)
        # One pass over h11's (raw name, lowercase name, value) triples builds the pairs we
        # forward and picks out the few fields that matter here (one dict probe each).
        for _, name, value in _header_triples(request.headers):
            head_size += len(name) + len(value) + 4
            field = _SPECIAL_FIELDS.get(name)
            if field is None:
                # A name with `_` is dropped, as nginx does by default: CGI/WSGI-style
                # servers read `Content_Length` as `Content-Length` and would frame the
                # request differently from us (and from every proxy in front of us).
                # 0x5F is "_": an int operand is one memchr, a bytes one costs ~10x more.
                if 0x5F not in name:
                    append((name, value))
                continue
            append((name, value))
            if field == _HOST:
                host = value
            elif field == _CONTENT_LENGTH:
                length = int(value)
            elif field == _TRANSFER_ENCODING:
                chunked = True
            elif field == _CONNECTION:
                # HTTP/1.0 clients are answered and closed even if they ask to keep alive,
                # as h11 does: that keeps `ab -k` correct (it reads until the close).
                if b"close" in connection_tokens(value):
                    keep_alive = False
            elif field == _EXPECT:
                expect = True
            else:
                content_encoding = value
        self.keep_alive = keep_alive
        if head_size > MAX_REQUEST_HEAD:
            # h11 bounds only heads that arrive incomplete; one that came whole in a single
            # read is measured here, so the limit holds however the bytes were split.
            self._reject(request, 431, b"request header fields too large", started)
            return
        if chunked:
            if length >= 0:
                # RFC 9112 §6.1: both framings at once is the classic smuggling vector.
                self._reject(request, 400, b"both transfer-encoding and content-length", started)
                return
            if not http11:
                # RFC 9112 §6.1: an HTTP/1.0 recipient may not understand chunked framing, so
                # a front proxy may have framed this body by Content-Length or by the close.
                self._reject(request, 400, b"transfer-encoding in an HTTP/1.0 request", started)
                return
        elif length > MAX_CONTENT_LENGTH:
            # h11 checks the digits (no sign, `_` or space: RFC 9110 §8.6) but not the size:
            # an upstream that parses into 64 bits would wrap it (2**64 + 5 reads as 5).
            self._reject(request, 400, b"content-length too large", started)
            return
        if not target.startswith(b"/"):
            target = _origin_form(target)
            if not target:
                self._reject(request, 400, b"invalid request target", started, close=False)
                return
        bind = self.live.bind
        path, query = split_target(target)
        table = bind.single
        host_name: str | None = None
        if table is None:
            host_name = host_without_port(host)
            table = select_listener(bind.listeners, host_name)
            sni = self.sni_listener
            if sni is not None and table is not sni and self.sni_bind is not bind:
                sni = self._sni_after_reload(bind)
            if sni is not None and table is not sni:
                # agentgateway's detect_misdirected (the Gateway API rule for HTTPS): the
                # Host belongs to another TLS listener: 421 (RFC 9110 §15.5.20); to none: 404.
                if table is None:
                    self._local(
                        request, 404, b"route not found", started, sni.labels,
                        Reason.NOT_FOUND,
                    )
                else:
                    self._local(
                        request, 421, b"misdirected request", started, sni.labels,
                        Reason.NOT_FOUND,
                    )
                return
            if table is None:
                self._local(
                    request, 404, b"listener not found", started, bind.labels, Reason.NOT_FOUND
                )
                return
        # Policy steps: the listener's (before route selection, as agentgateway's gateway
        # phase), then the route's; both share one PolicyRequest so response fields add up.
        policy_request: PolicyRequest | None = None
        if table.request_steps:
            policy_request = PolicyRequest(
                method, host, path, query, headers, None, self.peer_name(), request.http_version
            )
            answer = run_steps(table.request_steps, policy_request)
            if answer is not None:
                self._policy_answer(request, answer, policy_request, started, table.labels)
                return
        # The common single catch-all route needs neither the host nor a RequestView.
        matched = table.constant
        if matched is None:
            if host_name is None:
                host_name = "" if table.host_free else host_without_port(host)
            view = RequestView(
                method.decode("ascii"), path.decode("latin-1"), query[1:].decode("latin-1"),
                headers,
            )
            matched = table.select(host_name, view)
        if matched is None:
            self._local(
                request, 404, b"route not found", started, table.labels, Reason.NOT_FOUND,
                _lines_of(policy_request), policy_request,
            )
            return
        route = matched.route
        prefix = matched.match.path.value if matched.match.path.kind == "prefix" else None
        tracer = self.ctx.tracer
        if tracer is not None:
            # After routing, for the span's name; before the route's policies, which see
            # the gateway's `traceparent` as agentgateway's do.
            self.span = tracer.begin(
                headers if policy_request is None else policy_request.headers,
                method, matched.match.path, policy_request,
            )
        steps = route.request_steps
        if steps:
            if policy_request is None:
                policy_request = PolicyRequest(
                    method, host, path, query, headers, prefix, self.peer_name(),
                    request.http_version,
                )
            else:
                policy_request.matched_prefix = prefix
            answer = run_steps(steps, policy_request)
            if answer is not None:
                if answer is DEFER:
                    forward = partial(
                        self._forward, request, route, prefix, policy_request, method, host,
                        path, query, target, headers, length, chunked, content_encoding,
                        expect, started,
                    )
                    self._defer(request, route, policy_request, started, forward)
                    return
                self._policy_answer(request, answer, policy_request, started, route.labels)
                return
        self._forward(
            request, route, prefix, policy_request, method, host, path, query, target, headers,
            length, chunked, content_encoding, expect, started,
        )

    def _forward(
        self,
        request: h11.Request,
        route: RuntimeRoute,
        prefix: str | None,
        policy_request: PolicyRequest | None,
        method: bytes,
        host: bytes,
        path: bytes,
        query: bytes,
        target: bytes,
        headers: list[tuple[bytes, bytes]],
        length: int,
        chunked: bool,
        content_encoding: bytes | None,
        expect: bool,
        started: float,
        spent: float = 0.0,
    ) -> None:
        """Proxy a routed request whose policy steps all let it through (`spent`: seconds
        a `delay` already took of the route's request timeout)."""
        if policy_request is not None:
            # Steps may have taken fields or a query parameter out (a consumed credential).
            headers = policy_request.headers
            if policy_request.query is not query:
                query = policy_request.query
                target = path + query
        policy_lines = b""
        policy_replaces: frozenset[bytes] | None = None
        if policy_request is not None and policy_request.response_lines is not None:
            policy_lines = b"".join(policy_request.response_lines)
            policy_replaces = policy_request.response_replaces
        backend = route.choose_backend()
        if backend is None:
            self._local(
                request, 500, b"no valid backends", started, route.labels,
                Reason.NO_HEALTHY_BACKEND, policy_lines, policy_request,
            )
            return
        if backend.redirect is not None:
            self._redirect(
                request, route, backend, backend.redirect, host, path, query, prefix, started,
                policy_lines, policy_request,
            )
            return
        authority = backend.auto_authority or host
        rewrite = route.url_rewrite
        if rewrite is not None:
            try:
                if rewrite.path is not None:
                    target = apply_path_rewrite(rewrite.path, path, query, prefix)
            except ProxyError as error:
                self._local(
                    request, error.status, error.body.encode(), started, route.labels,
                    Reason.INTERNAL, policy_lines, policy_request,
                )
                return
            if rewrite.authority is not None:
                kind = rewrite.authority.kind
                if kind == "none":
                    authority = host
                elif kind != "auto":
                    authority = apply_authority_rewrite(rewrite.authority, host)
        self.mode = _PROXY
        exchange = Exchange(
            self, self.ctx, route, backend, method, target, path, host, authority, headers,
            length, chunked, content_encoding, started, policy_request,
        )
        if policy_request is not None and policy_request.no_retry:
            exchange.disable_retry()
        if policy_lines:
            exchange.response_extra += policy_lines
            exchange.policy_lines = policy_lines
            if policy_replaces is not None:
                exchange.response_drop = exchange.response_drop | policy_replaces
        span = self.span
        if span is not None:
            exchange.span = span
            self.span = None
        self.exchange = exchange
        exchange.start(expect and self.h11.waiting_for_continue, spent)
        mirror = route.mirror
        if mirror is not None and mirror.chosen():
            # The copy's Host: the client's, or what an explicit rewrite made of it; the
            # main backend's own hostname is no business of the mirror's.
            if authority is backend.auto_authority:
                authority = host
            send_mirror(self.ctx, mirror, method, target, authority, headers)

    def _defer(
        self,
        request: h11.Request,
        route: RuntimeRoute,
        policy_request: PolicyRequest,
        started: float,
        forward: Callable[[float], None],
    ) -> None:
        """Hold the request `policy_request.delay` seconds (`delay`), then run the steps
        after the one that deferred it and, if none answers, `forward(seconds spent)`.

        Meanwhile the worker serves other connections; this one hands no h11 events on (the
        body waits in h11's buffer, and reading pauses once MAX_PIPELINED bytes are there),
        and a client that goes away cancels the timer (`connection_lost`).
        """
        seconds = policy_request.delay
        timeout = route.request_timeout
        self.mode = _DELAYED
        # The delay counts against the route's request timeout, as agentgateway's does
        # (its `RequestDeadline`): one that outlasts it ends in the timeout's 504.
        if timeout is not None and seconds >= timeout:
            self.delay_timer = self.loop.call_later(
                timeout, self._delay_timed_out, request, route, started
            )
        else:
            self.delay_timer = self.loop.call_later(
                seconds, self._resume, request, route, policy_request, started, forward, seconds
            )

    def _delay_timed_out(self, request: h11.Request, route: RuntimeRoute, started: float) -> None:
        self.delay_timer = None
        if self.transport is None:
            return
        self.mode = _IDLE
        self._local(request, 504, b"request timeout", started, route.labels, Reason.TIMEOUT)
        self._delay_over()

    def _delay_over(self) -> None:
        """Go on with what waited in h11's buffer during the delay (the request's body)."""
        self.last_active = self.loop.time()
        self.buffered = 0
        if self.read_pauses & ReadPause.PIPELINE:
            self.resume_reading(ReadPause.PIPELINE)
        self._process()

    def _resume(
        self,
        request: h11.Request,
        route: RuntimeRoute,
        policy_request: PolicyRequest,
        started: float,
        forward: Callable[[float], None],
        spent: float,
    ) -> None:
        self.delay_timer = None
        if self.transport is None:
            return
        self.mode = _IDLE
        try:
            answer = run_steps(policy_request.resume, policy_request)
            if answer is None:
                forward(spent)
            else:
                # A route has one `delay`, so nothing after it defers again.
                self._policy_answer(request, answer, policy_request, started, route.labels)
        except Exception:
            self._internal_error()
            return
        self._delay_over()

    def _policy_answer(
        self,
        request: h11.Request,
        answer: PolicyAnswer,
        policy_request: PolicyRequest,
        started: float,
        labels: RouteLabels,
    ) -> None:
        """Send a policy step's answer, with the fields earlier steps added."""
        response, reason = answer
        lines = policy_request.response_lines
        if lines is not None:
            response = _with_lines(response, b"".join(lines))
        self._answer(
            request, response, int(response[9:12]), started, labels, reason,
            log_request=policy_request,
        )

    def _redirect(
        self,
        request: h11.Request,
        route: RuntimeRoute,
        backend: RuntimeBackend | None,
        redirect: RequestRedirect,
        host: bytes,
        path: bytes,
        query: bytes,
        prefix: str | None,
        started: float,
        policy_lines: bytes = b"",
        log_request: PolicyRequest | None = None,
    ) -> None:
        # agentgateway answers a redirect as a direct response; one it cannot build is a
        # filter error (Internal).
        try:
            response = redirect_response(redirect, host, path, query, prefix)
        except ProxyError as error:
            self._local(
                request, error.status, error.body.encode(), started, route.labels,
                Reason.INTERNAL, policy_lines, log_request,
            )
            return
        if policy_lines:
            response = _with_lines(response, policy_lines)
        self._answer(
            request, response, redirect.status, started, route.labels, Reason.DIRECT_RESPONSE,
            backend=backend, log_request=log_request,
        )


def _lines_of(policy_request: PolicyRequest | None) -> bytes:
    """The response lines policy steps added, b"" when none ran or none added any."""
    if policy_request is None or policy_request.response_lines is None:
        return b""
    return b"".join(policy_request.response_lines)


def _with_lines(response: bytes, lines: bytes) -> bytes:
    """A complete local response with header lines added at the end of its head."""
    head_end = response.index(b"\r\n\r\n") + 2
    return response[:head_end] + lines + response[head_end:]


def parser_reason(error: h11.RemoteProtocolError) -> str:
    """h11's reason without the offending bytes it quotes (`illegal header line: b'…'`):
    those may be a credential (a folded `Authorization` line, say), and the reason goes to
    the log and back in the 400's body."""
    text = str(error)
    found = [text.find(mark) for mark in (" b'", ' b"', " bytearray(")]
    cut = min((i for i in found if i >= 0), default=len(text))
    return text[:cut].rstrip(": ") or "invalid request"


def _header_triples(
    headers: h11._headers.Headers,
) -> Sequence[tuple[bytes, bytes, bytes]]:
    """(raw name, lowercase name, value) triples of a parsed request.

    h11 keeps exactly these; reading them directly avoids the Sequence protocol's per-item
    `__getitem__` (~2 µs a request). A unit test checks the structure, and the public
    iteration is the fallback should h11 change it.
    """
    triples = getattr(headers, "_full_items", None)
    if triples is None:
        return [(name, name, value) for name, value in headers]
    return triples  # type: ignore[no-any-return]



def _origin_form(target: bytes) -> bytes:
    """The path+query of an absolute-form target (RFC 9112 §3.2.2), or b"" if unusable."""
    scheme_end = target.find(b"://")
    if scheme_end == -1 or target[:scheme_end].lower() not in (b"http", b"https"):
        return b""
    slash = target.find(b"/", scheme_end + 3)
    return target[slash:] if slash != -1 else b"/"
