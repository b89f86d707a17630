"""A client that goes away in the middle of a streamed completion: the gateway logs the request,
lets go of the upstream stream, and goes on serving everyone else."""

from __future__ import annotations

import json
import socket
import struct
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import (
    DEADLINE,
    GatewayFactory,
    RawClient,
    Upstream,
    UpstreamConnection,
    access_log_lines,
    ai_route,
    http_request,
    llm_config,
    poll,
    start_mock,
)

MESSAGES = [{"role": "user", "content": "tell me a long story"}]
STREAM_BODY = json.dumps({"model": "m", "messages": MESSAGES, "stream": True}).encode()
PLAIN = {"host": "127.0.0.1", "authority": None, "auth_key": None}


def open_stream_and_read_first_event(port: int, path: str) -> RawClient:
    client = RawClient(port)
    client.send(http_request("POST", path, body=STREAM_BODY,
                             headers=[("content-type", "application/json")]))
    head = client.reader.read_until(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 "), head
    assert b"text/event-stream" in head
    first = client.reader.read_until(b"\n\n")
    assert b"data: {" in first, first
    return client


def hang_up(client: RawClient, how: str) -> None:
    if how == "reset":
        # SO_LINGER with a zero timeout: close() sends RST instead of FIN.
        client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    client.close()


def test_disconnect_mid_stream_is_logged_and_others_are_served(
    gateway: GatewayFactory, tmp_path: Path
) -> None:
    # 300 events 0.1 s apart: the stream would last 30 s.
    slow = start_mock(tmp_path, "--chunks", "300", "--chunk-delay", "0.1", name="slow")
    try:
        gw = gateway(llm_config(ai_route(slow.port, **PLAIN)))
        client = open_stream_and_read_first_event(gw.port, "/interrupted/chat/completions")
        hang_up(client, "close")

        after = httpx.post(f"http://127.0.0.1:{gw.port}/after/chat/completions",
                           json={"model": "m", "messages": MESSAGES}, timeout=DEADLINE)
        assert after.status_code == 200
        assert after.json()["model"] == "command"
        # Another stream starts as usual while the first one is being torn down.
        streaming = open_stream_and_read_first_event(gw.port, "/streaming/chat/completions")

        # The stream would run for 30 s: a line within the deadline means the gateway noticed
        # the client leaving rather than the stream ending.
        lines = poll(lambda: access_log_lines(gw.output()), lambda found: len(found) >= 2,
                     what="two access log lines")
        assert len(lines) == 2, lines
        by_path = {line.get("http.path"): line for line in lines}
        interrupted = by_path["/interrupted/chat/completions"]
        assert interrupted["http.method"] == "POST"
        assert interrupted["gen_ai.request.model"] == "command"
        assert by_path["/after/chat/completions"]["http.status"] == "200"
        streaming.close()
        assert gw.stop() == 0
        output = gw.output()
        assert "Traceback" not in output, output
    finally:
        slow.stop()


@pytest.mark.parametrize("how", ["close", "reset"])
def test_disconnect_mid_stream_releases_the_upstream_stream(
    gateway: GatewayFactory, how: str
) -> None:
    """The upstream connection is closed soon after the client left (a provider stops
    generating, and billing, only when its connection goes)."""
    events_sent: list[int] = []
    upstream_closed = threading.Event()
    event = b'data: {"model":"m","choices":[{"index":0,"delta":{"content":"x"}}]}\n\n'

    def endless_stream(conn: UpstreamConnection) -> None:
        if conn.read_request() is None:
            return
        conn.send(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                  b"transfer-encoding: chunked\r\n\r\n")
        for count in range(600):  # 30 s at most
            try:
                conn.send(b"%x\r\n%s\r\n" % (len(event), event))
            except OSError:
                break
            events_sent.append(count)
            if conn.wait_peer_closed(0.05):
                break
        else:
            return
        upstream_closed.set()

    with Upstream(endless_stream) as upstream:
        gw = gateway(llm_config(ai_route(upstream.port, **PLAIN)))
        client = open_stream_and_read_first_event(gw.port, "/v1/chat/completions")
        left_at = time.monotonic()
        hang_up(client, how)
        assert upstream_closed.wait(DEADLINE), "the gateway kept the upstream stream open"
        assert time.monotonic() - left_at < DEADLINE
        assert len(events_sent) < 600
        lines = poll(lambda: access_log_lines(gw.output()), lambda found: len(found) >= 1,
                     what="the interrupted request's access log line")
        assert len(lines) == 1
        assert lines[0]["http.path"] == "/v1/chat/completions"
        # Still serving: a new request on the same route gets its stream.
        second = open_stream_and_read_first_event(gw.port, "/v1/chat/completions")
        second.close()
    assert "Traceback" not in gw.output()
