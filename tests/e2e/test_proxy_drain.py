"""Stopping on SIGTERM: new connections are served (with `connection: close`) for
`connectionMinTerminationDeadline`, then refused by the kernel in every process of the gateway,
while the requests already in flight run to completion."""

from __future__ import annotations

import json
import signal
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from bench.procs import socket_inodes
from tests.e2e.conftest import (
    DEADLINE,
    GatewayFactory,
    Process,
    RawClient,
    Upstream,
    UpstreamConnection,
    child_pids,
    echo_json,
    http_request,
    http_response,
    tcp_connections,
    wait_until,
)

SLOW_BODY = b"finished after the stop " * 500


def drain_config(upstream_port: int, window: str | None) -> str:
    """One catch-all route; the stats process is on (it is forked too, and must let go of the
    gateway's listening sockets like every other process)."""
    window_line = f"  connectionMinTerminationDeadline: {window}\n" if window else ""
    return f"""config:
  statsAddr: 127.0.0.1:0
  adminAddr: "off"
  readinessAddr: "off"
  connectionTerminationDeadline: 30s
{window_line}binds:
- port: 0
  listeners:
  - routes:
    - backends: [{{host: "127.0.0.1:{upstream_port}"}}]
"""


@contextmanager
def slow_upstream() -> Iterator[tuple[Upstream, threading.Event, threading.Event]]:
    """An upstream whose `/slow` answers only once `release` is set (`arrived` says it waits)."""
    arrived, release = threading.Event(), threading.Event()

    def handler(conn: UpstreamConnection) -> None:
        while (request := conn.read_request()) is not None:
            if request.target == "/slow":
                arrived.set()
                release.wait(DEADLINE * 3)
                conn.send(http_response(200, SLOW_BODY))
            else:
                conn.send(http_response(200, echo_json(request)))

    with Upstream(handler) as upstream:
        try:
            yield upstream, arrived, release
        finally:
            release.set()


def start_slow_request(port: int, outcome: dict[str, Any]) -> threading.Thread:
    def call() -> None:
        try:
            with RawClient(port, timeout=DEADLINE * 3) as client:
                outcome["response"] = client.request(http_request("GET", "/slow"))
                outcome["closed"] = client.reader.at_eof()
        except Exception as error:  # reported by the caller's assertions
            outcome["error"] = error

    thread = threading.Thread(target=call)
    thread.start()
    return thread


def listening_inodes(port: int) -> set[int]:
    return {inode for inode, (local, remote) in tcp_connections().items()
            if local == port and remote == 0}


def gateway_pids(gw: Process, workers: int = 1) -> list[int]:
    wait_until(lambda: len(child_pids(gw.proc.pid)) == workers + 1,
               what="the workers and the stats process")
    return [gw.proc.pid, *child_pids(gw.proc.pid)]


def nobody_holds(pids: list[int], inodes: set[int]) -> bool:
    return all(not socket_inodes(pid) & inodes for pid in pids)


def connect_outcome(port: int) -> str:
    """"refused", or what happened to a request on a connection the kernel accepted."""
    try:
        sock = socket.create_connection(("127.0.0.1", port), timeout=DEADLINE)
    except ConnectionRefusedError:
        return "refused"
    with sock:
        sock.settimeout(2.0)
        try:
            sock.sendall(http_request("GET", "/late"))
            data = sock.recv(65536)
        except TimeoutError:
            return "accepted, never answered"
        except OSError as error:
            return f"accepted, then {type(error).__name__}"
        return f"accepted, answered {data[:40]!r}"


@pytest.mark.parametrize(
    ("workers", "listen_mode"), [(1, "reuseport"), (2, "reuseport"), (2, "shared")]
)
def test_after_sigterm_new_connections_are_refused_in_every_process(
    gateway: GatewayFactory, workers: int, listen_mode: str
) -> None:
    with slow_upstream() as (upstream, arrived, release):
        gw = gateway(
            drain_config(upstream.port, None),
            workers=workers,
            extra_args=["--listen-mode", listen_mode],
            expect_stats=True,
        )
        pids = gateway_pids(gw, workers)
        listening = listening_inodes(gw.port)
        assert listening and not nobody_holds(pids, listening)
        outcome: dict[str, Any] = {}
        caller = start_slow_request(gw.port, outcome)
        assert arrived.wait(DEADLINE)
        gw.proc.send_signal(signal.SIGTERM)
        # With no minimum window, every process lets go of the listening sockets at once.
        wait_until(lambda: nobody_holds(pids, listening), what="all processes to stop listening")
        assert connect_outcome(gw.port) == "refused"
        assert gw.proc.poll() is None, "the in-flight request keeps the gateway up"
        release.set()
        caller.join(DEADLINE * 2)
        assert "error" not in outcome, outcome
        assert outcome["response"].status == 200
        assert outcome["response"].body == SLOW_BODY
        assert outcome["response"].header("connection") == "close"
        assert outcome["closed"]
        assert gw.proc.wait(DEADLINE) == 0


@pytest.mark.parametrize("env", [False, True], ids=["config", "env"])
def test_minimum_window_serves_new_connections_with_close_then_refuses(
    gateway: GatewayFactory, env: bool
) -> None:
    with slow_upstream() as (upstream, arrived, release):
        # Long enough for a local request on a loaded machine; the test waits for state, and
        # the window's end shows in /proc.
        window = "4s"
        gw = gateway(
            drain_config(upstream.port, None if env else window),
            env={"CONNECTION_MIN_TERMINATION_DEADLINE": window} if env else None,
            expect_stats=True,
        )
        pids = gateway_pids(gw)
        listening = listening_inodes(gw.port)
        outcome: dict[str, Any] = {}
        caller = start_slow_request(gw.port, outcome)
        assert arrived.wait(DEADLINE)
        gw.proc.send_signal(signal.SIGTERM)
        wait_until(lambda: "worker 0 draining" in gw.output(), what="the worker to drain")
        with RawClient(gw.port) as client:
            response = client.request(http_request("GET", "/in-the-window"))
            assert response.status == 200
            assert response.header("connection") == "close"
            assert client.reader.at_eof(), "the gateway closes the connection after answering"
        assert not nobody_holds(pids, listening), "still listening within the window"
        wait_until(lambda: nobody_holds(pids, listening), what="all processes to stop listening")
        assert connect_outcome(gw.port) == "refused"
        release.set()
        caller.join(DEADLINE * 2)
        assert "error" not in outcome, outcome
        assert outcome["response"].status == 200
        assert outcome["response"].body == SLOW_BODY
        assert gw.proc.wait(DEADLINE) == 0


def test_a_connection_that_asks_nothing_in_the_window_does_not_hold_the_stop(
    gateway: GatewayFactory,
) -> None:
    # connectionTerminationDeadline is 30s: a worker that waited for this connection to send
    # something (or for the deadline) would still be running long after the window.
    with Upstream() as upstream:
        gw = gateway(drain_config(upstream.port, "3s"), expect_stats=True)
        gw.proc.send_signal(signal.SIGTERM)
        wait_until(lambda: "worker 0 draining" in gw.output(), what="the worker to drain")
        with socket.create_connection(("127.0.0.1", gw.port), timeout=DEADLINE * 2) as silent:
            assert gw.proc.wait(DEADLINE * 2) == 0
            try:
                assert silent.recv(100) == b"", "the gateway closes it without an answer"
            except ConnectionResetError:
                pass


def test_a_request_head_begun_before_the_stop_is_answered_then_closed(
    gateway: GatewayFactory,
) -> None:
    with Upstream() as upstream:
        gw = gateway(drain_config(upstream.port, None), expect_stats=True)
        with RawClient(gw.port) as partial:
            partial.send(b"GET /begun-before-the-stop HTTP/1.1\r\nHost: gateway.test\r\n")
            # The one worker has read the partial head once it answers a later connection:
            # the head was in its socket before that connection was even opened.
            with RawClient(gw.port) as other:
                assert other.request(http_request("GET", "/later")).status == 200
            gw.proc.send_signal(signal.SIGTERM)
            wait_until(lambda: "worker 0 draining" in gw.output(), what="the worker to drain")
            response = partial.request(b"\r\n")
            assert response.status == 200
            assert json.loads(response.body)["target"] == "/begun-before-the-stop"
            assert response.header("connection") == "close"
            assert partial.reader.at_eof()
        assert gw.proc.wait(DEADLINE) == 0


def test_a_connection_opened_just_before_the_stop_has_its_first_request_answered(
    gateway: GatewayFactory,
) -> None:
    # A connection that has not sent anything yet may have been accepted a moment ago, its
    # request on the way: the stop gives it a second (one housekeeping interval) to begin.
    with Upstream() as upstream:
        gw = gateway(drain_config(upstream.port, None), expect_stats=True)
        with RawClient(gw.port) as fresh:
            # The one worker has accepted `fresh` once it answers a connection opened after it.
            with RawClient(gw.port) as other:
                assert other.request(http_request("GET", "/later")).status == 200
            gw.proc.send_signal(signal.SIGTERM)
            wait_until(lambda: "worker 0 draining" in gw.output(), what="the worker to drain")
            response = fresh.request(http_request("GET", "/sent-as-the-stop-began"))
            assert response.status == 200
            assert response.header("connection") == "close"
            assert fresh.reader.at_eof()
        assert gw.proc.wait(DEADLINE) == 0
