"""An early answer to a client that is still uploading reaches it, marked `connection: close`.

The gateway half-closes and keeps reading (a lingering close, RFC 9112 §9.6) so that unread
upload bytes cannot turn its close into a RST that destroys the answer; on loopback the race is
rare, so this checks the behaviour a client sees, and the unit tests check the mechanism.
"""

from __future__ import annotations

import socket
import threading

from tests.e2e.conftest import GatewayFactory, Process, ai_route, llm_config

UPLOAD = 16 * 1024 * 1024


def _read_response(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def test_early_413_reaches_a_client_still_sending_a_large_body(
    gateway: GatewayFactory, plain_upstream: Process
) -> None:
    config = llm_config(
        ai_route(plain_upstream.port, host="127.0.0.1", auth_key=None, authority=None),
        max_buffer_size=1024,
    )
    gw = gateway(config)
    sock = socket.create_connection(("127.0.0.1", gw.port), timeout=20)
    head = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw.test\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % UPLOAD
    )
    sent_errors: list[BaseException] = []

    def upload() -> None:
        # Keeps sending long after the gateway has answered, as a real client would.
        try:
            sock.sendall(head + b"x" * UPLOAD)
        except OSError as error:
            sent_errors.append(error)

    sender = threading.Thread(target=upload)
    sender.start()
    try:
        response = _read_response(sock)
    finally:
        sender.join(30)
        sock.close()
    assert response.startswith(b"HTTP/1.1 413 "), response[:200]
    assert b"connection: close" in response.lower()
