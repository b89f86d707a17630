"""The `llm:` form end to end: the gateway started from the CLI with a model-centric config,
the official `openai` and `anthropic` SDKs as clients, the mock LLM as OpenAI, Anthropic and
Gemini providers. What the client gets, what the provider was sent, what the metrics say."""

from __future__ import annotations

import json
import socket
import ssl
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import openai
import pytest

from tests.e2e.conftest import (
    DEADLINE,
    Certs,
    GatewayFactory,
    Process,
    gateway_client,
    scrape_metrics,
    start_mock,
)

KEY = "sk-gateway-held-key"
CLIENT_KEY = "client-key-never-forwarded"


@pytest.fixture(scope="module")
def mock(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Process]:
    process = start_mock(tmp_path_factory.mktemp("llm-mode-mock"), name="llm-mock")
    yield process
    process.stop()


def _config(mock_port: int, extra_models: str = "", virtual: str = "") -> str:
    base = f"http://127.0.0.1:{mock_port}"
    return f"""config:
  statsAddr: 127.0.0.1:0
  adminAddr: "off"
  readinessAddr: "off"
llm:
  port: 0
  models:
  - name: smart
    provider: openAI
    params: {{model: gpt-mock-smart, apiKey: {KEY}, baseUrl: "{base}/v1"}}
  - name: echo
    provider: openAI
    params: {{apiKey: {KEY}, baseUrl: "{base}/echo/v1"}}
  - name: claude/*
    provider: anthropic
    params: {{apiKey: {KEY}, baseUrl: "{base}/v1"}}
    transformation:
      model: llmRequest.model.stripPrefix("claude/")
  - name: gemini-*
    provider: gemini
    params: {{apiKey: AIza-mock-key, baseUrl: "{base}"}}
  - name: azure-dated
    visibility: internal
    provider: azure
    params: {{model: my-deployment, apiKey: {KEY}, baseUrl: "{base}",
              azureResourceName: res, azureResourceType: openAI, azureApiVersion: 2024-10-21}}
  - name: azure-v1
    visibility: internal
    provider: azure
    params: {{apiKey: {KEY}, baseUrl: "{base}", azureResourceName: res,
              azureResourceType: openAI}}
{extra_models}
{virtual}
"""


AZURE_VIRTUAL = """  virtualModels:
  - name: azure
    routing:
      conditional:
        targets:
        - when: 'llmRequest.metadata.target == "azure-dated"'
          model: azure-dated
        - model: azure-v1
"""


@pytest.fixture(scope="module")
def gw(module_gateway: GatewayFactory, mock: Process) -> Process:
    return module_gateway(_config(mock.port, virtual=AZURE_VIRTUAL), expect_stats=True)


_CLIENTS: dict[tuple[str, int], Any] = {}


def oai(gw: Process) -> openai.OpenAI:
    """One SDK client per gateway (closed at the end of the module)."""
    client = _CLIENTS.get(("openai", gw.port))
    if client is None:
        client = _CLIENTS["openai", gw.port] = openai.OpenAI(
            base_url=f"http://127.0.0.1:{gw.port}/v1", api_key=CLIENT_KEY, max_retries=0,
            timeout=DEADLINE * 2,
        )
    return client  # type: ignore[no-any-return]


def claude(gw: Process) -> anthropic.Anthropic:
    client = _CLIENTS.get(("anthropic", gw.port))
    if client is None:
        client = _CLIENTS["anthropic", gw.port] = anthropic.Anthropic(
            base_url=f"http://127.0.0.1:{gw.port}", api_key=CLIENT_KEY, max_retries=0,
            timeout=DEADLINE * 2,
        )
    return client  # type: ignore[no-any-return]


@pytest.fixture(scope="module", autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    for client in _CLIENTS.values():
        client.close()
    _CLIENTS.clear()


MESSAGES: list[Any] = [
    {"role": "system", "content": "Be terse."},
    {"role": "user", "content": "Say hello."},
]


def test_openai_sdk_to_openai_provider_gets_the_provider_model(gw: Process) -> None:
    reply = oai(gw).chat.completions.create(model="smart", messages=MESSAGES)
    assert reply.model == "gpt-mock-smart"
    assert reply.choices[0].message.content
    assert reply.usage is not None and reply.usage.completion_tokens > 0


def test_provider_sees_the_gateway_key_never_the_clients(gw: Process) -> None:
    with gateway_client(gw.port) as client:
        response = client.post(
            "/v1/chat/completions",
            json={"model": "echo", "messages": MESSAGES},
            headers={"authorization": f"Bearer {CLIENT_KEY}", "accept-encoding": "gzip"},
        )
    assert response.status_code == 200, response.text
    seen = response.json()
    headers = {name.lower(): value for name, value in seen["headers"]}
    assert headers["authorization"] == f"Bearer {KEY}"
    assert CLIENT_KEY not in json.dumps(seen)
    assert "accept-encoding" not in headers  # the gateway reads (and may translate) the answer
    assert seen["target"] == "/echo/v1/chat/completions"


def test_models_list_through_the_sdk(gw: Process) -> None:
    ids = [model.id for model in oai(gw).models.list()]
    # Most specific pattern first (characters other than `*`), config order on ties.
    assert ids == ["claude/*", "gemini-*", "smart", "echo", "azure"]


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"model": "nope", "messages": []}, 404, "model_not_found"),
        ({"messages": []}, 400, "missing_model"),
        ("{broken", 400, "invalid_request_body"),
    ],
)
def test_router_errors(gw: Process, body: object, status: int, code: str) -> None:
    with gateway_client(gw.port) as client:
        content = body if isinstance(body, str) else json.dumps(body)
        response = client.post("/v1/chat/completions", content=content)
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"]["code"] == code


def test_openai_sdk_to_anthropic_provider_is_translated(gw: Process) -> None:
    reply = oai(gw).chat.completions.create(model="claude/haiku", messages=MESSAGES)
    assert reply.object == "chat.completion"
    assert reply.model == "haiku"
    assert reply.choices[0].message.content
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage is not None and reply.usage.prompt_tokens > 0


def test_openai_sdk_stream_to_anthropic_provider_is_translated_event_by_event(
    gw: Process,
) -> None:
    stream = oai(gw).chat.completions.create(
        model="claude/haiku", messages=MESSAGES, stream=True,
        stream_options={"include_usage": True},
    )
    text = ""
    usage = None
    finish = None
    for chunk in stream:
        assert chunk.object == "chat.completion.chunk"
        for choice in chunk.choices:
            text += choice.delta.content or ""
            finish = choice.finish_reason or finish
        usage = chunk.usage or usage
    assert text
    assert finish == "stop"
    assert usage is not None and usage.completion_tokens > 0


def test_anthropic_sdk_to_openai_provider_is_translated(gw: Process) -> None:
    message = claude(gw).messages.create(model="smart", max_tokens=64, messages=[
        {"role": "user", "content": "Say hello."}
    ])
    assert message.type == "message" and message.role == "assistant"
    assert message.model == "gpt-mock-smart"
    assert message.content[0].type == "text" and message.content[0].text
    assert message.usage.output_tokens > 0


def test_anthropic_sdk_stream_to_openai_provider(gw: Process) -> None:
    with claude(gw).messages.stream(model="smart", max_tokens=64, messages=[
        {"role": "user", "content": "Say hello."}
    ]) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text
    assert final.usage.output_tokens > 0
    assert final.stop_reason == "end_turn"


def test_anthropic_sdk_to_anthropic_provider_passes_through(gw: Process) -> None:
    message = claude(gw).messages.create(model="claude/haiku", max_tokens=64, messages=[
        {"role": "user", "content": "Say hello."}
    ])
    assert message.model == "haiku"
    assert message.content[0].text


def test_openai_sdk_to_gemini_native(gw: Process) -> None:
    reply = oai(gw).chat.completions.create(model="gemini-flash", messages=MESSAGES)
    assert reply.choices[0].message.content
    assert reply.usage is not None and reply.usage.total_tokens > 0
    stream = oai(gw).chat.completions.create(
        model="gemini-flash", messages=MESSAGES, stream=True,
    )
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text


def test_metrics_name_the_provider_and_models(gw: Process) -> None:
    oai(gw).chat.completions.create(model="claude/sonnet", messages=MESSAGES)
    samples = scrape_metrics(gw.extra_ports["stats"])
    tokens = [
        s for s in samples
        if s.name == "agentgateway_gen_ai_client_token_usage_sum"
        and s.labels.get("gen_ai_system") == "anthropic"
        and s.labels.get("gen_ai_request_model") == "sonnet"
    ]
    assert tokens, "no token usage recorded for the translated Anthropic call"


def test_failover_evicts_a_dead_target_and_serves_from_the_next(
    gateway: GatewayFactory, mock: Process
) -> None:
    dead = free_port()
    extra = f"""  - name: primary
    provider: openAI
    params: {{apiKey: {KEY}, baseUrl: "http://127.0.0.1:{dead}/v1"}}
    health:
      eviction: {{duration: 60s}}
  - name: backup
    provider: openAI
    params: {{model: gpt-backup, apiKey: {KEY}, baseUrl: "http://127.0.0.1:{mock.port}/v1"}}
"""
    virtual = """  virtualModels:
  - name: resilient
    routing:
      failover:
        targets:
        - {model: primary, priority: 0}
        - {model: backup, priority: 1}
"""
    gw = gateway(_config(mock.port, extra, virtual), expect_stats=True)
    statuses = []
    with gateway_client(gw.port) as client:
        for _ in range(20):
            response = client.post(
                "/v1/chat/completions", json={"model": "resilient", "messages": MESSAGES}
            )
            statuses.append(response.status_code)
            if response.status_code == 200:
                assert response.json()["model"] == "gpt-backup"
    # One request learns the primary is down (agentgateway's llm: mode does not retry it);
    # every later one goes to the backup.
    assert statuses[0] == 503
    assert statuses[1:] == [200] * 19
    assert "evicted" in gw.output()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize(
    ("model", "path"),
    [
        ("azure-v1", "/openai/v1/chat/completions"),
        ("azure-dated", "/openai/deployments/my-deployment/chat/completions"),
    ],
)
def test_azure_paths_by_api_version(gw: Process, mock: Process, model: str, path: str) -> None:
    """Internal models, so reached here through a conditional virtual model."""
    before = _by_path(mock).get(path, 0)
    with gateway_client(gw.port) as client:
        response = client.post(
            "/v1/chat/completions",
            json={"model": "azure", "messages": MESSAGES, "metadata": {"target": model}},
        )
    assert response.status_code == 200, response.text
    assert _by_path(mock).get(path, 0) == before + 1


def _by_path(mock: Process) -> dict[str, int]:
    stats = httpx.get(f"http://127.0.0.1:{mock.port}/mock/stats", timeout=DEADLINE).json()
    by_path: dict[str, int] = stats["by_path"]
    return by_path


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (
            {"model": "claude/haiku", "messages": [
                {"role": "user", "content": "hi"},
                {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function",
                 "function": {"name": "f", "arguments": {"not": "a string"}}}]},
            ]},
            "arguments",
        ),
        ({"model": "claude/haiku", "messages": "not a list"}, "messages"),
    ],
)
def test_requests_a_translation_cannot_express_are_400s(
    gw: Process, body: dict[str, Any], needle: str
) -> None:
    with gateway_client(gw.port) as client:
        response = client.post("/v1/chat/completions", json=body)
    assert response.status_code == 400, response.text
    assert response.text.startswith("failed to process LLM request: ")
    assert needle in response.text


def test_llm_tls_serves_https(gateway: GatewayFactory, mock: Process, certs: Certs) -> None:
    gw = gateway(f"""config: {{statsAddr: "off", adminAddr: "off", readinessAddr: "off"}}
llm:
  port: 0
  tls: {{cert: "{certs.cert_path}", key: "{certs.key_path}"}}
  models:
  - name: smart
    provider: openAI
    params: {{model: gpt-tls, apiKey: {KEY}, baseUrl: "http://127.0.0.1:{mock.port}/v1"}}
""")
    context = ssl.create_default_context(cafile=str(certs.ca_path))
    with httpx.Client(verify=context, timeout=DEADLINE) as client:
        response = client.post(f"https://localhost:{gw.port}/v1/chat/completions",
                               json={"model": "smart", "messages": MESSAGES})
    assert response.status_code == 200, response.text
    assert response.json()["model"] == "gpt-tls"
    with pytest.raises(httpx.HTTPError):  # plain HTTP on the TLS port is refused
        httpx.post(f"http://127.0.0.1:{gw.port}/v1/chat/completions",
                   json={"model": "smart", "messages": MESSAGES}, timeout=DEADLINE)
