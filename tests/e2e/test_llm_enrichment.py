"""The binds form's `policies.ai` request shaping end to end: `prompts`, `modelAliases`,
`defaults` and `overrides` as a recording provider receives them, with the official `openai`
SDK (chat completions, whole and streamed, and the Responses API) on an OpenAI provider and
with the `anthropic` SDK (Messages) and the `openai` SDK (translated to Messages) on an
Anthropic provider. A route without these policies still sends the client's bytes as they
are (the OpenAI fast path)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pytest

from tests.e2e.conftest import (
    DEADLINE,
    GatewayFactory,
    Process,
    RawMessage,
    Upstream,
    UpstreamConnection,
    http_response,
)

PREPEND = {"role": "system", "content": "You are terse."}
APPEND = {"role": "user", "content": "Answer in French."}

CHAT_REPLY = {
    "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-4o-2024",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Bonjour."},
                 "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 12, "completion_tokens": 2, "total_tokens": 14},
}  # fmt: skip
RESPONSES_REPLY = {
    "id": "resp_1", "object": "response", "created_at": 1, "status": "completed",
    "model": "gpt-4o-2024", "output": [{
        "type": "message", "id": "msg_1", "status": "completed", "role": "assistant",
        "content": [{"type": "output_text", "text": "Bonjour.", "annotations": []}]}],
    "usage": {"input_tokens": 12, "output_tokens": 2, "total_tokens": 14,
              "input_tokens_details": {"cached_tokens": 0},
              "output_tokens_details": {"reasoning_tokens": 0}},
}  # fmt: skip
MESSAGES_REPLY = {
    "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
    "content": [{"type": "text", "text": "Bonjour."}], "stop_reason": "end_turn",
    "stop_sequence": None, "usage": {"input_tokens": 12, "output_tokens": 2},
}  # fmt: skip
STREAM = [
    {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o-2024",
     "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Bon"},
                  "finish_reason": None}]},
    {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o-2024",
     "choices": [{"index": 0, "delta": {"content": "jour."}, "finish_reason": "stop"}]},
    {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o-2024",
     "choices": [], "usage": {"prompt_tokens": 12, "completion_tokens": 2, "total_tokens": 14}},
]  # fmt: skip


def _provider(conn: UpstreamConnection) -> None:
    """Anthropic on `/v1/messages`, the Responses API on `/v1/responses`, chat completions
    (streamed when asked) elsewhere; the `Upstream` records every request."""
    while (request := conn.read_request()) is not None:
        json_type = [("content-type", "application/json")]
        if request.target.endswith("/v1/messages"):
            conn.send(http_response(200, json.dumps(MESSAGES_REPLY).encode(), json_type))
        elif request.target.endswith("/v1/responses"):
            conn.send(http_response(200, json.dumps(RESPONSES_REPLY).encode(), json_type))
        elif json.loads(request.body).get("stream") is True:
            events = b"".join(b"data: %s\n\n" % json.dumps(e).encode() for e in STREAM)
            conn.send(http_response(200, events + b"data: [DONE]\n\n",
                                    [("content-type", "text/event-stream")]))  # fmt: skip
        else:
            conn.send(http_response(200, json.dumps(CHAT_REPLY).encode(), json_type))


@pytest.fixture(scope="module")
def provider() -> Iterator[Upstream]:
    with Upstream(_provider) as upstream:
        yield upstream


@pytest.fixture(scope="module")
def gw(module_gateway: GatewayFactory, provider: Upstream) -> Process:
    upstream = f"127.0.0.1:{provider.port}"
    prompts = (
        "prompts: {prepend: [{role: system, content: You are terse.}],"
        " append: [{role: user, content: Answer in French.}]}"
    )
    return module_gateway(f"""config:
  adminAddr: "off"
  readinessAddr: "off"
  statsAddr: "off"
binds:
- port: 0
  listeners:
  - routes:
    - name: openai
      matches: [{{path: {{pathPrefix: /openai/}}}}]
      backends:
      - ai: {{name: openai, provider: {{openAI: {{}}}}, hostOverride: "{upstream}"}}
        policies: {{backendAuth: {{key: provider-key}}}}
      policies:
        ai:
          routes: {{/v1/chat/completions: completions, /v1/responses: responses}}
          {prompts}
          modelAliases: {{fast: gpt-4o-mini, "gpt-4*": gpt-4o-2024}}
          defaults: {{temperature: 0.2, max_tokens: 50}}
          overrides: {{max_tokens: 64}}
    - name: anthropic
      matches: [{{path: {{pathPrefix: /anthropic/}}}}]
      backends:
      - ai: {{name: claude, provider: {{anthropic: {{}}}}, hostOverride: "{upstream}"}}
        policies:
          backendAuth: {{key: provider-key}}
          ai:
            {prompts}
            modelAliases: {{"claude-*": claude-sonnet-4-5}}
      policies:
        ai:
          routes: {{/v1/messages: messages, /v1/chat/completions: completions}}
          defaults: {{top_p: 0.9}}
          overrides: {{temperature: 0.0}}
    - name: plain
      matches: [{{path: {{pathPrefix: /plain/}}}}]
      backends:
      - ai: {{name: openai, provider: {{openAI: {{}}}}, hostOverride: "{upstream}"}}
        policies: {{backendAuth: {{key: provider-key}}}}
""")


def _openai(gw: Process, prefix: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"http://127.0.0.1:{gw.port}/{prefix}/v1", api_key="client",
                         max_retries=0, timeout=DEADLINE * 2)  # fmt: skip


@pytest.fixture(scope="module")
def openai_route(gw: Process) -> Iterator[openai.OpenAI]:
    with _openai(gw, "openai") as client:
        yield client


def _last(provider: Upstream) -> tuple[RawMessage, dict[str, Any]]:
    with provider.lock:
        request = provider.requests[-1]
    body = json.loads(request.body)
    assert isinstance(body, dict)
    return request, body


def test_chat_gets_prompts_alias_defaults_and_overrides(
    openai_route: openai.OpenAI, provider: Upstream
) -> None:
    completion = openai_route.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "Say hello."}], max_tokens=500
    )
    assert completion.choices[0].message.content == "Bonjour."
    request, body = _last(provider)
    # hostOverride without pathPrefix: the client's path, as on the fast path.
    assert request.target == "/openai/v1/chat/completions"
    assert request.header("authorization") == "Bearer provider-key"
    assert body["model"] == "gpt-4o-2024"  # `gpt-4*`: the wildcard alias
    assert body["messages"] == [PREPEND, {"role": "user", "content": "Say hello."}, APPEND]
    assert body["max_tokens"] == 64  # the override replaced the client's 500
    assert body["temperature"] == 0.2  # a default: the client sent none


def test_client_values_beat_defaults_and_exact_aliases_win(
    openai_route: openai.OpenAI, provider: Upstream
) -> None:
    openai_route.chat.completions.create(
        model="fast", messages=[{"role": "user", "content": "Hi."}], temperature=0.9
    )
    _, body = _last(provider)
    assert body["model"] == "gpt-4o-mini"
    assert body["temperature"] == 0.9 and body["max_tokens"] == 64


def test_streamed_chat_is_shaped_and_relayed(
    openai_route: openai.OpenAI, provider: Upstream
) -> None:
    stream = openai_route.chat.completions.create(
        model="gpt-4.1", messages=[{"role": "user", "content": "Hi."}], stream=True
    )
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert text == "Bonjour."
    _, body = _last(provider)
    assert body["model"] == "gpt-4o-2024"
    assert body["stream_options"] == {"include_usage": True}
    assert body["messages"][0] == PREPEND and body["messages"][-1] == APPEND


def test_responses_input_text_gets_prompt_items(
    openai_route: openai.OpenAI, provider: Upstream
) -> None:
    response = openai_route.responses.create(model="fast", input="Say hello.")
    assert response.output_text == "Bonjour."
    request, body = _last(provider)
    assert request.target == "/openai/v1/responses"
    assert body["model"] == "gpt-4o-mini"
    assert body["input"] == [
        {"type": "message", "role": "system",
         "content": [{"type": "input_text", "text": "You are terse."}]},
        {"type": "message", "role": "user",
         "content": [{"type": "input_text", "text": "Say hello."}]},
        {"type": "message", "role": "user",
         "content": [{"type": "input_text", "text": "Answer in French."}]},
    ]  # fmt: skip


def test_anthropic_messages_get_system_prompts_and_messages(
    gw: Process, provider: Upstream
) -> None:
    with anthropic.Anthropic(base_url=f"http://127.0.0.1:{gw.port}/anthropic", api_key="client",
                             max_retries=0, timeout=DEADLINE * 2) as client:  # fmt: skip
        message = client.messages.create(
            model="claude-latest", max_tokens=100, system="Own system prompt.",
            messages=[{"role": "user", "content": "Say hello."}], extra_body={"temperature": 1.0},
        )  # fmt: skip
    assert message.content[0].type == "text" and message.content[0].text == "Bonjour."
    request, body = _last(provider)
    assert request.target == "/v1/messages"
    assert request.header("x-api-key") == "provider-key"
    assert body["model"] == "claude-sonnet-4-5"
    assert body["system"] == [{"type": "text", "text": "You are terse."},
                              {"type": "text", "text": "Own system prompt."}]  # fmt: skip
    assert body["messages"] == [{"role": "user", "content": "Say hello."}, APPEND]
    assert body["temperature"] == 0.0 and body["top_p"] == 0.9


def test_chat_translated_to_anthropic_carries_the_prompts(
    gw: Process, provider: Upstream
) -> None:
    with _openai(gw, "anthropic") as client:
        completion = client.chat.completions.create(
            model="claude-x", messages=[{"role": "user", "content": "Say hello."}],
            max_tokens=100,
        )  # fmt: skip
    assert completion.choices[0].message.content == "Bonjour."
    assert completion.model == "claude-sonnet-4-5"
    request, body = _last(provider)
    assert request.target == "/v1/messages"
    assert body["model"] == "claude-sonnet-4-5"
    # The prepended system message became Anthropic's system prompt in translation.
    assert body["system"] == "You are terse."
    assert body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "Say hello."}]},
        {"role": "user", "content": [{"type": "text", "text": "Answer in French."}]},
    ]
    assert body["temperature"] == 0.0 and body["top_p"] == 0.9


def test_a_route_without_shaping_sends_the_client_bytes(gw: Process, provider: Upstream) -> None:
    with _openai(gw, "plain") as client:
        client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "Say hello."}]
        )
    request, body = _last(provider)
    assert request.target == "/plain/v1/chat/completions"  # hostOverride: the client's path
    assert body == {"messages": [{"role": "user", "content": "Say hello."}], "model": "gpt-4o"}
