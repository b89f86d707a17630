"""Token estimates (`tokenize`) and cost (`config.modelCatalog`) end to end: the gateway
started from the CLI with 2 workers, the mock LLM as the provider. What the client is
answered, the x-ratelimit-* fields of a `type: tokens` limit both workers share, the access
log's cost field and the cost counter on /metrics."""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from agw_fast.llm import tokenizer
from tests.e2e.conftest import (
    GatewayFactory,
    Process,
    RawClient,
    RawMessage,
    access_log_lines,
    child_pids,
    http_request,
    metric_total,
    poll,
    scrape_metrics,
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


# -- cost: config.modelCatalog -> agw.ai.usage.cost.total and the cost counter ----------------


def _cost_config(mock_port: int, catalog_file: str) -> str:
    base = f"http://127.0.0.1:{mock_port}/v1"
    overlay = json.dumps({"providers": {"openai": {"models": {"gpt-4o": {"rates": {
        "output": "12"}}}}}})  # fmt: skip
    return f"""config:
  statsAddr: 127.0.0.1:0
  adminAddr: "off"
  readinessAddr: "off"
  modelCatalog:
  - file: {catalog_file}
  - inline: '{overlay}'
llm:
  port: 0
  models:
  - name: gpt-4o
    provider: openAI
    params: {{apiKey: {KEY}, baseUrl: "{base}"}}
  - name: unlisted
    provider: openAI
    params: {{apiKey: {KEY}, baseUrl: "{base}"}}
"""


def _expected_cost(content: str) -> Decimal:
    """The file's input rate and the inline overlay's output rate, per million tokens."""
    prompt = len(content.encode()) // 4 + 1  # the mock's counts: 5 output tokens
    return prompt * Decimal("2.5") / 1_000_000 + 5 * Decimal("12") / 1_000_000


def test_cost_from_a_catalog_in_the_access_log_and_metrics(
    gateway: GatewayFactory, mock: Process, tmp_path: Path
) -> None:
    catalog = tmp_path / "catalog.json"
    catalog.write_text(json.dumps({"providers": {"openai": {"models": {
        "gpt-4o": {"rates": {"input": "2.5", "output": "10"}}}}}}))  # fmt: skip
    gw = gateway(_cost_config(mock.port, str(catalog)), workers=2, expect_stats=True)
    served_by: dict[int, int] = {}
    expected: list[str] = []
    total = Decimal(0)
    while len(expected) < 4 or len(served_by) < 2:
        assert len(expected) < MAX_REQUESTS, f"one worker served everything: {served_by}"
        content = "price me " * (len(expected) + 1)
        response, owner = _chat(gw, content)
        assert response.status == 200, response.raw[:300]
        served_by[owner] = served_by.get(owner, 0) + 1
        cost = _expected_cost(content)
        expected.append(format(cost, "f"))
        total += cost
    unlisted, _ = _chat(gw, "no price", model="unlisted")
    assert unlisted.status == 200

    lines = poll(lambda: access_log_lines(gw.output()),
                 lambda found: len(found) >= len(expected) + 1, what="access log lines")
    # Each call's total, as agentgateway writes its decimal (no exponent, no float rounding).
    assert [line.get("agw.ai.usage.cost.total") for line in lines] == expected + [None]
    samples = poll(
        lambda: scrape_metrics(gw.extra_ports["stats"]),
        lambda s: metric_total(s, "agentgateway_cost_catalog_lookups_total")
        >= len(expected) + 1,
        what="cost lookups",
    )
    # Summed over both workers' slots.
    cost_total = metric_total(
        samples, "agentgateway_gen_ai_client_cost_usd_total",
        gen_ai_request_model="gpt-4o", gen_ai_system="openai",
    )  # fmt: skip
    assert cost_total == pytest.approx(float(total))
    assert metric_total(samples, "agentgateway_cost_catalog_lookups_total",
                        status="Exact") == len(expected)  # fmt: skip
    assert metric_total(samples, "agentgateway_cost_catalog_lookups_total", status="Missing",
                        gen_ai_request_model="unlisted") == 1  # fmt: skip


def test_a_reload_reads_the_catalog_again(
    gateway: GatewayFactory, mock: Process, tmp_path: Path
) -> None:
    """agentgateway re-reads `modelCatalog` on reload (the other `config:` settings wait for
    a restart): after SIGHUP, calls are priced with the file as it is now."""
    catalog = tmp_path / "catalog.json"

    def prices(input_rate: str) -> None:
        catalog.write_text(json.dumps({"providers": {"openai": {"models": {
            "gpt-4o": {"rates": {"input": input_rate, "output": "10"}}}}}}))  # fmt: skip

    prices("2.5")
    gw = gateway(_cost_config(mock.port, str(catalog)))
    content = "price me again"
    response, _ = _chat(gw, content)
    assert response.status == 200
    prices("7.5")
    gw.proc.send_signal(signal.SIGHUP)
    prompt = len(content.encode()) // 4 + 1
    repriced = format(prompt * Decimal("7.5") / 1_000_000 + 5 * Decimal("12") / 1_000_000, "f")

    def last_cost() -> object:
        _chat(gw, content)
        lines = access_log_lines(gw.output())
        return lines[-1].get("agw.ai.usage.cost.total") if lines else None

    poll(last_cost, lambda cost: cost == repriced, what="a call priced with the new file")
    assert "modelCatalog changed" not in gw.output()
