"""Keep-alive on both sides: pooled upstream connections are reused, pipelined requests are
answered in order, and an upstream that closes its idle connections never costs the client an
error for a request that can safely be sent again."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable

import httpx

from agw_fast.mockllm import pseudo_random_bytes
from tests.e2e.conftest import (
    DEADLINE,
    BufferedSocket,
    GatewayFactory,
    Process,
    RawClient,
    Upstream,
    UpstreamConnection,
    echo_json,
    http_request,
    http_response,
    proxy_config,
)


def get_all(port: int, targets: list[str], *, fresh_connections: bool = False) -> list[str]:
    """GET each target in turn; returns the targets the upstream reported."""
    seen = []
    with httpx.Client(timeout=DEADLINE, trust_env=False) as client:
        for target in targets:
            headers = {"connection": "close"} if fresh_connections else {}
            response = client.get(f"http://127.0.0.1:{port}{target}", headers=headers)
            assert response.status_code == 200, (target, response.text)
            seen.append(response.json()["target"])
    return seen


def test_upstream_connection_is_reused(gateway: GatewayFactory) -> None:
    with Upstream() as upstream:
        gw = gateway(proxy_config(upstream.port))
        targets = [f"/same-client/{i}" for i in range(20)]
        assert get_all(gw.port, targets) == targets
        assert upstream.accepted == 1
        # Requests from other client connections share the pooled connection too.
        targets = [f"/other-clients/{i}" for i in range(10)]
        assert get_all(gw.port, targets, fresh_connections=True) == targets
        assert upstream.accepted == 1
        # A POST with a body keeps it in sync as well.
        with httpx.Client(timeout=DEADLINE, trust_env=False) as client:
            for i in range(5):
                response = client.post(f"http://127.0.0.1:{gw.port}/post/{i}", content=b"x" * i)
                assert response.json()["body_length"] == i
        assert upstream.accepted == 1


def test_pipelined_requests_are_answered_in_order(
    gateway: GatewayFactory, plain_upstream: Process
) -> None:
    gw = gateway(proxy_config(plain_upstream.port))
    requests = [
        http_request("GET", "/echo/pipelined/1"),
        http_request("POST", "/echo/pipelined/2", body=b"second body"),
        http_request("HEAD", "/bytes/100"),
        http_request("GET", "/bytes/5000"),
        http_request("GET", "/echo/pipelined/5"),
    ]
    with RawClient(gw.port) as raw:
        raw.send(b"".join(requests))  # one write: the gateway sees them all at once
        first = raw.response()
        assert json.loads(first.body)["target"] == "/echo/pipelined/1"
        second = raw.response()
        assert json.loads(second.body)["target"] == "/echo/pipelined/2"
        assert json.loads(second.body)["body_length"] == len(b"second body")
        third = raw.response(head_request=True)
        assert third.status == 200 and third.header("content-length") == "100"
        fourth = raw.response()
        assert len(fourth.body) == 5000
        fifth = raw.response()
        assert json.loads(fifth.body)["target"] == "/echo/pipelined/5"


def run_against(handler: Callable[[UpstreamConnection], None], gateway: GatewayFactory,
                targets: list[str]) -> Upstream:
    with Upstream(handler) as upstream:
        gw = gateway(proxy_config(upstream.port))
        assert get_all(gw.port, targets) == targets
        return upstream


def test_upstream_connection_close_is_honoured(gateway: GatewayFactory) -> None:
    def one_per_connection(conn: UpstreamConnection) -> None:
        request = conn.read_request()
        if request is not None:
            conn.send(http_response(200, echo_json(request), [("Connection", "close")]))

    targets = [f"/close/{i}" for i in range(5)]
    upstream = run_against(one_per_connection, gateway, targets)
    assert upstream.accepted == 5


def test_upstream_closing_a_reused_connection_is_retried(gateway: GatewayFactory) -> None:
    """The worst case of a server's idle timeout: it closes just as the gateway reuses the
    connection (reads the request, answers nothing). A body-less GET is safe to resend."""

    def serve_one_then_drop(conn: UpstreamConnection) -> None:
        request = conn.read_request()
        if request is None:
            return
        conn.send(http_response(200, echo_json(request)))
        conn.read_request()  # the reuse: read it, then close without a word

    targets = [f"/reuse/{i}" for i in range(6)]
    upstream = run_against(serve_one_then_drop, gateway, targets)
    # Every request after the first met a dropped connection and was sent again on a new one.
    assert upstream.accepted == 6
    assert len(upstream.requests) == 11


def test_upstream_closing_idle_connections_silently(gateway: GatewayFactory) -> None:
    idle_closed = threading.Event()

    def close_when_idle(conn: UpstreamConnection) -> None:
        request = conn.read_request()
        if request is None:
            return
        conn.send(http_response(200, echo_json(request)))  # keep-alive, says nothing of closing
        conn.sock.close()
        idle_closed.set()

    with Upstream(close_when_idle) as upstream:
        gw = gateway(proxy_config(upstream.port))
        for i in range(4):
            idle_closed.clear()
            assert get_all(gw.port, [f"/idle/{i}"]) == [f"/idle/{i}"]
            assert idle_closed.wait(DEADLINE)
        assert upstream.accepted == 4


def test_pool_max_size_one_keeps_a_connection(gateway: GatewayFactory) -> None:
    """`poolMaxSize` bounds idle connections; with room for one, sequential requests share it."""
    with Upstream() as upstream:
        gw = gateway(proxy_config(upstream.port, "  backend:\n    poolMaxSize: 1\n"))
        targets = [f"/bounded/{i}" for i in range(10)]
        assert get_all(gw.port, targets) == targets
        assert upstream.accepted == 1


def test_response_ending_while_the_client_is_slow_leaves_the_pool_usable(
    gateway: GatewayFactory,
) -> None:
    """A response whose last bytes fill the client's buffers makes the gateway stop reading
    the upstream (backpressure) in the very moment the response ends. The pooled connection
    must read again for the next request.

    To get there without timing luck, each response goes to a new client connection with a
    tiny window (receive buffer 4 KiB, MSS 536: the kernel then holds only ~50 KB for it),
    and the client reads nothing until the gateway has read the whole response upstream. A
    body a little over that plus the 64 KiB write-buffer mark ends in the read that fills it.
    """
    sent = threading.Event()

    def sized(conn: UpstreamConnection) -> None:
        while (request := conn.read_request()) is not None:
            size = int(request.target.rsplit("/", 1)[1])
            conn.send(http_response(200, pseudo_random_bytes(size)))
            sent.set()

    def gateway_read_everything(upstream_port: int) -> bool:
        with open("/proc/net/tcp") as table:
            next(table)
            for line in table:
                fields = line.split()
                remote_port = int(fields[2].split(":")[1], 16)
                rx_queue = int(fields[4].split(":")[1], 16)
                if remote_port == upstream_port and fields[3] == "01" and rx_queue:
                    return False
        return True

    with Upstream(sized) as upstream:
        gw = gateway(proxy_config(upstream.port))
        for size in (100_000, 116_000, 120_000, 124_000, 127_000, 1000):
            sent.clear()
            with socket.socket() as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 536)
                sock.settimeout(DEADLINE)
                sock.connect(("127.0.0.1", gw.port))
                sock.sendall(http_request("GET", f"/sized/{size}"))
                assert sent.wait(DEADLINE), f"the request for {size} bytes never arrived"
                # Best effort: give the gateway up to 0.2 s to read the response upstream.
                # (Too little only makes the scenario less likely, never the test wrong.)
                deadline = time.monotonic() + 0.2
                while not gateway_read_everything(upstream.port):
                    if time.monotonic() > deadline:
                        break
                    time.sleep(0.002)
                try:
                    response = BufferedSocket(sock).read_message(request=False)
                except TimeoutError:
                    raise AssertionError(f"no response to /sized/{size}: the pooled upstream "
                                         "connection is not being read") from None
            assert response is not None and response.status == 200
            assert response.body == pseudo_random_bytes(size)
        assert upstream.accepted == 1
