"""The bench clients' response framer counts pipelined responses however the bytes arrive."""

from __future__ import annotations

import pytest

from bench.clients import ClientError, ResponseFramer

CHUNKED = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n0\r\nt: 1\r\n\r\n"
LENGTH = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nhi"
NO_CONTENT = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n"
WIRE = (CHUNKED + LENGTH + NO_CONTENT) * 3


@pytest.mark.parametrize("step", [1, 2, 7, len(WIRE)])
def test_counts_pipelined_responses_at_any_split(step: int) -> None:
    framer = ResponseFramer()
    assert sum(framer.feed(WIRE[i : i + step]) for i in range(0, len(WIRE), step)) == 9
    assert framer.status == 204


def test_close_delimited_response_ends_at_eof() -> None:
    framer = ResponseFramer()
    assert framer.feed(b"HTTP/1.1 200 OK\r\n\r\nbody until close") == 0
    assert framer.eof() == 1


def test_bad_chunk_framing_is_a_client_error() -> None:
    with pytest.raises(ClientError, match="bad chunked body"):
        ResponseFramer().feed(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n")
