"""h11 made strict (agw_fast.core.h11_strict), checked through h11's public API only: if an
h11 upgrade moves the internals we replace, these fail instead of the checks going quiet."""

from __future__ import annotations

import re
import types
from collections.abc import Callable
from typing import Any

import h11
import h11._abnf
import h11._readers
import pytest

from agw_fast.core.h11_strict import STRICT_CHUNK_HEADER, harden_h11
from agw_fast.core.http1 import UpstreamProtocolError, decode_chunked

harden_h11()

CHUNKED_HEAD = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"


def _events(data: bytes) -> list[object]:
    """Events until the message ends or more data is needed; a protocol error ends the list
    with its status hint."""
    connection = h11.Connection(h11.SERVER)
    connection.receive_data(data)
    events: list[object] = []
    while True:
        try:
            event = connection.next_event()
        except h11.RemoteProtocolError as error:
            events.append(error.error_status_hint)
            return events
        if event is h11.NEED_DATA or isinstance(event, h11.EndOfMessage):
            events.append(event if event is h11.NEED_DATA else b"<end>")
            return events
        events.append(bytes(event.data) if isinstance(event, h11.Data) else type(event))


def _body(chunks: bytes) -> bytes | int:
    """The de-chunked body, or the status hint of the error."""
    events = _events(CHUNKED_HEAD + chunks)
    assert events[0] is h11.Request
    if isinstance(events[-1], int):
        return events[-1]
    assert events[-1] == b"<end>", events
    return b"".join(e for e in events[1:-1] if isinstance(e, bytes))


VALID_CHUNKS = [
    b"5\r\nhello\r\n0\r\n\r\n",
    b"5;a\r\nhello\r\n0\r\n\r\n",
    b"5;a=b;c=d\r\nhello\r\n0\r\n\r\n",
    b'5 ; a = "quoted \\" string; with, separators" ; b\r\nhello\r\n0\r\n\r\n',
    b"5;a=\"\x80\xff\"\r\nhello\r\n0\r\n\r\n",  # obs-text in a quoted string
    b"5 \r\nhello\r\n0\r\n\r\n",  # h11's own leniency: whitespace before CRLF
    b"0005\r\nhello\r\n0000\r\n\r\n",
    b"000000000000000000005\r\nhello\r\n0\r\n\r\n",
    b"5\r\nhello\r\n0;last=1\r\nX-Trailer: t\r\n\r\n",
]


@pytest.mark.parametrize("chunks", VALID_CHUNKS)
def test_valid_chunk_lines(chunks: bytes) -> None:
    assert _body(chunks) == b"hello"


INVALID_CHUNKS = [
    b"41;a=b\r\rXXXX\r\n",  # a bare CR inside the extension (HTTP Garden)
    b"5;a=b\rc\r\nhello\r\n0\r\n\r\n",
    b"5;a=b\nc\r\nhello\r\n0\r\n\r\n",
    b"5;a=\x01\r\nhello\r\n0\r\n\r\n",
    b"5;a=\x7f\r\nhello\r\n0\r\n\r\n",
    b'5;a="\x00"\r\nhello\r\n0\r\n\r\n',
    b"5;\r\nhello\r\n0\r\n\r\n",
    b"5;=b\r\nhello\r\n0\r\n\r\n",
    b"5;a=\r\nhello\r\n0\r\n\r\n",
    b"5;a=b c\r\nhello\r\n0\r\n\r\n",
    b'5;a="b\r\nhello\r\n0\r\n\r\n',
    b"5;a=(b)\r\nhello\r\n0\r\n\r\n",
    b"zz\r\nhello\r\n0\r\n\r\n",
    b"-5\r\nhello\r\n0\r\n\r\n",
    b"+5\r\nhello\r\n0\r\n\r\n",
    b"0x5\r\nhello\r\n0\r\n\r\n",
    b" 5\r\nhello\r\n0\r\n\r\n",
    b"\r\nhello\r\n0\r\n\r\n",
    b"10000000000000000\r\nhello\r\n0\r\n\r\n",  # 2**64: does not fit
    b"5\nhello\r\n0\r\n\r\n",
]


@pytest.mark.parametrize("chunks", INVALID_CHUNKS)
def test_invalid_chunk_lines_are_400(chunks: bytes) -> None:
    assert _body(chunks) == 400


@pytest.mark.parametrize("chunks", VALID_CHUNKS + INVALID_CHUNKS)
def test_responses_are_held_to_the_grammar_of_requests(chunks: bytes) -> None:
    """One chunk-line grammar (`core.abnf`) both ways: the upstream response scanner accepts
    exactly the lines h11 accepts in a request once hardened."""
    try:
        payload, end = decode_chunked(chunks)
    except UpstreamProtocolError:
        payload, end = b"", -1
    request = _body(chunks)
    assert (payload if end == len(chunks) else 400) == request


def test_largest_64_bit_chunk_size_is_accepted() -> None:
    events = _events(CHUNKED_HEAD + b"ffffffffffffffff\r\nab")
    assert events == [h11.Request, b"ab", h11.NEED_DATA]


@pytest.mark.parametrize(
    "head",
    [
        b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n\tb\r\n\r\n",
        b"GET / HTTP/1.1\r\n Host: x\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n",
    ],
)
def test_obsolete_line_folding_is_400(head: bytes) -> None:
    assert _events(head) == [400]


def test_folded_trailer_is_400() -> None:
    assert _body(b"0\r\nX-T: a\r\n b\r\n\r\n") == 400


def test_harden_is_idempotent() -> None:
    harden_h11()
    harden_h11()
    assert _body(b"5;a=b\r\nhello\r\n0\r\n\r\n") == b"hello"
    assert STRICT_CHUNK_HEADER.fullmatch(b"5;a=b\r\n") is not None


def test_harden_refuses_an_h11_without_the_expected_internals(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delattr(h11._readers, "obs_fold_re")
    with pytest.raises(RuntimeError, match="obs_fold_re"):
        harden_h11()


def _rebound(function: Callable[..., Any], **names: object) -> Callable[..., Any]:
    """`function` reading `names` from a namespace of its own, not its module's: as if h11 had
    bound its regexes at import instead of looking them up by module name each time."""
    return types.FunctionType(
        function.__code__,
        {**function.__globals__, **names},
        function.__name__,
        function.__defaults__,
        function.__closure__,
    )


# h11 0.16's own patterns, before hardening.
_H11_OBS_FOLD = re.compile(rb"[ \t]+")
_H11_CHUNK_HEADER = re.compile(h11._abnf.chunk_header.encode("ascii"))


def test_harden_refuses_an_h11_that_no_longer_reads_its_fold_pattern(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fold = _rebound(h11._readers._obsolete_line_fold, obs_fold_re=_H11_OBS_FOLD)
    monkeypatch.setattr(h11._readers, "_obsolete_line_fold", fold)
    with pytest.raises(RuntimeError, match="folded header"):
        harden_h11()


def test_harden_refuses_an_h11_that_no_longer_reads_its_chunk_pattern(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    reader = h11._readers.ChunkedReader
    call = _rebound(reader.__call__, chunk_header_re=_H11_CHUNK_HEADER)
    monkeypatch.setattr(reader, "__call__", call)
    with pytest.raises(RuntimeError, match="bare CR in a chunk extension"):
        harden_h11()
