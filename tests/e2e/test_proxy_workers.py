"""Pre-forked workers: several serve together, a stop drains in-flight requests and exits 0, and a
worker that dies is replaced while the gateway keeps answering."""

from __future__ import annotations

import json
import os
import signal
import threading
from collections.abc import Callable
from typing import Any

import httpx
import pytest

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
    serving_worker,
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


def served_by(port: int, workers: list[int], tag: str) -> int | None:
    """One request on a new client connection (it must be answered): the worker that took it."""
    with RawClient(port) as raw:
        response = raw.request(http_request("GET", f"/{tag}"))
        assert response.status == 200, response.raw[:300]
        return serving_worker(port, raw.sock.getsockname()[1], workers)


def replaced(parent: int, before: list[int]) -> Callable[[], bool]:
    """Whether one of `before` has exited and been replaced."""

    def check() -> bool:
        now = set(child_pids(parent))
        return len(now) == len(before) and len(now - set(before)) == 1

    return check


@pytest.mark.parametrize("listen_mode", ["reuseport", "shared"])
def test_a_worker_stopped_on_its_own_leaves_the_port_open(
    gateway: GatewayFactory, listen_mode: str
) -> None:
    # `kill -TERM <worker>` (and, later, a reload retiring workers one by one) stops that
    # worker only: the others keep serving, and its replacement serves the same port.
    with Upstream() as upstream:
        gw = gateway(
            proxy_config(upstream.port), workers=2, extra_args=["--listen-mode", listen_mode]
        )
        workers = workers_of(gw.proc.pid, 2)
        for old in list(workers):
            os.kill(old, signal.SIGTERM)
            fresh_connection_requests(gw.port, 10, f"while-{old}-stops")
            wait_until(replaced(gw.proc.pid, workers), what="the worker's replacement")
            (replacement,) = set(child_pids(gw.proc.pid)) - set(workers)
            workers = child_pids(gw.proc.pid)
            (other,) = set(workers) - {replacement}
            if listen_mode == "shared":
                # One socket for both: with the other worker stopped, the replacement is the
                # one to accept. (With reuseport the kernel spreads connections by address.)
                os.kill(other, signal.SIGSTOP)
            takers: list[int | None] = []
            try:
                while replacement not in takers and len(takers) < 64:
                    takers.append(served_by(gw.port, workers, f"after-{old}/{len(takers)}"))
            finally:
                os.kill(other, signal.SIGCONT)
            assert replacement in takers, (replacement, takers)
            fresh_connection_requests(gw.port, 10, f"after-{old}")
        assert gw.proc.poll() is None
        assert "Traceback" not in gw.output()
        assert gw.stop() == 0
