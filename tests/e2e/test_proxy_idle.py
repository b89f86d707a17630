"""Idle client connections expire after `http1IdleTimeout`; a client the gateway itself
stopped reading from (its upstream is slow to take the request body) is not idle."""

from __future__ import annotations

import json
import threading
import time

from tests.e2e.conftest import (
    DEADLINE,
    GatewayFactory,
    RawClient,
    Upstream,
    UpstreamConnection,
    http_request,
    http_response,
    proxy_config,
)

IDLE_TIMEOUT = 1.0
# Longer than the idle timeout plus a housekeeping sweep (once a second), with room to spare.
UPSTREAM_STALL = IDLE_TIMEOUT + 3.0
BODY = b"x" * (16 * 1024 * 1024)  # more than every socket buffer between client and upstream


def stalling_upstream(conn: UpstreamConnection) -> None:
    """Reads the request head, then nothing for UPSTREAM_STALL, then the body; answers with
    the body's length."""
    head = conn.reader.read_until(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1]) for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    time.sleep(UPSTREAM_STALL)
    conn.reader.read_exact(length)
    conn.send(http_response(200, json.dumps({"received": length}).encode()))


def test_an_upload_paused_for_a_slow_upstream_is_not_cut_as_idle(
    gateway: GatewayFactory,
) -> None:
    with Upstream(stalling_upstream) as upstream:
        config = proxy_config(upstream.port).replace(
            "binds:", f"frontendPolicies:\n  http:\n    http1IdleTimeout: {IDLE_TIMEOUT:g}s\nbinds:"
        )
        gw = gateway(config)
        outcome: dict[str, object] = {}

        def upload() -> None:
            try:
                with RawClient(gw.port, timeout=DEADLINE + UPSTREAM_STALL) as client:
                    response = client.request(http_request("POST", "/upload", body=BODY))
                    outcome["status"] = response.status
                    outcome["body"] = json.loads(response.body)
            except Exception as error:  # reported by the assertion below
                outcome["error"] = error

        thread = threading.Thread(target=upload)
        thread.start()
        thread.join(DEADLINE + UPSTREAM_STALL * 2)
        assert "error" not in outcome, outcome
        assert outcome == {"status": 200, "body": {"received": len(BODY)}}
        assert upstream.errors == []
