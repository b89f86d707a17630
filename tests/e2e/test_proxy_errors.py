"""Upstream failures as the client sees them (agentgateway's bodies): 503 `upstream call failed: …`,
504 `upstream call timeout` / `request timeout`; a response cut short upstream is cut short
downstream (never framed as complete); a client that goes away releases the upstream."""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from agw_fast.mockllm import pseudo_random_bytes
from tests.e2e.conftest import (
    DEADLINE,
    QUIET,
    BufferedSocket,
    GatewayFactory,
    Process,
    RawClient,
    Upstream,
    UpstreamConnection,
    access_log_lines,
    echo_json,
    gateway_client,
    http_request,
    http_response,
    poll,
    proxy_config,
    unused_port,
)

ANNOUNCED = 100_000
CLOSE_DELIMITED = b"a body delimited by the close"
# HTTP Garden's chunk-extension shape, on a response: a client that ends the chunk line at the
# bare CR reads a 0x41-byte chunk made of what we read as the next chunk line and the canary.
BARE_CR_CHUNKS = b"41;a=b\r\r" + b"X" * 0x41 + b"\r\n0\r\n\r\n"


class Misbehaving:
    """One upstream whose behaviour depends on the request target."""

    def __init__(self) -> None:
        self.released = threading.Event()  # the gateway closed a connection we were holding
        self.end_body = threading.Event()  # the test saw the body: end the connection now
        self.upstream = Upstream(self.handle)

    def handle(self, conn: UpstreamConnection) -> None:
        while (request := conn.read_request()) is not None:
            target = request.target
            if target.startswith("/silent"):
                # Never answers; reports when the gateway gives up on the connection.
                if conn.wait_peer_closed(DEADLINE * 3):
                    self.released.set()
                return
            if target.startswith("/die-mid-body"):
                conn.send(http_response(200, b"", [("Content-Length", str(ANNOUNCED))],
                                        content_length=False))
                conn.send(pseudo_random_bytes(ANNOUNCED // 2))
                return
            if target.startswith("/die-mid-chunked"):
                conn.send(http_response(200, b"", [("Transfer-Encoding", "chunked")],
                                        content_length=False))
                for _ in range(3):
                    conn.send(b"400\r\n" + pseudo_random_bytes(1024) + b"\r\n")
                return
            if target.startswith("/close-delimited/"):
                # No Content-Length, no chunked: the body ends at the close (RFC 9112 §6.3).
                conn.send(http_response(200, CLOSE_DELIMITED, content_length=False))
                self.end_body.wait(DEADLINE)
                if target.endswith("/reset"):
                    # SO_LINGER 0: close() sends an RST instead of a FIN.
                    conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                         struct.pack("ii", 1, 0))
                conn.sock.close()
                return
            if target.startswith("/bare-cr-chunk"):
                conn.send(http_response(200, b"", [("Transfer-Encoding", "chunked")],
                                        content_length=False) + BARE_CR_CHUNKS)
                continue
            if target.startswith("/bare-lf-head"):
                # To a client that ends lines at a bare LF, this is chunked *and* 5 bytes long.
                conn.send(b"HTTP/1.1 200 OK\r\nX-A: a\nTransfer-Encoding: chunked\r\n"
                          b"Content-Length: 5\r\n\r\nhello")
                continue
            if target.startswith("/slow-body"):
                # The head at once, the body over ~1 s: longer than the route's timeouts.
                conn.send(http_response(200, b"", [("Transfer-Encoding", "chunked")],
                                        content_length=False))
                for i in range(10):
                    time.sleep(0.1)
                    conn.send(b"%x\r\n%s\r\n" % (len(b"part%d;" % i), b"part%d;" % i))
                conn.send(b"0\r\n\r\n")
                continue
            if target.startswith("/endless"):
                conn.send(http_response(200, b"", [("Transfer-Encoding", "chunked")],
                                        content_length=False))
                block = b"4000\r\n" + pseudo_random_bytes(0x4000) + b"\r\n"
                try:
                    while not conn.wait_peer_closed(0.005):
                        conn.send(block)
                except OSError:
                    pass  # reset by the gateway
                self.released.set()
                return
            conn.send(http_response(200, echo_json(request)))


@pytest.fixture(scope="module")
def misbehaving() -> Iterator[Misbehaving]:
    behaviour = Misbehaving()
    with behaviour.upstream:
        yield behaviour


@pytest.fixture(scope="module")
def gw(module_gateway: GatewayFactory, misbehaving: Misbehaving) -> Process:
    port = misbehaving.upstream.port
    return module_gateway(QUIET + f"""binds:
- port: 0
  listeners:
  - routes:
    - name: refused
      matches: [{{path: {{pathPrefix: /refused}}}}]
      backends: [{{host: "127.0.0.1:{unused_port()}"}}]
    - name: backend-timeout
      matches: [{{path: {{pathPrefix: /silent/backend}}}}]
      policies:
        timeout: {{backendRequestTimeout: 300ms}}
      backends: [{{host: "127.0.0.1:{port}"}}]
    - name: request-timeout
      matches: [{{path: {{pathPrefix: /silent/request}}}}]
      policies:
        timeout: {{requestTimeout: 300ms}}
      backends: [{{host: "127.0.0.1:{port}"}}]
    - name: backend-http-timeout
      matches: [{{path: {{pathPrefix: /silent/backend-http}}}}]
      backends:
      - host: "127.0.0.1:{port}"
        policies:
          http: {{requestTimeout: 300ms}}
    - name: both-timeouts
      matches: [{{path: {{pathPrefix: /slow-body}}}}]
      policies:
        timeout: {{requestTimeout: 300ms, backendRequestTimeout: 300ms}}
      backends: [{{host: "127.0.0.1:{port}"}}]
    - name: default
      backends: [{{host: "127.0.0.1:{port}"}}]
""")


@pytest.fixture
def client(gw: Process) -> Iterator[httpx.Client]:
    with gateway_client(gw.port) as c:
        yield c


def assert_local_error(response: httpx.Response, status: int, body: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("text/plain")
    assert response.text.startswith(body), response.text


def assert_still_serving(client: httpx.Client) -> None:
    response = client.get("/still/serving")
    assert response.status_code == 200
    assert response.json()["target"] == "/still/serving"


def test_connection_refused_is_503(client: httpx.Client) -> None:
    assert_local_error(client.get("/refused"), 503, "upstream call failed: ")
    assert_local_error(client.post("/refused", content=b"body"), 503, "upstream call failed: ")
    assert_still_serving(client)


def test_connect_timeout_is_504(gateway: GatewayFactory) -> None:
    # A listening socket with a full accept queue: Linux drops further SYNs, so a connect
    # neither succeeds nor fails until the client's own timeout.
    with socket.socket() as full:
        full.bind(("127.0.0.1", 0))
        full.listen(0)
        port = full.getsockname()[1]
        fillers = [socket.create_connection(("127.0.0.1", port), timeout=DEADLINE)]
        try:
            probe = socket.socket()
            probe.settimeout(0.3)
            try:
                probe.connect(("127.0.0.1", port))
                pytest.skip("this kernel completes connects beyond a full accept queue")
            except TimeoutError:
                pass
            finally:
                probe.close()
            gw = gateway(proxy_config(port, "  backend:\n    connectTimeout: 300ms\n"))
            started = time.monotonic()
            response = httpx.get(f"http://127.0.0.1:{gw.port}/", timeout=DEADLINE,
                                 trust_env=False)
            elapsed = time.monotonic() - started
        finally:
            for filler in fillers:
                filler.close()
    assert_local_error(response, 504, "upstream call timeout")
    assert response.text == "upstream call timeout"
    assert 0.25 <= elapsed < DEADLINE / 2, elapsed


@pytest.mark.parametrize(
    ("target", "body"),
    [
        ("/silent/backend", "upstream call timeout"),
        ("/silent/backend-http", "upstream call timeout"),
        ("/silent/request", "request timeout"),
    ],
)
def test_timeouts_are_504(
    client: httpx.Client, misbehaving: Misbehaving, target: str, body: str
) -> None:
    misbehaving.released.clear()
    started = time.monotonic()
    response = client.get(target)
    elapsed = time.monotonic() - started
    assert response.status_code == 504, response.text
    assert response.text == body
    assert response.headers["content-type"].startswith("text/plain")
    assert 0.25 <= elapsed < DEADLINE / 2, elapsed
    # The gateway does not keep the abandoned upstream connection.
    assert misbehaving.released.wait(DEADLINE)
    assert_still_serving(client)


def test_timeouts_do_not_cut_a_streaming_body(client: httpx.Client) -> None:
    # Both timeouts bound the wait for the response head only (agentgateway's `timeout` policy).
    response = client.get("/slow-body")
    assert response.status_code == 200
    assert response.content == b"".join(b"part%d;" % i for i in range(10))


def test_upstream_dying_mid_body_is_not_a_complete_response(
    client: httpx.Client, gw: Process
) -> None:
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        client.get("/die-mid-body")
    with RawClient(gw.port) as raw:
        raw.send(http_request("GET", "/die-mid-body"))
        data = raw.reader.read_until_close()
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), data[:200]
    assert f"content-length: {ANNOUNCED}".encode() in head.lower()
    assert len(body) < ANNOUNCED
    assert body == pseudo_random_bytes(len(body))  # what came is what was sent
    assert_still_serving(client)


def test_upstream_dying_mid_chunked_body_is_not_a_complete_response(
    client: httpx.Client, gw: Process
) -> None:
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        client.get("/die-mid-chunked")
    with RawClient(gw.port) as raw:
        raw.send(http_request("GET", "/die-mid-chunked"))
        data = raw.reader.read_until_close()
    assert data.startswith(b"HTTP/1.1 200"), data[:200]
    assert b"transfer-encoding: chunked" in data.lower()
    assert not data.endswith(b"0\r\n\r\n"), "a truncated body was framed as complete"
    assert_still_serving(client)


def _access_log_line(gw: Process, target: str) -> dict[str, str]:
    found = poll(
        lambda: [line for line in access_log_lines(gw.output()) if line["http.path"] == target],
        lambda lines: len(lines) >= 1,
        what=f"the access log line of {target}",
    )
    assert len(found) == 1, found
    line: dict[str, str] = found[0]
    return line


@pytest.mark.parametrize("ending", ["clean", "reset"])
def test_a_reset_does_not_end_a_close_delimited_body(
    gw: Process, misbehaving: Misbehaving, ending: str
) -> None:
    """A close-delimited body ends at the upstream's close (RFC 9112 §6.3); a reset is no end:
    the body may be cut short (RFC 9112 §8). The client sees a close either way, but a reset
    is recorded as the upstream failure it is."""
    target = f"/close-delimited/{ending}"
    misbehaving.end_body.clear()
    with RawClient(gw.port) as raw:
        raw.send(http_request("GET", target))
        head = raw.reader.read_until(b"\r\n\r\n")
        assert raw.reader.read_exact(len(CLOSE_DELIMITED)) == CLOSE_DELIMITED
        misbehaving.end_body.set()  # the gateway relayed it all: now end the upstream side
        assert raw.reader.read_until_close() == b""
    assert head.startswith(b"HTTP/1.1 200 ")
    assert b"connection: close" in head.lower()
    line = _access_log_line(gw, target)
    assert line["http.status"] == "200"
    if ending == "clean":
        assert "error" not in line, line
    else:
        assert line["error"].startswith("upstream call failed: connection closed: "), line


def test_a_chunk_line_with_a_bare_cr_is_not_relayed(gw: Process) -> None:
    """HTTP Garden's chunk-extension desync, upstream side: relayed as it came, the response
    would be framed one way by us and another by a client that ends lines at a bare CR; the
    bytes after the bad line never reach the client and its connection is closed."""
    with RawClient(gw.port) as raw:
        raw.send(http_request("GET", "/bare-cr-chunk"))
        data = raw.reader.read_until_close()
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 "), data[:200]
    assert b"transfer-encoding: chunked" in head.lower()
    # Nothing past the bad line's LF (a read may have ended inside the line, and what came
    # before its LF could not be judged yet).
    assert BARE_CR_CHUNKS.startswith(body) and b"\n" not in body, body[:200]
    line = _access_log_line(gw, "/bare-cr-chunk")
    assert line["error"].startswith("upstream call failed: invalid response: bad chunk line"), line


def test_a_response_head_with_a_bare_lf_is_503(client: httpx.Client) -> None:
    # The head is relayed as it came: a client that ends lines at the bare LF would read a
    # Transfer-Encoding we never saw. Nothing was relayed yet, so the client gets an answer.
    assert_local_error(
        client.get("/bare-lf-head"),
        503,
        "upstream call failed: invalid response: bare CR, LF or NUL in the response head",
    )
    assert_still_serving(client)


def test_client_vanishing_mid_download_releases_the_upstream(
    client: httpx.Client, gw: Process, misbehaving: Misbehaving
) -> None:
    misbehaving.released.clear()
    sock = socket.create_connection(("127.0.0.1", gw.port), timeout=DEADLINE)
    try:
        sock.sendall(http_request("GET", "/endless"))
        reader = BufferedSocket(sock)
        reader.read_until(b"\r\n\r\n")
        reader.read_exact(256 * 1024)  # the download is under way
    finally:
        sock.close()  # gone mid-body, with unread data: the kernel resets the connection
    assert misbehaving.released.wait(DEADLINE), "the upstream connection was never closed"
    assert_still_serving(client)


def test_head_gets_the_head_of_local_answers_and_the_connection_stays_in_step(
    gateway: GatewayFactory,
) -> None:
    """A HEAD answered by the gateway itself (direct response, redirect, no route, failed
    upstream) carries the GET's Content-Length but no body (RFC 9110 §9.3.2): a body would be
    read as the start of the next response on this keep-alive connection."""
    dead = unused_port()
    gw = gateway(QUIET + f"""binds:
- port: 0
  listeners:
  - routes:
    - matches: [{{path: {{exact: /direct}}}}]
      policies: {{directResponse: {{status: 200, body: "hello"}}}}
    - matches: [{{path: {{exact: /moved}}}}]
      policies: {{requestRedirect: {{path: {{full: /elsewhere}}}}}}
    - matches: [{{path: {{exact: /dead}}}}]
      backends: [{{host: "127.0.0.1:{dead}"}}]
""")
    with RawClient(gw.port) as client:
        for target, status, length in [
            ("/direct", 200, "5"),
            ("/moved", 302, "0"),
            ("/nowhere", 404, str(len(b"route not found"))),
            ("/dead", 503, None),
        ]:
            head = client.request(http_request("HEAD", target), head_request=True)
            assert head.status == status, target
            assert head.body == b"", target
            if length is not None:
                assert head.header("content-length") == length, target
            # The same connection still frames the next response correctly.
            after = client.request(http_request("GET", "/direct"))
            assert (after.status, after.body) == (200, b"hello"), target
