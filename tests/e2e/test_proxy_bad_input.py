"""Requests the gateway must refuse (RFC 9112 framing rules): malformed request lines, oversized
heads, ambiguous or invalid body framing. Each is answered with a 4xx (or a closed connection)
and never reaches the upstream; other connections carry on."""

from __future__ import annotations

import socket
from collections.abc import Collection

import pytest

from tests.e2e.conftest import (
    DEADLINE,
    BufferedSocket,
    Process,
    RawClient,
    RawMessage,
    Upstream,
    http_request,
)


def send_bad(
    port: int, data: bytes, statuses: Collection[int]
) -> tuple[RawMessage | None, bool]:
    """Send `data`; return the gateway's answer (None if it closed without one) and whether it
    then closed the connection with nothing more to say (only checked after one of the
    expected `statuses`, so that a wrong answer fails at once)."""
    with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE) as sock:
        try:
            sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the gateway may refuse before reading everything
        reader = BufferedSocket(sock)
        try:
            response = reader.read_message(request=False)
        except (ConnectionResetError, EOFError):
            return None, True
        if response is None:
            return None, True
        if response.status not in statuses:
            return response, False
        try:
            return response, reader.at_eof()
        except TimeoutError:
            return response, False


def upstream_targets(upstream: Upstream) -> list[str]:
    with upstream.lock:
        return [request.target for request in upstream.requests]


def assert_rejected(port: int, data: bytes, status: int) -> None:
    """Answered with `status`, then closed with nothing more."""
    response, closed = send_bad(port, data, {status})
    assert response is not None, "closed without an answer"
    assert response.status == status, response.raw[:300]
    assert closed, "the connection stayed open (or more bytes followed) after the rejection"


def assert_still_serving(port: int, upstream: Upstream, tag: str) -> None:
    with RawClient(port) as raw:
        response = raw.request(http_request("GET", f"/ok/{tag}"))
    assert response.status == 200
    assert upstream_targets(upstream)[-1] == f"/ok/{tag}"


@pytest.mark.parametrize(
    "request_line",
    [
        b"GARBAGE\r\n\r\n",
        b"GET /\r\nHost: x\r\n\r\n",  # no version
        b"GET / HTTP/1.1 extra\r\nHost: x\r\n\r\n",
        b"GET /a b HTTP/1.1\r\nHost: x\r\n\r\n",
        b"G\x01T / HTTP/1.1\r\nHost: x\r\n\r\n",
    ],
)
def test_malformed_request_line_is_400(
    gw: Process, upstream: Upstream, request_line: bytes
) -> None:
    before = upstream_targets(upstream)
    assert_rejected(gw.port, request_line, 400)
    assert upstream_targets(upstream) == before
    assert_still_serving(gw.port, upstream, "after-bad-line")


def test_malformed_header_line_is_400(gw: Process, upstream: Upstream) -> None:
    before = upstream_targets(upstream)
    assert_rejected(gw.port, b"GET /bad-header HTTP/1.1\r\nHost: x\r\nNo colon\r\n\r\n", 400)
    assert_rejected(gw.port, b"GET /bad-header HTTP/1.1\r\nHost: x\r\nName : v\r\n\r\n", 400)
    assert upstream_targets(upstream) == before


def test_oversized_head_is_431(gw: Process, upstream: Upstream) -> None:
    before = upstream_targets(upstream)
    big = http_request("GET", "/too-big", headers=[("X-Big", "a" * (40 * 1024))])
    assert_rejected(gw.port, big, 431)
    many = http_request("GET", "/too-many", headers=[(f"X-H{i}", "v" * 60) for i in range(600)])
    assert_rejected(gw.port, many, 431)
    assert upstream_targets(upstream) == before
    assert_still_serving(gw.port, upstream, "after-431")


def test_oversized_incomplete_head_is_431(gw: Process, upstream: Upstream) -> None:
    # 36 KiB of head with no end in sight: refused without waiting for the rest.
    before = upstream_targets(upstream)
    partial = b"GET /endless-head HTTP/1.1\r\nHost: x\r\nX-Big: " + b"c" * (36 * 1024)
    assert_rejected(gw.port, partial, 431)
    assert upstream_targets(upstream) == before


def test_large_but_acceptable_head_passes(gw: Process, upstream: Upstream) -> None:
    with RawClient(gw.port) as raw:
        response = raw.request(
            http_request("GET", "/big-ok", headers=[("X-Big", "b" * (16 * 1024))])
        )
    assert response.status == 200
    assert upstream.requests[-1].header_values("x-big") == ["b" * (16 * 1024)]


def test_content_length_with_transfer_encoding_is_400(gw: Process, upstream: Upstream) -> None:
    before = upstream_targets(upstream)
    smuggle = (
        b"POST /smuggle HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    assert_rejected(gw.port, smuggle, 400)  # and nothing after the rejection
    assert upstream_targets(upstream) == before
    assert_still_serving(gw.port, upstream, "after-smuggle")


def test_conflicting_content_lengths_are_400(gw: Process, upstream: Upstream) -> None:
    before = upstream_targets(upstream)
    two = (
        b"POST /two-lengths HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
        b"Content-Length: 6\r\n\r\nhello!"
    )
    assert_rejected(gw.port, two, 400)
    negative = b"POST /bad-length HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n"
    assert_rejected(gw.port, negative, 400)
    assert upstream_targets(upstream) == before
    assert_still_serving(gw.port, upstream, "after-two-lengths")


def test_unsupported_transfer_coding_is_rejected(gw: Process, upstream: Upstream) -> None:
    before = upstream_targets(upstream)
    response, closed = send_bad(
        gw.port,
        b"POST /gzip-te HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\nabc",
        {400, 501},
    )
    assert response is not None and response.status in (400, 501), response
    assert closed
    assert upstream_targets(upstream) == before


@pytest.mark.parametrize(
    "body",
    [
        b"zz\r\nhello\r\n0\r\n\r\n",  # not hex
        b"5\r\nhelloXX0\r\n\r\n",  # no CRLF after the data
        b"-5\r\nhello\r\n0\r\n\r\n",
    ],
)
def test_invalid_chunked_body_is_refused(gw: Process, upstream: Upstream, body: bytes) -> None:
    response, closed = send_bad(
        gw.port,
        b"POST /bad-chunks HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + body,
        {400},
    )
    # The head may already be on its way upstream, but no response byte has gone out: the
    # client gets a 400, never a silent close nor the upstream's success.
    assert response is not None, "closed without an answer"
    assert response.status == 400, response.raw[:300]
    assert closed
    # The upstream may have seen the head, but never a complete request.
    assert "/bad-chunks" not in upstream_targets(upstream)
    assert_still_serving(gw.port, upstream, "after-bad-chunks")


def test_bad_input_leaves_other_connections_alone(gw: Process, upstream: Upstream) -> None:
    with RawClient(gw.port) as bystander:
        first = bystander.request(http_request("GET", "/bystander/1"))
        assert first.status == 200
        for bad in (b"GARBAGE\r\n\r\n", b"GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n"):
            assert_rejected(gw.port, bad, 400)
        second = bystander.request(http_request("GET", "/bystander/2"))
        assert second.status == 200
    assert upstream_targets(upstream)[-2:] == ["/bystander/1", "/bystander/2"]
