"""TCP_NODELAY on both of the gateway's sides. Nagle's algorithm plus the peer's delayed ACK
stalls the second small write of a message by ~40 ms (Nagle meeting delayed ACKs).

Two views: the socket option itself, read from the worker's own sockets (duplicated into this
process with pidfd_getfd(2), Linux 5.6+); and the latency a client sees when messages leave in
two writes, which Nagle would hold back.
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket
import statistics
import time
from collections.abc import Iterator

import pytest

from tests.e2e.conftest import (
    GatewayFactory,
    Process,
    RawClient,
    Upstream,
    UpstreamConnection,
    child_pids,
    echo_json,
    http_request,
    http_response,
    proxy_config,
    wait_until,
)

SYS_PIDFD_GETFD = 438  # the same number on every Linux architecture
ROUNDS = 40
# Nagle + delayed ACK holds a second write back >= 40 ms; the split costs nothing otherwise.
# Compared with the same exchange sent whole, interleaved, so machine load cancels out.
EXTRA_LIMIT = 0.020
PAUSE = 0.002


def respond(conn: UpstreamConnection) -> None:
    """Answers after PAUSE: `/split...` as two writes (head, PAUSE, body), anything else as
    one. NODELAY here, so the gateway receives the two writes separately."""
    conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    while (request := conn.read_request()) is not None:
        body = echo_json(request)
        if request.target.startswith("/split"):
            conn.send(http_response(200, b"", [("Content-Length", str(len(body)))],
                                    content_length=False))
            time.sleep(PAUSE)
            conn.send(body)
        else:
            time.sleep(PAUSE)
            conn.send(http_response(200, body))


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    with Upstream(respond) as server:
        yield server


@pytest.fixture(scope="module")
def gw(module_gateway: GatewayFactory, upstream: Upstream) -> Process:
    return module_gateway(proxy_config(upstream.port))


def worker_tcp_sockets(pid: int) -> Iterator[socket.socket]:
    """Duplicates of the TCP sockets process `pid` holds (closed after each iteration)."""
    libc = ctypes.CDLL(None, use_errno=True)
    pidfd = os.pidfd_open(pid)
    try:
        for name in os.listdir(f"/proc/{pid}/fd"):
            try:
                if not os.readlink(f"/proc/{pid}/fd/{name}").startswith("socket:"):
                    continue
            except OSError:
                continue
            fd = libc.syscall(SYS_PIDFD_GETFD, pidfd, int(name), 0)
            if fd < 0:
                code = ctypes.get_errno()
                if code in (errno.ENOSYS, errno.EPERM, errno.EACCES):
                    pytest.skip(f"pidfd_getfd unavailable: {os.strerror(code)}")
                continue  # the fd was closed meanwhile
            sock = socket.socket(fileno=fd)
            try:
                if sock.type == socket.SOCK_STREAM and sock.family == socket.AF_INET:
                    yield sock
            finally:
                sock.close()  # our duplicate only; the worker's socket stays open
    finally:
        os.close(pidfd)


def nodelay_of(pid: int, local_port: int, peer: tuple[str, int]) -> int:
    for sock in worker_tcp_sockets(pid):
        try:
            if sock.getsockname()[1] == local_port and sock.getpeername() == peer:
                return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        except OSError:
            continue  # a listening socket has no peer
    raise AssertionError(f"no socket of {pid} on port {local_port} with peer {peer}")


def upstream_nodelay_of(pid: int, upstream_port: int) -> list[int]:
    found = []
    for sock in worker_tcp_sockets(pid):
        try:
            if sock.getpeername()[1] == upstream_port:
                found.append(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
        except OSError:
            continue
    return found


def test_sockets_have_tcp_nodelay(gw: Process, upstream: Upstream) -> None:
    wait_until(lambda: len(child_pids(gw.proc.pid)) == 1, what="the worker")
    (worker,) = child_pids(gw.proc.pid)
    with RawClient(gw.port) as raw:
        assert raw.request(http_request("GET", "/nodelay")).status == 200
        client_address = raw.sock.getsockname()
        assert nodelay_of(worker, gw.port, client_address) != 0, "downstream socket"
    nodelay = upstream_nodelay_of(worker, upstream.port)
    assert nodelay and all(nodelay), f"upstream sockets: {nodelay}"


def round_trips(port: int, variants: dict[str, list[bytes]]) -> dict[str, list[float]]:
    """Round-trip times on one keep-alive connection; each variant is a request sent as its
    pieces, PAUSE apart (a one-piece variant waits PAUSE first). Variants alternate."""
    times: dict[str, list[float]] = {name: [] for name in variants}
    with RawClient(port) as raw:
        raw.request(http_request("GET", "/warm-up"))
        for _ in range(ROUNDS):
            for name, pieces in variants.items():
                started = time.monotonic()
                if len(pieces) == 1:
                    time.sleep(PAUSE)
                for index, piece in enumerate(pieces):
                    if index:
                        time.sleep(PAUSE)
                    raw.send(piece)
                response = raw.response()
                times[name].append(time.monotonic() - started)
                assert response.status == 200
    return times


def assert_split_costs_nothing(times: dict[str, list[float]]) -> None:
    split, whole = statistics.median(times["split"]), statistics.median(times["whole"])
    assert split - whole < EXTRA_LIMIT, (
        f"median {split * 1000:.1f} ms split vs {whole * 1000:.1f} ms whole; "
        f"split: {sorted(round(t * 1000, 1) for t in times['split'])}"
    )


def test_split_responses_are_not_delayed(gw: Process) -> None:
    times = round_trips(
        gw.port,
        {"split": [http_request("GET", "/split")], "whole": [http_request("GET", "/whole")]},
    )
    assert_split_costs_nothing(times)


def test_split_requests_are_not_delayed(gw: Process) -> None:
    body = b'{"model": "m", "messages": []}'
    request = http_request("POST", "/whole", body=body)
    head = request[: request.index(b"\r\n\r\n") + 4]
    times = round_trips(gw.port, {"split": [head, body], "whole": [request]})
    assert_split_costs_nothing(times)
