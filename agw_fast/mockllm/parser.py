"""A strict, small, sans-IO HTTP/1.1 request parser for the mock upstream.

The mock is a benchmark upstream, so the parser avoids per-byte Python work: a request head is found
with one `find`, validated with one regex `fullmatch` over the whole field block and split with one
`findall`. Anything outside the RFC 9112 grammar is rejected instead of repaired; a test upstream
that silently accepted a malformed request would hide bugs in the proxy in front of it.
"""

from __future__ import annotations

import re

__all__ = ["MAX_BODY", "MAX_HEAD", "MOCK_FIELDS", "ParseError", "Request", "RequestParser"]

KiB = 1024
MiB = 1024 * KiB

# Limits sized for a test upstream: generous enough for any realistic LLM request, small enough that
# a runaway client cannot exhaust memory.
MAX_HEAD = 64 * KiB
MAX_BODY = 256 * MiB
MAX_CHUNK_LINE = 4 * KiB

# RFC 9110 §5.6.2 token; RFC 9112 §3 request-line (origin/absolute/authority/asterisk forms all fit
# in "visible ASCII without spaces").
_TOKEN = rb"[-!#$%&'*+.^_`|~0-9A-Za-z]+"
_REQUEST_LINE = re.compile(rb"(" + _TOKEN + rb") ([\x21-\x7e]+) HTTP/1\.([01])")
# RFC 9110 §5.5 field-value: VCHAR, obs-text, SP and HTAB; no CR, LF, NUL or other controls. No
# whitespace is allowed between the field name and the colon (RFC 9112 §5.1: must reject with 400),
# and obs-fold lines fail because they start with SP/HTAB, which is not a token character.
# A field line only matches right after a CRLF and cannot span lines, so a field block is valid
# exactly when `findall` returns one match per CRLF: validation and splitting in one C-level pass.
# The value group ends on a visible character so that trailing OWS is dropped by the regex itself.
_VALUE_CHARS = rb"[\t\x20-\x7e\x80-\xff]*"
_VALUE = rb"((?:" + _VALUE_CHARS + rb"[\x21-\x7e\x80-\xff])?)"
_FIELD = re.compile(rb"(?<=\r\n)(" + _TOKEN + rb"):[ \t]*" + _VALUE + rb"[ \t]*\r\n")
# RFC 9112 §7.1: chunk-size is hex; extensions are accepted but ignored. Sixteen digits bounds the
# integer conversion.
_CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]{1,16})[ \t]*(?:;[\t\x20-\x7e\x80-\xff]*)?")
_DIGITS = re.compile(rb"[0-9]{1,19}")

# Header names the parser acts on. Most fields are none of these, so one set lookup per field
# replaces a chain of comparisons. The `x-mock-*` fields ask the mock for an injected failure
# (see responses.MockApp); they are collected so that a request without them costs nothing more.
_CONTENT_LENGTH = b"content-length"
_TRANSFER_ENCODING = b"transfer-encoding"
_CONNECTION = b"connection"
_EXPECT = b"expect"
MOCK_FIELDS = frozenset({b"x-mock-status", b"x-mock-retry-after", b"x-mock-reset"})
_SPECIAL = frozenset({_CONTENT_LENGTH, _TRANSFER_ENCODING, _CONNECTION, _EXPECT}) | MOCK_FIELDS

# Parser states.
_HEAD, _LENGTH, _CHUNK_SIZE_LINE, _CHUNK_DATA, _CHUNK_CRLF, _TRAILERS = range(6)


class ParseError(Exception):
    """A request that cannot be framed; `status` is the response it implies before closing."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class Request:
    """One parsed request. Header names keep their wire casing and order."""

    __slots__ = ("method", "target", "minor", "headers", "body", "keep_alive", "mock")

    def __init__(
        self,
        method: bytes,
        target: bytes,
        minor: int,
        headers: list[tuple[bytes, bytes]],
        keep_alive: bool,
    ) -> None:
        self.method = method
        self.target = target
        self.minor = minor  # 1 for HTTP/1.1, 0 for HTTP/1.0
        self.headers = headers
        self.body = b""
        # Mutable on purpose: a response whose framing needs a close (an unframed body sent to an
        # HTTP/1.0 client) clears it.
        self.keep_alive = keep_alive
        # The request's `x-mock-*` fields (lower-cased name, value), or None when it has none.
        self.mock: dict[bytes, bytes] | None = None


class RequestParser:
    """Turns a byte stream into complete `Request`s, strictly in order.

    `feed()` bytes, then call `next_request()` until it returns None. After a `ParseError` the
    stream is unusable and the connection must be closed.
    """

    __slots__ = ("_buf", "_state", "_request", "_remaining", "_pieces", "_size", "expect_continue")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._state = _HEAD
        self._request: Request | None = None
        self._remaining = 0
        self._pieces: list[bytes] = []
        self._size = 0
        # Set when a head asking for `100-continue` was parsed and its body has not arrived yet;
        # the connection clears it after sending the interim response (RFC 9110 §10.1.1).
        self.expect_continue = False

    def feed(self, data: bytes) -> None:
        self._buf += data

    @property
    def buffered(self) -> int:
        return len(self._buf)

    @property
    def idle(self) -> bool:
        """True when no partial request is held (so a close now loses nothing)."""
        return self._state == _HEAD and not self._buf

    def next_request(self) -> Request | None:
        if self._state == _HEAD:
            request = self._parse_head()
            if request is None or self._state == _HEAD:
                return request
        if self._state == _LENGTH:
            buf = self._buf
            if len(buf) < self._remaining:
                return None
            return self._finish(bytes(buf[: self._remaining]), self._remaining)
        return self._parse_chunked()

    # -- head --------------------------------------------------------------------------------

    def _parse_head(self) -> Request | None:
        buf = self._buf
        # RFC 9112 §2.2: ignore empty lines received before the request-line.
        while buf.startswith(b"\r\n"):
            del buf[:2]
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            if len(buf) > MAX_HEAD:
                raise ParseError(431, "request head too large")
            if buf.count(b"\n") != buf.count(b"\r\n"):
                raise ParseError(400, "bare LF in request head")
            return None
        if end > MAX_HEAD:
            raise ParseError(431, "request head too large")
        head = bytes(buf[: end + 2])
        del buf[: end + 4]
        line_end = head.find(b"\r\n")
        match = _REQUEST_LINE.fullmatch(head, 0, line_end)
        if match is None:
            raise ParseError(400, "malformed request line")
        method, target, minor_digit = match.groups()
        headers = _FIELD.findall(head, line_end + 2)
        if len(headers) != head.count(b"\r\n", line_end + 2):
            raise ParseError(400, "malformed header field")
        minor = 1 if minor_digit == b"1" else 0
        keep_alive = minor == 1
        length: int | None = None
        chunked = False
        expect = False
        mock: dict[bytes, bytes] | None = None
        for name, value in headers:
            lname = name.lower()
            if lname not in _SPECIAL:
                continue
            if lname == _CONTENT_LENGTH:
                if not _DIGITS.fullmatch(value):
                    raise ParseError(400, "invalid Content-Length")
                # RFC 9112 §6.3: differing or list-valued lengths are unrecoverable framing errors.
                if length is not None and length != int(value):
                    raise ParseError(400, "conflicting Content-Length")
                length = int(value)
            elif lname == _TRANSFER_ENCODING:
                # Only a lone "chunked" is supported; RFC 9112 §6.1 makes any other final coding
                # unframeable for a request.
                if chunked or value.lower() != b"chunked":
                    raise ParseError(501, "unsupported Transfer-Encoding")
                chunked = True
            elif lname == _CONNECTION:
                tokens = value.lower().replace(b" ", b"").replace(b"\t", b"").split(b",")
                if b"close" in tokens:
                    keep_alive = False
                elif minor == 0 and b"keep-alive" in tokens:
                    keep_alive = True
            elif lname == _EXPECT:
                if value.lower() != b"100-continue":
                    raise ParseError(417, "unsupported Expect")
                expect = minor == 1
            else:
                if mock is None:
                    mock = {}
                mock[lname] = value
        request = Request(method, target, minor, headers, keep_alive)
        if mock is not None:
            request.mock = mock
        if chunked:
            # RFC 9112 §6.1: Transfer-Encoding with Content-Length (smuggling shape), or in an
            # HTTP/1.0 request, is faulty framing.
            if length is not None or minor == 0:
                raise ParseError(400, "ambiguous request framing")
            self._request = request
            self._state = _CHUNK_SIZE_LINE
            self._pieces = []
            self._size = 0
            self.expect_continue = expect
            return request
        if length:
            if length > MAX_BODY:
                raise ParseError(413, "request body too large")
            self._request = request
            self._remaining = length
            self._state = _LENGTH
            self.expect_continue = expect and len(buf) < length
            return request
        return request

    # -- bodies ------------------------------------------------------------------------------

    def _finish(self, body: bytes, consumed: int) -> Request:
        request = self._request
        assert request is not None
        del self._buf[:consumed]
        request.body = body
        self._request = None
        self._state = _HEAD
        self.expect_continue = False
        return request

    def _parse_chunked(self) -> Request | None:
        buf = self._buf
        while True:
            state = self._state
            if state == _CHUNK_DATA:
                take = min(self._remaining, len(buf))
                if take:
                    self._pieces.append(bytes(buf[:take]))
                    del buf[:take]
                    self._remaining -= take
                if self._remaining:
                    return None
                self._state = _CHUNK_CRLF
            elif state == _CHUNK_CRLF:
                if len(buf) < 2:
                    return None
                if not buf.startswith(b"\r\n"):
                    raise ParseError(400, "chunk data not followed by CRLF")
                del buf[:2]
                self._state = _CHUNK_SIZE_LINE
            elif state == _CHUNK_SIZE_LINE:
                end = buf.find(b"\r\n", 0, MAX_CHUNK_LINE)
                if end < 0:
                    if len(buf) >= MAX_CHUNK_LINE:
                        raise ParseError(400, "chunk size line too long")
                    return None
                match = _CHUNK_SIZE.fullmatch(buf, 0, end)
                if match is None:
                    raise ParseError(400, "malformed chunk size")
                size = int(match.group(1), 16)
                del buf[: end + 2]
                if size == 0:
                    self._state = _TRAILERS
                    continue
                self._size += size
                if self._size > MAX_BODY:
                    raise ParseError(413, "request body too large")
                self._remaining = size
                self._state = _CHUNK_DATA
            else:
                # Trailer fields are validated like header fields and then dropped.
                if buf.startswith(b"\r\n"):
                    return self._finish(b"".join(self._pieces), 2)
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    if len(buf) > MAX_HEAD:
                        raise ParseError(431, "trailer section too large")
                    return None
                # Prefixing CRLF gives the first trailer line the same anchor as a header line.
                block = b"\r\n" + bytes(buf[: end + 2])
                if len(_FIELD.findall(block, 2)) != block.count(b"\r\n", 2):
                    raise ParseError(400, "malformed trailer field")
                return self._finish(b"".join(self._pieces), end + 4)
