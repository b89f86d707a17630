"""Sans-IO HTTP/1.1 pieces for the response side: head parsing, framing, chunk scanning.

h11 parses every downstream *request*. Responses from upstream are relayed as framed bytes
(h11 would re-check every field we relay): we find the head, decide the body framing once
(RFC 9112 §6.3), and scan chunk lines only to know where the message ends, so body bytes are
forwarded untouched. What we relay untouched the client parses again, so whatever it could
read differently from us (bare CR or LF, odd chunk extensions) is refused, not passed on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus

from agw_fast.core.abnf import CHUNK_LINE, FIELD_LINE

__all__ = [
    "BODY_CHUNKED",
    "BODY_CLOSE",
    "BODY_LENGTH",
    "BODY_NONE",
    "MAX_RESPONSE_HEAD",
    "ChunkedScanner",
    "ResponseHead",
    "UpstreamProtocolError",
    "connection_tokens",
    "decode_chunked",
    "parse_response_head",
    "reason_phrase",
    "status_line",
]

MAX_RESPONSE_HEAD = 64 * 1024
_MAX_CHUNK_LINE = 4 * 1024
_HEX = b"0123456789abcdefABCDEF"
# ChunkedScanner states.
_SIZE, _DATA, _DATA_CRLF, _TRAILER = 0, 1, 2, 3

BODY_NONE = 0
BODY_LENGTH = 1
BODY_CHUNKED = 2
BODY_CLOSE = 3


class UpstreamProtocolError(Exception):
    """The upstream sent something that is not valid HTTP/1.1 framing."""


@dataclass(slots=True)
class ResponseHead:
    status: int
    http11: bool
    lines: list[bytes]  # the field lines to relay: lowercase name, value as received
    content_type: bytes
    framing: int
    content_length: int
    keep_alive: bool
    status_line: bytes  # "HTTP/1.1 <code> <reason>": we answer in HTTP/1.1 whatever came in


def connection_tokens(value: bytes) -> set[bytes]:
    return {t.strip().lower() for t in value.split(b",") if t.strip()}


# Fields that decide framing or that the caller needs; only these have their value parsed.
_INTERESTING = frozenset(
    {b"content-length", b"transfer-encoding", b"connection", b"content-type"}
)
_WHITESPACE = b" \t"


def parse_response_head(
    buf: bytes | bytearray, end: int, head_request: bool, drop: frozenset[bytes]
) -> ResponseHead:
    """Parse the head in `buf[:end]` (end = index of the blank line's CRLFCRLF).

    `head_request`: the request was HEAD, so there is no body whatever the headers say.
    `drop`: lowercase names of fields not to relay (hop-by-hop, response header policy).
    The kept lines are returned ready to relay, so the relayed head costs one join.
    """
    raw = bytes(buf[:end])
    lines = raw.split(b"\r\n")
    breaks = len(lines) - 1
    # The lines are relayed as they came, so the client reads them again: a bare CR or LF
    # that it takes for a line end (h11 does, for LF) would give it fields we never saw, a
    # Transfer-Encoding among them. RFC 9110 §5.5 lets us reject CR, LF and NUL in values.
    if raw.count(b"\n") != breaks or raw.count(b"\r") != breaks or b"\0" in raw:
        raise UpstreamProtocolError("bare CR, LF or NUL in the response head")
    first = lines[0]
    parts = first.split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or len(parts[1]) != 3:
        raise UpstreamProtocolError(f"bad status line {first[:80]!r}")
    code = parts[1]
    if not code.isdigit() or code[0] == 48:  # 48 = "0": status codes are 100..999
        raise UpstreamProtocolError(f"bad status code {code!r}")
    status = int(code)
    http11 = parts[0] == b"HTTP/1.1"
    kept: list[bytes] = []
    content_length = -1
    chunked = False
    keep_alive = http11
    content_type = b""
    for line in lines[1:]:
        colon = line.find(b":")
        # Nameless fields, obsolete line folding and whitespace before the colon are all
        # rejected (RFC 9112 §5.1, §5.2).
        if colon <= 0 or line[0] in _WHITESPACE or line[colon - 1] in _WHITESPACE:
            raise UpstreamProtocolError(f"bad header line {line[:80]!r}")
        name = line[:colon].lower()
        if name in _INTERESTING:
            value = line[colon + 1 :].strip(_WHITESPACE)
            if name == b"content-length":
                # Digits only: int() would also take "+5", "1_000" and surrounding space.
                if not value.isdigit():
                    raise UpstreamProtocolError(f"bad content-length {value[:40]!r}")
                length = int(value)
                if content_length != -1 and content_length != length:
                    raise UpstreamProtocolError("conflicting content-length")
                content_length = length
            elif name == b"transfer-encoding":
                codings = [c.strip().lower() for c in value.split(b",")]
                # Only a final "chunked" frames the body (RFC 9112 §6.3 item 4); anything
                # else would mean reading until close, which we refuse as ambiguous.
                if codings[-1] != b"chunked":
                    raise UpstreamProtocolError("transfer-encoding without final chunked")
                chunked = True
            elif name == b"content-type":
                content_type = value
            elif value != b"keep-alive" or not http11:
                tokens = connection_tokens(value)
                if b"close" in tokens:
                    keep_alive = False
                elif b"keep-alive" in tokens:
                    keep_alive = True
        if name not in drop:
            # Lowercase names, as agentgateway sends them (http1HeaderCase: lowercase).
            kept.append(name + line[colon:])
    if head_request or status < 200 or status in (204, 304):
        framing = BODY_NONE
    elif chunked:
        if content_length != -1:
            # Both present: a smuggling vector; RFC 9112 §6.3 says treat as an error upstream.
            raise UpstreamProtocolError("both transfer-encoding and content-length")
        framing = BODY_CHUNKED
    elif content_length != -1:
        framing = BODY_LENGTH if content_length else BODY_NONE
    else:
        framing = BODY_CLOSE
        keep_alive = False
    reason = parts[2] if len(parts) == 3 else b""
    if parts[0] == b"HTTP/1.1" and len(parts) == 3:
        status_line_ = first
    else:  # an HTTP/1.0 upstream, or no reason phrase (its SP is still required: RFC 9112 §4)
        status_line_ = b"HTTP/1.1 " + code + b" " + reason
    length = max(content_length, 0)
    return ResponseHead(
        status, http11, kept, content_type, framing, length, keep_alive, status_line_
    )


class ChunkedScanner:
    """Finds the end of a chunked body without copying it (RFC 9112 §7.1).

    `feed(data)` returns -1 while the message continues, else the number of bytes of `data`
    that belong to this message (the rest belongs to the next one). When `on_payload` is set
    it receives each slice of de-chunked payload (used by the SSE observer and to de-chunk
    for HTTP/1.0 clients).

    The bytes go to the client as they came, so the client parses these lines again: any
    line it could read differently (a bare CR or LF, anything but `token [= value]` after a
    `;`, a trailer that is no field line) would let it frame the body differently from us,
    and take what we relay as the body for the start of the next response. Such a line is an
    `UpstreamProtocolError`, on the grammar h11 applies to requests (`core.abnf`).
    """

    __slots__ = ("_state", "_remaining", "_line", "on_payload", "payload")

    def __init__(self, on_payload: Callable[[bytes], None] | None = None) -> None:
        self._state = _SIZE
        self._remaining = 0
        self._line = b""
        self.on_payload = on_payload
        self.payload = 0  # payload bytes seen, chunk framing excluded (`response_bytes`)

    def feed(self, data: bytes) -> int:
        pos = 0
        size = len(data)
        while pos < size:
            state = self._state
            if state == _DATA:
                take = min(self._remaining, size - pos)
                self.payload += take
                if self.on_payload is not None:
                    self.on_payload(data[pos : pos + take])
                pos += take
                self._remaining -= take
                if self._remaining == 0:
                    # The CRLF after the data, when it is here (it usually is): no line to cut.
                    if data.startswith(b"\r\n", pos):
                        pos += 2
                        self._state = _SIZE
                    else:
                        self._state = _DATA_CRLF
                continue
            newline = data.find(b"\n", pos)
            if newline == -1:
                self._line += data[pos:]
                if len(self._line) > _MAX_CHUNK_LINE:
                    raise UpstreamProtocolError("chunk line too long")
                return -1
            # The line without its LF; every line ends with CRLF (RFC 9112 §7.1, §2.2: a
            # bare LF is a line end only to some of the peers that read these bytes next).
            line = self._line + data[pos:newline]
            self._line = b""
            pos = newline + 1
            if state == _SIZE:
                size_text = line[:-1]
                # The common line, `<hex>CRLF`, is checked without a regex; anything else
                # (extensions, over 16 digits with leading zeros, errors) meets the grammar.
                if 0 < len(size_text) <= 16 and line[-1] == 13 and not size_text.strip(_HEX):
                    chunk_size = int(size_text, 16)
                else:
                    chunk_size = _chunk_size(line)
                if chunk_size == 0:
                    self._state = _TRAILER
                else:
                    self._remaining = chunk_size
                    self._state = _DATA
            elif state == _DATA_CRLF:
                if line != b"\r":
                    raise UpstreamProtocolError("missing CRLF after chunk data")
                self._state = _SIZE
            elif line == b"\r":  # _TRAILER: the empty line ends the message
                self._state = _SIZE
                return pos
            else:
                _check_trailer(line)
        return -1


def _chunk_size(line: bytes) -> int:
    """The size on a chunk line other than `<hex>CR` (`line` ends before its LF)."""
    if line[-1:] != b"\r":
        raise UpstreamProtocolError("chunk line not ended by CRLF")
    if len(line) > _MAX_CHUNK_LINE:  # the same bound whether it came in one read or many
        raise UpstreamProtocolError("chunk line too long")
    match = CHUNK_LINE.fullmatch(line, 0, len(line) - 1)
    if match is None:
        raise UpstreamProtocolError(f"bad chunk line {line[:20]!r}")
    return int(match["chunk_size"], 16)


def _check_trailer(line: bytes) -> None:
    """A trailer line must be a field line (RFC 9112 §7.1.2) ended by CRLF."""
    if len(line) > _MAX_CHUNK_LINE:
        raise UpstreamProtocolError("chunk line too long")
    if line[-1:] != b"\r" or not FIELD_LINE.fullmatch(line, 0, len(line) - 1):
        raise UpstreamProtocolError("bad trailer line")


def decode_chunked(data: bytes) -> tuple[bytes, int]:
    """The payload of the chunked body at the start of `data`, and how many bytes of `data` it
    spans (-1 while incomplete). For tests, tools and the mock: it copies the payload, which
    the relay never does. Raises `UpstreamProtocolError` on invalid framing."""
    parts: list[bytes] = []
    end = ChunkedScanner(parts.append).feed(data)
    return b"".join(parts), end


# RFC 9110 §15 names; Python before 3.13 still has RFC 7231's for these four, and the wire
# must not change with the interpreter.
_RFC9110_PHRASES = {
    413: "Content Too Large",
    414: "URI Too Long",
    416: "Range Not Satisfiable",
    422: "Unprocessable Content",
}
_REASONS: dict[int, bytes] = {
    status.value: _RFC9110_PHRASES.get(status.value, status.phrase).encode()
    for status in HTTPStatus
}
# Every known status line built once at import; `status_line` is then one dict probe.
_STATUS_LINES: dict[int, bytes] = {
    status: b"HTTP/1.1 %d %s\r\n" % (status, reason) for status, reason in _REASONS.items()
}


def reason_phrase(status: int) -> bytes:
    """The standard reason phrase, or b"" for a code HTTP does not name (RFC 9112 §4 allows
    an empty one)."""
    return _REASONS.get(status, b"")


def status_line(status: int) -> bytes:
    """`HTTP/1.1 <status> <reason>\\r\\n`; an unnamed code gets an empty reason (cached too:
    codes are three digits, so the cache stays small)."""
    line = _STATUS_LINES.get(status)
    if line is None:
        line = b"HTTP/1.1 %d \r\n" % status
        _STATUS_LINES[status] = line
    return line
