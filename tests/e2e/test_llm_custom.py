"""agentgateway's `custom` provider and its presets in the `llm:` form, end to end: the gateway
from the CLI, the official SDKs as clients, the mock LLM as the vendor. What the client gets,
which path and credential the provider saw, how telemetry names the provider."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import openai
import pytest

from tests.e2e.conftest import (
    DEADLINE,
    GatewayFactory,
    Process,
    gateway_client,
    scrape_metrics,
    start_mock,
)

KEY = "sk-vendor-key"
CLIENT_KEY = "client-key-never-forwarded"
MESSAGES: list[Any] = [
    {"role": "system", "content": "Be terse."},
    {"role": "user", "content": "Say hello."},
]


@pytest.fixture(scope="module")
def mock(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Process]:
    process = start_mock(tmp_path_factory.mktemp("llm-custom-mock"), name="custom-mock")
    yield process
    process.stop()


def _config(mock_port: int) -> str:
    base = f"http://127.0.0.1:{mock_port}"
    return f"""config:
  statsAddr: 127.0.0.1:0
  adminAddr: "off"
  readinessAddr: "off"
llm:
  port: 0
  providers:
  - name: shared-vllm
    provider:
      custom:
        formats: [{{type: completions}}]
    params: {{apiKey: {KEY}, baseUrl: "{base}/shared/v1"}}
  models:
  - name: plain
    provider:
      custom:
        formats: [{{type: completions}}]
    params: {{apiKey: {KEY}, baseUrl: "{base}/vendor/v1"}}
  - name: fixed
    provider:
      custom:
        model: fixed-model
        providerOverride: fixedco
        formats: [{{type: completions, path: "/echo/fixed/chat"}}]
    params: {{apiKey: {KEY}, baseUrl: "{base}/not-used"}}
  - name: claude-compat
    provider:
      custom:
        formats: [{{type: messages}}]
    params: {{model: compat-claude, apiKey: {KEY}, baseUrl: "{base}/anthropic/v1"}}
    # agentgateway sends no anthropic-version to a custom provider; this vendor wants one.
    requestHeaders:
      set: {{anthropic-version: "2023-06-01"}}
  - name: gem
    provider:
      custom:
        formats: [{{type: completions}}, {{type: generateContent}}]
    params: {{model: gemini-mock, apiKey: {KEY}, baseUrl: "{base}"}}
  - name: groq/*
    provider: groq
    params: {{apiKey: {KEY}, baseUrl: "{base}/openai/v1"}}
    transformation:
      model: llmRequest.model.stripPrefix("groq/")
  - name: cohere
    provider: cohere
    params: {{apiKey: {KEY}, baseUrl: "{base}/elsewhere"}}
  - name: shared/*
    provider: {{reference: shared-vllm}}
"""


@pytest.fixture(scope="module")
def gw(module_gateway: GatewayFactory, mock: Process) -> Process:
    return module_gateway(_config(mock.port), expect_stats=True)


_CLIENTS: dict[tuple[str, int], Any] = {}


def oai(gw: Process) -> openai.OpenAI:
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


def _mock_paths(mock: Process) -> dict[str, int]:
    stats = httpx.get(f"http://127.0.0.1:{mock.port}/mock/stats", timeout=DEADLINE).json()
    return stats["by_path"]  # type: ignore[no-any-return]


def _echoed(gw: Process, path: str, body: dict[str, Any]) -> dict[str, Any]:
    with gateway_client(gw.port) as client:
        response = client.post(
            path, json=body, headers={"authorization": f"Bearer {CLIENT_KEY}"}
        )
    assert response.status_code == 200, response.text
    seen: dict[str, Any] = response.json()
    seen["headers"] = {name.lower(): value for name, value in seen["headers"]}
    return seen


def test_custom_completions_provider_through_the_openai_sdk(gw: Process, mock: Process) -> None:
    before = _mock_paths(mock).get("/vendor/v1/chat/completions", 0)
    reply = oai(gw).chat.completions.create(model="plain", messages=MESSAGES)
    assert reply.object == "chat.completion" and reply.model == "plain"
    assert reply.choices[0].message.content
    assert reply.usage is not None and reply.usage.completion_tokens > 0
    # The default path for `completions` under the baseUrl's prefix.
    assert _mock_paths(mock)["/vendor/v1/chat/completions"] == before + 1


def test_a_format_path_is_sent_verbatim_with_the_gateways_key(gw: Process) -> None:
    seen = _echoed(gw, "/v1/chat/completions?trace=7", {"model": "fixed", "messages": MESSAGES})
    assert seen["target"] == "/echo/fixed/chat?trace=7"
    assert seen["headers"]["authorization"] == f"Bearer {KEY}"
    assert CLIENT_KEY not in json.dumps(seen)
    assert "anthropic-version" not in seen["headers"]


def test_openai_sdk_to_a_messages_only_provider_is_translated(gw: Process, mock: Process) -> None:
    reply = oai(gw).chat.completions.create(model="claude-compat", messages=MESSAGES)
    assert reply.object == "chat.completion"
    assert reply.model == "compat-claude"
    assert reply.choices[0].message.content
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage is not None and reply.usage.prompt_tokens > 0
    assert _mock_paths(mock).get("/anthropic/v1/messages", 0) >= 1


def test_openai_sdk_stream_to_a_messages_only_provider(gw: Process) -> None:
    stream = oai(gw).chat.completions.create(
        model="claude-compat", messages=MESSAGES, stream=True,
        stream_options={"include_usage": True},
    )
    text, usage, finish = "", None, None
    for chunk in stream:
        assert chunk.object == "chat.completion.chunk"
        for choice in chunk.choices:
            text += choice.delta.content or ""
            finish = choice.finish_reason or finish
        usage = chunk.usage or usage
    assert text and finish == "stop"
    assert usage is not None and usage.completion_tokens > 0


def test_anthropic_sdk_to_a_messages_provider_passes_through(gw: Process) -> None:
    message = claude(gw).messages.create(model="claude-compat", max_tokens=64, messages=[
        {"role": "user", "content": "Say hello."}
    ])
    assert message.model == "compat-claude"
    assert message.content[0].type == "text" and message.content[0].text


def test_anthropic_sdk_to_a_completions_provider_is_translated(gw: Process) -> None:
    message = claude(gw).messages.create(model="plain", max_tokens=64, messages=[
        {"role": "user", "content": "Say hello."}
    ])
    assert message.type == "message" and message.content[0].text
    assert message.usage.output_tokens > 0


def test_completions_prefer_native_gemini_when_the_provider_lists_it(
    gw: Process, mock: Process
) -> None:
    reply = oai(gw).chat.completions.create(model="gem", messages=MESSAGES)
    assert reply.choices[0].message.content
    assert reply.usage is not None and reply.usage.total_tokens > 0
    assert _mock_paths(mock).get("/v1beta/models/gemini-mock:generateContent", 0) >= 1


def test_preset_pointed_at_the_mock(gw: Process, mock: Process) -> None:
    reply = oai(gw).chat.completions.create(model="groq/llama-3.1-8b-instant", messages=MESSAGES)
    assert reply.model == "llama-3.1-8b-instant"
    assert reply.choices[0].message.content
    assert _mock_paths(mock).get("/openai/v1/chat/completions", 0) >= 1


def test_cohere_preset_uses_its_fixed_paths(gw: Process, mock: Process) -> None:
    # A format's fixed path is absolute: the baseUrl's path (here /elsewhere) does not
    # prefix it.
    reply = oai(gw).chat.completions.create(model="cohere", messages=MESSAGES)
    assert reply.choices[0].message.content
    assert _mock_paths(mock).get("/compatibility/v1/chat/completions", 0) >= 1
    embedding = oai(gw).embeddings.create(model="cohere", input="hello")
    assert embedding.data and embedding.data[0].embedding
    assert _mock_paths(mock).get("/compatibility/v1/embeddings", 0) >= 1


@pytest.mark.parametrize(
    ("path", "body", "status", "needle"),
    [
        # groq takes no embeddings.
        ("/v1/embeddings", {"model": "groq/x", "input": "hi"}, 400,
         "unsupported conversion: from embeddings to provider groq"),
    ],
)
def test_calls_a_provider_cannot_take_are_refused(
    gw: Process, path: str, body: dict[str, Any], status: int, needle: str
) -> None:
    with gateway_client(gw.port) as client:
        response = client.post(path, json=body)
    assert response.status_code == status, response.text
    assert needle in response.text


def test_responses_client_to_a_completions_provider_is_translated(gw: Process) -> None:
    response = oai(gw).responses.create(model="plain", input="hi")
    assert response.object == "response" and response.status == "completed"
    assert response.output_text


def test_metrics_name_the_preset_and_the_custom_provider(gw: Process) -> None:
    oai(gw).chat.completions.create(model="groq/metered", messages=MESSAGES)
    oai(gw).chat.completions.create(model="shared/metered", messages=MESSAGES)
    samples = scrape_metrics(gw.extra_ports["stats"])
    systems = {
        (s.labels.get("gen_ai_system"), s.labels.get("gen_ai_request_model"))
        for s in samples
        if s.name == "agentgateway_gen_ai_client_token_usage_sum"
    }
    assert ("groq", "metered") in systems
    # A referenced custom provider is named after its llm.providers entry.
    assert ("shared-vllm", "shared/metered") in systems
