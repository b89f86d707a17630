"""Per-model policies of the `llm:` form end to end: `promptCaching` markers, a
`finalTransformation` and `authorization`, as a recording provider and the client see them.
The listener's `apiKey` policy (`llm.policies`) gives each key a tier that the model rules
and expressions read as `apiKey.tier`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.e2e.conftest import (
    DEADLINE,
    GatewayFactory,
    Process,
    RawMessage,
    Upstream,
    UpstreamConnection,
    gateway_client,
    http_response,
)

GOLD = "gold-client-key"
SILVER = "silver-client-key"
EPHEMERAL = {"type": "ephemeral"}

ANTHROPIC_REPLY = {
    "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-mock",
    "content": [{"type": "text", "text": "Hello."}], "stop_reason": "end_turn",
    "stop_sequence": None, "usage": {"input_tokens": 12, "output_tokens": 2},
}  # fmt: skip
OPENAI_REPLY = {
    "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-mock",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello."},
                 "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 12, "completion_tokens": 2, "total_tokens": 14},
}  # fmt: skip


def _provider(conn: UpstreamConnection) -> None:
    """Anthropic on `/v1/messages`, OpenAI chat completions elsewhere; every request is
    recorded by the `Upstream`."""
    while (request := conn.read_request()) is not None:
        reply = ANTHROPIC_REPLY if request.target.endswith("/messages") else OPENAI_REPLY
        conn.send(http_response(200, json.dumps(reply).encode(),
                                [("content-type", "application/json")]))  # fmt: skip


@pytest.fixture(scope="module")
def provider() -> Iterator[Upstream]:
    with Upstream(_provider) as upstream:
        yield upstream


@pytest.fixture(scope="module")
def gw(module_gateway: GatewayFactory, provider: Upstream) -> Process:
    base = f"http://127.0.0.1:{provider.port}/v1"
    return module_gateway(f"""config:
  adminAddr: "off"
  readinessAddr: "off"
  statsAddr: "off"
llm:
  port: 0
  policies:
    apiKey:
      keys:
      - key: {GOLD}
        metadata: {{tier: gold}}
      - key: {SILVER}
        metadata: {{tier: silver}}
  models:
  - name: claude-cached
    provider: anthropic
    params: {{apiKey: provider-key, baseUrl: "{base}"}}
    promptCaching: {{minTokens: 10, cacheTools: true}}
  - name: shaped
    provider: openAI
    params: {{apiKey: provider-key, baseUrl: "{base}"}}
    finalTransformation:
      max_tokens: "32"
      user: apiKey.tier
      converted_messages: llmRequest.messages.size()
  - name: premium
    provider: openAI
    params: {{model: gpt-premium, apiKey: provider-key, baseUrl: "{base}"}}
    authorization:
      rules: ['apiKey.tier == "gold"']
  virtualModels:
  - name: resilient
    routing:
      failover:
        targets: [{{model: premium, priority: 0}}]
""")


def _client(gw: Process, key: str) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"http://127.0.0.1:{gw.port}/v1", api_key=key, max_retries=0,
        timeout=DEADLINE * 2,
    )  # fmt: skip


def _last(provider: Upstream, suffix: str) -> dict[str, Any]:
    with provider.lock:
        requests: list[RawMessage] = [r for r in provider.requests if r.target.endswith(suffix)]
    assert requests, f"the provider saw no request for {suffix}"
    doc: dict[str, Any] = json.loads(requests[-1].body)
    return doc


LONG_SYSTEM = "You are a careful assistant who answers questions about the weather briefly."
TOOL = {"type": "function", "function": {
    "name": "get_weather", "parameters": {"type": "object", "properties": {}}}}  # fmt: skip


def test_chat_to_anthropic_gets_cache_markers_where_agentgateway_puts_cache_points(
    gw: Process, provider: Upstream
) -> None:
    with _client(gw, GOLD) as client:
        reply = client.chat.completions.create(
            model="claude-cached",
            messages=[
                {"role": "system", "content": LONG_SYSTEM},
                {"role": "user", "content": "Weather in Oslo?"},
                {"role": "assistant", "content": "Cold."},
                {"role": "user", "content": "And tomorrow?"},
            ],
            tools=[TOOL],  # type: ignore[list-item]
        )
    assert reply.choices[0].message.content == "Hello."
    sent = _last(provider, "/v1/messages")
    # 13 words: an estimated 16 tokens, over minTokens 10.
    assert sent["system"] == [{"type": "text", "text": LONG_SYSTEM, "cache_control": EPHEMERAL}]
    marked = [
        i for i, m in enumerate(sent["messages"])
        if any("cache_control" in block for block in m["content"])
    ]  # fmt: skip
    assert marked == [1]  # the second-to-last message: the history before this turn
    assert sent["messages"][1]["content"][-1] == {
        "type": "text", "text": "Cold.", "cache_control": EPHEMERAL}
    assert sent["tools"][-1]["cache_control"] == EPHEMERAL


def test_a_short_system_prompt_and_a_first_turn_are_not_marked(
    gw: Process, provider: Upstream
) -> None:
    with _client(gw, GOLD) as client:
        client.chat.completions.create(
            model="claude-cached",
            messages=[{"role": "system", "content": "Be terse."},
                      {"role": "user", "content": "Hi"}],  # fmt: skip
        )
    sent = _last(provider, "/v1/messages")
    assert sent["system"] == "Be terse."
    # One message: no history to reuse yet, so no message marker either.
    assert "cache_control" not in json.dumps(sent)


def test_a_messages_client_keeps_its_own_markers(gw: Process, provider: Upstream) -> None:
    body = {
        "model": "claude-cached", "max_tokens": 16, "system": LONG_SYSTEM,
        "messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"},
                     {"role": "user", "content": "Again"}],
    }  # fmt: skip
    with gateway_client(gw.port) as client:
        response = client.post(
            "/v1/messages", json=body, headers={"authorization": f"Bearer {GOLD}"}
        )
    assert response.status_code == 200, response.text
    sent = _last(provider, "/v1/messages")
    assert "cache_control" not in json.dumps(sent)
    assert sent["messages"] == body["messages"]


def test_final_transformation_is_applied_to_the_translated_provider_request(
    gw: Process, provider: Upstream
) -> None:
    """A Messages client, an OpenAI provider: the expressions see the chat completions body
    the gateway made of it (the system prompt became a message) and the caller's key."""
    with gateway_client(gw.port) as client:
        response = client.post(
            "/v1/messages",
            json={"model": "shaped", "max_tokens": 500, "system": "Be terse.",
                  "messages": [{"role": "user", "content": "Hi"}]},
            headers={"authorization": f"Bearer {SILVER}"},
        )  # fmt: skip
    assert response.status_code == 200, response.text
    assert response.json()["type"] == "message"
    sent = _last(provider, "/v1/chat/completions")
    assert sent["messages"][0] == {"role": "system", "content": "Be terse."}
    assert sent["converted_messages"] == 2
    assert sent["max_tokens"] == 32
    assert sent["user"] == "silver"


def _error(response: httpx.Response) -> tuple[int, str, str]:
    return (
        response.status_code,
        response.headers["content-type"],
        response.json()["error"]["code"],
    )


def test_a_model_whose_authorization_denies_is_403_json(gw: Process) -> None:
    with gateway_client(gw.port) as client:
        chat = {"model": "premium", "messages": [{"role": "user", "content": "Hi"}]}
        denied = client.post(
            "/v1/chat/completions", json=chat, headers={"authorization": f"Bearer {SILVER}"}
        )
        allowed = client.post(
            "/v1/chat/completions", json=chat, headers={"authorization": f"Bearer {GOLD}"}
        )
    assert _error(denied) == (403, "application/json", "model_authorization_denied")
    assert denied.json()["error"]["message"] == "Model authorization denied"
    assert allowed.status_code == 200, allowed.text
    assert allowed.json()["model"] == "gpt-mock"


def test_models_list_shows_each_key_the_models_it_may_use(gw: Process) -> None:
    with _client(gw, GOLD) as client:
        gold = [m.id for m in client.models.list()]
    with _client(gw, SILVER) as client:
        silver = [m.id for m in client.models.list()]
    assert gold == ["claude-cached", "premium", "shaped", "resilient"]
    assert silver == ["claude-cached", "shaped", "resilient"]
    with pytest.raises(openai.PermissionDeniedError) as info:
        with _client(gw, SILVER) as client:
            client.chat.completions.create(
                model="premium", messages=[{"role": "user", "content": "Hi"}]
            )
    assert info.value.status_code == 403


def test_a_failover_target_denies_as_the_authorization_policy_does(gw: Process) -> None:
    """agentgateway checks a failover target's rules as a policy of its backend."""
    chat = {"model": "resilient", "messages": [{"role": "user", "content": "Hi"}]}
    with gateway_client(gw.port) as client:
        denied = client.post(
            "/v1/chat/completions", json=chat, headers={"authorization": f"Bearer {SILVER}"}
        )
        allowed = client.post(
            "/v1/chat/completions", json=chat, headers={"authorization": f"Bearer {GOLD}"}
        )
    assert denied.status_code == 403
    assert denied.headers["content-type"] == "text/plain"
    assert denied.text == "authorization failed"
    assert allowed.status_code == 200, allowed.text
