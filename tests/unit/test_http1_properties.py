"""Property tests of the response framing in `agw_fast.core.http1`, with h11 as the oracle.

Generated responses (Content-Length, chunked with random chunk sizes, extensions and trailers,
close-delimited, bodiless statuses), followed by the start of a next response, are cut into
pieces at arbitrary offsets. `parse_response_head` and `ChunkedScanner` must find the same
status, fields, message end and payload as h11 does, and the bytes we would relay (everything
up to our message end) must parse, with h11, to the same message.
"""

from __future__ import annotations

from dataclasses import dataclass

import h11
from hypothesis import given, settings
from hypothesis import strategies as st

from agw_fast.core.http1 import (
    BODY_CHUNKED,
    BODY_CLOSE,
    BODY_LENGTH,
    BODY_NONE,
    ChunkedScanner,
    parse_response_head,
)

NEXT = b"HTTP/1.1 204 No Content\r\n\r\n"  # what a keep-alive upstream sends next
_TOKEN = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-.^_`|~"
_VALUE = st.text(
    st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=0, max_size=20
).map(lambda v: v.encode())
_FRAMING_NAMES = {b"content-length", b"transfer-encoding", b"connection"}
_NAME = st.text(_TOKEN, min_size=1, max_size=12).map(lambda n: n.encode()).filter(
    lambda n: n.lower() not in _FRAMING_NAMES
)
_FIELDS = st.lists(st.tuples(_NAME, _VALUE), max_size=5)


@dataclass
class Generated:
    wire: bytes  # one response, then the start of the next (unless close-delimited)
    framing: str  # "length", "chunked", "close" or "none"
    status: int
    fields: list[tuple[bytes, bytes]]
    payload: bytes
    end: int  # where the first response ends in `wire`


@st.composite
def chunked_body(draw: st.DrawFn, payload: bytes) -> bytes:
    """`payload` as chunks of random sizes, each maybe with extensions, then maybe trailers."""
    out = []
    pos = 0
    while pos < len(payload):
        size = draw(st.integers(1, max(1, len(payload) - pos)))
        ext = draw(st.sampled_from([b"", b";a", b";name=value", b';q="quoted; string"']))
        upper = draw(st.booleans())
        size_text = b"%X" % size if upper else b"%x" % size
        out.append(size_text + ext + b"\r\n" + payload[pos : pos + size] + b"\r\n")
        pos += size
    last_ext = draw(st.sampled_from([b"", b";end"]))
    trailers = draw(st.lists(st.tuples(_NAME, _VALUE), max_size=3))
    out.append(b"0" + last_ext + b"\r\n")
    out += [name + b": " + value + b"\r\n" for name, value in trailers]
    out.append(b"\r\n")
    return b"".join(out)


@st.composite
def responses(draw: st.DrawFn) -> Generated:
    framing = draw(st.sampled_from(["length", "chunked", "close", "none"]))
    status = draw(st.sampled_from([204, 304]) if framing == "none" else
                  st.sampled_from([200, 201, 400, 404, 500, 502]))
    fields = draw(_FIELDS)
    payload = b"" if framing == "none" else draw(st.binary(max_size=300))
    lines = [b"HTTP/1.1 %d Reason Here" % status]
    lines += [name + b": " + value for name, value in fields]
    if framing == "length":
        lines.append(b"Content-Length: %d" % len(payload))
        body = payload
    elif framing == "chunked":
        lines.append(b"Transfer-Encoding: chunked")
        body = draw(chunked_body(payload))
    else:
        body = payload
    head = b"\r\n".join(lines) + b"\r\n\r\n"
    end = len(head) + len(body)
    wire = head + body + (b"" if framing == "close" else NEXT)
    return Generated(wire, framing, status, fields, payload, end)


def cut(wire: bytes, offsets: list[int]) -> list[bytes]:
    """`wire` cut at `offsets` (taken modulo its length), as reads off a socket: no empty ones
    (an empty read is the end of the stream)."""
    points = sorted({o % (len(wire) + 1) for o in offsets})
    pieces = [wire[a:b] for a, b in zip([0, *points], [*points, len(wire)], strict=True)]
    return [piece for piece in pieces if piece]


@dataclass
class Seen:
    status: int
    fields: list[tuple[bytes, bytes]]
    payload: bytes
    end: int  # bytes of the wire that belong to the first response


def ours(pieces: list[bytes]) -> Seen:
    """How the proxy's upstream side reads the pieces: find the head, decide the framing once,
    then count or scan the body."""
    buffer = bytearray()
    consumed = 0  # bytes of earlier pieces already handed to the body reader
    head = None
    scanner: ChunkedScanner | None = None
    payload: list[bytes] = []
    remaining = 0
    body_start = 0
    for piece in pieces:
        if head is None:
            buffer += piece
            at = buffer.find(b"\r\n\r\n")
            if at == -1:
                continue
            head = parse_response_head(buffer, at, False, frozenset())
            body_start = at + 4
            piece = bytes(buffer[body_start:])
            consumed = body_start
            if head.framing == BODY_NONE:
                return Seen(head.status, _split(head.lines), b"", body_start)
            if head.framing == BODY_CHUNKED:
                scanner = ChunkedScanner(payload.append)
            remaining = head.content_length
        if head.framing == BODY_LENGTH:
            take = piece[:remaining]
            payload.append(take)
            remaining -= len(take)
            consumed += len(take)
            if remaining == 0:
                return Seen(head.status, _split(head.lines), b"".join(payload), consumed)
        elif head.framing == BODY_CHUNKED:
            assert scanner is not None
            used = scanner.feed(piece)
            if used != -1:
                return Seen(head.status, _split(head.lines), b"".join(payload), consumed + used)
            consumed += len(piece)
        else:
            assert head.framing == BODY_CLOSE
            payload.append(piece)
            consumed += len(piece)
    assert head is not None and head.framing == BODY_CLOSE, "message did not end"
    return Seen(head.status, _split(head.lines), b"".join(payload), consumed)


def _split(lines: list[bytes]) -> list[tuple[bytes, bytes]]:
    return [(name, value.strip(b" \t")) for name, _, value in (ln.partition(b":") for ln in lines)]


def h11_reads(pieces: list[bytes], close_at_end: bool) -> Seen:
    conn = h11.Connection(h11.CLIENT)
    conn.send(h11.Request(method="GET", target="/", headers=[("Host", "upstream")]))
    conn.send(h11.EndOfMessage())
    fed = 0
    response: h11.Response | None = None
    payload = []
    for piece in [*pieces, b""] if close_at_end else pieces:
        conn.receive_data(piece)
        fed += len(piece)
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                break
            if isinstance(event, h11.Response):
                response = event
            elif isinstance(event, h11.Data):
                payload.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                assert response is not None
                fields = [(bytes(n), bytes(v)) for n, v in response.headers]
                unread = len(conn.trailing_data[0])
                return Seen(response.status_code, fields, b"".join(payload), fed - unread)
            else:
                raise AssertionError(f"unexpected {event!r}")
    raise AssertionError("h11 saw no end of message")


@settings(max_examples=300)
@given(responses(), st.lists(st.integers(0, 4000), max_size=6))
def test_framing_agrees_with_h11(generated: Generated, offsets: list[int]) -> None:
    pieces = cut(generated.wire, offsets)
    close = generated.framing == "close"
    seen, oracle = ours(pieces), h11_reads(pieces, close)
    assert seen == oracle
    assert seen.end == generated.end
    assert seen.payload == generated.payload
    # What we relay (the first `end` bytes, untouched) is that same message to h11.
    relayed = generated.wire[: seen.end]
    assert h11_reads(cut(relayed, offsets), close) == oracle


@settings(max_examples=300)
@given(st.binary(max_size=200), st.data())
def test_chunked_payload_survives_any_split(payload: bytes, data: st.DataObject) -> None:
    body = data.draw(chunked_body(payload))
    offsets = data.draw(st.lists(st.integers(0, len(body)), max_size=len(body) // 4 + 1))
    scanner_parts: list[bytes] = []
    scanner = ChunkedScanner(scanner_parts.append)
    fed = 0
    for piece in cut(body + NEXT, offsets):
        used = scanner.feed(piece)
        if used != -1:
            # The end is found in the piece holding the body's last byte, exactly there.
            assert fed + used == len(body)
            break
        fed += len(piece)
    else:
        raise AssertionError("end of the chunked body not found")
    assert b"".join(scanner_parts) == payload
