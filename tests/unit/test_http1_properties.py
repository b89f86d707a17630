"""Property tests of the response framing in `agw_fast.core.http1`, with h11 as the oracle.

Generated responses (Content-Length, chunked with random chunk sizes, extensions and trailers,
close-delimited, bodiless statuses), followed by the start of a next response, are cut into
pieces at arbitrary offsets. `parse_response_head` and `ChunkedScanner` must find the same
status, fields, message end and payload as h11 does, and the bytes we would relay (everything
up to our message end) must parse, with h11, to the same message. Chunked bodies with one line
broken must be refused by us, and by h11 wherever h11 refuses them.
"""

from __future__ import annotations

from dataclasses import dataclass

import h11
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agw_fast.core.h11_strict import harden_h11
from agw_fast.core.http1 import (
    BODY_CHUNKED,
    BODY_CLOSE,
    BODY_LENGTH,
    BODY_NONE,
    ChunkedScanner,
    UpstreamProtocolError,
    parse_response_head,
)

# The oracle is h11 as the gateway runs it, whatever other test modules imported first: its
# chunk lines then follow the grammar ours do (`core.abnf`).
harden_h11()

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


# Chunk extensions as RFC 9112 §7.1.1 spells them: BWS ";" BWS name [BWS "=" BWS value],
# the value a token or a quoted-string (RFC 9110 §5.6.4), and h11's whitespace before CRLF.
_BWS = st.sampled_from([b"", b" ", b"\t", b" \t "])
_TOKEN_BYTES = st.text(_TOKEN, min_size=1, max_size=8).map(str.encode)
_QDTEXT = [0x09, 0x20, 0x21, *range(0x23, 0x5C), *range(0x5D, 0x7F), *range(0x80, 0x100)]
_QUOTABLE = [0x09, *range(0x20, 0x7F), *range(0x80, 0x100)]
_QUOTED_STRING = st.lists(
    st.one_of(
        st.sampled_from(_QDTEXT).map(lambda b: bytes([b])),
        st.sampled_from(_QUOTABLE).map(lambda b: b"\\" + bytes([b])),
    ),
    max_size=6,
).map(lambda parts: b'"' + b"".join(parts) + b'"')


@st.composite
def chunk_ext(draw: st.DrawFn) -> bytes:
    out = []
    for _ in range(draw(st.integers(0, 3))):
        out += [draw(_BWS), b";", draw(_BWS), draw(_TOKEN_BYTES)]
        if draw(st.booleans()):
            value = draw(st.one_of(_TOKEN_BYTES, _QUOTED_STRING))
            out += [draw(_BWS), b"=", draw(_BWS), value]
    out.append(draw(st.sampled_from([b"", b"", b" ", b"\t"])))  # before the CRLF
    return b"".join(out)


# Trailer field values: visible bytes, obs-text and the controls RFC 9110 §5.5 lets a
# recipient keep (all but CR, LF and NUL), words separated by SP or HTAB.
_FIELD_WORD = st.binary(min_size=1, max_size=6).map(
    lambda w: bytes(b if b not in b"\x00\t\n\x0b\x0c\r " else 0x21 for b in w)
)
_TRAILER_VALUE = st.lists(st.tuples(st.sampled_from([b" ", b"\t"]), _FIELD_WORD), max_size=3).map(
    lambda words: b"".join(sep + word for sep, word in words).lstrip(b" \t")
)


@dataclass
class Segment:
    """One piece of a chunked body: a chunk line ("size", its text), chunk data ("data"), a
    trailer line ("trailer") or the blank line that ends it all ("end"), with its line end
    (the CRLF after the data, for "data")."""

    kind: str
    text: bytes
    ending: bytes = b"\r\n"


def render(segments: list[Segment]) -> bytes:
    return b"".join(segment.text + segment.ending for segment in segments)


@st.composite
def chunk_segments(draw: st.DrawFn, payload: bytes) -> list[Segment]:
    """`payload` as chunks of random sizes, each maybe with extensions, then maybe trailers."""
    out = []
    pos = 0
    while pos < len(payload):
        size = draw(st.integers(1, max(1, len(payload) - pos)))
        size_text = b"%X" % size if draw(st.booleans()) else b"%x" % size
        zeros = b"0" * draw(st.sampled_from([0, 0, 0, 1, 20]))
        out.append(Segment("size", zeros + size_text + draw(chunk_ext())))
        out.append(Segment("data", payload[pos : pos + size]))
        pos += size
    out.append(Segment("size", b"0" + draw(chunk_ext())))
    for name, value in draw(st.lists(st.tuples(_NAME, _TRAILER_VALUE), max_size=3)):
        out.append(Segment("trailer", name + b":" + draw(_BWS) + value + draw(_BWS)))
    out.append(Segment("end", b""))
    return out


@st.composite
def chunked_body(draw: st.DrawFn, payload: bytes) -> bytes:
    return render(draw(chunk_segments(payload)))


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


# -- invalid chunk lines: refused by us, and by h11 where h11 refuses them ---------------------

_BAD_EXTENSIONS = [b";", b";=b", b";a=", b";a=b c", b";a=(b)", b';a="b', b';a="\x00"',
                   b";a=\x01", b";a=\x7f", b";a=b\rc", b";a\x00", b"; a =", b";a;"]
_BAD_SIZE_PREFIXES = [b"0x", b"+", b"-", b" ", b"1" * 17, b"_"]
_BAD_TRAILERS = [b"T: a\rb", b"T: a\x00b", b"no colon", b"T : v", b": v", b" folded",
                 b"\rT: v", b"T: v\r", b"T\x01: v"]


@st.composite
def broken_chunked_body(draw: st.DrawFn) -> tuple[bytes, bool, str]:
    """A valid chunked body with one line broken; returns (body, whether h11 refuses it too,
    what was broken). h11 takes a bare LF for a line end in trailers (RFC 9112 §2.2 allows a
    recipient to); we cannot, since the client we relay to may not."""
    payload = draw(st.binary(max_size=60))
    segments = draw(chunk_segments(payload))
    sizes = [i for i, segment in enumerate(segments) if segment.kind == "size"]
    data = [i for i, segment in enumerate(segments) if segment.kind == "data"]
    kinds = ["size-bare-lf", "size-cr-inside", "size-lf-inside", "bad-extension", "bad-size",
             "bad-trailer", "trailer-bare-lf", "end-bare-lf"]
    if data:
        kinds += ["data-bare-lf", "data-no-crlf"]
    kind = draw(st.sampled_from(kinds))
    h11_refuses = True
    if kind.startswith(("size", "bad-extension", "bad-size")):
        segment = segments[draw(st.sampled_from(sizes))]
        at = draw(st.integers(0, len(segment.text)))
        if kind == "size-bare-lf":
            segment.ending = b"\n"
        elif kind == "size-cr-inside":
            segment.text = segment.text[:at] + b"\r" + segment.text[at:]
        elif kind == "size-lf-inside":
            segment.text = segment.text[:at] + b"\n" + segment.text[at:]
        elif kind == "bad-extension":
            segment.text += draw(st.sampled_from(_BAD_EXTENSIONS))
        else:
            segment.text = draw(st.sampled_from(_BAD_SIZE_PREFIXES)) + segment.text.lstrip(b"0")
    elif kind.startswith("data"):
        segments[draw(st.sampled_from(data))].ending = b"\n" if kind == "data-bare-lf" else b"XY"
    elif kind == "end-bare-lf":
        segments[-1].ending = b"\n"
        h11_refuses = False
    else:
        bad = draw(st.sampled_from(_BAD_TRAILERS)) if kind == "bad-trailer" else b"T: v"
        ending = b"\r\n" if kind == "bad-trailer" else b"\n"
        segments.insert(len(segments) - 1, Segment("trailer", bad, ending))
        h11_refuses = kind == "bad-trailer"
    return render(segments), h11_refuses, kind


@settings(max_examples=500)
@given(broken_chunked_body(), st.lists(st.integers(0, 400), max_size=6))
def test_broken_chunk_lines_are_refused(
    broken: tuple[bytes, bool, str], offsets: list[int]
) -> None:
    body, h11_refuses, _ = broken
    wire = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + body + NEXT
    pieces = cut(wire, offsets)
    with pytest.raises(UpstreamProtocolError):
        ours(pieces)
    if h11_refuses:
        with pytest.raises(h11.RemoteProtocolError):
            h11_reads(pieces, close_at_end=False)
