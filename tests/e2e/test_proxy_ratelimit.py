"""localRateLimit through the CLI-started gateway: one bucket across two worker processes under
thousands of racing requests, x-ratelimit-* fields on allowed and refused responses, 429
`rate limit exceeded`, and routes whose buckets do not touch each other."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import time

import httpx

from bench.procs import socket_inodes
from tests.e2e.conftest import (
    QUIET,
    GatewayFactory,
    Upstream,
    UpstreamConnection,
    ai_route,
    child_pids,
    echo_json,
    gateway_client,
    http_response,
    llm_config,
    metric_total,
    poll,
    scrape_metrics,
    tcp_connections,
    wait_until,
)

RACE_CAPACITY = 2500
RACE_REQUESTS = 10_000
CONNECTIONS = 200


def _config(upstream_port: int) -> str:
    return QUIET + f"""binds:
- port: 0
  listeners:
  - routes:
    - name: race
      matches: [{{path: {{pathPrefix: /race}}}}]
      policies:
        localRateLimit:
        - {{maxTokens: {RACE_CAPACITY}, tokensPerFill: 1, fillInterval: 3600s}}
        directResponse: {{status: 200, body: "ok"}}
    - name: refilled
      matches: [{{path: {{pathPrefix: /refilled}}}}]
      policies:
        localRateLimit:
        - {{maxTokens: 50, tokensPerFill: 50, fillInterval: 100ms}}
        directResponse: {{status: 200, body: "ok"}}
    - name: other
      matches: [{{path: {{pathPrefix: /other}}}}]
      policies:
        localRateLimit:
        - {{maxTokens: 2, tokensPerFill: 1, fillInterval: 3600s}}
        directResponse: {{status: 200, body: "ok"}}
    - name: proxied
      matches: [{{path: {{pathPrefix: /proxied}}}}]
      policies:
        localRateLimit:
        - {{maxTokens: 100, tokensPerFill: 100, fillInterval: 60s}}
        - {{maxTokens: 3, tokensPerFill: 1, fillInterval: 3600s}}
      backends: [{{host: "127.0.0.1:{upstream_port}"}}]
    - name: free
      backends: [{{host: "127.0.0.1:{upstream_port}"}}]
"""


class Answer:
    __slots__ = ("fields", "status")

    def __init__(self, status: int, fields: dict[str, str]) -> None:
        self.status = status
        self.fields = fields


async def _read_response(reader: asyncio.StreamReader) -> tuple[Answer, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    fields = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            fields[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(fields.get("content-length", "0")))
    return Answer(status, fields), body


async def _race(
    port: int, workers: list[int], path: bytes = b"/race", requests: int = RACE_REQUESTS
) -> tuple[list[Answer], set[int]]:
    """Open every connection first, note which worker accepted each, then have them all send
    their share of requests at once (keep-alive, one request in flight per connection)."""
    streams = [await asyncio.open_connection("127.0.0.1", port) for _ in range(CONNECTIONS)]
    client_ports = {w.get_extra_info("sockname")[1] for _, w in streams}
    serving: set[int] = set()

    def all_accepted() -> bool:
        table = tcp_connections()
        ours = {i for i, (lp, rp) in table.items() if lp == port and rp in client_ports}
        owners = {pid: socket_inodes(pid) & ours for pid in workers}
        serving.clear()
        serving.update(pid for pid, held in owners.items() if held)
        return sum(len(held) for held in owners.values()) == CONNECTIONS

    wait_until(all_accepted, what="every connection accepted by a worker")
    start = asyncio.Event()
    answers: list[Answer] = []

    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await start.wait()
        for _ in range(requests // CONNECTIONS):
            writer.write(b"GET %s HTTP/1.1\r\nhost: rl.test\r\n\r\n" % path)
            answer, _ = await _read_response(reader)
            answers.append(answer)
            assert answer.fields.get("connection") != "close"
        writer.close()

    tasks = [asyncio.create_task(client(r, w)) for r, w in streams]
    start.set()
    await asyncio.wait_for(asyncio.gather(*tasks), timeout=120)
    return answers, serving


def test_one_bucket_holds_across_two_workers_under_a_race(gateway: GatewayFactory) -> None:
    with Upstream() as upstream:
        gw = gateway(_config(upstream.port), workers=2)
        wait_until(lambda: len(child_pids(gw.proc.pid)) == 2, what="2 workers")
        workers = child_pids(gw.proc.pid)
        answers, serving = asyncio.run(_race(gw.port, workers))
    assert sorted(serving) == workers  # both processes took connections
    assert len(answers) == RACE_REQUESTS
    allowed = [a for a in answers if a.status == 200]
    refused = [a for a in answers if a.status == 429]
    assert len(allowed) + len(refused) == RACE_REQUESTS
    # The refill (1 an hour) cannot happen during the test: exactly the capacity gets through,
    # and each allowed request saw a different count of tokens left: no token was taken twice.
    assert len(allowed) == RACE_CAPACITY
    assert sorted(int(a.fields["x-ratelimit-remaining"]) for a in allowed) == list(
        range(RACE_CAPACITY)
    )
    for answer in allowed:
        assert answer.fields["x-ratelimit-limit"] == str(RACE_CAPACITY)
        assert 3590 <= int(answer.fields["x-ratelimit-reset"]) <= 3600
    for answer in refused:
        assert answer.fields["x-ratelimit-limit"] == str(RACE_CAPACITY)
        assert answer.fields["x-ratelimit-remaining"] == "0"
        assert 3590 <= int(answer.fields["x-ratelimit-reset"]) <= 3600


def _echo_with_own_limits(conn: UpstreamConnection) -> None:
    while (request := conn.read_request()) is not None:
        fields = [
            ("Content-Type", "application/json"),
            ("X-RateLimit-Limit", "999"),
            ("X-RateLimit-Remaining", "998"),
            ("x-ratelimit-limit-requests", "5000"),
        ]
        conn.send(http_response(200, echo_json(request), fields))


def test_refills_across_two_workers_never_exceed_the_rate(gateway: GatewayFactory) -> None:
    # 50 tokens every 100 ms, on a grid that starts when the config is compiled: whatever
    # the timing, no more than 50 + 50 per elapsed interval can get through.
    began = time.monotonic()
    with Upstream() as upstream:
        gw = gateway(_config(upstream.port), workers=2)
        wait_until(lambda: len(child_pids(gw.proc.pid)) == 2, what="2 workers")
        workers = child_pids(gw.proc.pid)
        answers, serving = asyncio.run(_race(gw.port, workers, b"/refilled", 6000))
        elapsed = time.monotonic() - began
    assert sorted(serving) == workers
    allowed = sum(1 for a in answers if a.status == 200)
    assert sum(1 for a in answers if a.status == 429) == len(answers) - allowed
    assert 50 <= allowed <= 50 + 50 * int(elapsed / 0.1)


def test_answers_headers_and_independent_routes(gateway: GatewayFactory) -> None:
    with Upstream(_echo_with_own_limits) as upstream:
        gw = gateway(_config(upstream.port), workers=2)
        with gateway_client(gw.port) as client:
            # The most constrained of two limits is reported on a proxied response.
            for left in (2, 1, 0):
                response = client.get("/proxied")
                assert response.status_code == 200
                # Ours replace the upstream's fields of the same names, as in agentgateway.
                assert response.headers.get_list("x-ratelimit-limit") == ["3"]
                assert response.headers.get_list("x-ratelimit-remaining") == [str(left)]
                assert response.headers["x-ratelimit-limit-requests"] == "5000"
                assert 3590 <= int(response.headers["x-ratelimit-reset"]) <= 3600
            refused = client.get("/proxied", headers={"x-keep": "1"})
            assert refused.status_code == 429
            assert refused.text == "rate limit exceeded"
            assert refused.headers["content-type"] == "text/plain"
            assert refused.headers["x-ratelimit-limit"] == "3"
            assert refused.headers["x-ratelimit-remaining"] == "0"
            assert len(upstream.requests) == 3  # the refused request never went upstream
            # Other routes keep their own buckets; a route without the policy has no fields.
            assert [client.get("/other").status_code for _ in range(3)] == [200, 200, 429]
            free = client.get("/free")
            assert free.status_code == 200
            assert free.headers.get_list("x-ratelimit-limit") == ["999"]  # the upstream's
            head = client.head("/proxied")
            assert head.status_code == 429 and head.content == b""


def test_a_refused_request_with_a_body_keeps_the_connection_usable(
    gateway: GatewayFactory,
) -> None:
    with Upstream() as upstream:
        gw = gateway(_config(upstream.port))
        with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as sock:
            for _ in range(3):
                sock.sendall(b"POST /other HTTP/1.1\r\nhost: a\r\ncontent-length: 5\r\n\r\nhello")
            sock.sendall(b"GET /free HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n")
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        statuses = re.findall(rb"HTTP/1\.1 (\d{3}) ", data)
        assert statuses == [b"200", b"200", b"429", b"200"]


def test_refusals_count_with_reason_rate_limit(gateway: GatewayFactory) -> None:
    stats = QUIET.replace('statsAddr: "off"', "statsAddr: 127.0.0.1:0")
    with Upstream() as upstream:
        gw = gateway(stats + _config(upstream.port)[len(QUIET):], expect_stats=True)
        with httpx.Client(base_url=f"http://127.0.0.1:{gw.port}") as client:
            codes = [client.get("/other").status_code for _ in range(4)]
        assert codes == [200, 200, 429, 429]
        poll(
            lambda: metric_total(
                scrape_metrics(gw.extra_ports["stats"]), "agentgateway_requests_total",
                reason="RateLimit", status="429",
            ),
            lambda total: total == 2,
            what="two requests refused with reason RateLimit",
        )


# -- type: tokens on an LLM route: one token to start, the response's usage charged after

COMPLETION = json.dumps(
    {
        "id": "c1", "object": "chat.completion", "model": "command",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}}],
        "usage": {"prompt_tokens": 30, "completion_tokens": 20, "total_tokens": 50},
    }
).encode()


def _complete(conn: UpstreamConnection) -> None:
    while conn.read_request() is not None:
        conn.send(http_response(200, COMPLETION, [("Content-Type", "application/json")]))


def _llm_config(upstream_port: int) -> str:
    plain = {"host": "127.0.0.1", "authority": None, "auth_key": None}
    tokens = ai_route(upstream_port, match_prefix="/tokens", **plain)
    both = ai_route(upstream_port, match_prefix="/both", **plain)
    tokens["policies"] = {
        "localRateLimit": [{"maxTokens": 100, "tokensPerFill": 100, "fillInterval": "3600s",
                            "type": "tokens"}]
    }
    both["policies"] = {
        "localRateLimit": [
            {"maxTokens": 10, "tokensPerFill": 1, "fillInterval": "60s"},
            {"maxTokens": 60, "tokensPerFill": 60, "fillInterval": "3600s", "type": "tokens"},
        ]
    }
    return llm_config(tokens, both)


def test_token_limits_charge_the_usage_of_llm_calls(gateway: GatewayFactory) -> None:
    body = {"model": "command", "messages": [{"role": "user", "content": "hi"}]}
    with Upstream(_complete) as upstream:
        gw = gateway(_llm_config(upstream.port), workers=2)
        with gateway_client(gw.port) as client:
            left = []
            for _ in range(2):
                response = client.post("/tokens/v1/chat/completions", json=body)
                assert response.status_code == 200, response.text
                assert response.headers["x-ratelimit-limit"] == "100"
                left.append(response.headers["x-ratelimit-remaining"])
            # The check takes nothing; each call's 30 + 20 tokens are charged once it ends.
            assert left == ["100", "50"]
            refused = client.post("/tokens/v1/chat/completions", json=body)
            assert refused.status_code == 429
            assert refused.text == "rate limit exceeded"
            assert refused.headers["x-ratelimit-limit"] == "100"
            assert refused.headers["x-ratelimit-remaining"] == "0"
            assert 3590 <= int(refused.headers["x-ratelimit-reset"]) <= 3600
            assert len(upstream.requests) == 2
            # With a requests limit too, its fields are the ones the response carries; the
            # tokens limit (60) still refuses once 2 calls (100 tokens) have drained it.
            first = client.post("/both/v1/chat/completions", json=body)
            assert first.status_code == 200
            assert first.headers["x-ratelimit-limit"] == "10"
            assert first.headers["x-ratelimit-remaining"] == "9"
            assert client.post("/both/v1/chat/completions", json=body).status_code == 200
            refused = client.post("/both/v1/chat/completions", json=body)
            assert refused.status_code == 429
            assert refused.headers["x-ratelimit-limit"] == "60"
            assert len(upstream.requests) == 4


def _complete_with_own_fields(conn: UpstreamConnection) -> None:
    while conn.read_request() is not None:
        headers = [("Content-Type", "application/json"), ("X-RateLimit-Limit", "999")]
        conn.send(http_response(200, COMPLETION, headers))


def test_conditional_tokens_limit_selected_by_header(gateway: GatewayFactory) -> None:
    # agentgateway keeps the selected `conditional` entry for the LLM call: a `type: tokens`
    # entry is checked once the request is parsed and charged with the call's usage.
    plain = {"host": "127.0.0.1", "authority": None, "auth_key": None}
    body = {"model": "command", "messages": [{"role": "user", "content": "hi"}]}
    with Upstream(_complete_with_own_fields) as upstream:
        route = ai_route(upstream.port, match_prefix="/cond", **plain)
        route["policies"] = {
            "localRateLimit": {
                "conditional": [
                    {
                        "condition": 'request.headers["x-tier"] == "free"', "type": "tokens",
                        "maxTokens": 60, "tokensPerFill": 60, "fillInterval": "3600s",
                    },
                    {"maxTokens": 5, "tokensPerFill": 1, "fillInterval": "3600s"},
                ]
            }
        }
        gw = gateway(llm_config(route), workers=2)
        free = {"x-tier": "free"}
        with gateway_client(gw.port) as client:
            left = []
            for _ in range(2):
                response = client.post("/cond/v1/chat/completions", json=body, headers=free)
                assert response.status_code == 200, response.text
                # The limit's fields replace the upstream's own.
                assert response.headers.get_list("x-ratelimit-limit") == ["60"]
                left.append(response.headers["x-ratelimit-remaining"])
            assert left == ["60", "10"]  # each call's 30 + 20 tokens charged when it ends
            refused = client.post("/cond/v1/chat/completions", json=body, headers=free)
            assert refused.status_code == 429
            assert refused.text == "rate limit exceeded"
            assert refused.headers["x-ratelimit-limit"] == "60"
            assert refused.headers["x-ratelimit-remaining"] == "0"
            assert len(upstream.requests) == 2
            # Without the header the fallback `type: requests` entry applies, untouched.
            other = client.post("/cond/v1/chat/completions", json=body)
            assert other.status_code == 200
            assert other.headers.get_list("x-ratelimit-limit") == ["5"]
            assert other.headers["x-ratelimit-remaining"] == "4"
            assert len(upstream.requests) == 3
