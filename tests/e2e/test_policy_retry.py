"""`retry` through the CLI-started gateway, against scripted upstreams over real sockets: a
listed status is resent (with `x-retry-attempt`), an unlisted one is not, connection errors are
resent whatever `codes` says, `attempts` counts the resends after the first request, request
bodies are replayed byte-exact up to 64 KiB, a response already relayed is never retried,
`backoff` spaces the attempts (within the request timeout), and `agentgateway_retries_total`
counts the resends."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.e2e.conftest import (
    QUIET,
    GatewayFactory,
    Upstream,
    UpstreamConnection,
    ai_route,
    gateway_client,
    http_response,
    llm_config,
    metric_total,
    poll,
    raw_request,
    scrape_metrics,
)

STATS = """config:
  statsAddr: 127.0.0.1:0
  adminAddr: "off"
  readinessAddr: "off"
"""


def _config(port: int, retry: str, *, header: str = QUIET, timeout: str = "") -> str:
    return header + f"""binds:
- port: 0
  listeners:
  - routes:
    - name: retried
      backends: [{{host: "127.0.0.1:{port}"}}]
      policies:
        retry: {retry}
{timeout}"""


class Script:
    """An upstream handler answering the n-th request (over all connections) with
    `answers[n]` (the last one repeats); None closes the connection without answering.
    `arrivals` keeps each request's arrival time."""

    def __init__(self, *answers: bytes | None) -> None:
        self.answers = answers
        self.arrivals: list[float] = []
        self.lock = threading.Lock()

    def __call__(self, conn: UpstreamConnection) -> None:
        while (request := conn.read_request()) is not None:
            with self.lock:
                n = len(self.arrivals)
                self.arrivals.append(time.monotonic())
            del request
            answer = self.answers[min(n, len(self.answers) - 1)]
            if answer is None:
                return
            conn.send(answer)


def _status(code: int, body: bytes = b"") -> bytes:
    return http_response(code, body or f"status {code}".encode(), reason="X")


@contextmanager
def _closed_port() -> Iterator[int]:
    # A bound socket that never listens: connecting to it is refused.
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


def _with(upstream_handler: Callable[[UpstreamConnection], None]) -> Upstream:
    return Upstream(upstream_handler)


def test_listed_status_is_retried_then_succeeds(gateway: GatewayFactory) -> None:
    script = Script(_status(503), _status(200, b"fine"))
    with _with(script) as upstream:
        gw = gateway(_config(upstream.port, "{attempts: 2, codes: [503]}"))
        with gateway_client(gw.port) as client:
            response = client.get("/thing", headers={"x-retry-attempt": "9"})
        assert (response.status_code, response.text) == (200, "fine")
        first, second = upstream.requests
        # agentgateway sets the field on resends only, replacing any the client sent.
        assert first.header_values("x-retry-attempt") == ["9"]
        assert second.header_values("x-retry-attempt") == ["1"]
        assert second.target == "/thing"
        # The failed response is dropped unread: its connection is closed, not reused.
        assert upstream.accepted == 2


def test_unlisted_status_is_not_retried(gateway: GatewayFactory) -> None:
    script = Script(_status(500), _status(200))
    with _with(script) as upstream:
        gw = gateway(_config(upstream.port, "{attempts: 3, codes: [503, 429]}"))
        with gateway_client(gw.port) as client:
            response = client.get("/")
        assert (response.status_code, response.text) == (500, "status 500")
        assert len(upstream.requests) == 1


def test_attempts_counts_resends_and_the_last_response_is_returned(
    gateway: GatewayFactory,
) -> None:
    # `attempts: 2` is two resends after the first request (agentgateway's code: attempts + 1).
    script = Script(_status(503, b"first"), _status(503, b"second"), _status(503, b"third"),
                    _status(200))
    with _with(script) as upstream:
        gw = gateway(_config(upstream.port, "{attempts: 2, codes: [503]}"))
        with gateway_client(gw.port) as client:
            response = client.get("/")
        assert (response.status_code, response.text) == (503, "third")
        assert len(upstream.requests) == 3
        assert [r.header("x-retry-attempt") for r in upstream.requests] == [None, "1", "2"]


def test_connection_closed_before_answer_is_retried_whatever_codes(
    gateway: GatewayFactory,
) -> None:
    script = Script(None, _status(200, b"second try"))
    with _with(script) as upstream:
        gw = gateway(_config(upstream.port, "{attempts: 1, codes: []}"))
        with gateway_client(gw.port) as client:
            response = client.get("/")
        assert (response.status_code, response.text) == (200, "second try")
        assert len(upstream.requests) == 2


def test_connection_refused_is_retried_then_503(gateway: GatewayFactory) -> None:
    with _closed_port() as port:
        gw = gateway(_config(port, "{attempts: 3, codes: [503]}", header=STATS),
                     expect_stats=True)
        with gateway_client(gw.port) as client:
            response = client.get("/")
        assert response.status_code == 503
        assert response.text == "upstream call failed: connection refused"
        samples = poll(lambda: scrape_metrics(gw.extra_ports["stats"]),
                       lambda s: metric_total(s, "agentgateway_retries_total") > 0,
                       what="retries_total")
        # Three resends after the first refused connect, labelled with the final answer.
        assert metric_total(samples, "agentgateway_retries_total", status="503",
                            reason="UpstreamFailure", route="default/retried") == 3


def test_post_body_is_replayed_byte_exact(gateway: GatewayFactory) -> None:
    body = os.urandom(60 * 1024)
    script = Script(_status(503), _status(200))
    with _with(script) as upstream:
        gw = gateway(_config(upstream.port, "{attempts: 1, codes: [503]}"))
        with gateway_client(gw.port) as client:
            assert client.post("/upload", content=body).status_code == 200
        assert [r.body for r in upstream.requests] == [body, body]
        assert upstream.requests[1].header("content-length") == str(len(body))


def test_chunked_body_is_replayed_byte_exact(gateway: GatewayFactory) -> None:
    parts = [os.urandom(1000), b"", os.urandom(20_000), os.urandom(7)]

    def chunks() -> Iterator[bytes]:
        yield from (p for p in parts if p)

    script = Script(_status(503), _status(503), _status(200))
    with _with(script) as upstream:
        gw = gateway(_config(upstream.port, "{attempts: 2, codes: [503]}"))
        with gateway_client(gw.port) as client:
            assert client.post("/upload", content=chunks()).status_code == 200
        assert [r.body for r in upstream.requests] == [b"".join(parts)] * 3
        assert upstream.requests[2].header("transfer-encoding") == "chunked"


def test_body_over_64k_is_not_retried(gateway: GatewayFactory) -> None:
    body = os.urandom(64 * 1024 + 1)
    script = Script(_status(503), _status(503), _status(503), _status(200))
    with _with(script) as upstream:
        gw = gateway(_config(upstream.port, "{attempts: 3, codes: [503]}"))
        with gateway_client(gw.port) as client:
            assert client.post("/upload", content=body).status_code == 503
            # Chunked: the bound is found while streaming, and retrying stops there too.
            assert client.post("/upload", content=iter([body])).status_code == 503
        assert len(upstream.requests) == 2
        # At the bound exactly, it still is.
        exact = body[:-1]
        with gateway_client(gw.port) as client:
            assert client.post("/", content=exact).status_code == 200
        assert [r.body for r in upstream.requests[2:]] == [exact, exact]


def test_a_response_already_relayed_is_never_retried(gateway: GatewayFactory) -> None:
    def streamed_then_cut(conn: UpstreamConnection) -> None:
        if conn.read_request() is None:
            return
        conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"x" * 10)
        time.sleep(0.2)

    with _with(streamed_then_cut) as upstream:
        # The cut is a connection error, retried before a response starts; not after.
        gw = gateway(_config(upstream.port, "{attempts: 3, codes: [503]}"))
        answer = raw_request(gw.port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
        assert answer.endswith(b"\r\n\r\n" + b"x" * 10)  # the bytes relayed, then the cut
        time.sleep(0.3)
        assert upstream.accepted == 1 and len(upstream.requests) == 1


def test_backoff_spaces_attempts(gateway: GatewayFactory) -> None:
    script = Script(_status(503), _status(503), _status(200))
    with _with(script) as upstream:
        gw = gateway(_config(upstream.port, "{attempts: 2, codes: [503], backoff: 300ms}"))
        with gateway_client(gw.port) as client:
            assert client.get("/").status_code == 200
        assert len(script.arrivals) == 3
        gaps = [b - a for a, b in zip(script.arrivals, script.arrivals[1:], strict=False)]
        assert all(gap >= 0.25 for gap in gaps), gaps  # never earlier than the backoff


def test_backoff_ends_at_the_request_timeout(gateway: GatewayFactory) -> None:
    script = Script(_status(503), _status(200))
    with _with(script) as upstream:
        gw = gateway(_config(
            upstream.port, "{attempts: 3, codes: [503], backoff: 5s}",
            timeout="        timeout: {requestTimeout: 300ms}\n",
        ))
        with gateway_client(gw.port) as client:
            response = client.get("/")
        assert (response.status_code, response.text) == (504, "request timeout")
        assert len(upstream.requests) == 1


def test_retries_total_metric(gateway: GatewayFactory) -> None:
    script = Script(_status(503), _status(429), _status(200), _status(200))
    with _with(script) as upstream:
        gw = gateway(_config(upstream.port, "{attempts: 5, codes: [503, 429]}", header=STATS),
                     expect_stats=True)
        with gateway_client(gw.port) as client:
            assert client.get("/").status_code == 200  # two retries
            assert client.get("/").status_code == 200  # none
        samples = poll(lambda: scrape_metrics(gw.extra_ports["stats"]),
                       lambda s: metric_total(s, "agentgateway_requests_total") >= 2,
                       what="requests_total")
        assert metric_total(samples, "agentgateway_retries_total") == 2
        assert metric_total(samples, "agentgateway_retries_total", status="200", method="GET",
                            route="default/retried", protocol="http") == 2


def test_a_route_without_retry_is_not_retried(gateway: GatewayFactory) -> None:
    script = Script(None, _status(200))
    with _with(script) as upstream:
        config = QUIET + f"""binds:
- port: 0
  listeners:
  - routes:
    - backends: [{{host: "127.0.0.1:{upstream.port}"}}]
"""
        gw = gateway(config)
        with gateway_client(gw.port) as client:
            assert client.get("/").status_code == 503
        assert len(upstream.requests) == 1


def test_precondition_false_sends_once(gateway: GatewayFactory) -> None:
    script = Script(_status(503), _status(200), _status(503), _status(200))
    with _with(script) as upstream:
        gw = gateway(_config(
            upstream.port,
            "{attempts: 2, codes: [503], precondition: 'request.method == \"GET\"'}",
        ))
        with gateway_client(gw.port) as client:
            assert client.get("/").status_code == 200  # retried
            assert len(upstream.requests) == 2
            response = client.post("/", content=b"once")  # not: the precondition is false
            assert (response.status_code, response.text) == (503, "status 503")
        assert len(upstream.requests) == 3
        assert upstream.requests[2].body == b"once"


def test_bad_precondition_is_refused_at_load(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(_config(1, "{codes: [503], precondition: 'request.('}"))
    result = subprocess.run(
        [sys.executable, "-m", "agw_fast", "-f", str(config), "--validate-only"],
        capture_output=True, text=True, timeout=30, check=False,
    )
    assert result.returncode != 0
    assert "policies.retry.precondition: invalid CEL expression" in result.stderr
    assert "Traceback" not in result.stderr


def test_llm_route_is_retried_with_the_same_body(gateway: GatewayFactory) -> None:
    completion = json.dumps({
        "id": "c1", "object": "chat.completion", "model": "command", "choices": [],
        "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7},
    }).encode()
    ok = http_response(200, completion, [("Content-Type", "application/json")])
    script = Script(_status(429), ok, _status(429))
    with _with(script) as upstream:
        route = ai_route(upstream.port, host="127.0.0.1", authority=None, auth_key=None)
        route["policies"] = {"retry": {"attempts": 1, "codes": [429]}}
        gw = gateway(llm_config(route))
        body = {"model": "x", "messages": [{"role": "user", "content": "hi"}]}
        with gateway_client(gw.port) as client:
            response = client.post("/v1/chat/completions", json=body)
            assert response.status_code == 200 and response.json()["id"] == "c1"
            first, second = upstream.requests
            assert first.body == second.body and json.loads(second.body)["model"] == "command"
            # Over 64 KiB of request body: sent once.
            big = {"model": "x", "messages": [{"role": "user", "content": "y" * 70_000}]}
            assert client.post("/v1/chat/completions", json=big).status_code == 429
        assert len(upstream.requests) == 3


# -- condition (agentgateway's httpproxy.rs `should_retry`: a listed code, or else a true
# condition; a failed evaluation is false) ---------------------------------------------------

_FAILED = http_response(200, b"failed", [("X-Req-Failed", "true")])
_HEADER_CONDITION = "'response.headers[\"x-req-failed\"] != \"\"'"


def test_condition_on_a_header_retries_a_200(gateway: GatewayFactory) -> None:
    script = Script(_FAILED, _status(200, b"fine"), _FAILED, _FAILED)
    with _with(script) as upstream:
        gw = gateway(_config(
            upstream.port, f"{{attempts: 1, codes: [], condition: {_HEADER_CONDITION}}}"
        ))
        with gateway_client(gw.port) as client:
            response = client.get("/thing")
            # The failed response never reached the client: only the resend's.
            assert (response.status_code, response.text) == (200, "fine")
            assert "x-req-failed" not in response.headers
            assert upstream.requests[1].header_values("x-retry-attempt") == ["1"]
            # Attempts spent: the last response is relayed as it came.
            response = client.get("/again")
            assert (response.status_code, response.text) == (200, "failed")
            assert response.headers["x-req-failed"] == "true"
        assert len(upstream.requests) == 4


def test_condition_without_its_header_fails_to_evaluate_and_does_not_retry(
    gateway: GatewayFactory,
) -> None:
    # `response.headers["x-req-failed"]` with no such field is an error: false, as eval_bool.
    # So is a conversion that fails.
    script = Script(http_response(200, b"ok", [("X-Count", "many")]), _status(200))
    with _with(script) as upstream:
        gw = gateway(_config(
            upstream.port,
            "{attempts: 2, codes: [], condition: 'response.headers[\"x-req-failed\"] != \"\" "
            "|| int(response.headers[\"x-count\"]) > 1'}",
        ))
        with gateway_client(gw.port) as client:
            response = client.get("/")
        assert (response.status_code, response.text) == (200, "ok")
        assert response.headers["x-count"] == "many"
        assert len(upstream.requests) == 1


def test_listed_code_is_retried_whatever_the_condition_says(gateway: GatewayFactory) -> None:
    # `codes` OR `condition`: a 503 is listed, so the false condition is not even asked; a
    # 500 is not listed, and the condition (false for it) leaves it alone.
    script = Script(_status(503), _status(200, b"fine"), _status(500), _status(200))
    with _with(script) as upstream:
        gw = gateway(_config(
            upstream.port, "{attempts: 1, codes: [503], condition: 'response.code == 599'}"
        ))
        with gateway_client(gw.port) as client:
            assert client.get("/").text == "fine"
            assert len(upstream.requests) == 2
            assert client.get("/").status_code == 500
        assert len(upstream.requests) == 3


def test_condition_reading_the_request(gateway: GatewayFactory) -> None:
    script = Script(_status(500), _status(200, b"fine"), _status(500), _status(200))
    with _with(script) as upstream:
        gw = gateway(_config(
            upstream.port,
            "{codes: [], condition: 'request.method == \"GET\" && "
            "request.headers[\"x-team\"] == \"a\" && response.code >= 500'}",
        ))
        with gateway_client(gw.port) as client:
            assert client.get("/", headers={"X-Team": "a"}).text == "fine"
            assert client.post("/", content=b"x", headers={"X-Team": "a"}).status_code == 500
        assert len(upstream.requests) == 3


def test_condition_retries_are_counted(gateway: GatewayFactory) -> None:
    script = Script(_FAILED, _FAILED, _status(200))
    with _with(script) as upstream:
        gw = gateway(
            _config(upstream.port, f"{{attempts: 3, codes: [], condition: {_HEADER_CONDITION}}}",
                    header=STATS),
            expect_stats=True,
        )
        with gateway_client(gw.port) as client:
            assert client.get("/").status_code == 200
        samples = poll(lambda: scrape_metrics(gw.extra_ports["stats"]),
                       lambda s: metric_total(s, "agentgateway_requests_total") >= 1,
                       what="requests_total")
        assert metric_total(samples, "agentgateway_retries_total", status="200",
                            route="default/retried") == 2


def test_condition_reading_the_body_is_refused_at_load(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(_config(1, "{codes: [], condition: 'response.body.contains(\"error\")'}"))
    result = subprocess.run(
        [sys.executable, "-m", "agw_fast", "-f", str(config), "--validate-only"],
        capture_output=True, text=True, timeout=30, check=False,
    )
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "policies.retry.condition: not supported: the CEL field `response.body`" in lines[0]


def test_condition_sees_fields_a_header_modifier_removes(gateway: GatewayFactory) -> None:
    # agentgateway asks the condition before the response policies run: a field the route
    # removes from what clients get still decides the retry, and is removed from the
    # response finally relayed (also when no retry is left to make).
    script = Script(_FAILED, http_response(200, b"fine", [("X-Req-Failed", ""), ("X-Up", "1")]),
                    _FAILED, _FAILED)
    with _with(script) as upstream:
        config = _config(
            upstream.port, f"{{attempts: 1, codes: [], condition: {_HEADER_CONDITION}}}"
        ) + "        responseHeaderModifier: {remove: [x-req-failed], set: {x-up: gw}}\n"
        gw = gateway(config)
        with gateway_client(gw.port) as client:
            response = client.get("/")
            assert (response.status_code, response.text) == (200, "fine")
            assert "x-req-failed" not in response.headers
            assert response.headers.get_list("x-up") == ["gw"]
            response = client.get("/")
            assert (response.status_code, response.text) == (200, "failed")
            assert "x-req-failed" not in response.headers
        assert len(upstream.requests) == 4


def test_condition_route_past_64k_of_chunked_body_sends_once_and_drops_the_field(
    gateway: GatewayFactory,
) -> None:
    script = Script(_FAILED, _status(200))
    with _with(script) as upstream:
        config = _config(
            upstream.port, f"{{attempts: 1, codes: [], condition: {_HEADER_CONDITION}}}"
        ) + "        responseHeaderModifier: {remove: [x-req-failed]}\n"
        gw = gateway(config)
        body = b"z" * 70_000
        with gateway_client(gw.port) as client:
            response = client.post("/", content=iter([body[:30_000], body[30_000:]]))
        assert (response.status_code, response.text) == (200, "failed")
        assert "x-req-failed" not in response.headers
        assert len(upstream.requests) == 1 and upstream.requests[0].body == body


def test_llm_route_condition(gateway: GatewayFactory) -> None:
    completion = json.dumps({
        "id": "c1", "object": "chat.completion", "model": "command", "choices": [],
        "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7},
    }).encode()
    ok = http_response(200, completion, [("Content-Type", "application/json")])
    failed = http_response(200, completion, [("Content-Type", "application/json"),
                                             ("X-Req-Failed", "true")])
    script = Script(failed, ok, failed)
    with _with(script) as upstream:
        route = ai_route(upstream.port, host="127.0.0.1", authority=None, auth_key=None)
        route["policies"] = {
            "retry": {"codes": [], "condition": 'response.headers["x-req-failed"] != ""'},
            "responseHeaderModifier": {"remove": ["x-req-failed"]},
        }
        gw = gateway(llm_config(route))
        body = {"model": "x", "messages": [{"role": "user", "content": "hi"}]}
        with gateway_client(gw.port) as client:
            response = client.post("/v1/chat/completions", json=body)
            assert response.status_code == 200 and "x-req-failed" not in response.headers
            assert len(upstream.requests) == 2
            # Over 64 KiB of request body: sent once, the field still removed.
            big = {"model": "x", "messages": [{"role": "user", "content": "y" * 70_000}]}
            response = client.post("/v1/chat/completions", json=big)
            assert response.status_code == 200 and "x-req-failed" not in response.headers
        assert len(upstream.requests) == 3
