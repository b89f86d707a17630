"""`prepare_call`: the provider path, body and translation for each route type."""

from __future__ import annotations

import json

import pytest

from agw_fast.config.model import AzureParams, HostBackend, LLMModel
from agw_fast.llm.calls import prepare_call
from agw_fast.llm.providers.openai import LLMRequestError

MESSAGES = [{"role": "user", "content": "hi"}]


def _model(provider: str, **fields: object) -> LLMModel:
    return LLMModel(name="m", provider=provider, path="llm.models[0]", **fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("model", "route_type", "body", "target"),
    [
        (_model("openAI"), "completions", {"model": "x", "messages": MESSAGES},
         b"/v1/chat/completions"),
        (_model("openAI", path_prefix="/proxy/v1"), "embeddings", {"model": "x", "input": "a"},
         b"/proxy/v1/embeddings"),
        (_model("anthropic"), "completions", {"model": "x", "messages": MESSAGES},
         b"/v1/messages"),
        (_model("anthropic"), "anthropicTokenCount", {"model": "x", "messages": MESSAGES},
         b"/v1/messages/count_tokens"),
        (_model("gemini"), "completions", {"model": "gemini-2.5-flash", "messages": MESSAGES},
         b"/v1beta/models/gemini-2.5-flash:generateContent"),
        (_model("gemini"), "completions",
         {"model": "gemini-2.5-flash", "messages": MESSAGES, "stream": True},
         b"/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"),
        (_model("gemini"), "messages", {"model": "g", "max_tokens": 5, "messages": MESSAGES},
         b"/v1beta/openai/chat/completions"),
        (_model("azure", azure=AzureParams("r", "openAI")), "completions",
         {"model": "x", "messages": MESSAGES}, b"/openai/v1/chat/completions"),
        (_model("azure", model="dep", azure=AzureParams("r", "openAI", "2024-10-21")),
         "completions", {"model": "dep", "messages": MESSAGES},
         b"/openai/deployments/dep/chat/completions?api-version=2024-10-21"),
        (_model("azure", azure=AzureParams("r", "foundry", None, "proj")), "messages",
         {"model": "claude-x", "max_tokens": 5, "messages": MESSAGES},
         b"/anthropic/v1/messages"),
        (_model("azure", azure=AzureParams("r", "foundry", None, "proj")), "completions",
         {"model": "gpt-x", "messages": MESSAGES},
         b"/api/projects/proj/openai/v1/chat/completions"),
        (_model("azure", azure=AzureParams("r", "foundry", None, "proj")), "completions",
         {"model": "claude-x", "messages": MESSAGES}, b"/anthropic/v1/messages"),
        (_model("openAI", path_override="/fixed?x=1"), "completions",
         {"model": "x", "messages": MESSAGES}, b"/fixed?x=1"),
    ],
)
def test_paths(model: LLMModel, route_type: str, body: dict[str, object], target: bytes) -> None:
    call = prepare_call(model, route_type, b"/v1/whatever", body, json.dumps(body).encode())
    assert call.target == target


def test_passthrough_sends_the_clients_bytes_and_path() -> None:
    raw = b'{"odd": true}'
    call = prepare_call(_model("openAI", host_override=HostBackend("h", 1)), "passthrough",
                        b"/v1/files?purpose=x", None, raw)
    assert (call.target, call.body) == (b"/v1/files?purpose=x", raw)


@pytest.mark.parametrize(
    ("provider", "route_type"),
    [("anthropic", "responses"), ("anthropic", "embeddings"), ("openAI", "generateContent"),
     ("openAI", "anthropicTokenCount")],
)
def test_conversions_a_provider_lacks_are_400(provider: str, route_type: str) -> None:
    body = {"model": "x", "messages": MESSAGES, "input": "a"}
    with pytest.raises(LLMRequestError) as info:
        prepare_call(_model(provider), route_type, b"/", body, b"{}")
    assert info.value.status == 400
    assert "unsupported conversion" in info.value.message


def test_a_messages_client_gets_googles_errors_as_anthropic_errors() -> None:
    body = {"model": "g", "max_tokens": 5, "messages": MESSAGES}
    call = prepare_call(_model("gemini"), "messages", b"/v1/messages", body, b"")
    assert call.translation is not None
    google = json.dumps({"error": {"code": 429, "message": "slow down",
                                   "status": "RESOURCE_EXHAUSTED"}}).encode()
    error = json.loads(call.translation.error_json(429, google))
    assert error["type"] == "error"
    assert error["error"]["message"] == "slow down"
    openai_shaped = json.dumps({"error": {"message": "bad", "type": "invalid_request_error"}})
    error = json.loads(call.translation.error_json(400, openai_shaped.encode()))
    assert error["type"] == "error" and error["error"]["message"] == "bad"


def test_an_unchanged_body_is_sent_as_the_client_wrote_it() -> None:
    raw = b'{ "messages": [{"role": "user", "content": "hi"}],  "model": "x" }'
    obj = json.loads(raw)
    call = prepare_call(_model("openAI"), "completions", b"/v1/chat/completions", obj, raw,
                        changed=False)
    assert call.body is raw
    obj["stream"] = True  # a stream gets include_usage: re-serialised
    streamed = prepare_call(_model("openAI"), "completions", b"/", obj, raw, changed=False)
    assert json.loads(streamed.body)["stream_options"] == {"include_usage": True}
