"""Pre-forked workers: several serve together, a stop drains in-flight requests and exits 0, and a
worker that dies is replaced while the gateway keeps answering."""

from __future__ import annotations

import json
import os
import signal
import threading
from typing import Any

import httpx

from bench.procs import socket_inodes
from tests.e2e.conftest import (
    DEADLINE,
    GatewayFactory,
    RawClient,
    Upstream,
    UpstreamConnection,
    child_pids,
    echo_json,
    http_request,
    http_response,
    proxy_config,
    tcp_connections,
    wait_until,
)


def fresh_connection_requests(port: int, count: int, tag: str) -> None:
    """`count` requests, each on a new client connection."""
    for i in range(count):
        with RawClient(port) as raw:
            response = raw.request(http_request("GET", f"/{tag}/{i}"))
        assert response.status == 200, response.raw[:300]
        assert json.loads(response.body)["target"] == f"/{tag}/{i}"


def workers_of(pid: int, count: int) -> list[int]:
    wait_until(lambda: len(child_pids(pid)) == count, what=f"{count} workers")
    return child_pids(pid)


def test_two_workers_share_the_traffic(gateway: GatewayFactory) -> None:
    with Upstream() as upstream:
        gw = gateway(proxy_config(upstream.port), workers=2)
        workers = workers_of(gw.proc.pid, 2)
        fresh_connection_requests(gw.port, 50, "spread")
        # Each worker pools its own upstream connection: both must hold one.
        table = tcp_connections()
        upstream_sockets = {inode for inode, (_, remote) in table.items()
                            if remote == upstream.port}
        serving = [pid for pid in workers if socket_inodes(pid) & upstream_sockets]
        assert sorted(serving) == workers, (workers, serving)
        assert gw.stop() == 0


def test_sigterm_drains_an_in_flight_request(gateway: GatewayFactory) -> None:
    arrived, release = threading.Event(), threading.Event()

    def slow(conn: UpstreamConnection) -> None:
        while (request := conn.read_request()) is not None:
            if request.target == "/slow":
                arrived.set()
                release.wait(DEADLINE)
                conn.send(http_response(200, b"finished after the stop" * 1000))
            else:
                conn.send(http_response(200, echo_json(request)))

    with Upstream(slow) as upstream:
        gw = gateway(proxy_config(upstream.port))
        (worker,) = workers_of(gw.proc.pid, 1)
        outcome: dict[str, Any] = {}

        def call() -> None:
            try:
                outcome["response"] = httpx.get(
                    f"http://127.0.0.1:{gw.port}/slow", timeout=DEADLINE * 2, trust_env=False
                )
            except Exception as error:  # reported by the assertion below
                outcome["error"] = error

        caller = threading.Thread(target=call)
        caller.start()
        try:
            assert arrived.wait(DEADLINE)
            listening = {inode for inode, (local, remote) in tcp_connections().items()
                         if local == gw.port and remote == 0}
            gw.proc.send_signal(signal.SIGTERM)
            # The worker has begun its stop once it closed its listening socket.
            wait_until(lambda: not socket_inodes(worker) & listening,
                       what="the worker to stop listening")
        finally:
            release.set()
            caller.join(DEADLINE * 2)
        assert "error" not in outcome, outcome
        response = outcome["response"]
        assert response.status_code == 200
        assert response.content == b"finished after the stop" * 1000
        assert gw.proc.wait(DEADLINE) == 0


def test_a_killed_worker_is_replaced(gateway: GatewayFactory) -> None:
    with Upstream() as upstream:
        gw = gateway(proxy_config(upstream.port), workers=2)
        before = workers_of(gw.proc.pid, 2)
        fresh_connection_requests(gw.port, 10, "before")
        os.kill(before[0], signal.SIGKILL)
        wait_until(
            lambda: len(set(child_pids(gw.proc.pid)) - {before[0]}) == 2,
            what="a replacement worker",
        )
        after = child_pids(gw.proc.pid)
        assert before[0] not in after and before[1] in after
        assert "replacing it" in gw.output()
        fresh_connection_requests(gw.port, 30, "after")
        assert gw.proc.poll() is None
        assert gw.stop() == 0
