"""Fault injection over real sockets: `delay` (header-triggered, never blocking the worker),
`directResponse.conditional`, and `requestMirror` (a copy that never touches the main request)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from agw_fast.core import cel
from tests.e2e.conftest import (
    QUIET,
    GatewayFactory,
    Process,
    RawClient,
    Upstream,
    UpstreamConnection,
    gateway_client,
    http_request,
    wait_until,
)

pytestmark = pytest.mark.skipif(not cel.available(), reason="the cel extra is not installed")

DELAY = 0.6  # seconds the x-chaos header buys (the example's 500 ms, a little more)
LONG_DELAY = 2.0


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def _silent(conn: UpstreamConnection) -> None:
    """A mirror target that reads the copy and never answers."""
    if conn.read_request() is not None:
        time.sleep(10)


@dataclass
class Setup:
    gateway: Process
    upstream: Upstream
    mirror: Upstream
    slow_mirror: Upstream


def _config(upstream: int, mirror: int, slow: int, down: int) -> str:
    backend = f'[{{host: "127.0.0.1:{upstream}"}}]'
    return QUIET + f"""binds:
- port: 0
  listeners:
  - routes:
    - name: delay-header
      matches: [{{path: {{pathPrefix: /header}}}}]
      policies:
        delay:
          duration: 'request.headers["x-chaos"] == "1" ? {int(DELAY * 1000)} : 0'
      backends: {backend}
    - name: delay-long
      matches: [{{path: {{pathPrefix: /long}}}}]
      policies:
        delay: {{duration: "{int(LONG_DELAY * 1000)}ms"}}
      backends: {backend}
    - name: delay-timeout
      matches: [{{path: {{pathPrefix: /timeout}}}}]
      policies:
        delay: {{duration: 5s}}
        timeout: {{requestTimeout: 300ms}}
      backends: {backend}
    - name: delay-then-answer
      matches: [{{path: {{pathPrefix: /held-answer}}}}]
      policies:
        delay: {{duration: 200ms}}
        directResponse: {{status: 202, body: "after the delay"}}
      backends: {backend}
    - name: abort
      matches: [{{path: {{pathPrefix: /abort}}}}]
      policies:
        directResponse:
          conditional:
          - condition: 'request.headers["x-fail"] == "1"'
            status: 503
            body: "injected fault"
          - condition: 'request.headers["x-fail"] == "2"'
            status: 429
            body: "slow down"
      backends: {backend}
    - name: expression-answer
      matches: [{{path: {{pathPrefix: /expr}}}}]
      policies:
        directResponse:
          status: 422
          bodyExpression: "'hello ' + request.path"
          headers: {{x-direct: "'direct-' + request.headers['x-test']"}}
    - name: expression-conditional
      matches: [{{path: {{pathPrefix: /cexpr}}}}]
      policies:
        directResponse:
          conditional:
          - condition: 'request.headers["x-fail"] == "1"'
            status: 200
            bodyExpression: "request.headers['x-missing']"
          - status: 201
            bodyExpression: "{{'path': request.path}}"
            headers: {{Content-Type: "'application/json'", x-none: "request.headers['no']"}}
    - name: mirrored
      matches: [{{path: {{pathPrefix: /mirror}}}}]
      policies:
        requestMirror: {{backend: {{host: "127.0.0.1:{mirror}"}}, percentage: 1.0}}
        requestHeaderModifier: {{set: {{x-route: mirrored}}}}
      backends: {backend}
    - name: mirror-down
      matches: [{{path: {{pathPrefix: /down}}}}]
      policies:
        requestMirror: {{backend: {{host: "127.0.0.1:{down}"}}, percentage: 1}}
      backends: {backend}
    - name: mirror-slow
      matches: [{{path: {{pathPrefix: /slow}}}}]
      policies:
        requestMirror: {{backend: {{host: "127.0.0.1:{slow}"}}, percentage: 1}}
      backends: {backend}
    - name: mirror-never
      matches: [{{path: {{pathPrefix: /never}}}}]
      policies:
        requestMirror: {{backend: {{host: "127.0.0.1:{mirror}"}}, percentage: 0}}
      backends: {backend}
"""


@pytest.fixture(scope="module")
def setup(module_gateway: GatewayFactory) -> Iterator[Setup]:
    with Upstream() as upstream, Upstream() as mirror, Upstream(_silent) as slow:
        config = _config(upstream.port, mirror.port, slow.port, _closed_port())
        yield Setup(module_gateway(config), upstream, mirror, slow)


def _get(setup: Setup, path: str, **headers: str) -> httpx.Response:
    with gateway_client(setup.gateway.port) as client:
        return client.get(path, headers=headers)


# -- delay ----------------------------------------------------------------------------------


def test_header_triggered_delay(setup: Setup) -> None:
    started = time.monotonic()
    response = _get(setup, "/header/x", **{"x-chaos": "1"})
    elapsed = time.monotonic() - started
    assert response.status_code == 200 and response.json()["target"] == "/header/x"
    assert elapsed >= DELAY


@pytest.mark.parametrize("chaos", ["0", None])
def test_no_header_no_delay(setup: Setup, chaos: str | None) -> None:
    started = time.monotonic()
    headers = {} if chaos is None else {"x-chaos": chaos}
    assert _get(setup, "/header/y", **headers).status_code == 200
    assert time.monotonic() - started < DELAY


def test_a_delay_does_not_block_the_worker(setup: Setup) -> None:
    """One worker: while a request is held, another connection is served."""
    done = threading.Event()
    result: list[int] = []

    def delayed() -> None:
        result.append(_get(setup, "/long").status_code)
        done.set()

    thread = threading.Thread(target=delayed)
    started = time.monotonic()
    thread.start()
    # Give the held request time to reach the gateway, then ask on another connection.
    wait_until(lambda: time.monotonic() - started > 0.2)
    assert _get(setup, "/header/other").status_code == 200
    assert not done.is_set()  # served while the other was still held
    thread.join(10)
    assert result == [200] and time.monotonic() - started >= LONG_DELAY


def test_delayed_request_body_and_keep_alive(setup: Setup) -> None:
    body = b"x" * 200_000  # more than the gateway buffers while the request is held
    with RawClient(setup.gateway.port) as client:
        started = time.monotonic()
        response = client.request(
            http_request("POST", "/header/post", headers=[("x-chaos", "1")], body=body)
        )
        assert response.status == 200
        assert b'"body_length": 200000' in response.body
        assert time.monotonic() - started >= DELAY
        # The connection is still good for the next request.
        assert client.request(http_request("GET", "/header/next")).status == 200


def test_delay_counts_against_the_request_timeout(setup: Setup) -> None:
    started = time.monotonic()
    response = _get(setup, "/timeout")
    assert response.status_code == 504 and response.text == "request timeout"
    assert 0.3 <= time.monotonic() - started < 5


def test_delay_comes_before_direct_response(setup: Setup) -> None:
    started = time.monotonic()
    response = _get(setup, "/held-answer")
    assert response.status_code == 202 and response.text == "after the delay"
    assert time.monotonic() - started >= 0.2


def test_client_gone_during_a_delay(setup: Setup) -> None:
    before = len(setup.upstream.requests)
    with RawClient(setup.gateway.port) as client:
        client.send(http_request("GET", "/long/gone"))
    time.sleep(0.1)
    # The gateway is fine, and the abandoned request never reaches the upstream.
    assert _get(setup, "/header/after").status_code == 200
    time.sleep(LONG_DELAY)
    targets = [r.target for r in setup.upstream.requests[before:]]
    assert "/long/gone" not in targets


# -- directResponse.conditional -------------------------------------------------------------


def test_conditional_direct_response(setup: Setup) -> None:
    first = _get(setup, "/abort", **{"x-fail": "1"})
    assert first.status_code == 503 and first.text == "injected fault"
    second = _get(setup, "/abort", **{"x-fail": "2"})
    assert second.status_code == 429 and second.text == "slow down"
    # No condition true: the request goes on to the backend.
    passed = _get(setup, "/abort/ok", **{"x-fail": "0"})
    assert passed.status_code == 200 and passed.json()["target"] == "/abort/ok"
    assert _get(setup, "/abort/ok").status_code == 200


# -- directResponse bodyExpression / headers ------------------------------------------------


def test_direct_response_expressions(setup: Setup) -> None:
    # As agentgateway's tests/tests/direct_response.rs `direct_response_expression`.
    answer = _get(setup, "/expr/p", **{"x-test": "value"})
    assert answer.status_code == 422 and answer.text == "hello /expr/p"
    assert answer.headers["x-direct"] == "direct-value"
    assert "content-type" not in answer.headers
    # The header's expression fails (no x-test): the field is left out, the answer stands.
    bare = _get(setup, "/expr")
    assert bare.status_code == 422 and "x-direct" not in bare.headers


def test_conditional_direct_response_expressions(setup: Setup) -> None:
    answer = _get(setup, "/cexpr/a")
    assert answer.status_code == 201 and answer.json() == {"path": "/cexpr/a"}
    assert answer.headers["content-type"] == "application/json"
    assert "x-none" not in answer.headers


def test_body_expression_error_answers_500_and_keeps_the_connection(setup: Setup) -> None:
    with RawClient(setup.gateway.port) as raw:
        failed = raw.request(http_request("GET", "/cexpr", headers=[("x-fail", "1")]))
        after = raw.request(http_request("GET", "/cexpr/next"))
    assert failed.status == 500
    assert failed.body.startswith(b"failed to apply filters: invalid filter configuration: ")
    assert after.status == 201 and after.body == b'{"path":"/cexpr/next"}'


# -- requestMirror --------------------------------------------------------------------------


def test_mirror_target_receives_a_copy(setup: Setup) -> None:
    with gateway_client(setup.gateway.port) as client:
        response = client.post("/mirror/a?b=c", content=b"payload", headers={"x-test": "1"})
    assert response.status_code == 200 and response.json()["body_length"] == 7
    wait_until(lambda: any(r.target == "/mirror/a?b=c" for r in setup.mirror.requests))
    copy = next(r for r in setup.mirror.requests if r.target == "/mirror/a?b=c")
    assert copy.method == "POST"
    assert copy.header("x-test") == "1" and copy.header("x-route") == "mirrored"
    # As agentgateway: the body is not mirrored.
    assert copy.body == b"" and copy.header("content-length") in (None, "0")


def test_no_copy_at_percentage_zero(setup: Setup) -> None:
    for _ in range(5):
        assert _get(setup, "/never/x").status_code == 200
    assert _get(setup, "/mirror/marker").status_code == 200
    wait_until(lambda: any(r.target == "/mirror/marker" for r in setup.mirror.requests))
    assert not any(r.target.startswith("/never") for r in setup.mirror.requests)


def test_mirror_down_never_affects_the_response(setup: Setup) -> None:
    with gateway_client(setup.gateway.port) as client:
        for index in range(5):
            response = client.get(f"/down/{index}")
            assert response.status_code == 200
            assert response.json()["target"] == f"/down/{index}"
    wait_until(lambda: "error sending mirror request" in setup.gateway.output())
    # Rate-limited: five failures, one warning.
    assert setup.gateway.output().count("error sending mirror request") == 1


def test_slow_mirror_never_affects_the_response(setup: Setup) -> None:
    started = time.monotonic()
    with gateway_client(setup.gateway.port) as client:
        for index in range(5):
            response = client.get(f"/slow/{index}")
            assert response.status_code == 200
            assert response.json()["target"] == f"/slow/{index}"
    wait_until(lambda: len(setup.slow_mirror.requests) == 5)
    # The silent mirror holds every copy for 10 s; the responses did not wait for it.
    assert time.monotonic() - started < 5


def test_no_internal_errors(setup: Setup) -> None:
    output = setup.gateway.output()
    assert "Traceback" not in output and "internal error" not in output


def test_a_delay_longer_than_the_idle_timeout_is_not_cut(gateway: GatewayFactory) -> None:
    """The idle sweep expires connections the gateway waits on, not one it holds itself."""
    with Upstream() as upstream:
        config = QUIET + f"""frontendPolicies:
  http:
    http1IdleTimeout: 1s
binds:
- port: 0
  listeners:
  - routes:
    - policies:
        delay: {{duration: 2500ms}}
      backends: [{{host: "127.0.0.1:{upstream.port}"}}]
"""
        process = gateway(config)
        started = time.monotonic()
        with RawClient(process.port) as client:
            response = client.request(http_request("GET", "/held"))
        assert response.status == 200
        assert time.monotonic() - started >= 2.5


def test_a_slow_mirror_never_holds_up_a_stop(gateway: GatewayFactory) -> None:
    with Upstream() as upstream, Upstream(_silent) as slow:
        config = f"""config:
  statsAddr: "off"
  adminAddr: "off"
  readinessAddr: "off"
  connectionTerminationDeadline: 30s
binds:
- port: 0
  listeners:
  - routes:
    - policies:
        requestMirror: {{backend: {{host: "127.0.0.1:{slow.port}"}}, percentage: 1}}
      backends: [{{host: "127.0.0.1:{upstream.port}"}}]
"""
        process = gateway(config)
        with RawClient(process.port) as client:
            assert client.request(http_request("GET", "/copied")).status == 200
        wait_until(lambda: len(slow.requests) == 1)
        started = time.monotonic()
        assert process.stop() == 0
        # Not the 10 s the mirror holds the copy, nor the 30 s drain deadline.
        assert time.monotonic() - started < 8
