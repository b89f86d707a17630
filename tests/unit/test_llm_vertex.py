"""The `vertex` provider: what the loaders make of it, which Vertex API each call goes to
(agentgateway's vertex.rs tables), the bodies (agentgateway's golden fixtures), and the
compiled backend's credential."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from agw_fast.config.load import load_config
from agw_fast.config.model import AIBackend, LLMModel, LLMRouter, VertexParams
from agw_fast.errors import ConfigError
from agw_fast.llm.calls import default_host, prepare_call
from agw_fast.llm.exchange import LLMRequest
from agw_fast.llm.providers.openai import LLMRequestError
from agw_fast.llm.providers.vertex import (
    AccessToken,
    VertexEmbeddings,
    anthropic_model,
    gemini_model,
    vertex_host,
)
from agw_fast.llm.router import ModelRouter
from agw_fast.plan import RuntimeBackend, compile_config
from agw_fast.server.google_token import refresh_delay

FIXTURES = Path(__file__).parent.parent / "data" / "agentgateway-llm"
REQUESTS = FIXTURES / "requests"


def snapshot(path: Path) -> dict[str, object]:
    """The JSON of an insta snapshot (after its YAML header)."""
    value = json.loads(path.read_text().split("\n---\n", 1)[1])
    assert isinstance(value, dict)
    return value


def _models(yaml: str) -> list[LLMModel]:
    config = load_config("llm:\n" + yaml, {}, base_dir=Path("."))
    target = config.binds[0].listeners[0].routes[0].backends[0].target
    assert isinstance(target, LLMRouter)
    return list(target.models)


def _model(params: str = "{vertexProject: p}") -> LLMModel:
    (model,) = _models(f"  models:\n  - name: '*'\n    provider: vertex\n    params: {params}\n")
    return model


def _call(route_type: str, body: dict[str, object], model: LLMModel | None = None,
          client_path: str = "/v1/chat/completions") -> LLMRequest:  # fmt: skip
    return prepare_call(
        model or _model(), route_type, client_path.encode(), body, json.dumps(body).encode()
    )


def _body(request: LLMRequest) -> object:
    return json.loads(request.body)


# ---------------------------------------------------------------- loading


def test_llm_form_reads_project_and_region() -> None:
    model = _model("{vertexProject: my-project, vertexRegion: us-central1, model: gemini-2.5-pro}")
    assert model.provider == "vertex"
    assert model.vertex == VertexParams("my-project", "us-central1")
    assert model.model == "gemini-2.5-pro"
    assert default_host(model) == "us-central1-aiplatform.googleapis.com"


@pytest.mark.parametrize(
    ("params", "where", "message"),
    [
        ("{vertexRegion: us-central1}", "params.vertexProject", "vertex requires vertexProject"),
        ("{vertexProject: 'a/b'}", "params.vertexProject", "invalid Google Cloud project ID"),
        ("{vertexProject: p, vertexRegion: 'us central'}", "params.vertexRegion",
         "invalid Vertex AI region"),
    ],
)  # fmt: skip
def test_llm_form_refuses_bad_vertex_params(params: str, where: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _model(params)
    assert caught.value.path == f"llm.models[0].{where}"
    assert message in str(caught.value)


def test_other_providers_ignore_vertex_params() -> None:
    (model,) = _models(
        "  models:\n  - name: m\n    provider: openAI\n    params: {vertexProject: p}\n"
    )
    assert model.vertex is None


def test_binds_form_vertex_provider() -> None:
    text = """binds:
- port: 0
  listeners:
  - routes:
    - backends:
      - ai:
          name: v
          provider: {vertex: {projectId: proj, region: europe-west4, model: gemini-2.5-flash}}
"""
    config = load_config(text, {}, base_dir=Path("."))
    target = config.binds[0].listeners[0].routes[0].backends[0].target
    assert isinstance(target, AIBackend)
    assert target.provider == "vertex" and target.model == "gemini-2.5-flash"
    assert target.vertex == VertexParams("proj", "europe-west4")
    with pytest.raises(ConfigError) as caught:
        load_config(text.replace("projectId: proj, ", ""), {}, base_dir=Path("."))
    assert caught.value.path.endswith("ai.provider.vertex.projectId")


# ---------------------------------------------------------------- hosts, models, paths


@pytest.mark.parametrize(
    ("region", "host"),
    [(None, "aiplatform.googleapis.com"), ("global", "aiplatform.googleapis.com"),
     ("us", "aiplatform.us.rep.googleapis.com"), ("eu", "aiplatform.eu.rep.googleapis.com"),
     ("us-central1", "us-central1-aiplatform.googleapis.com")],
)  # fmt: skip
def test_host(region: str | None, host: str) -> None:
    assert vertex_host(region) == host


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("publishers/anthropic/models/claude-sonnet-4-5-20251001", "claude-sonnet-4-5@20251001"),
        ("anthropic/claude-haiku-4-5-20251001", "claude-haiku-4-5@20251001"),
        ("claude-opus-3-20240229", "claude-opus-3@20240229"),
        ("claude-opus-4-6", "claude-opus-4-6"),
        ("claude-3-5-sonnet-20241022", "claude-3-5-sonnet@20241022"),
        ("claude-haiku-4-5-2025abcd", "claude-haiku-4-5-2025abcd"),
        ("text-embedding-004", None),
        ("gemini-2.5-flash", None),
    ],
)
def test_anthropic_model_names(model: str, expected: str | None) -> None:
    assert anthropic_model(model) == expected


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("gemini-2.5-flash", "gemini-2.5-flash"), ("gemini@001", "gemini@001"),
        ("publishers/google/models/gemini-2.5-pro", "gemini-2.5-pro"),
        ("models/gemini-2.5-flash", "gemini-2.5-flash"),
        ("google/gemini-2.5-flash", "gemini-2.5-flash"),
        ("claude-sonnet-4-5", None), ("gpt-4o", None), ("text-embedding-005", None),
        ("gemini-embedding-001", None), ("text-multilingual-embedding-002", None),
        ("textembedding-gecko@003", None), ("multimodalembedding@001", None),
        ("models/gemini-embedding-001", None),
        ("gemini-2.5-flash/../../../../locations/global/endpoints/openapi/chat/completions",
         None),
        ("gemini-2.5-flash%2F..", None), ("gemini-2.5-flash\\..", None), ("..", None),
    ],
)  # fmt: skip
def test_gemini_model_names(model: str, expected: str | None) -> None:
    assert gemini_model(model) == expected


CHAT = {"messages": [{"role": "user", "content": "hi"}]}
BASE = "/v1/projects/p/locations/global"


@pytest.mark.parametrize(
    ("model", "stream", "path"),
    [
        ("gemini-2.5-flash", False,
         f"{BASE}/publishers/google/models/gemini-2.5-flash:generateContent"),
        ("gemini-2.5-flash", True,
         f"{BASE}/publishers/google/models/gemini-2.5-flash:streamGenerateContent?alt=sse"),
        ("models/gemini-2.5-flash", False,
         f"{BASE}/publishers/google/models/gemini-2.5-flash:generateContent"),
        ("claude-sonnet-4-5", False,
         f"{BASE}/publishers/anthropic/models/claude-sonnet-4-5:rawPredict"),
        ("claude-sonnet-4-5-20250929", True,
         f"{BASE}/publishers/anthropic/models/claude-sonnet-4-5@20250929:streamRawPredict"),
        ("gpt-4o", False, f"{BASE}/endpoints/openapi/chat/completions"),
        ("gemini-2.5-flash/../../other", False, f"{BASE}/endpoints/openapi/chat/completions"),
    ],
)  # fmt: skip
def test_completions_path_per_model(model: str, stream: bool, path: str) -> None:
    request = _call("completions", {**CHAT, "model": model, "stream": stream})
    assert request.target.decode() == path
    assert request.provider == "gcp.vertex_ai"
    assert request.stream is stream
    body = _body(request)
    assert isinstance(body, dict)
    if "anthropic" in path:
        assert body["anthropic_version"] == "vertex-2023-10-16" and "model" not in body
        assert request.translation is not None
    elif "google" in path:
        assert "contents" in body and "model" not in body
    else:
        assert body["model"] == model and request.translation is None


def test_region_and_path_prefix_and_override() -> None:
    model = _model("{vertexProject: p, vertexRegion: us-central1, pathPrefix: /proxy}")
    request = _call("completions", {**CHAT, "model": "gemini-3-pro"}, model)
    assert request.target == (
        b"/proxy/v1/projects/p/locations/us-central1/publishers/google/models/"
        b"gemini-3-pro:generateContent"
    )
    model = _model("{vertexProject: p, pathOverride: /fixed}")
    assert _call("completions", {**CHAT, "model": "gemini-3-pro"}, model).target == b"/fixed"


def test_other_apis_per_model() -> None:
    messages = {"max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
    # Messages: Claude as is (rawPredict); others as chat completions on the OpenAI endpoint.
    claude = _call(
        "messages", {**messages, "model": "claude-haiku-4-5"}, client_path="/v1/messages"
    )
    assert claude.target.endswith(b"/publishers/anthropic/models/claude-haiku-4-5:rawPredict")
    gemini = _call("messages", {**messages, "model": "gemini-2.5-flash"})
    assert gemini.target.decode() == f"{BASE}/endpoints/openapi/chat/completions"
    assert _body(gemini)["model"] == "gemini-2.5-flash"  # type: ignore[index]
    responses = _call("responses", {"model": "gemini-2.5-flash", "input": "hi"})
    assert responses.target.decode() == f"{BASE}/endpoints/openapi/chat/completions"
    # Native Gemini clients: passed through for Gemini models.
    native = _call("generateContent", {"model": "gemini-2.5-flash", "contents": []},
                   client_path="/v1beta/models/gemini-2.5-flash:streamGenerateContent")
    assert native.target.decode() == (
        f"{BASE}/publishers/google/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
    )
    assert native.stream and _body(native) == {"contents": []}
    count = _call("geminiCountTokens", {"model": "gemini-2.5-flash", "contents": []})
    assert count.target.decode() == f"{BASE}/publishers/google/models/gemini-2.5-flash:countTokens"


@pytest.mark.parametrize(
    ("route_type", "model", "status"),
    [
        ("responses", "claude-haiku-4-5", 400),
        ("generateContent", "gpt-4o", 400),
        ("generateContent", "claude-haiku-4-5", 400),
        ("geminiCountTokens", "claude-haiku-4-5", 400),
        ("anthropicTokenCount", "gemini-2.5-flash", 400),
        ("rerank", "semantic-ranker-default-004", 501),
    ],
)
def test_calls_vertex_cannot_take(route_type: str, model: str, status: int) -> None:
    with pytest.raises(LLMRequestError) as caught:
        _call(route_type, {"model": model, "input": "x", "contents": [], "messages": []})
    assert caught.value.status == status


# ---------------------------------------------------------------- agentgateway's fixtures


@pytest.mark.parametrize(
    "name", sorted(p.name.split(".")[0] for p in (REQUESTS / "messages").glob("*.vertex.snap"))
)
def test_messages_body_matches_agentgateway(name: str) -> None:
    request = json.loads((REQUESTS / "messages" / f"{name}.json").read_text())
    request["model"] = "claude-sonnet-4-5"  # the body goes without it: any Claude model
    out = _call("messages", request, client_path="/v1/messages")
    assert _body(out) == snapshot(REQUESTS / "messages" / f"{name}.vertex.snap")["request"]


@pytest.mark.parametrize("name", ["basic", "with_system"])
def test_count_tokens_body_matches_agentgateway(name: str) -> None:
    request = json.loads((REQUESTS / "count-tokens" / f"{name}.json").read_text())
    # agentgateway took these with the provider model anthropic/claude-sonnet-4-5; count
    # tokens keeps it in the body.
    request["model"] = "anthropic/claude-sonnet-4-5"
    out = _call("anthropicTokenCount", request, client_path="/v1/messages/count_tokens")
    assert out.target.decode() == f"{BASE}/publishers/anthropic/models/count-tokens:rawPredict"
    assert _body(out) == snapshot(REQUESTS / "count-tokens" / f"{name}.vertex.snap")["request"]


@pytest.mark.parametrize("name", ["basic", "array", "full"])
def test_embeddings_body_matches_agentgateway(name: str) -> None:
    request = json.loads((REQUESTS / "embeddings" / f"{name}.json").read_text())
    out = _call("embeddings", request, client_path="/v1/embeddings")
    model = request["model"]
    assert out.target.decode() == f"{BASE}/publishers/google/models/{model}:predict"
    assert _body(out) == snapshot(REQUESTS / "embeddings" / f"{name}.vertex.snap")["request"]


def test_embeddings_response_matches_agentgateway() -> None:
    body = (FIXTURES / "response" / "vertex" / "embeddings.json").read_bytes()
    out, usage, model = VertexEmbeddings("text-embedding-004").response_json(body)
    expected = snapshot(FIXTURES / "response" / "vertex" / "embeddings.vertex.snap")
    assert json.loads(out) == expected["response"]
    assert model == "text-embedding-004"
    assert usage is not None and (usage.input_tokens, usage.total_tokens) == (9, 9)


def test_anthropic_fields_vertex_refuses_are_removed() -> None:
    request = {
        "model": "claude-sonnet-4-5", "max_tokens": 5, "output_format": "markdown",
        "output_config": {"format": "json"},
        "system": [{"type": "text", "text": "s", "cache_control": {"type": "ephemeral",
                                                                  "scope": "turn"}}],
        "messages": [{"role": "user", "content": "hi"}],
    }  # fmt: skip
    body = _body(_call("messages", request, client_path="/v1/messages"))
    assert isinstance(body, dict)
    assert "output_format" not in body and body["output_config"] == {"format": "json"}
    assert body["system"][0]["cache_control"] == {"type": "ephemeral"}


# ---------------------------------------------------------------- compiled backend


def _backend(yaml: str) -> tuple[RuntimeBackend, list[object]]:
    config = load_config(QUIET + "llm:\n" + yaml, {}, base_dir=Path("."))
    binds = compile_config(config)
    listener = binds[0].single
    assert listener is not None
    router = listener.routes()[0].backends[0].router
    assert isinstance(router, ModelRouter)
    backend = router.models[0].backend
    assert isinstance(backend, RuntimeBackend)
    return backend, [b.google_token for b in binds]


QUIET = "config: {statsAddr: 'off', adminAddr: 'off', readinessAddr: 'off'}\n"


def test_backend_uses_application_default_credentials() -> None:
    backend, tokens = _backend(
        "  models:\n  - name: m\n    provider: vertex\n"
        "    params: {vertexProject: p, vertexRegion: asia-east1}\n"
    )
    assert (backend.host, backend.port) == ("asia-east1-aiplatform.googleapis.com", 443)
    assert backend.ssl is not None
    assert backend.credential is not None and tokens == [backend.credential]
    # The client's credentials never reach Google; the token is added per request.
    assert b"authorization" in backend.request_headers.drop
    assert b"authorization" not in backend.request_headers.extra


def test_api_key_replaces_the_token() -> None:
    backend, tokens = _backend(
        "  models:\n  - name: m\n    provider: vertex\n    params: {vertexProject: p, apiKey: k}\n"
    )
    assert backend.credential is None and tokens == [None]
    assert b"authorization: Bearer k\r\n" in backend.request_headers.extra


def test_missing_google_auth_is_refused_at_load(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec

    def find_spec(name: str, *args: object) -> object:
        return None if name.startswith("google") else real(name, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    with pytest.raises(ConfigError) as caught:
        _backend("  models:\n  - name: m\n    provider: vertex\n    params: {vertexProject: p}\n")
    assert caught.value.path == "llm.models[0].provider"
    assert "pip install 'agw-fast[vertex]'" in str(caught.value)
    # With an API key no Google library is needed.
    _backend(
        "  models:\n  - name: m\n    provider: vertex\n    params: {vertexProject: p, apiKey: k}\n"
    )


# ---------------------------------------------------------------- the token


def test_access_token_line() -> None:
    token = AccessToken()
    assert token.line == b""
    token.set("ya29.a0-_~+/x==", 100.0)
    assert token.line == b"authorization: Bearer ya29.a0-_~+/x==\r\n"
    with pytest.raises(ValueError):
        token.set("bad\r\nx-injected: 1", 200.0)
    assert token.line == b"authorization: Bearer ya29.a0-_~+/x==\r\n"  # kept
    token.expire(99.0)
    assert token.line
    token.expire(100.0)
    assert token.line == b""


@pytest.mark.parametrize(
    ("lifetime", "delay"), [(3600.0, 3300.0), (600.0, 300.0), (4.0, 2.0), (0.5, 1.0), (-3, 1.0)]
)
def test_refresh_delay(lifetime: float, delay: float) -> None:
    assert refresh_delay(lifetime) == delay
