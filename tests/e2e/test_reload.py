"""Hot reload: the gateway follows its config file (and SIGHUP) without a restart.

Each test edits the file the gateway was started with (`GatewayFactory` writes
`gateway{index}.yaml` in the test's directory) and polls, with a deadline, for what a user
sees: the new route answering, a port opening or closing, the `config_synchronized` gauge,
readiness. Nothing sleeps to wait for a reload.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import (
    DEADLINE,
    GatewayFactory,
    Process,
    RawClient,
    _wait_for,
    metric_total,
    poll,
    scrape_metrics,
    start_mock,
    unused_port,
    wait_until,
)

ADMIN_PORTS = """config:
  statsAddr: "127.0.0.1:0"
  adminAddr: "127.0.0.1:0"
  readinessAddr: "127.0.0.1:0"
"""

_READY_RE = re.compile(r"readiness listening on \S+ port (\d+)")
_ADMIN_RE = re.compile(r"admin listening on \S+ port (\d+)")


def bind_yaml(port: int, routes: dict[str, str]) -> str:
    """One bind on `port` whose routes answer `body` for path prefix `path`."""
    lines = [f"- port: {port}", "  listeners:", "  - routes:"]
    for path, body in routes.items():
        lines += [
            f"    - name: r{len(lines)}",
            f"      matches: [{{path: {{pathPrefix: {path}}}}}]",
            f"      policies: {{directResponse: {{body: {body!r}, status: 200}}}}",
        ]
    return "\n".join(lines) + "\n"


def direct(port: int, routes: dict[str, str], head: str = ADMIN_PORTS) -> str:
    """A config with one bind (`bind_yaml`)."""
    return head + "binds:\n" + bind_yaml(port, routes)


def config_file(gateway: GatewayFactory, gw: Process) -> Path:
    return gateway.tmp / f"gateway{gateway.started.index(gw)}.yaml"


def replace_file(path: Path, text: str) -> None:
    """Write as editors do: a new file renamed over the old one (a new inode)."""
    temporary = path.with_suffix(".tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


def get(port: int, path: str) -> tuple[int, str]:
    try:
        response = httpx.get(f"http://127.0.0.1:{port}{path}", timeout=DEADLINE)
    except httpx.TransportError as error:
        return -1, type(error).__name__
    return response.status_code, response.text


def synchronized(stats: int) -> float:
    return metric_total(scrape_metrics(stats), "agentgateway_config_synchronized")


def ready(readiness: int) -> bool:
    return httpx.get(f"http://127.0.0.1:{readiness}/healthz/ready", timeout=DEADLINE).is_success


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=DEADLINE).close()
    except ConnectionRefusedError:
        return True
    return False


def test_a_route_added_by_editing_the_file_answers_within_a_second(
    gateway: GatewayFactory,
) -> None:
    port = unused_port()
    gw = gateway(direct(port, {"/a": "first"}), workers=2)
    assert get(port, "/b")[0] == 404
    replace_file(config_file(gateway, gw), direct(port, {"/a": "second", "/b": "added"}))
    # agentgateway's watcher waits 250 ms for the file to settle: a second is the promise.
    wait_until(lambda: get(port, "/b") == (200, "added"), timeout=1.0, what="the new route")
    wait_until(lambda: get(port, "/a") == (200, "second"), what="the changed route")
    assert "config reloaded (the config file changed)" in gw.output()


def test_a_file_edited_in_place_is_reloaded_too(gateway: GatewayFactory) -> None:
    port = unused_port()
    gw = gateway(direct(port, {"/a": "first"}))
    config_file(gateway, gw).write_text(direct(port, {"/a": "in place"}))
    wait_until(lambda: get(port, "/a") == (200, "in place"), what="the edited route")


def test_a_broken_file_keeps_the_old_routes_until_a_good_one_arrives(
    gateway: GatewayFactory,
) -> None:
    port = unused_port()
    gw = gateway(direct(port, {"/a": "good"}), expect_stats=True)
    stats = gw.extra_ports["stats"]
    path = config_file(gateway, gw)
    assert synchronized(stats) == 1
    broken = direct(port, {"/a": "broken"}).replace("pathPrefix", "pathPrefixx")
    replace_file(path, broken)
    wait_until(lambda: synchronized(stats) == 0, what="config_synchronized 0")
    assert get(port, "/a") == (200, "good")
    # One line, naming the field.
    errors = [line for line in gw.output().splitlines() if "config reload failed" in line]
    assert len(errors) == 1, errors
    assert "pathPrefixx" in errors[0] and "Traceback" not in gw.output()
    replace_file(path, direct(port, {"/a": "fixed"}))
    wait_until(lambda: synchronized(stats) == 1, what="config_synchronized 1")
    assert get(port, "/a") == (200, "fixed")


def test_a_stream_started_before_a_reload_finishes_on_its_config(
    gateway: GatewayFactory, tmp_path: Path
) -> None:
    mock = start_mock(tmp_path, "--chunks", "40", "--chunk-delay", "0.1", name="slow")
    try:
        port = unused_port()
        proxied = f"""{ADMIN_PORTS}binds:
- port: {port}
  listeners:
  - routes:
    - backends: [{{host: "127.0.0.1:{mock.port}"}}]
"""
        gw = gateway(proxied)
        body = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
        with httpx.Client(timeout=DEADLINE) as client, client.stream(
            "POST", f"http://127.0.0.1:{port}/v1/chat/completions", json=body
        ) as stream:
            assert stream.status_code == 200
            lines = stream.iter_lines()
            first = next(line for line in lines if line.startswith("data:"))
            replace_file(config_file(gateway, gw), direct(port, {"/": "new config"}))
            wait_until(lambda: get(port, "/v1/chat/completions") == (200, "new config"),
                       what="new requests on the new config")
            events = [first, *(line for line in lines if line.startswith("data:"))]
        assert events[-1] == "data: [DONE]"
        deltas = [json.loads(e[5:]) for e in events[:-1]]
        assert len([d for d in deltas if d["choices"] and d["choices"][0]["delta"]]) >= 40
    finally:
        mock.stop()


def test_a_keep_alive_connection_survives_a_reload_and_uses_the_new_config(
    gateway: GatewayFactory,
) -> None:
    port = unused_port()
    gw = gateway(direct(port, {"/a": "before"}), workers=2)
    request = b"GET /a HTTP/1.1\r\nhost: x\r\n\r\n"
    with RawClient(port) as client:
        first = client.request(request)
        assert first.status == 200 and first.body == b"before"
        replace_file(config_file(gateway, gw), direct(port, {"/a": "after"}))
        wait_until(lambda: get(port, "/a") == (200, "after"), what="the new config")
        # Every worker serves it once the reload is through: whichever holds our connection.
        readiness = _wait_for(gw.log, _READY_RE, gw.proc)[0]
        wait_until(lambda: ready(readiness), what="readiness")
        second = client.request(request)
        assert second.status == 200 and second.body == b"after"
        assert second.header("connection") != "close"


def test_sighup_reloads_the_file(gateway: GatewayFactory) -> None:
    port = unused_port()
    gw = gateway(direct(port, {"/a": "one"}))
    path = config_file(gateway, gw)
    before = path.stat()
    # The same size and mtime: the file watch sees no change, only SIGHUP reloads it.
    path.write_text(direct(port, {"/a": "two"}))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert path.stat().st_size == before.st_size
    gw.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: get(port, "/a") == (200, "two"), what="the reloaded route")
    assert "config reloaded (SIGHUP)" in gw.output()
    assert gw.proc.poll() is None


@pytest.mark.parametrize("listen_mode", ["reuseport", "shared"])
def test_binds_added_and_removed_open_and_close_their_ports(
    gateway: GatewayFactory, listen_mode: str
) -> None:
    port, extra = unused_port(), unused_port()
    gw = gateway(direct(port, {"/": "main"}), workers=2, extra_args=["--listen-mode", listen_mode])
    path = config_file(gateway, gw)
    two_binds = direct(port, {"/": "main"}) + bind_yaml(extra, {"/": "extra"})
    replace_file(path, two_binds)
    wait_until(lambda: get(extra, "/") == (200, "extra"), what="the added port")
    replace_file(path, direct(port, {"/": "main again"}))
    wait_until(lambda: refused(extra), what="the removed port to refuse connections")
    assert get(port, "/") == (200, "main again")
    assert f"port {extra} closes" in gw.output()


def test_the_admin_endpoints_follow_the_reloaded_config(gateway: GatewayFactory) -> None:
    port = unused_port()
    gw = gateway(direct(port, {"/a": "dumped-before"}), workers=2)
    admin = _wait_for(gw.log, _ADMIN_RE, gw.proc)[0]
    readiness = _wait_for(gw.log, _READY_RE, gw.proc)[0]
    wait_until(lambda: ready(readiness), what="readiness")
    replace_file(config_file(gateway, gw), direct(port, {"/a": "dumped-after"}))

    def dump() -> str:
        return httpx.get(f"http://127.0.0.1:{admin}/config_dump", timeout=DEADLINE).text

    poll(dump, lambda text: "dumped-after" in text, what="the live config in /config_dump")
    wait_until(lambda: ready(readiness), what="readiness after the reload")
    assert get(port, "/a") == (200, "dumped-after")


def test_a_restart_only_setting_is_reported_and_kept(gateway: GatewayFactory) -> None:
    port = unused_port()
    gw = gateway(direct(port, {"/a": "x"}))
    replace_file(
        config_file(gateway, gw),
        direct(port, {"/a": "y"}, ADMIN_PORTS + "  connectionTerminationDeadline: 9s\n"),
    )
    wait_until(lambda: get(port, "/a") == (200, "y"), what="the reload")
    output = gw.output()
    assert "config.connectionTerminationDeadline changed: it takes effect at restart" in output


@pytest.mark.parametrize("listen_mode", ["reuseport", "shared"])
def test_rate_limits_stay_shared_across_workers_after_a_reload(
    gateway: GatewayFactory, listen_mode: str
) -> None:
    port = unused_port()

    def limited(tokens: int) -> str:
        return f"""{ADMIN_PORTS}binds:
- port: {port}
  listeners:
  - routes:
    - policies:
        localRateLimit:
        - {{maxTokens: {tokens}, tokensPerFill: 1, fillInterval: 1h, type: requests}}
        directResponse: {{body: "limited {tokens}", status: 200}}
"""

    gw = gateway(limited(3), workers=2, extra_args=["--listen-mode", listen_mode])
    readiness = _wait_for(gw.log, _READY_RE, gw.proc)[0]
    replace_file(config_file(gateway, gw), limited(5))
    wait_until(lambda: get(port, "/") == (200, "limited 5"), what="the new limit")
    wait_until(lambda: ready(readiness), what="every worker on the new config")
    # One request above took a token of the new buckets. New connections spread over both
    # workers; shared buckets let 4 more through in all, not 4 per worker.
    statuses = [get(port, "/")[0] for _ in range(16)]
    assert statuses.count(200) == 4, statuses
    assert statuses.count(429) == 12, statuses
