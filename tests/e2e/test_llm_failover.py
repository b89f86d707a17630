"""Failover between LLM providers under load, and the binds form's providers and `groups`.

Mocks that fail on purpose (`agw-fast mock-llm --fail-status`, `--reset`) stand in for a
provider that is down; the healthy one counts what reached it (`/mock/stats`)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import anthropic
import httpx
import openai
import pytest

from tests.e2e.conftest import (
    DEADLINE,
    QUIET,
    GatewayFactory,
    Process,
    Upstream,
    UpstreamConnection,
    gateway_client,
    http_response,
    start_mock,
    wait_until,
)

MESSAGES = [{"role": "user", "content": "Say hello."}]


@pytest.fixture(scope="module")
def healthy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Process]:
    process = start_mock(tmp_path_factory.mktemp("healthy"), name="healthy")
    yield process
    process.stop()


def _mock(tmp: Path, name: str, *flags: str) -> Process:
    return start_mock(tmp, *flags, name=name)


def _stats(mock: Process) -> dict[str, object]:
    response = httpx.get(f"http://127.0.0.1:{mock.port}/mock/stats", timeout=DEADLINE)
    doc: dict[str, object] = response.json()
    return doc


def _reset(mock: Process) -> None:
    httpx.post(f"http://127.0.0.1:{mock.port}/mock/reset", timeout=DEADLINE)


def _failover_config(primary: int, backup: int, health: str) -> str:
    return QUIET + f"""llm:
  port: 0
  models:
  - name: primary
    provider: openAI
    params: {{model: gpt-primary, apiKey: k, baseUrl: "http://127.0.0.1:{primary}/v1"}}
    health:
{health}
  - name: backup
    provider: anthropic
    params: {{model: claude-backup, apiKey: k, baseUrl: "http://127.0.0.1:{backup}/v1"}}
  virtualModels:
  - name: resilient
    routing:
      failover:
        targets:
        - {{model: primary, priority: 0}}
        - {{model: backup, priority: 1}}
"""


def _load(port: int, total: int, threads: int = 8) -> list[int]:
    """`total` chat requests from `threads` concurrent clients; the statuses."""
    statuses: list[int] = []
    lock = threading.Lock()
    per_thread = total // threads

    def run() -> None:
        with gateway_client(port) as client:
            for _ in range(per_thread):
                response = client.post(
                    "/v1/chat/completions", json={"model": "resilient", "messages": MESSAGES}
                )
                with lock:
                    statuses.append(response.status_code)

    workers = [threading.Thread(target=run) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(DEADLINE * 6)
    return statuses


@pytest.mark.parametrize(
    ("flags", "health", "failed_status"),
    [
        # A provider answering 500: evicted after 3 consecutive failures.
        (
            ("--fail-status", "500"),
            "      eviction: {duration: 60s, consecutiveFailures: 3}",
            500,
        ),
        # A rate-limited provider: 429 is unhealthy by this expression; evicted for its
        # retry-after at the first one.
        (
            ("--fail-status", "429", "--retry-after", "60"),
            '      unhealthyExpression: "response.code >= 500 || response.code == 429"',
            429,
        ),
        # A provider that resets connections: a connection failure is unhealthy.
        (("--reset",), "      eviction: {duration: 60s}", 503),
    ],
)
def test_failover_under_load_stops_failing_once_the_primary_is_evicted(
    gateway: GatewayFactory,
    tmp_path: Path,
    healthy: Process,
    flags: tuple[str, ...],
    health: str,
    failed_status: int,
) -> None:
    broken = _mock(tmp_path, "broken", *flags)
    try:
        gw = gateway(_failover_config(broken.port, healthy.port, health))
        _reset(healthy)
        statuses = _load(gw.port, 200)
        failed = [s for s in statuses if s != 200]
        # Each failure seen before the eviction reached the client (agentgateway's llm:
        # mode does not retry); there are at most as many as the eviction needs, one per
        # client connection racing it.
        assert len(statuses) == 200
        assert set(failed) <= {failed_status}
        assert 1 <= len(failed) <= 3 + 8, statuses
        # And once evicted, every later request went to the backup: the tail is clean.
        assert statuses[-100:] == [200] * 100
        stats = _stats(healthy)
        assert stats["requests"] == 200 - len(failed)
    finally:
        broken.stop()


def _binds(ai: str, routes: str = "") -> str:
    return QUIET + f"""binds:
- port: 0
  listeners:
  - routes:
    - policies:
{routes}
      backends:
      - ai:
{ai}
"""


def test_binds_anthropic_provider_serves_an_openai_client(
    gateway: GatewayFactory, healthy: Process
) -> None:
    gw = gateway(_binds(f"""          name: claude
          hostOverride: 127.0.0.1:{healthy.port}
          provider: {{anthropic: {{model: claude-from-config}}}}
          policies: {{backendAuth: {{key: sk-ant-secret}}}}""", "        {}"))
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{gw.port}/v1", api_key="x",
                           max_retries=0, timeout=DEADLINE)
    with client:
        reply = client.chat.completions.create(model="anything", messages=MESSAGES)
    assert reply.model == "claude-from-config"
    assert reply.choices[0].message.content


def test_binds_messages_route_to_openai_provider_and_groups_failover(
    gateway: GatewayFactory, healthy: Process, tmp_path: Path
) -> None:
    broken = _mock(tmp_path, "broken", "--fail-status", "503")
    try:
        gw = gateway(_binds(f"""          groups:
          - providers:
            - name: first
              hostOverride: 127.0.0.1:{broken.port}
              provider: {{openAI: {{model: gpt-first}}}}
              policies:
                health: {{eviction: {{duration: 60s}}}}
          - providers:
            - name: second
              hostOverride: 127.0.0.1:{healthy.port}
              provider: {{openAI: {{model: gpt-second}}}}""",
                            """        ai:
          routes:
            /v1/messages: messages
            "*": completions"""))
        client = anthropic.Anthropic(base_url=f"http://127.0.0.1:{gw.port}", api_key="x",
                                     max_retries=0, timeout=DEADLINE)
        with client:
            with pytest.raises(anthropic.InternalServerError):
                client.messages.create(model="m", max_tokens=32, messages=MESSAGES)  # type: ignore[arg-type]
            message = client.messages.create(model="m", max_tokens=32, messages=MESSAGES)  # type: ignore[arg-type]
        assert message.model == "gpt-second"
        assert message.content[0].type == "text"
        with gateway_client(gw.port) as raw:
            response = raw.post("/v1/messages", content=b"{not json")
        assert response.status_code == 400
        assert "invalid JSON" in response.text
    finally:
        broken.stop()


def test_a_broken_provider_stream_cuts_the_translated_stream(
    gateway: GatewayFactory,
) -> None:
    """An upstream that answers a stream with something that is not SSE JSON: the client
    sees the stream end without `[DONE]` (never a truncated body framed as complete)."""
    def handler(conn: UpstreamConnection) -> None:
        request = conn.read_request()
        assert request is not None
        body = b"event: message_start\ndata: {broken json\n\n"
        conn.send(http_response(200, body, [("content-type", "text/event-stream")]))

    with Upstream(handler) as upstream:
        gw = gateway(QUIET + f"""llm:
  port: 0
  models:
  - name: c
    provider: anthropic
    params: {{apiKey: k, baseUrl: "http://127.0.0.1:{upstream.port}/v1"}}
""")
        with gateway_client(gw.port) as client:
            with pytest.raises(httpx.RemoteProtocolError):
                client.post("/v1/chat/completions", json={
                    "model": "c", "messages": MESSAGES, "stream": True})
            # The connection it broke was the only one affected.
            response = client.get("/v1/models")
            assert response.status_code == 200
        wait_until(lambda: "failed to translate the LLM response" in gw.output(),
                   what="a log line for the broken stream")


def test_a_provider_lost_mid_json_answer_is_a_502_not_a_silent_close(
    gateway: GatewayFactory,
) -> None:
    """A translated JSON answer is held until whole; the provider closing halfway through
    must give the client an error response (an OpenAI SDK would otherwise see a dropped
    connection and send the paid call again)."""

    def handler(conn: UpstreamConnection) -> None:
        request = conn.read_request()
        assert request is not None
        conn.send(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                  b"content-length: 400\r\n\r\n{\"id\": \"msg_1\", \"type\": \"mess")

    with Upstream(handler) as upstream:
        gw = gateway(QUIET + f"""llm:
  port: 0
  models:
  - name: c
    provider: anthropic
    params: {{apiKey: k, baseUrl: "http://127.0.0.1:{upstream.port}/v1"}}
""")
        with gateway_client(gw.port) as client:
            response = client.post("/v1/chat/completions", json={
                "model": "c", "messages": MESSAGES})
            assert response.status_code == 502
            assert response.text.startswith("upstream call failed")
            # The connection stays usable for the next request.
            assert client.get("/v1/models").status_code == 200
