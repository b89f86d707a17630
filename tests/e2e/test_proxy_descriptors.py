"""Out of file descriptors: the worker drops the connections it cannot take, says so in one
log line a second with a count, keeps answering the connections it has, and takes new ones again
once descriptors free up."""

from __future__ import annotations

import resource
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import (
    _LISTEN_RE,
    DEADLINE,
    Process,
    RawClient,
    Upstream,
    _die_with_test_run,
    _wait_accepting,
    _wait_for,
    http_request,
    proxy_config,
    wait_until,
)

OPEN_FILES = 64  # soft and hard: the supervisor raises the soft limit to the hard one


@pytest.fixture
def limited_gateway(tmp_path: Path) -> Iterator[tuple[Process, Upstream]]:
    """One worker whose processes may open only OPEN_FILES descriptors."""

    def limit_then_die_with_test_run() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (OPEN_FILES, OPEN_FILES))
        _die_with_test_run()

    with Upstream() as upstream:
        config = tmp_path / "gateway.yaml"
        config.write_text(proxy_config(upstream.port))
        log = tmp_path / "gateway.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "agw_fast", "-f", str(config),
                 "--bind-address", "127.0.0.1"],
                stdout=out, stderr=subprocess.STDOUT, env={"PYTHONUNBUFFERED": "1"},
                start_new_session=True, preexec_fn=limit_then_die_with_test_run,
            )
        try:
            (port,) = _wait_for(log, _LISTEN_RE, proc)[:1]
            _wait_accepting(port)
            yield Process(proc, log, port), upstream
        finally:
            Process(proc, log, 0).stop()


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
    # The probe's request leaves one pooled upstream connection, which every later request
    # (one at a time) reuses: from here on only client connections take descriptors.
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
        assert OPEN_FILES // 2 < len(held) < OPEN_FILES, len(held)
        wait_until(lambda: "out of file descriptors" in gw.output(), what="the log line")
        line = next(x for x in gw.output().splitlines() if "out of file descriptors" in x)
        assert f"open-file limit {OPEN_FILES}" in line and "dropped 1 new connection(s)" in line
        # Open connections are still served, new client connection or not.
        assert served(probe, "/probe/again")
        assert served(held[0], "/hold/0/again")
        assert upstream.accepted == 1
    finally:
        for client in held:
            client.close()

    def a_new_connection_is_served() -> bool:
        with RawClient(gw.port) as client:
            return served(client, "/after")

    wait_until(a_new_connection_is_served, what="a new connection to be served")
    assert served(probe, "/probe/last")
    probe.close()
    wait_until(lambda: "uvloop accepts new connections" in gw.output(),
               what="uvloop to accept again", timeout=DEADLINE)
    assert gw.proc.poll() is None
    assert "Traceback" not in gw.output()
