"""agentgateway's `custom` provider and its presets in the `llm:` form: what the loader makes
of them (endpoint, formats, telemetry name, refusals) and which format and path each call
goes out in (agentgateway's CHAT_TRANSLATIONS order and `set_default_path` for Custom)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agw_fast.config.load import load_config
from agw_fast.config.model import CustomFormat, LLMModel, LLMRouter
from agw_fast.errors import ConfigError
from agw_fast.llm.calls import prepare_call
from agw_fast.llm.exchange import LLMRequest
from agw_fast.llm.providers.openai import LLMRequestError


def _models(yaml: str) -> list[LLMModel]:
    config = load_config("llm:\n" + yaml, {}, base_dir=Path("."))
    target = config.binds[0].listeners[0].routes[0].backends[0].target
    assert isinstance(target, LLMRouter)
    return sorted(target.models, key=lambda m: m.name)


def _model(provider: str, params: str = "{}") -> LLMModel:
    (model,) = _models(f"  models:\n  - name: m\n    provider: {provider}\n    params: {params}\n")
    return model


# agentgateway's ProviderPreset: base URL -> (host, port, path prefix, TLS), name, formats.
PRESETS = {
    "cohere": ("api.cohere.ai", 443, None, True,
               "completions=/compatibility/v1/chat/completions "
               "embeddings=/compatibility/v1/embeddings rerank=/v2/rerank"),
    "ollama": ("localhost", 11434, "/v1", False, "completions responses embeddings"),
    "baseten": ("inference.baseten.co", 443, "/v1", True, "completions messages"),
    "cerebras": ("api.cerebras.ai", 443, "/v1", True, "completions"),
    "deepinfra": ("api.deepinfra.com", 443, "/v1/openai", True,
                  "completions messages=/anthropic/v1/messages embeddings"),
    "deepseek": ("api.deepseek.com", 443, "/v1", True,
                 "completions messages=/anthropic/v1/messages responses"),
    "groq": ("api.groq.com", 443, "/openai/v1", True, "completions responses"),
    "huggingface": ("router.huggingface.co", 443, "/v1", True, "completions responses"),
    "mistral": ("api.mistral.ai", 443, "/v1", True, "completions embeddings"),
    "openrouter": ("openrouter.ai", 443, "/api/v1", True,
                   "completions messages responses embeddings rerank"),
    "togetherai": ("api.together.xyz", 443, "/v1", True, "completions embeddings rerank"),
    "xai": ("api.x.ai", 443, "/v1", True, "completions responses realtime"),
    "fireworks": ("api.fireworks.ai", 443, "/inference/v1", True,
                  "completions messages responses embeddings rerank"),
}  # fmt: skip


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_presets_are_custom_providers_with_agentgateways_endpoints(preset: str) -> None:
    host, port, prefix, tls, formats = PRESETS[preset]
    model = _model(preset, "{apiKey: k}")
    assert model.provider == "custom" and model.provider_name == preset
    assert model.host_override is not None
    assert (model.host_override.host, model.host_override.port) == (host, port)
    assert model.path_prefix == prefix
    assert (model.backend_tls is not None) == tls
    expected = []
    for spec in formats.split():
        name, _, path = spec.partition("=")
        expected.append(CustomFormat(name, path or None))  # type: ignore[arg-type]
    assert model.formats == tuple(expected)


def test_a_preset_goes_where_the_model_says() -> None:
    model = _model("mistral", "{baseUrl: 'http://127.0.0.1:8080/mirror'}")
    assert model.host_override is not None and model.host_override.host == "127.0.0.1"
    assert model.path_prefix == "/mirror" and model.backend_tls is None
    # hostOverride alone also displaces the preset's endpoint, prefix and TLS.
    model = _model("mistral", "{hostOverride: 'gw.internal:9000'}")
    assert model.host_override is not None and model.host_override.port == 9000
    assert model.path_prefix is None and model.backend_tls is None


def test_custom_provider_fields() -> None:
    model = _model(
        "{custom: {model: served, providerOverride: vllm, formats: "
        "[{type: messages, path: /api/messages}, {type: completions}]}}",
        "{baseUrl: 'https://llm.example.com/v1'}",
    )
    assert model.provider == "custom" and model.provider_name == "vllm"
    assert model.model == "served"
    assert model.formats == (
        CustomFormat("messages", "/api/messages"), CustomFormat("completions"),
    )
    assert model.backend_tls is not None and model.path_prefix == "/v1"
    # params.model wins over the provider's model; without an override the name is "custom".
    model = _model(
        "{custom: {model: served, formats: [{type: completions}]}}",
        "{model: mine, hostOverride: 'h:80'}",
    )
    assert model.model == "mine" and model.provider_name == "custom"


def test_a_referenced_custom_provider_is_named_after_its_entry() -> None:
    # agentgateway's own fixture (llm_provider_reference_config.yaml) has this shape.
    models = _models(
        "  providers:\n"
        "  - name: completions-shared\n"
        "    provider: {custom: {formats: [{type: completions}]}}\n"
        "    params: {baseUrl: 'https://llm.example.com/v1'}\n"
        "  - name: named\n"
        "    provider: {custom: {providerOverride: mine, formats: [{type: completions}]}}\n"
        "    params: {baseUrl: 'https://llm.example.com/v1'}\n"
        "  - name: fast\n"
        "    provider: groq\n"
        "  models:\n"
        "  - {name: a/*, provider: {reference: completions-shared}}\n"
        "  - {name: b/*, provider: {reference: named}}\n"
        "  - {name: c/*, provider: {reference: fast}, params: {model: llama}}\n"
    )
    assert [(m.name, m.provider_name) for m in models] == [
        ("a/*", "completions-shared"), ("b/*", "mine"), ("c/*", "groq"),
    ]
    assert models[2].model == "llama" and models[2].host_override is not None


@pytest.mark.parametrize(
    ("provider", "params", "path", "message"),
    [
        ("{custom: {formats: []}}", "{baseUrl: 'http://h'}",
         "llm.models[0].provider.custom.formats",
         "custom provider for model m must specify at least one format"),
        ("{custom: {}}", "{baseUrl: 'http://h'}", "llm.models[0].provider.custom.formats",
         "at least one format"),
        ("{custom: {formats: [{type: completions}]}}", "{}", "llm.models[0].params.baseUrl",
         "custom provider for model m requires params.baseUrl"),
        ("{custom: {formats: [{type: completions}]}}", "{pathPrefix: /v1}",
         "llm.models[0].params.baseUrl", "requires params.baseUrl"),
        # The preset's endpoint is not applied when pathOverride is set (agentgateway's
        # apply_provider_defaults), which leaves it nowhere to go.
        ("groq", "{pathOverride: /x}", "llm.models[0].params.baseUrl",
         "provider groq for model m requires params.baseUrl"),
        ("{custom: {formats: [{type: chat}]}}", "{baseUrl: 'http://h'}",
         "llm.models[0].provider.custom.formats[0].type", "expected one of"),
        ("{custom: {formats: [{type: completions, path: v1/chat}]}}", "{baseUrl: 'http://h'}",
         "llm.models[0].provider.custom.formats[0].path", 'must start with "/"'),
        ("{custom: {formats: [{type: completions}], extra: 1}}", "{baseUrl: 'http://h'}",
         "llm.models[0].provider.custom.extra", "unknown field"),
        ("{custom: {formats: [{path: /x}]}}", "{baseUrl: 'http://h'}",
         "llm.models[0].provider.custom.formats[0].type", "required"),
        ("copilot", "{}", "llm.models[0].provider", "GH_COPILOT_TOKEN"),
    ],
)
def test_custom_provider_refusals_name_the_field(
    provider: str, params: str, path: str, message: str
) -> None:
    with pytest.raises(ConfigError) as info:
        _model(provider, params)
    assert info.value.path == path, str(info.value)
    assert message in str(info.value)


BODY = {"model": "m1", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}


def _call(
    model: LLMModel, route_type: str, target: str = "/v1/chat/completions",
    body: dict[str, object] | None = None,
) -> LLMRequest:
    obj = json.loads(json.dumps(body or BODY))
    return prepare_call(model, route_type, target.encode(), obj, json.dumps(obj).encode())


def _custom(formats: str, params: str = "{baseUrl: 'http://up:8000/base'}") -> LLMModel:
    return _model(f"{{custom: {{formats: [{formats}]}}}}", params)


@pytest.mark.parametrize(
    ("formats", "route_type", "target", "translation"),
    [
        # Passthrough first.
        ("{type: completions}", "completions", "/base/chat/completions", None),
        ("{type: messages}", "messages", "/base/messages", "MessagesPassthrough"),
        ("{type: responses}", "responses", "/base/responses", None),
        # Completions: native Gemini ahead of chat completions, then Messages.
        ("{type: completions}, {type: generateContent}", "completions",
         "/base/v1beta/models/m1:generateContent", "CompletionsFromGemini"),
        ("{type: messages}", "completions", "/base/messages", "MessagesToChatTranslation"),
        ("{type: completions}, {type: messages}", "completions", "/base/chat/completions", None),
        # Messages: to chat completions when the provider lacks Messages.
        ("{type: completions}", "messages", "/base/chat/completions",
         "ChatToMessagesTranslation"),
        # The other APIs only in their own format.
        ("{type: embeddings}", "embeddings", "/base/embeddings", None),
        ("{type: rerank}", "rerank", "/base/rerank", None),
        ("{type: anthropicTokenCount}", "anthropicTokenCount", "/base/messages/count_tokens",
         None),
    ],
)
def test_the_call_goes_out_in_the_first_format_that_serves_it(
    formats: str, route_type: str, target: str, translation: str | None
) -> None:
    request = _call(_custom(formats), route_type)
    assert request.target.decode() == target
    assert request.route_type == route_type  # the client's API, for telemetry
    assert type(request.translation).__name__ == (translation or "NoneType")
    assert request.provider == "custom"


def test_default_paths_without_a_prefix_follow_openai_and_anthropic() -> None:
    params = "{hostOverride: 'up:8000'}"
    assert _call(_custom("{type: completions}", params), "completions").target == (
        b"/v1/chat/completions"
    )
    assert _call(_custom("{type: messages}", params), "messages").target == b"/v1/messages"
    gemini = _custom("{type: generateContent}", params)
    stream = _call(gemini, "completions", body={**BODY, "stream": True})
    assert stream.target == b"/v1beta/models/m1:streamGenerateContent?alt=sse"


def test_a_configured_format_path_wins_verbatim_and_keeps_the_clients_query() -> None:
    model = _custom("{type: completions, path: '/fixed/chat?api=2'}")
    assert _call(model, "completions", "/v1/chat/completions?trace=1").target == (
        b"/fixed/chat?api=2&trace=1"
    )
    # Only the first entry of a format counts.
    model = _custom("{type: completions}, {type: completions, path: /second}")
    assert _call(model, "completions").target == b"/base/chat/completions"


def test_pathoverride_replaces_path_and_query() -> None:
    model = _custom("{type: completions, path: /fixed}", "{hostOverride: 'h:1', pathOverride: /o}")
    assert _call(model, "completions", "/v1/chat/completions?x=1").target == b"/o"


def test_native_gemini_keeps_the_model_in_the_path_and_drops_the_clients_alt() -> None:
    model = _custom("{type: generateContent}, {type: geminiCountTokens}")
    request = _call(
        model, "generateContent", "/v1beta/models/m1:streamGenerateContent?alt=sse&key=1",
        body={"model": "m1", "contents": []},
    )
    assert request.target == b"/base/v1beta/models/m1:streamGenerateContent?alt=sse&key=1"
    assert request.stream and b"model" not in request.body
    request = _call(
        model, "geminiCountTokens", "/v1beta/models/m1:countTokens?alt=json",
        body={"model": "m1", "contents": []},
    )
    assert request.target == b"/base/v1beta/models/m1:countTokens"


def test_a_stream_to_a_completions_provider_asks_for_usage() -> None:
    request = _call(_custom("{type: completions}"), "completions", body={**BODY, "stream": True})
    assert json.loads(request.body)["stream_options"] == {"include_usage": True}


@pytest.mark.parametrize(
    ("formats", "route_type", "status", "message"),
    [
        ("{type: completions}", "embeddings", 400,
         "unsupported conversion: from embeddings to provider custom"),
        ("{type: completions}", "generateContent", 400, "from generateContent"),
        ("{type: embeddings}", "completions", 400, "from completions"),
        # agentgateway would translate this to the Responses API; agw-fast cannot.
        ("{type: responses}", "messages", 501, "from messages to responses"),
    ],
)
def test_calls_the_provider_cannot_take(
    formats: str, route_type: str, status: int, message: str
) -> None:
    with pytest.raises(LLMRequestError) as info:
        _call(_custom(formats), route_type, body={**BODY, "contents": []})
    assert info.value.status == status
    assert message in info.value.message


def test_presets_paths_and_names() -> None:
    cohere = _model("cohere")
    request = _call(cohere, "rerank", "/v2/rerank", body={"model": "r", "query": "q"})
    assert request.target == b"/v2/rerank" and request.provider == "cohere"
    deepseek = _model("deepseek")
    assert _call(deepseek, "messages").target == b"/anthropic/v1/messages"
    assert _call(deepseek, "completions").target == b"/v1/chat/completions"
    groq = _model("groq")
    assert _call(groq, "responses").target == b"/openai/v1/responses"
    assert _call(groq, "messages").target == b"/openai/v1/chat/completions"
