"""Request smuggling and HTTP/1.1 edge cases (RFC 9112), as a matrix over a real gateway.

Every row is one request sent in one write with a canary `GET /smuggled` pipelined behind it.
A rejected row must be answered with its status and the connection closed, with NOTHING
reaching the recording upstream (no request, not even a partial one) and the canary never
forwarded. An accepted row must reach the upstream as exactly one request with the expected
body, carrying no field name with `_`, and the canary must follow as a request of its own
(so both sides agreed where the body ended).

Expected statuses follow agentgateway (hyper) where it has a clear answer, else nginx; each
row's comment says which and why.
"""

from __future__ import annotations

import select
import socket
import time

import httpx
import pytest

from tests.e2e.conftest import (
    DEADLINE,
    BufferedSocket,
    GatewayFactory,
    Process,
    RawClient,
    RawMessage,
    Upstream,
    access_log_lines,
    ai_route,
    http_request,
    llm_config,
    metric_total,
    parse_metrics,
    poll,
    proxy_config,
)

CANARY = b"GET /smuggled HTTP/1.1\r\nHost: canary\r\n\r\n"
REQUESTS = "agentgateway_requests_total"


def _head(first_line: bytes, *fields: bytes) -> bytes:
    return first_line + b"\r\n" + b"".join(f + b"\r\n" for f in fields) + b"\r\n"


def _chunked(body: bytes, target: bytes = b"/chunked") -> bytes:
    head = _head(b"POST " + target + b" HTTP/1.1", b"Host: x", b"Transfer-Encoding: chunked")
    return head + body


# (request, expected status). Rows with 200 are accepted; their body is checked separately.
REJECTED = [
    # -- both framings, or ambiguous Content-Length ----------------------------------------
    # RFC 9112 §6.1: a request with both is a smuggling attempt; nginx and we answer 400.
    pytest.param(
        _head(b"POST /cl-te HTTP/1.1", b"Host: x", b"Content-Length: 5",
              b"Transfer-Encoding: chunked") + b"0\r\n\r\n", 400, id="cl-then-te"),
    pytest.param(
        _head(b"POST /te-cl HTTP/1.1", b"Host: x", b"Transfer-Encoding: chunked",
              b"Content-Length: 5") + b"0\r\n\r\n", 400, id="te-then-cl"),
    # RFC 9112 §6.3 item 5: differing lengths are unrecoverable (hyper, nginx: 400).
    pytest.param(
        _head(b"POST /cl-two HTTP/1.1", b"Host: x", b"Content-Length: 5",
              b"Content-Length: 6") + b"hello!", 400, id="cl-duplicate-different"),
    pytest.param(
        _head(b"POST /cl-list HTTP/1.1", b"Host: x", b"Content-Length: 5, 6") + b"hello!",
        400, id="cl-list-different"),
    # RFC 9110 §8.6: Content-Length is 1*DIGIT; hyper and nginx refuse anything else.
    pytest.param(_head(b"POST /cl HTTP/1.1", b"Host: x", b"Content-Length: +5") + b"hello",
                 400, id="cl-plus-sign"),
    pytest.param(_head(b"POST /cl HTTP/1.1", b"Host: x", b"Content-Length: -5") + b"hello",
                 400, id="cl-minus-sign"),
    pytest.param(_head(b"POST /cl HTTP/1.1", b"Host: x", b"Content-Length: 1_0") + b"x" * 10,
                 400, id="cl-underscore"),
    pytest.param(_head(b"POST /cl HTTP/1.1", b"Host: x", b"Content-Length: 1 0") + b"x" * 10,
                 400, id="cl-space-inside"),
    pytest.param(_head(b"POST /cl HTTP/1.1", b"Host: x", b"Content-Length: 0x5") + b"hello",
                 400, id="cl-hex"),
    # 2**64 + 5: an upstream parsing into 64 bits reads 5 and takes the canary as a body
    # (hyper refuses lengths that overflow; we refuse what does not fit in 63 bits).
    pytest.param(
        _head(b"POST /cl HTTP/1.1", b"Host: x", b"Content-Length: 18446744073709551621")
        + b"hello", 400, id="cl-over-2**64"),
    pytest.param(
        _head(b"POST /cl HTTP/1.1", b"Host: x", b"Content-Length: 9223372036854775808")
        + b"hello", 400, id="cl-2**63"),
    # -- Transfer-Encoding -----------------------------------------------------------------
    # RFC 9112 §6.1: HTTP/1.0 has no chunked framing; hyper answers 400.
    pytest.param(
        _head(b"POST /te10 HTTP/1.0", b"Host: x", b"Transfer-Encoding: chunked")
        + b"5\r\nhello\r\n0\r\n\r\n", 400, id="http10-with-te"),
    # A coding other than a lone `chunked` cannot be framed (RFC 9112 §6.3 item 4); nginx
    # answers 501 Not Implemented, as h11 does (RFC 9112 §6.1 "SHOULD respond with 501").
    pytest.param(_head(b"POST /te HTTP/1.1", b"Host: x", b"Transfer-Encoding: gzip")
                 + b"abc", 501, id="te-gzip"),
    pytest.param(_head(b"POST /te HTTP/1.1", b"Host: x", b"Transfer-Encoding: chunked, chunked")
                 + b"0\r\n\r\n", 501, id="te-chunked-twice"),
    pytest.param(_head(b"POST /te HTTP/1.1", b"Host: x", b"Transfer-Encoding: chunked",
                       b"Transfer-Encoding: chunked") + b"0\r\n\r\n", 501, id="te-repeated"),
    # RFC 9112 §5.1: no whitespace between a field name and the colon; must be 400.
    pytest.param(_head(b"POST /te HTTP/1.1", b"Host: x", b"Transfer-Encoding : chunked")
                 + b"0\r\n\r\n", 400, id="te-space-before-colon"),
    # -- obsolete line folding, control characters ------------------------------------------
    # RFC 9112 §5.2 allows 400 or unfolding; hyper answers 400, and unfolding would make the
    # TE field below chunked for us and empty for a front proxy that does not fold.
    pytest.param(_head(b"POST /fold HTTP/1.1", b"Host: x", b"Transfer-Encoding:", b" chunked")
                 + b"0\r\n\r\n", 400, id="obs-fold-te"),
    pytest.param(_head(b"GET /fold HTTP/1.1", b"Host: x", b"X-Folded: a", b"\tb"), 400,
                 id="obs-fold-field"),
    pytest.param(_head(b"GET /fold HTTP/1.1", b" Host: x"), 400, id="fold-first-line"),
    # NUL and bare CR are never field content (RFC 9110 §5.5); hyper and nginx: 400.
    pytest.param(_head(b"GET /nul HTTP/1.1", b"Host: x", b"X-Nul: a\x00b"), 400,
                 id="nul-in-value"),
    pytest.param(_head(b"GET /nul HTTP/1.1", b"Host: x", b"X-N\x00l: a"), 400, id="nul-in-name"),
    pytest.param(_head(b"GET /cr HTTP/1.1", b"Host: x", b"X-Cr: a\rb"), 400, id="bare-cr-in-value"),
    # -- chunk lines (RFC 9112 §7.1) -------------------------------------------------------
    # Sizes are 1*HEXDIG; one that overflows 64 bits is an error in hyper. These break inside
    # the body, after routing: nothing has gone upstream yet (the whole request came in one
    # read), and the client gets 400.
    pytest.param(_chunked(b"zz\r\nhello\r\n0\r\n\r\n"), 400, id="chunk-size-not-hex"),
    pytest.param(_chunked(b"-5\r\nhello\r\n0\r\n\r\n"), 400, id="chunk-size-negative"),
    pytest.param(_chunked(b"0x5\r\nhello\r\n0\r\n\r\n"), 400, id="chunk-size-0x"),
    pytest.param(_chunked(b"5 5\r\nhello\r\n0\r\n\r\n"), 400, id="chunk-size-space-inside"),
    pytest.param(_chunked(b"10000000000000005\r\nhello\r\n0\r\n\r\n"), 400,
                 id="chunk-size-over-2**64"),
    # HTTP Garden: a front proxy that ends the line at the bare CR sees a 0x41-byte chunk
    # made of what we would read as the next chunk line and the canary; nginx answers 400.
    pytest.param(_chunked(b"41;a=b\r\r" + b"X" * 0x41 + b"\r\n0\r\n\r\n"), 400,
                 id="chunk-ext-bare-cr"),
    pytest.param(_chunked(b"5;a=b\nc\r\nhello\r\n0\r\n\r\n"), 400, id="chunk-ext-bare-lf"),
    pytest.param(_chunked(b"5;a=\x01\r\nhello\r\n0\r\n\r\n"), 400, id="chunk-ext-control"),
    pytest.param(_chunked(b"5;a=b c\r\nhello\r\n0\r\n\r\n"), 400, id="chunk-ext-space-in-value"),
    pytest.param(_chunked(b"5;\r\nhello\r\n0\r\n\r\n"), 400, id="chunk-ext-no-name"),
    pytest.param(_chunked(b'5;a="b\r\nhello\r\n0\r\n\r\n'), 400, id="chunk-ext-open-quote"),
    # A chunk line ends with CRLF (RFC 9112 §7.1); h11 and hyper do not take a bare LF there.
    pytest.param(_chunked(b"5\nhello\r\n0\r\n\r\n"), 400, id="chunk-line-bare-lf"),
    pytest.param(_chunked(b"5\r\nhelloXX0\r\n\r\n"), 400, id="chunk-data-without-crlf"),
    # -- versions --------------------------------------------------------------------------
    # Only HTTP/1.0 and 1.1 are served (RFC 9110 §15.6.6: 505); hyper answers 400 instead.
    pytest.param(_head(b"GET /v HTTP/2.0", b"Host: x"), 505, id="http-2.0"),
    pytest.param(_head(b"GET /v HTTP/9.9", b"Host: x"), 505, id="http-9.9"),
    pytest.param(_head(b"GET /v HTTP/1.2", b"Host: x"), 505, id="http-1.2"),
    pytest.param(_head(b"GET /v HTTP/0.9", b"Host: x"), 505, id="http-0.9"),
    # An HTTP/2 prior-knowledge preface: agentgateway would speak HTTP/2; we do not.
    pytest.param(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505, id="h2-preface"),
    # Not an HTTP-version at all (RFC 9112 §2.3: case-sensitive, one digit each): 400.
    pytest.param(_head(b"GET /v HTTP/1.10", b"Host: x"), 400, id="http-1.10"),
    pytest.param(_head(b"GET /v http/1.1", b"Host: x"), 400, id="http-lowercase"),
]

ACCEPTED = [
    # hyper takes repeated equal lengths (RFC 9110 §8.6 allows it); one is forwarded.
    pytest.param(_head(b"POST /cl-same HTTP/1.1", b"Host: x", b"Content-Length: 5",
                       b"Content-Length: 5") + b"hello", b"hello", id="cl-duplicate-same"),
    pytest.param(_head(b"POST /cl-list-same HTTP/1.1", b"Host: x", b"Content-Length: 5, 5")
                 + b"hello", b"hello", id="cl-list-same"),
    # RFC 9112 §2.2: a recipient MAY take a bare LF as the end of a head line (hyper and
    # nginx do); we forward the request re-serialised with CRLF.
    pytest.param(b"POST /bare-lf HTTP/1.1\nHost: x\nContent-Length: 5\n\nhello", b"hello",
                 id="bare-lf-head"),
    # RFC 9112 §7.1.1: token or quoted-string extensions, with BWS, are fine (and dropped).
    pytest.param(_chunked(b'5;a=b ; c="d \\"e\\"";f\r\nhello\r\n0;g=h\r\n\r\n'), b"hello",
                 id="chunk-ext-valid"),
    pytest.param(_chunked(b"0005\r\nhello\r\n0\r\n\r\n"), b"hello", id="chunk-size-leading-zeros"),
    # Underscore look-alikes: a CGI/WSGI backend reads these as the real framing fields. They
    # are dropped (nginx's `underscores_in_headers off`) and the body is framed as we read it.
    pytest.param(_head(b"POST /te-underscore HTTP/1.1", b"Host: x", b"Transfer_Encoding: chunked",
                       b"Content-Length: 5") + b"hello", b"hello", id="underscore-te"),
    pytest.param(_head(b"POST /cl-underscore HTTP/1.1", b"Host: x", b"Content_Length: 45",
                       b"Content-Length: 5") + b"hello", b"hello", id="underscore-cl"),
    pytest.param(_chunked(b"5\r\nhello\r\n0\r\n\r\n").replace(b"Host: x", b"Host: x\r\n"
                 b"Content_Length: 5\r\nX_Forwarded_For: 10.0.0.1"), b"hello",
                 id="underscore-with-chunked"),
]


def _snapshot(upstream: Upstream) -> tuple[int, int]:
    with upstream.lock:
        return len(upstream.requests), len(upstream.errors)


def _since(upstream: Upstream, mark: tuple[int, int]) -> tuple[list[RawMessage], list[str]]:
    with upstream.lock:
        return list(upstream.requests[mark[0]:]), list(upstream.errors[mark[1]:])


def _serve_check(port: int, tag: str) -> None:
    """A fresh connection is still served: proof the gateway is healthy, and a marker that
    everything the previous row sent upstream has been seen by now."""
    with RawClient(port) as raw:
        assert raw.request(http_request("GET", f"/check/{tag}")).status == 200


def _exchange(port: int, data: bytes) -> tuple[BufferedSocket, socket.socket]:
    sock = socket.create_connection(("127.0.0.1", port), timeout=DEADLINE)
    try:
        sock.sendall(data)
    except (BrokenPipeError, ConnectionResetError):
        pass  # refused before everything was read
    return BufferedSocket(sock), sock


@pytest.mark.parametrize(("data", "status"), REJECTED)
def test_rejected(
    gw: Process, upstream: Upstream, request: pytest.FixtureRequest, data: bytes, status: int
) -> None:
    mark = _snapshot(upstream)
    reader, sock = _exchange(gw.port, data + CANARY)
    with sock:
        response = reader.read_message(request=False)
        assert response is not None, "closed without an answer"
        assert response.status == status, response.raw[:300]
        assert response.header("connection") == "close"
        assert reader.at_eof(), "the connection stayed open after the rejection"
    tag = request.node.callspec.id
    _serve_check(gw.port, tag)
    requests, errors = _since(upstream, mark)
    assert [r.target for r in requests] == [f"/check/{tag}"], "something reached the upstream"
    assert errors == [], "a partial request reached the upstream"


@pytest.mark.parametrize(("data", "body"), ACCEPTED)
def test_accepted(gw: Process, upstream: Upstream, data: bytes, body: bytes) -> None:
    mark = _snapshot(upstream)
    with RawClient(gw.port) as raw:
        raw.send(data + CANARY)
        assert raw.response().status == 200
        assert raw.response().status == 200  # the canary: its own request, framed apart
    requests, errors = _since(upstream, mark)
    assert errors == []
    assert [r.target for r in requests][1:] == ["/smuggled"]
    forwarded = requests[0]
    assert forwarded.body == body
    names = [name for name, _ in forwarded.headers]
    assert not [n for n in names if b"_" in n], names
    assert names.count(b"content-length") + names.count(b"transfer-encoding") == 1, names


def test_chunked_request_split_at_every_offset(gw: Process, upstream: Upstream) -> None:
    # Every boundary inside the head, a size line, an extension, the data, the CRLFs and the
    # trailer; the two parts are sent apart (the pause only makes separate reads likely,
    # the result must be the same either way).
    body = b"hello, world: the split test"
    data = _chunked(
        b'7;ext=1;q="x"\r\n' + body[:7] + b"\r\n"
        + b"%x\r\n" % (len(body) - 7) + body[7:] + b"\r\n"
        + b"0\r\nX-Trailer: t\r\n\r\n",
        target=b"/split",
    )
    mark = _snapshot(upstream)
    with RawClient(gw.port) as raw:
        for offset in range(1, len(data)):
            raw.send(data[:offset])
            time.sleep(0.002)
            raw.send(data[offset:])
            response = raw.response()
            assert response.status == 200, (offset, response.raw[:300])
    requests, errors = _since(upstream, mark)
    assert errors == []
    assert len(requests) == len(data) - 1
    for offset, forwarded in enumerate(requests, start=1):
        assert (forwarded.target, forwarded.body) == ("/split", body), offset


# -- a broken chunked body is answered, recorded and logged as what it is ---------------------


def _stats_config(body: str) -> str:
    return body.replace('statsAddr: "off"', 'statsAddr: "127.0.0.1:0"')


def _scrape(port: int) -> list:
    response = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=DEADLINE)
    assert response.status_code == 200
    return parse_metrics(response.text)


def _statuses(samples: list) -> dict[str, float]:
    totals: dict[str, float] = {}
    for sample in samples:
        if sample.name == REQUESTS:
            status = sample.labels.get("status", "")
            totals[status] = totals.get(status, 0) + sample.value
    return totals


BAD_CHUNK = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"


def _send_in_two_parts(port: int, head: bytes, rest: bytes) -> tuple[RawMessage, bool]:
    """The head, then (once the gateway has surely started the exchange) the broken body."""
    with RawClient(port) as raw:
        raw.send(head + b"5\r\nhello\r\n")
        time.sleep(0.2)  # not needed for the result: only makes the two reads likely
        raw.send(rest)
        response = raw.response()
        return response, raw.reader.at_eof()


def test_broken_chunk_on_llm_route_is_503(gateway: GatewayFactory, upstream: Upstream) -> None:
    # agentgateway reads an LLM body before anything goes upstream; a body that cannot be
    # read is its `failed to process LLM request` 503.
    config = llm_config(
        ai_route(upstream.port, host="127.0.0.1", auth_key=None, authority=None), stats=True
    )
    gw = gateway(config, expect_stats=True)
    mark = _snapshot(upstream)
    response, closed = _send_in_two_parts(gw.port, BAD_CHUNK, b"zz\r\nhello\r\n0\r\n\r\n")
    assert response.status == 503, response.raw[:300]
    assert response.body.startswith(b"failed to process LLM request: "), response.body
    assert response.header("connection") == "close"
    assert closed
    assert _since(upstream, mark) == ([], [])
    samples = poll(lambda: _scrape(gw.extra_ports["stats"]),
                   lambda s: metric_total(s, REQUESTS) >= 1, what="the request in /metrics")
    assert _statuses(samples) == {"503": 1}
    lines = poll(lambda: access_log_lines(gw.output()), lambda found: len(found) >= 1,
                 what="the access log line")
    assert lines[-1]["http.status"] == "503"
    assert str(lines[-1]["error"]).startswith("failed to process LLM request: ")
    assert "rejected request from" in gw.output() and ": 503 " in gw.output()


def test_broken_chunk_on_plain_route_is_400(gateway: GatewayFactory, upstream: Upstream) -> None:
    gw = gateway(_stats_config(proxy_config(upstream.port)), expect_stats=True)
    mark = _snapshot(upstream)
    response, closed = _send_in_two_parts(gw.port, BAD_CHUNK, b"zz\r\nhello\r\n0\r\n\r\n")
    # The head (and first chunk) may be upstream already; nothing came back yet, so the
    # client still gets an answer (agentgateway would say 503 `upstream call failed`).
    assert response.status == 400, response.raw[:300]
    assert response.header("connection") == "close"
    assert closed
    requests, _ = _since(upstream, mark)
    assert requests == [], "the upstream saw a complete request"
    samples = poll(lambda: _scrape(gw.extra_ports["stats"]),
                   lambda s: metric_total(s, REQUESTS) >= 1, what="the request in /metrics")
    assert _statuses(samples) == {"400": 1}
    lines = poll(lambda: access_log_lines(gw.output()), lambda found: len(found) >= 1,
                 what="the access log line")
    assert lines[-1]["http.status"] == "400"
    assert "illegal chunk header" in str(lines[-1]["error"])


# -- slow heads (slowloris) -------------------------------------------------------------------

HEAD_TIMEOUT = 3.0


@pytest.fixture(scope="module")
def slow_gw(module_gateway: GatewayFactory, upstream: Upstream) -> Process:
    config = proxy_config(upstream.port).replace(
        "binds:", f"frontendPolicies:\n  http:\n    http1IdleTimeout: {HEAD_TIMEOUT:g}s\nbinds:"
    )
    return module_gateway(config)


def test_head_trickled_byte_by_byte_is_cut_at_the_idle_timeout(
    slow_gw: Process, upstream: Upstream
) -> None:
    # Each byte comes well within the idle timeout, but the head never ends: the connection
    # is closed once the head has taken longer than http1IdleTimeout from its first byte.
    mark = _snapshot(upstream)
    head = b"GET /slowloris HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 10_000
    with socket.create_connection(("127.0.0.1", slow_gw.port), timeout=DEADLINE) as sock:
        started = time.monotonic()
        closed_after = None
        for byte in head:
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                closed_after = time.monotonic() - started
                break
            readable, _, _ = select.select([sock], [], [], 0.1)
            if readable:
                try:
                    assert sock.recv(1024) == b"", "the gateway answered a partial head"
                except ConnectionResetError:
                    pass
                closed_after = time.monotonic() - started
                break
            if time.monotonic() - started > HEAD_TIMEOUT + DEADLINE:
                break
    assert closed_after is not None, "the slow head was never cut"
    assert closed_after >= HEAD_TIMEOUT - 0.1
    assert _since(upstream, mark) == ([], [])


def test_head_with_pauses_within_the_timeout_is_served(
    slow_gw: Process, upstream: Upstream
) -> None:
    with RawClient(slow_gw.port) as raw:
        raw.send(b"GET /slow-but-ok HTTP/1.1\r\n")
        time.sleep(0.3)
        raw.send(b"Host: x\r\n")
        time.sleep(0.3)
        response = raw.request(b"\r\n")
        assert response.status == 200
        # A keep-alive connection's next head gets its own time, from its first byte.
        assert raw.request(http_request("GET", "/slow-but-ok/2")).status == 200
