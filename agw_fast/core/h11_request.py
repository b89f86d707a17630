"""h11's request parser, driven without its connection state machine.

Every downstream request is parsed by h11's own code: its receive buffer, its request-line and
field-line grammar (hardened by `core.h11_strict`), `h11.Request`'s validation (one Host,
agreeing Content-Lengths, only `chunked` as a Transfer-Encoding) and its chunked body reader;
a Content-Length body is taken off h11's buffer as its ContentLengthReader takes it. What
`RequestParser` leaves out is `h11.Connection`: the two-party state machine that a server
writing its responses through h11 needs and a proxy relaying framed bytes does not. It cost
about a third of h11's work per request (270k -> 176k instructions for the bench's POST: three
state-machine transitions, reader lookups, a new Connection per request, the copy of
pipelined bytes).

The client side's states here are h11's: IDLE (reading a head), SEND_BODY (a Content-Length
body, read as h11's ContentLengthReader does, or a chunked one, read by h11's ChunkedReader),
DONE, ERROR.
Events, exceptions and edge cases are h11's too: `NEED_DATA` until an event is complete,
`PAUSED` once a request is done and more bytes wait, `ConnectionClosed` at a clean EOF,
`RemoteProtocolError` (with h11's status hint) for anything else, a head that outgrows
`max_head` bytes included. `next_cycle()` starts the next request on the bytes already
buffered, as `h11.Connection.start_next_cycle` would.

The internals used are checked at import (`_check_internals`): an h11 release that moves them
fails at start-up with a message, never at the first request. pyproject pins h11 0.16.x.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import h11
import h11._headers
import h11._readers
import h11._receivebuffer

__all__ = ["RequestEvent", "RequestParser"]

_IDLE, _LENGTH, _CHUNKED, _DONE, _ERROR = 0, 1, 2, 3, 4
_EndOfMessage = h11.EndOfMessage
_NEED_DATA = h11.NEED_DATA
_PAUSED = h11.PAUSED
_RemoteProtocolError = h11.RemoteProtocolError
_LocalProtocolError = h11.LocalProtocolError
RequestEvent = (
    h11.Request | h11.Data | h11.EndOfMessage | h11.ConnectionClosed
    | type[h11.NEED_DATA] | type[h11.PAUSED]
)  # fmt: skip


def _check_internals() -> None:
    version = getattr(h11, "__version__", "?")
    for module, name in (
        (h11._readers, "maybe_read_from_IDLE_client"),
        (h11._readers, "ChunkedReader"),
        (h11._receivebuffer, "ReceiveBuffer"),
        (h11._headers, "get_comma_header"),
    ):
        if not callable(getattr(module, name, None)):
            raise RuntimeError(
                f"h11 {version} has no {module.__name__}.{name}: "
                "agw_fast.core.h11_request must be updated for this h11 version"
            )
    # The (raw name, lowercase name, value) triples a parsed request keeps.
    probe = h11.Request(method="GET", target="/", headers=[("Host", "x")])
    if getattr(probe.headers, "_full_items", None) != [(b"Host", b"host", b"x")]:
        raise RuntimeError(
            f"h11 {version} keeps request fields differently: "
            "agw_fast.core.h11_request must be updated for this h11 version"
        )


_check_internals()
_ReceiveBuffer = h11._receivebuffer.ReceiveBuffer
_END = h11.EndOfMessage()  # frozen: one serves every request
_ChunkedReader = h11._readers.ChunkedReader


class RequestParser:
    """One client connection's request parser (sans-IO): bytes in, h11 events out."""

    __slots__ = (
        "_body", "_buffer", "_closed", "_length", "_must_close", "_remaining", "_state",
        "_switch", "max_head", "waiting_for_continue",
    )  # fmt: skip

    def __init__(self, max_head: int) -> None:
        self._buffer = _ReceiveBuffer()
        self._closed = False
        self._state = _IDLE
        # CONNECT or Upgrade: h11 waits (PAUSED) after such a request whatever follows.
        self._switch = False
        # No keep-alive (HTTP/1.0, `Connection: close`): h11 expects EOF after the request.
        self._must_close = False
        self._body: Callable[[Any], h11.Data | h11.EndOfMessage | None] | None = None
        self._length = 0  # a Content-Length body: its length, and what is still to come
        self._remaining = 0
        self.max_head = max_head  # h11's max_incomplete_event_size: a longer head is a 431
        # The request asked for 100-continue and none of its body has been read yet.
        self.waiting_for_continue = False

    @property
    def buffered(self) -> int:
        """Bytes received and not yet taken by an event."""
        return len(self._buffer)

    @property
    def closed(self) -> bool:
        """The client closed its side (EOF was received)."""
        return self._closed

    def receive_data(self, data: bytes) -> None:
        """Add bytes from the client; b"" means it closed its side (as in h11)."""
        if data:
            self._buffer += data
        else:
            self._closed = True

    def next_cycle(self) -> None:
        """The response is done: parse the next request from what is buffered."""
        self._state = _IDLE
        self._body = None
        self._switch = False
        self._must_close = False
        self.waiting_for_continue = False

    def next_event(self) -> RequestEvent:
        state = self._state
        buffer = self._buffer
        try:
            if state == _LENGTH:
                # h11's ContentLengthReader, inline: the same events, without a reader
                # object per request and with one shared (frozen) EndOfMessage.
                remaining = self._remaining
                if remaining == 0:
                    self._state = _DONE
                    self.waiting_for_continue = False
                    return _END
                data = buffer.maybe_extract_at_most(remaining)
                if data is None:
                    if self._closed:
                        raise _RemoteProtocolError(
                            "peer closed connection without sending complete message body "
                            f"(received {self._length - remaining} bytes, expected "
                            f"{self._length})"
                        )
                    return _NEED_DATA
                self._remaining = remaining - len(data)
                self.waiting_for_continue = False
                return h11.Data(data=data)  # type: ignore[arg-type]  # a bytearray, as h11 gives
            if state == _CHUNKED:
                body = self._body
                assert body is not None
                event = body(buffer)
                if event is None:
                    if len(buffer) > self.max_head:  # an endless chunk line
                        raise _RemoteProtocolError(
                            "Receive buffer too long", error_status_hint=431
                        )
                    if self._closed:
                        if not buffer:
                            body.read_eof()  # type: ignore[attr-defined]  # raises h11's error
                        raise _RemoteProtocolError("peer unexpectedly closed connection")
                    return _NEED_DATA
                self.waiting_for_continue = False
                if type(event) is _EndOfMessage:
                    self._state = _DONE
                    self._body = None
                return event
            if state == _IDLE:
                return self._read_head(buffer)
        except _LocalProtocolError as error:
            # h11 reports the peer's mistakes as RemoteProtocolError, hint included.
            self._state = _ERROR
            raise _RemoteProtocolError(
                str(error), error_status_hint=error.error_status_hint
            ) from None
        except _RemoteProtocolError:
            self._state = _ERROR
            raise
        if state == _DONE:
            if self._switch or (buffer and not self._must_close):
                return _PAUSED  # the next request waits for `next_cycle`
            if buffer:
                self._state = _ERROR
                raise _RemoteProtocolError("Got data when expecting EOF")
            return h11.ConnectionClosed() if self._closed else _NEED_DATA
        raise _RemoteProtocolError("Can't receive data when peer state is ERROR")

    def _read_head(
        self, buffer: h11._receivebuffer.ReceiveBuffer
    ) -> h11.Request | h11.ConnectionClosed | type[h11.NEED_DATA]:
        request = h11._readers.maybe_read_from_IDLE_client(buffer)
        if request is None:
            if len(buffer) > self.max_head:
                raise _RemoteProtocolError("Receive buffer too long", error_status_hint=431)
            if self._closed:
                if buffer:
                    raise _RemoteProtocolError("peer unexpectedly closed connection")
                return h11.ConnectionClosed()
            return _NEED_DATA
        # h11's `_body_framing` for a request: Transfer-Encoding (which h11.Request only
        # admits as exactly `chunked`) beats Content-Length (validated, duplicates merged);
        # neither means no body. One pass over the fields h11 keeps.
        chunked = False
        length = 0
        expect = False
        upgrade = False
        connection = False
        for _, name, value in request.headers._full_items:
            if name == b"transfer-encoding":
                chunked = True
            elif name == b"content-length":
                length = int(value)
            elif name == b"expect":
                expect = True
            elif name == b"upgrade":
                upgrade = True
            elif name == b"connection":
                connection = True
        if chunked:
            self._body = _ChunkedReader()
            self._state = _CHUNKED
        else:
            self._length = self._remaining = length
            self._state = _LENGTH
        if expect and request.http_version >= b"1.1":
            expected = h11._headers.get_comma_header(request.headers, b"expect")
            self.waiting_for_continue = b"100-continue" in expected
        if request.http_version < b"1.1":
            self._must_close = True
        elif connection:
            connection_tokens = h11._headers.get_comma_header(request.headers, b"connection")
            self._must_close = b"close" in connection_tokens
        if upgrade or request.method == b"CONNECT":
            self._switch = request.method == b"CONNECT" or bool(
                h11._headers.get_comma_header(request.headers, b"upgrade")
            )
        return request
