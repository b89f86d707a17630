"""Out of file descriptors: the worker drops the connections it cannot take (each may need an
upstream connection too), says so in one log line a second with a count, keeps answering the
connections it has, and takes new ones again once descriptors free up."""

from __future__ import annotations

import os
import re
import resource
import signal
import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.e2e.conftest import (
    _LISTEN_RE,
    QUIET,
    Certs,
    Process,
    RawClient,
    Upstream,
    _die_with_test_run,
    _wait_accepting,
    _wait_for,
    child_pids,
    http_request,
    proxy_config,
    wait_until,
)

OPEN_FILES = 64  # soft and hard: the supervisor raises the soft limit to the hard one


def _limit_then_die_with_test_run() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (OPEN_FILES, OPEN_FILES))
    _die_with_test_run()


@contextmanager
def _limited(tmp_path: Path, config_text: str) -> Iterator[Process]:
    """The gateway on `config_text`, one worker whose processes may open only OPEN_FILES
    descriptors."""
    config = tmp_path / "gateway.yaml"
    config.write_text(config_text)
    log = tmp_path / "gateway.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "agw_fast", "-f", str(config),
             "--bind-address", "127.0.0.1"],
            stdout=out, stderr=subprocess.STDOUT, env={"PYTHONUNBUFFERED": "1"},
            start_new_session=True, preexec_fn=_limit_then_die_with_test_run,
        )
    try:
        (port,) = _wait_for(log, _LISTEN_RE, proc)[:1]
        _wait_accepting(port)
        yield Process(proc, log, port)
    finally:
        Process(proc, log, 0).stop()


@pytest.fixture
def limited_gateway(tmp_path: Path) -> Iterator[tuple[Process, Upstream]]:
    """One worker whose processes may open only OPEN_FILES descriptors."""
    with Upstream() as upstream, _limited(tmp_path, proxy_config(upstream.port)) as gw:
        yield gw, upstream


def test_failed_tls_handshakes_do_not_use_up_the_connection_cap(
    tmp_path: Path, certs: Certs
) -> None:
    # A connection whose TLS handshake fails never reaches the protocol (nor its
    # connection_lost): counting it at accept would leak one slot per failure until the
    # worker refused everyone. Plain bytes to the HTTPS port fail the handshake.
    config = QUIET + f"""binds:
- port: 0
  listeners:
  - protocol: HTTPS
    tls: {{cert: "{certs.cert_path}", key: "{certs.key_path}"}}
    routes:
    - policies: {{directResponse: {{status: 200, body: "ok"}}}}
"""
    with _limited(tmp_path, config) as gw:
        for _ in range(OPEN_FILES * 3):
            with socket.create_connection(("127.0.0.1", gw.port), timeout=5) as sock:
                sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                while sock.recv(4096):
                    pass  # until the gateway closes it
        context = ssl.create_default_context(cafile=str(certs.ca_path))
        with socket.create_connection(("127.0.0.1", gw.port), timeout=5) as raw:
            with context.wrap_socket(raw, server_hostname="localhost") as tls:
                tls.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                answer = b""
                while chunk := tls.recv(4096):
                    answer += chunk
        assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]
        assert answer.endswith(b"ok")
        assert "dropped" not in gw.output()


def served(client: RawClient, target: str) -> bool:
    """True if the request got its 200; False if the gateway dropped the connection."""
    try:
        response = client.request(http_request("GET", target))
    except (AssertionError, ConnectionError, EOFError):
        return False
    assert response.status == 200, response.raw[:300]
    return True


def test_exhausted_descriptors_are_logged_and_open_connections_keep_working(
    limited_gateway: tuple[Process, Upstream],
) -> None:
    gw, upstream = limited_gateway
    probe = RawClient(gw.port)
    assert served(probe, "/probe")
    held: list[RawClient] = []
    try:
        for i in range(OPEN_FILES * 2):
            client = RawClient(gw.port)
            if not served(client, f"/hold/{i}"):
                client.close()
                break
            held.append(client)
        else:
            raise AssertionError(f"{len(held)} connections and none dropped")
        assert 0 < len(held) < OPEN_FILES, len(held)
        wait_until(lambda: "out of file descriptors" in gw.output(), what="the log line")
        line = next(x for x in gw.output().splitlines() if "out of file descriptors" in x)
        assert f"open-file limit {OPEN_FILES}" in line and "dropped 1 new connection(s)" in line
        # Open connections are still served, new client connection or not.
        assert served(probe, "/probe/again")
        assert served(held[0], "/hold/0/again")
    finally:
        for client in held:
            client.close()

    def a_new_connection_is_served() -> bool:
        with RawClient(gw.port) as client:
            return served(client, "/after")

    wait_until(a_new_connection_is_served, what="a new connection to be served")
    assert served(probe, "/probe/last")
    probe.close()
    assert gw.proc.poll() is None
    assert "Traceback" not in gw.output()


def dropped_in_log(output: str) -> int:
    return sum(int(n) for n in re.findall(r"dropped (\d+) new connection\(s\)", output))


def test_a_queue_beyond_the_limit_is_served_or_dropped_and_every_drop_counted(
    limited_gateway: tuple[Process, Upstream],
) -> None:
    gw, _ = limited_gateway
    (worker,) = child_pids(gw.proc.pid)
    # With the worker stopped, the kernel completes the handshakes and queues the connections:
    # the worker meets more of them at once than it has descriptors for.
    os.kill(worker, signal.SIGSTOP)
    try:
        clients = [RawClient(gw.port) for _ in range(OPEN_FILES)]
    finally:
        os.kill(worker, signal.SIGCONT)
    try:
        outcomes = [served(client, f"/queued/{i}") for i, client in enumerate(clients)]
        dropped = outcomes.count(False)
        assert 0 < dropped < OPEN_FILES, outcomes
        wait_until(lambda: dropped_in_log(gw.output()) == dropped,
                   what=f"{dropped} drops in the log")
        assert served(clients[outcomes.index(True)], "/still-open")
    finally:
        for client in clients:
            client.close()
    assert gw.proc.poll() is None
    assert "Traceback" not in gw.output()
