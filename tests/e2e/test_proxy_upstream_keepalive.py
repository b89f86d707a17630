"""TCP keepalive on upstream sockets (`config.backend.keepalives`), as agentgateway sets it.

Read from the worker's own upstream sockets, duplicated into this process with
pidfd_getfd(2) (see test_proxy_nodelay.py), and cross-checked in /proc/net/tcp, where the
kernel shows a keepalive timer on a socket only when SO_KEEPALIVE is on.
"""

from __future__ import annotations

import socket

from tests.e2e.conftest import (
    GatewayFactory,
    RawClient,
    Upstream,
    child_pids,
    http_request,
    proxy_config,
    wait_until,
)
from tests.e2e.test_proxy_nodelay import worker_tcp_sockets

KEEPALIVE_TIMER = 2  # /proc/net/tcp "tr" column: 2 is the keepalive timer


def upstream_keepalive(gateway: GatewayFactory, upstream: Upstream, extra: str) -> list[
    tuple[int, int, int, int]
]:
    """(SO_KEEPALIVE, TCP_KEEPIDLE, TCP_KEEPINTVL, TCP_KEEPCNT) of the worker's upstream
    sockets after one proxied request; also checks /proc/net/tcp agrees on the timer."""
    gw = gateway(proxy_config(upstream.port, extra))
    wait_until(lambda: len(child_pids(gw.proc.pid)) == 1, what="the worker")
    (worker,) = child_pids(gw.proc.pid)
    with RawClient(gw.port) as raw:
        assert raw.request(http_request("GET", "/keepalive")).status == 200
    found = []
    local_ports = []
    for sock in worker_tcp_sockets(worker):
        try:
            if sock.getpeername()[1] != upstream.port:
                continue
        except OSError:
            continue  # a listening socket has no peer
        local_ports.append(sock.getsockname()[1])
        found.append(
            (
                sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
                sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
                sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL),
                sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT),
            )
        )
    assert found, "no upstream socket in the worker"
    timers = proc_net_tcp_timers(upstream.port)
    for port, (keepalive, *_rest) in zip(local_ports, found, strict=True):
        assert (timers[port] == KEEPALIVE_TIMER) == bool(keepalive), timers
    return found


def proc_net_tcp_timers(remote_port: int) -> dict[int, int]:
    """Local port -> active timer, for IPv4 sockets connected to `remote_port`."""
    timers = {}
    with open("/proc/net/tcp") as table:
        next(table)
        for line in table:
            fields = line.split()
            local, remote, timer = fields[1], fields[2], fields[5]
            if int(remote.split(":")[1], 16) == remote_port:
                timers[int(local.split(":")[1], 16)] = int(timer.split(":")[0], 16)
    return timers


def test_defaults_are_agentgateways(gateway: GatewayFactory, upstream: Upstream) -> None:
    # enabled, 3m idle, 3m between probes, 9 probes.
    assert set(upstream_keepalive(gateway, upstream, "")) == {(1, 180, 180, 9)}


def test_configured_values(gateway: GatewayFactory, upstream: Upstream) -> None:
    extra = "  backend:\n    keepalives: {time: 45s, interval: 1500ms, retries: 4}\n"
    assert set(upstream_keepalive(gateway, upstream, extra)) == {(1, 45, 1, 4)}


def test_disabled_leaves_keepalive_off(gateway: GatewayFactory, upstream: Upstream) -> None:
    extra = "  backend:\n    keepalives: {enabled: false}\n"
    ((keepalive, *_),) = set(upstream_keepalive(gateway, upstream, extra))
    assert keepalive == 0
