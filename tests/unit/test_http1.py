"""Response-side HTTP/1.1: head parsing, framing (RFC 9112 §6.3) and chunk scanning."""

from __future__ import annotations

import pytest

from agw_fast.core.http1 import (
    BODY_CHUNKED,
    BODY_CLOSE,
    BODY_LENGTH,
    BODY_NONE,
    ChunkedScanner,
    ResponseHead,
    UpstreamProtocolError,
    connection_tokens,
    parse_response_head,
    reason_phrase,
    status_line,
)


def _parse(
    raw: bytes, head_request: bool = False, drop: frozenset[bytes] = frozenset()
) -> ResponseHead:
    end = raw.index(b"\r\n\r\n")
    # Bytes after the head (a body) must not influence parsing.
    return parse_response_head(raw + b"BODY", end, head_request, drop)


# -- status line and headers -------------------------------------------------------------------


def test_parse_basic_head() -> None:
    head = _parse(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-Mixed:   v a l  \r\n"
        b"Content-Length: 5\r\n\r\n"
    )
    assert head == ResponseHead(
        status=200,
        http11=True,
        lines=[b"content-type: text/plain", b"x-mixed:   v a l  ", b"content-length: 5"],
        content_type=b"text/plain",
        framing=BODY_LENGTH,
        content_length=5,
        keep_alive=True,
        status_line=b"HTTP/1.1 200 OK",
    )


@pytest.mark.parametrize(
    ("line", "status", "reason", "http11"),
    [
        (b"HTTP/1.1 404 Not Found", 404, b"Not Found", True),
        (b"HTTP/1.1 200 ", 200, b"", True),
        (b"HTTP/1.1 200", 200, b"", True),
        (b"HTTP/1.1 299 Custom  Reason ", 299, b"Custom  Reason ", True),
        (b"HTTP/1.0 503 Service Unavailable", 503, b"Service Unavailable", False),
        (b"HTTP/1.1 999 X", 999, b"X", True),
    ],
)
def test_status_line(line: bytes, status: int, reason: bytes, http11: bool) -> None:
    head = _parse(line + b"\r\nContent-Length: 0\r\n\r\n")
    assert (head.status, head.http11) == (status, http11)
    # The relayed status line is always HTTP/1.1 with the upstream's code and reason.
    assert head.status_line == b"HTTP/1.1 %d " % status + reason


def test_header_lines_relayed_lowercase_in_order() -> None:
    head = _parse(
        b"HTTP/1.1 200 OK\r\nX-B: 2\r\nSet-Cookie: a=1\r\nx-a:1\r\nSET-COOKIE: \tb=2\t\r\n"
        b"Content-Type: text/plain; x=1\r\nContent-Length: 0\r\n\r\n"
    )
    assert head.lines == [
        b"x-b: 2",
        b"set-cookie: a=1",
        b"x-a:1",
        b"set-cookie: \tb=2\t",
        b"content-type: text/plain; x=1",
        b"content-length: 0",
    ]
    assert head.content_type == b"text/plain; x=1"


def test_dropped_names_compare_lowercase() -> None:
    head = _parse(
        b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nServer: x\r\nKeep-Alive: t=5\r\n"
        b"Content-Length: 0\r\n\r\n",
        drop=frozenset({b"connection", b"keep-alive", b"server"}),
    )
    assert head.lines == [b"content-length: 0"]


def test_head_without_headers() -> None:
    head = _parse(b"HTTP/1.1 204 No Content\r\n\r\n")
    assert head.lines == []
    assert head.framing == BODY_NONE
    assert head.keep_alive is True


# -- framing (RFC 9112 §6.3) -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "head_request", "framing", "length", "keep_alive"),
    [
        # HEAD: no body whatever the headers say.
        (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", True, BODY_NONE, 5, True),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", True, BODY_NONE, 0, True),
        (b"HTTP/1.1 200 OK\r\n\r\n", True, BODY_NONE, 0, True),
        # 1xx, 204 and 304 never have a body.
        (b"HTTP/1.1 100 Continue\r\n\r\n", False, BODY_NONE, 0, True),
        (b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n", False, BODY_NONE, 0, True),
        (b"HTTP/1.1 204 No Content\r\n\r\n", False, BODY_NONE, 0, True),
        (b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n", False, BODY_NONE, 0, True),
        (b"HTTP/1.1 304 Not Modified\r\nContent-Length: 99\r\n\r\n", False, BODY_NONE, 99, True),
        (
            b"HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n",
            False,
            BODY_NONE,
            0,
            True,
        ),
        # Chunked.
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", False, BODY_CHUNKED, 0, True),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked\r\n\r\n", False, BODY_CHUNKED, 0, True),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            False,
            BODY_CHUNKED,
            0,
            True,
        ),
        # Content-Length.
        (b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n", False, BODY_LENGTH, 12, True),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", False, BODY_NONE, 0, True),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 007\r\n\r\n", False, BODY_LENGTH, 7, True),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n",
            False,
            BODY_LENGTH,
            3,
            True,
        ),
        # Neither: read until close, so the connection cannot be kept.
        (b"HTTP/1.1 200 OK\r\n\r\n", False, BODY_CLOSE, 0, False),
        (b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\n\r\n", False, BODY_CLOSE, 0, False),
        (b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n\r\n", False, BODY_CLOSE, 0, False),
        # HTTP/1.0 is keep-alive only when it says so; HTTP/1.1 unless it says close.
        (b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n", False, BODY_LENGTH, 1, False),
        (
            b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\n",
            False,
            BODY_LENGTH,
            1,
            True,
        ),
        (
            b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 1\r\n\r\n",
            False,
            BODY_LENGTH,
            1,
            True,
        ),
        (
            b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\n",
            False,
            BODY_LENGTH,
            1,
            False,
        ),
        (
            b"HTTP/1.1 200 OK\r\nConnection: Keep-Alive, CLOSE\r\nContent-Length: 1\r\n\r\n",
            False,
            BODY_LENGTH,
            1,
            False,
        ),
        (
            b"HTTP/1.0 200 OK\r\nConnection: keep-alive, close\r\nContent-Length: 1\r\n\r\n",
            False,
            BODY_LENGTH,
            1,
            False,
        ),
        (
            b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\n",
            False,
            BODY_LENGTH,
            1,
            True,
        ),
        (b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n", False, BODY_NONE, 0, False),
        (b"HTTP/1.0 204 No Content\r\n\r\n", False, BODY_NONE, 0, False),
    ],
)
def test_framing(
    raw: bytes, head_request: bool, framing: int, length: int, keep_alive: bool
) -> None:
    head = _parse(raw, head_request)
    assert (head.framing, head.content_length, head.keep_alive) == (framing, length, keep_alive)


# -- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        # Bad status lines.
        b"HTTP/2 200 OK\r\n\r\n",
        b"HTTP/2.0 200 OK\r\n\r\n",
        b"ICY 200 OK\r\n\r\n",
        b"http/1.1 200 OK\r\n\r\n",
        b"HTTP/1.1\r\n\r\n",
        b"HTTP/1.1 20 OK\r\n\r\n",
        b"HTTP/1.1 2000 OK\r\n\r\n",
        b"HTTP/1.1 abc OK\r\n\r\n",
        b"HTTP/1.1 099 Low\r\n\r\n",
        b"HTTP/1.1  200 OK\r\n\r\n",
        b"garbage\r\n\r\n",
        # Obsolete line folding (RFC 9112 §5.2).
        b"HTTP/1.1 200 OK\r\nX-A: b\r\n c\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX-A: b\r\n\tc\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n X-A: b\r\nContent-Length: 0\r\n\r\n",
        # Whitespace between name and colon (RFC 9112 §5.1).
        b"HTTP/1.1 200 OK\r\nX-A : b\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length\t: 0\r\n\r\n",
        # No colon, or no name.
        b"HTTP/1.1 200 OK\r\nnocolon\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n: value\r\nContent-Length: 0\r\n\r\n",
        # Content-Length must be one non-negative decimal number.
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 0x10\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: \r\n\r\n",
        # Transfer-Encoding with Content-Length: a smuggling vector.
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
        # Transfer-Encoding whose final coding is not chunked.
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: identity\r\n\r\n",
    ],
)
def test_invalid_heads_raise(raw: bytes) -> None:
    with pytest.raises(UpstreamProtocolError):
        _parse(raw)


@pytest.mark.parametrize(
    "raw",
    [
        # h11 (and others) end a line at a bare LF: the client would see a Transfer-Encoding
        # that we relay as part of X-A's value, and frame the body differently from us.
        b"HTTP/1.1 200 OK\r\nX-A: a\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
        b"HTTP/1.1 200 OK\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX-A: a\rTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX-A: a\x00b\r\nContent-Length: 5\r\n\r\n",
        b"HTTP/1.1 200 O\rK\r\nContent-Length: 5\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: a\r\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: a\n\r\n\r\n",
    ],
)
def test_bare_cr_lf_or_nul_in_a_head_raises(raw: bytes) -> None:
    # RFC 9110 §5.5: CR, LF and NUL are invalid in a field value; the head is relayed as it
    # came, so one the client reads as a line end would give it fields we never parsed.
    with pytest.raises(UpstreamProtocolError):
        _parse(raw)


@pytest.mark.parametrize("value", [b"+5", b"5_0", b"-0", b"1_000", b" +1"])
def test_content_length_is_digits_only(value: bytes) -> None:
    # RFC 9110 §8.6: Content-Length = 1*DIGIT; int() would also take a sign or underscores.
    with pytest.raises(UpstreamProtocolError):
        _parse(b"HTTP/1.1 200 OK\r\nContent-Length: " + value + b"\r\n\r\n")


def test_parse_stops_at_end() -> None:
    raw = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    head = parse_response_head(bytearray(raw), raw.index(b"\r\n\r\n"), False, frozenset())
    assert head.lines == [b"content-length: 2"]


@pytest.mark.parametrize(
    ("value", "tokens"),
    [
        (b"close", {b"close"}),
        (b" Close , Keep-Alive,,", {b"close", b"keep-alive"}),
        (b"", set()),
        (b" , ", set()),
        (b"X-Foo", {b"x-foo"}),
    ],
)
def test_connection_tokens(value: bytes, tokens: set[bytes]) -> None:
    assert connection_tokens(value) == tokens


# -- ChunkedScanner ----------------------------------------------------------------------------

_PAYLOAD_1 = b"hello"
_PAYLOAD_2 = bytes(range(65, 65 + 26))  # 0x1A bytes
_PAYLOAD_3 = b"\r\n0\r\n\r\n"  # payload that looks like framing
_MESSAGE = (
    b'5;ext=1;quoted="a;b"\r\n' + _PAYLOAD_1 + b"\r\n"
    b"1A\r\n" + _PAYLOAD_2 + b"\r\n"
    b"0007 ; spaced\r\n" + _PAYLOAD_3 + b"\r\n"
    b"0;last=1\r\n"
    b"Trailer-A: x\r\n"
    b"Trailer-B: y\r\n"
    b"\r\n"
)
_AFTER = b"HTTP/1.1 200 OK\r\n"
_PAYLOAD = _PAYLOAD_1 + _PAYLOAD_2 + _PAYLOAD_3


def _collecting() -> tuple[ChunkedScanner, list[bytes]]:
    parts: list[bytes] = []
    return ChunkedScanner(parts.append), parts


def test_whole_message_in_one_feed() -> None:
    scanner, parts = _collecting()
    assert scanner.feed(_MESSAGE + _AFTER) == len(_MESSAGE)
    assert b"".join(parts) == _PAYLOAD


def test_message_without_trailing_bytes() -> None:
    scanner, parts = _collecting()
    assert scanner.feed(_MESSAGE) == len(_MESSAGE)
    assert b"".join(parts) == _PAYLOAD


@pytest.mark.parametrize("split", range(len(_MESSAGE + _AFTER) + 1))
def test_split_at_every_offset(split: int) -> None:
    data = _MESSAGE + _AFTER
    scanner, parts = _collecting()
    first = scanner.feed(data[:split])
    if split >= len(_MESSAGE):
        assert first == len(_MESSAGE)
    else:
        assert first == -1
        assert scanner.feed(data[split:]) == len(_MESSAGE) - split
    assert b"".join(parts) == _PAYLOAD


def test_one_byte_at_a_time() -> None:
    scanner, parts = _collecting()
    data = _MESSAGE + _AFTER
    results = []
    for index in range(len(_MESSAGE)):
        results.append(scanner.feed(data[index : index + 1]))
    assert results[:-1] == [-1] * (len(_MESSAGE) - 1)
    assert results[-1] == 1
    assert b"".join(parts) == _PAYLOAD
    # Payload slices never include framing bytes: sizes add up to the payload only.
    assert sum(len(p) for p in parts) == len(_PAYLOAD)


def test_without_payload_observer() -> None:
    scanner = ChunkedScanner()
    assert scanner.feed(_MESSAGE[:10]) == -1
    assert scanner.feed(_MESSAGE[10:] + _AFTER) == len(_MESSAGE) - 10


def test_scanner_is_ready_for_the_next_message() -> None:
    scanner, parts = _collecting()
    assert scanner.feed(_MESSAGE) == len(_MESSAGE)
    assert scanner.feed(b"3\r\nabc\r\n0\r\n\r\nrest") == 13
    assert b"".join(parts) == _PAYLOAD + b"abc"


@pytest.mark.parametrize(
    ("message", "payload"),
    [
        (b"0\r\n\r\n", b""),
        (b"a\r\n0123456789\r\n0\r\n\r\n", b"0123456789"),
        (b"A\r\n0123456789\r\n0\r\n\r\n", b"0123456789"),
        (b"1\r\nx\r\n1\r\ny\r\n0\r\n\r\n", b"xy"),
        # Extensions as RFC 9112 §7.1.1 spells them, with BWS around `;` and `=`.
        (b"1;a\r\nx\r\n0\r\n\r\n", b"x"),
        (b"1 ; a = b ;c=d\t\r\nx\r\n0;e\r\n\r\n", b"x"),
        (b'1;a="q \\" ;\x80"\r\nx\r\n0\r\n\r\n', b"x"),
        (b"1 \r\nx\r\n0\r\n\r\n", b"x"),  # whitespace before CRLF: h11's leniency, shared
        # Leading zeros do not count towards the 16 digits of a 64-bit size.
        (b"00000000000000000001\r\nx\r\n0000\r\n\r\n", b"x"),
        # Trailers are field lines: empty values, OWS and control characters other than
        # CR, LF and NUL (RFC 9110 §5.5) are kept.
        (b"1\r\nx\r\n0\r\nA: \r\nB:\tv w\t\r\nC: \x01\x7f\xff\r\n\r\n", b"x"),
    ],
)
def test_small_messages(message: bytes, payload: bytes) -> None:
    for split in range(len(message) + 1):
        scanner, parts = _collecting()
        first = scanner.feed(message[:split])
        if first == -1:
            assert scanner.feed(message[split:] + b"NEXT") == len(message) - split
        else:
            assert first == len(message)
        assert b"".join(parts) == payload


@pytest.mark.parametrize(
    "data",
    [
        b"+5\r\nhello\r\n0\r\n\r\n",
        b"-1\r\n",
        b"0x5\r\nhello\r\n0\r\n\r\n",
        b"zz\r\n",
        b"\r\n",
        b";ext\r\n",
        b"5_0\r\n",
        b"5 5\r\n",
        b"5\r\nhelloX\r\n0\r\n\r\n",  # no CRLF after the chunk data
        b"5\r\nhello\r\nzz\r\n",
        b"10000000000000000\r\n",  # 2**64: over 16 digits
        # A line ends with CRLF (RFC 9112 §7.1): a bare LF anywhere is refused, since a
        # client that does not take it for a line end frames the body differently.
        b"5\nhello\r\n0\r\n\r\n",
        b"5\r\nhello\n0\r\n\r\n",
        b"5;a\nhello\r\n0\r\n\r\n",
        b"5\r\nhello\r\n0\n\r\n",
        b"5\r\nhello\r\n0\r\n\n",
        b"5\r\nhello\r\n0\r\nT: v\n\r\n",
        # A bare CR inside a chunk line (HTTP Garden: a client that ends the line there reads
        # a 0x41-byte chunk, then what follows as the next response).
        b"41;a=b\r\r" + b"X" * 0x41 + b"\r\n0\r\n\r\n",
        b"5;\rx\r\nhello\r\n0\r\n\r\n",
        b"5\r\r\nhello\r\n0\r\n\r\n",
        b"5\r\nhello\r\r\n0\r\n\r\n",
        # Extensions other than `token [= token / quoted-string]` (RFC 9112 §7.1.1).
        b"5;\r\nhello\r\n0\r\n\r\n",
        b"5;=b\r\nhello\r\n0\r\n\r\n",
        b"5;a=\r\nhello\r\n0\r\n\r\n",
        b"5;a=b c\r\nhello\r\n0\r\n\r\n",
        b"5;a=(b)\r\nhello\r\n0\r\n\r\n",
        b'5;a="b\r\nhello\r\n0\r\n\r\n',
        b'5;a="\x00"\r\nhello\r\n0\r\n\r\n',
        b"5;a=\x01\r\nhello\r\n0\r\n\r\n",
        b"5;a=\x7f\r\nhello\r\n0\r\n\r\n",
        b"5 x\r\nhello\r\n0\r\n\r\n",
        # Trailer lines that are no field lines.
        b"0\r\nT: a\rb\r\n\r\n",
        b"0\r\nT: a\x00b\r\n\r\n",
        b"0\r\nno colon\r\n\r\n",
        b"0\r\nT : v\r\n\r\n",
        b"0\r\n: v\r\n\r\n",
        b"0\r\nT: a\r\n folded\r\n\r\n",
        b"0\r\n\rT: v\r\n\r\n",
    ],
)
def test_invalid_chunks_raise(data: bytes) -> None:
    with pytest.raises(UpstreamProtocolError):
        ChunkedScanner().feed(data)
    # The same, one byte at a time.
    scanner = ChunkedScanner()
    with pytest.raises(UpstreamProtocolError):
        for index in range(len(data)):
            scanner.feed(data[index : index + 1])


@pytest.mark.parametrize("prefix", [b"", b"5\r\nhello\r\n", b"0\r\n"])
def test_overlong_line_raises(prefix: bytes) -> None:
    # A size line (or trailer line) that never ends must not buffer without bound.
    scanner = ChunkedScanner()
    assert scanner.feed(prefix) == -1
    with pytest.raises(UpstreamProtocolError):
        scanner.feed(b"0" * 5000)
    scanner = ChunkedScanner()
    assert scanner.feed(prefix) == -1
    with pytest.raises(UpstreamProtocolError):
        for _ in range(100):
            scanner.feed(b"1" * 100)


@pytest.mark.parametrize(
    "line", [b"5;a=" + b"b" * 5000 + b"\r\n", b"0\r\nT: " + b"v" * 5000 + b"\r\n"]
)
def test_overlong_line_in_one_read_raises(line: bytes) -> None:
    # The bound holds for a line that arrives whole too, so no regex runs over a huge one.
    with pytest.raises(UpstreamProtocolError, match="too long"):
        ChunkedScanner().feed(line)


# -- status lines ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "line"),
    [
        (200, b"HTTP/1.1 200 OK\r\n"),
        (404, b"HTTP/1.1 404 Not Found\r\n"),
        (413, b"HTTP/1.1 413 Content Too Large\r\n"),
        (414, b"HTTP/1.1 414 URI Too Long\r\n"),
        (410, b"HTTP/1.1 410 Gone\r\n"),
        (422, b"HTTP/1.1 422 Unprocessable Content\r\n"),
        (503, b"HTTP/1.1 503 Service Unavailable\r\n"),
        (505, b"HTTP/1.1 505 HTTP Version Not Supported\r\n"),
        (299, b"HTTP/1.1 299 \r\n"),
        (599, b"HTTP/1.1 599 \r\n"),
    ],
)
def test_status_line_bytes_and_cache(status: int, line: bytes) -> None:
    first = status_line(status)
    assert first == line
    assert status_line(status) is first


def test_reason_phrase() -> None:
    assert reason_phrase(429) == b"Too Many Requests"
    assert reason_phrase(416) == b"Range Not Satisfiable"  # RFC 9110's name on every Python
    assert reason_phrase(299) == b""


def test_every_named_status_has_its_line() -> None:
    from http import HTTPStatus

    for status in HTTPStatus:
        assert status_line(status.value) == b"HTTP/1.1 %d %s\r\n" % (
            status.value, reason_phrase(status.value)
        )
        assert reason_phrase(status.value)
