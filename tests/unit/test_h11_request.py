"""`RequestParser` (h11's parser without its state machine) against `h11.Connection`.

For every input, split into reads in every way a test draws, both must give the same events
(type, fields, body bytes), the same NEED_DATA/PAUSED/ConnectionClosed and the same errors
(status hint), up to and after the end of the first request.
"""

from __future__ import annotations

import h11
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agw_fast.core.h11_request import RequestParser
from agw_fast.core.h11_strict import harden_h11

harden_h11()

MAX_HEAD = 1024


def _describe(event: object) -> object:
    if isinstance(event, h11.Request):
        return ("request", event.method, event.target, event.http_version, list(event.headers))
    if isinstance(event, h11.Data):
        return ("data", bytes(event.data))
    if isinstance(event, h11.EndOfMessage):
        return ("end", list(event.headers))
    if isinstance(event, h11.ConnectionClosed):
        return "closed"
    return event  # NEED_DATA, PAUSED


def _drain(next_event: object, log: list[object], continues: object) -> bool:
    """Events until NEED_DATA/PAUSED/closed; False once an error was logged."""
    while True:
        try:
            event = next_event()  # type: ignore[operator]
        except h11.RemoteProtocolError as error:
            log.append(("error", error.error_status_hint))
            return False
        log.append(_describe(event))
        if isinstance(event, h11.Request):
            log.append(("100-continue", continues()))  # type: ignore[operator]
        if event is h11.NEED_DATA or event is h11.PAUSED or event == h11.ConnectionClosed():
            return True


def _with_h11(reads: list[bytes], close: bool) -> list[object]:
    connection = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
    log: list[object] = []
    for data in [*reads, *([b""] if close else [])]:
        connection.receive_data(data)
        if not _drain(
            connection.next_event, log, lambda: connection.they_are_waiting_for_100_continue
        ):
            break
    return log


def _with_parser(reads: list[bytes], close: bool) -> list[object]:
    parser = RequestParser(MAX_HEAD)
    log: list[object] = []
    for data in [*reads, *([b""] if close else [])]:
        parser.receive_data(data)
        if not _drain(parser.next_event, log, lambda: parser.waiting_for_continue):
            break
    return log


REQUESTS = [
    b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET / HTTP/1.0\r\n\r\n",
    b"POST /v1/chat HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
    b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
    b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
    b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\nhello",
    b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n0\r\nX-T: 1\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n"
    b"0\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;\rx\r\nhello\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nhi",
    b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue, x\r\nContent-Length: 2\r\n\r\nhi",
    b"POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nhi",
    b"GET / HTTP/1.1\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nX-A: a\r\n b\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nBad Name: x\r\n\r\n",
    b"GET /\x00 HTTP/1.1\r\nHost: a\r\n\r\n",
    b"\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nX: " + b"y" * 2000 + b"\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nX: " + b"y" * 2000,
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET /next HTTP/1.1\r\nHost: a\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nshort",
    b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\nGET /b HTTP/1.1\r\n\r\n",
    b"GET / HTTP/1.0\r\n\r\nGET /b HTTP/1.0\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel",
    b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5",
    b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;a=" + b"b" * 1100,
    b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /b HTTP/1.0\r\n\r\n",
]


@pytest.mark.parametrize("raw", REQUESTS)
@pytest.mark.parametrize("close", [False, True])
def test_same_events_as_h11_whole_and_byte_by_byte(raw: bytes, close: bool) -> None:
    assert _with_parser([raw], close) == _with_h11([raw], close)
    bytewise = [raw[i : i + 1] for i in range(len(raw))]
    assert _with_parser(bytewise, close) == _with_h11(bytewise, close)


@settings(max_examples=300, deadline=None)
@given(
    raw=st.sampled_from(REQUESTS),
    cuts=st.lists(st.integers(min_value=0, max_value=2100), max_size=6),
    close=st.booleans(),
)
def test_same_events_as_h11_for_any_split(raw: bytes, cuts: list[int], close: bool) -> None:
    points = sorted({min(c, len(raw)) for c in cuts} | {0, len(raw)})
    reads = [raw[a:b] for a, b in zip(points, points[1:], strict=False) if b > a]
    assert _with_parser(reads, close) == _with_h11(reads, close)


def test_next_cycle_parses_the_pipelined_request() -> None:
    parser = RequestParser(MAX_HEAD)
    parser.receive_data(
        b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi"
        b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    events = [_describe(parser.next_event()) for _ in range(4)]
    assert events[0][:2] == ("request", b"POST")  # type: ignore[index]
    assert events[1:] == [("data", b"hi"), ("end", []), h11.PAUSED]
    parser.next_cycle()
    request = parser.next_event()
    assert isinstance(request, h11.Request) and request.target == b"/b"
    assert isinstance(parser.next_event(), h11.EndOfMessage)
    assert parser.next_event() is h11.NEED_DATA
    assert parser.buffered == 0 and not parser.closed


def test_an_error_is_final() -> None:
    parser = RequestParser(MAX_HEAD)
    parser.receive_data(b"GET / HTTP/1.1\r\nHost a\r\n\r\n")
    with pytest.raises(h11.RemoteProtocolError) as first:
        parser.next_event()
    assert first.value.error_status_hint == 400
    with pytest.raises(h11.RemoteProtocolError, match="ERROR"):
        parser.next_event()
