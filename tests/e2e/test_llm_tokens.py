"""Token estimates (`tokenize`) and cost (`config.modelCatalog`) end to end: the gateway
started from the CLI with 2 workers, the mock LLM as the provider. What the client is
answered, the x-ratelimit-* fields of a `type: tokens` limit both workers share, the access
log's cost field and the cost counter on /metrics."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from agw_fast.llm import tokenizer
from tests.e2e.conftest import (
    GatewayFactory,
    Process,
    RawClient,
    RawMessage,
    child_pids,
    http_request,
    serving_worker,
    start_mock,
)

pytest.importorskip("tiktoken")

KEY = "sk-gateway-held-key"
CAPACITY = 1000
MAX_REQUESTS = 100  # fresh connections at most while waiting for both workers to serve


@pytest.fixture(scope="module")
def mock(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Process]:
    process = start_mock(tmp_path_factory.mktemp("tokens-mock"), name="tokens-mock")
    yield process
    process.stop()


def _tokens_config(mock_port: int) -> str:
    base = f"http://127.0.0.1:{mock_port}/v1"
    return f"""config:
  statsAddr: "off"
  adminAddr: "off"
  readinessAddr: "off"
llm:
  port: 0
  policies:
    localRateLimit:
    - {{maxTokens: {CAPACITY}, tokensPerFill: {CAPACITY}, fillInterval: 3600s, type: tokens}}
  models:
  - name: gpt-4o
    provider: openAI
    params: {{apiKey: {KEY}, baseUrl: "{base}", tokenize: true}}
  - name: davinci
    provider: openAI
    params: {{apiKey: {KEY}, baseUrl: "{base}", tokenize: true}}
"""


def _chat(gw: Process, content: str, model: str = "gpt-4o") -> tuple[RawMessage, int]:
    """POST a one-message chat completion on a fresh connection: (response, serving pid)."""
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": content}]})
    request = http_request(
        "POST", "/v1/chat/completions", headers=[("content-type", "application/json")],
        body=body.encode(),
    )
    with RawClient(gw.port) as client:
        response = client.request(request)
        owner = serving_worker(gw.port, client.sock.getsockname()[1], child_pids(gw.proc.pid))
    assert owner is not None, "could not tell which worker served the connection"
    return response, owner


def _mock_usage(content: str) -> int:
    """What the mock reports: prompt bytes // 4 + 1 input tokens, 5 output tokens."""
    return len(content.encode()) // 4 + 1 + 5


def test_tokenize_estimate_is_taken_up_front_and_trued_up_across_workers(
    gateway: GatewayFactory, mock: Process
) -> None:
    gw = gateway(_tokens_config(mock.port), workers=2)
    # "hello world" is 2 tokens in o200k_base (gpt-4o): 3 + 1 per message, 3 for the reply.
    estimate = 3 + 1 + 2 + 3
    used = _mock_usage("hello world")  # 3 + 5: the estimate is 1 too many, refunded after
    left = CAPACITY
    served_by: dict[int, int] = {}
    sent = 0
    while sent < 6 or len(served_by) < 2 or min(served_by.values()) < 2:
        assert sent < MAX_REQUESTS, f"one worker served everything: {served_by}"
        response, owner = _chat(gw, "hello world")
        assert response.status == 200, response.raw[:300]
        # Whichever worker answers, the bucket is the same one: the estimate is out of it
        # when the response starts, each earlier call settled at its real usage.
        assert response.header("x-ratelimit-limit") == str(CAPACITY)
        assert response.header("x-ratelimit-remaining") == str(left - estimate)
        left -= used
        served_by[owner] = served_by.get(owner, 0) + 1
        sent += 1

    # A prompt estimated above what is left (but within the capacity) is refused before any
    # upstream call; agentgateway's check without tokenize would have let it through.
    tokenizer.preload()
    big = "hello " * 60
    while (
        tokenizer.count_prompt_tokens(
            "completions", {"model": "gpt-4o", "messages": [{"content": big}]}
        ) or 0
    ) <= left:
        big += "hello " * 60
    refused, _ = _chat(gw, big)
    assert refused.status == 429
    assert refused.body == b"rate limit exceeded"
    assert refused.header("x-ratelimit-remaining") == str(left)
    assert 3590 <= int(refused.header("x-ratelimit-reset") or 0) <= 3600
    # The refusal took nothing: a small prompt still fits.
    response, _ = _chat(gw, "hello world")
    assert response.status == 200
    assert response.header("x-ratelimit-remaining") == str(left - estimate)
    left -= used

    # More than the capacity can never fit: refused with reset 0 (agentgateway's try_wait_n).
    huge = "hello " * (CAPACITY + 10)
    refused, _ = _chat(gw, huge)
    assert refused.status == 429
    assert refused.header("x-ratelimit-limit") == str(CAPACITY)
    assert refused.header("x-ratelimit-reset") == "0"


def test_tokenize_refuses_a_model_agentgateway_cannot_count(
    gateway: GatewayFactory, mock: Process
) -> None:
    gw = gateway(_tokens_config(mock.port), workers=2)
    response, _ = _chat(gw, "hello world", model="davinci")  # an r50k_base model
    assert response.status == 400
    assert response.body == b"failed to process LLM request: unsupported model"
