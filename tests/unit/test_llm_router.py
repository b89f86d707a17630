"""The `llm:` form: loading (agentgateway's own example configs and fixtures), the model
router's choices and answers, health and eviction."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agw_fast.config.load import load_config
from agw_fast.config.model import Eviction, LLMRouter
from agw_fast.errors import ConfigError
from agw_fast.llm.health import HealthState, choose_failover, eviction_seconds, retry_after_seconds
from agw_fast.llm.router import LocalAnswer, ModelRouter, ProviderGroups, Routed
from agw_fast.plan import RuntimeBackend, compile_config

EXAMPLES = Path(__file__).resolve().parents[1] / "data" / "agentgateway-examples"
ENV = {"OPENAI_API_KEY": "sk-test", "ANTHROPIC_API_KEY": "sk-ant-test"}


def _router(text: str) -> tuple[ModelRouter, RuntimeBackend]:
    config = load_config(text, ENV, base_dir=Path("."))
    binds = compile_config(config)
    listener = binds[-1].single
    assert listener is not None
    (route,) = listener.routes()
    (backend,) = route.backends
    assert backend.router is not None
    return backend.router, backend


def _resolve(
    router: ModelRouter, body: object, path: str = "/v1/chat/completions",
    headers: list[tuple[bytes, bytes]] | None = None,
) -> LocalAnswer | Routed:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return router.resolve(path, headers or [], raw, lambda: {}, 100.0)


@pytest.mark.parametrize(
    "name", ["llm-basic", "llm-cost-routing", "llm_virtual_model", "llm_virtual_model_failover",
             "llm_virtual_model_conditional"],
)
def test_agentgateway_llm_configs_load(name: str) -> None:
    text = (EXAMPLES / f"{name}.yaml").read_text()
    router, _ = _router(text)
    assert router.models


def test_agentgateway_llm_config_fixture_binds_groups() -> None:
    """agentgateway's `llm_config` fixture: the binds form's `ai.groups` (Anthropic first,
    then two OpenAI providers, one with host/path overrides, backendAuth and backendTLS)."""
    text = (EXAMPLES / "llm_config.yaml").read_text()
    (bind,) = compile_config(load_config(text, ENV, base_dir=Path(".")))
    listener = bind.single
    assert listener is not None
    (route,) = listener.routes()
    router = route.backends[0].router
    assert isinstance(router, ProviderGroups)
    assert router.groups == ((0,), (1, 2))
    anthropic, openai, overrides = router.routes
    assert anthropic.config.provider == "anthropic"
    assert (openai.config.provider, openai.config.model) == ("openAI", None)
    assert overrides.config.model == "some-model"
    assert overrides.config.path_override == "/api/v1/chat/completions"
    backend = overrides.backend
    assert isinstance(backend, RuntimeBackend)
    assert (backend.host, backend.port, backend.ssl is not None) == ("example.com", 443, True)
    assert b"authorization: Bearer example-key" in backend.request_headers.extra


def test_agentgateway_llm_simple_fixture_loads_up_to_azure_entra_id() -> None:
    """Its every feature loads: guardrails (shared and per model), cors, localRateLimit
    tokens, jwtAuth, authorization, tokenize, health, matches, promptCaching, the vertex,
    azure and preset providers. Serving it stops at its azure model, which has no API key:
    agentgateway would use Microsoft Entra ID credentials, which agw-fast does not have."""
    text = (EXAMPLES / "llm_simple.yaml").read_text()
    config = load_config(text, ENV, base_dir=Path("."))
    router = config.binds[-1].listeners[0].routes[0].backends[0].target
    assert isinstance(router, LLMRouter)
    names = {model.name for model in router.models}
    assert {"claude-3-haiku", "gpt-7-max", "llama-3.1-8b-instant", "*"} <= names
    with pytest.raises(ConfigError) as info:
        compile_config(config)
    assert "Entra ID" in str(info.value)


def test_llm_provider_reference_fixture_loads_with_tokenize() -> None:
    text = (EXAMPLES / "llm_provider_reference.yaml").read_text()
    config = load_config(text, ENV, base_dir=Path("."))
    router = config.binds[-1].listeners[0].routes[0].backends[0].target
    assert isinstance(router, LLMRouter)
    # The provider's `params.tokenize` reaches the model that references it.
    assert [m.tokenize for m in router.models] == [True, False]


def test_binds_ai_tokenize_takes_the_router_path_and_needs_tiktoken(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pytest.importorskip("tiktoken")
    text = json.dumps({"binds": [{"port": 3000, "listeners": [{"routes": [{"backends": [
        {"ai": {"name": "o", "provider": {"openAI": {}}, "tokenize": True}}]}]}]}]})  # fmt: skip
    (bind,) = compile_config(load_config(text, ENV, base_dir=Path(".")))
    assert bind.single is not None
    (route,) = bind.single.routes()
    (backend,) = route.backends
    # The OpenAI fast path never parses the messages: a tokenizing provider uses the router.
    assert isinstance(backend.router, ProviderGroups)
    assert backend.router.routes[0].config.tokenize
    monkeypatch.setattr("agw_fast.config.load_llm.tiktoken_available", lambda: False)
    with pytest.raises(ConfigError) as info:
        load_config(text, ENV, base_dir=Path("."))
    assert info.value.path == "binds[0].listeners[0].routes[0].backends[0].ai.tokenize"
    assert "pip install 'agw-fast[tokenize]'" in str(info.value)


BASIC = """
llm:
  port: 0
  models:
  - name: smart
    provider: openAI
    params: {model: gpt-5.5, apiKey: sk-openai}
  - name: anthropic/*
    provider: anthropic
    params: {apiKey: sk-ant-1}
    transformation:
      model: llmRequest.model.stripPrefix("anthropic/")
  - name: hidden
    visibility: internal
    provider: openAI
  - name: eng-only
    provider: openAI
    matches:
    - headers: [{name: X-Org, value: {exact: engineering}}]
  virtualModels:
  - name: tiered
    routing:
      conditional:
        targets:
        - when: 'default(llmRequest.metadata.tier, "") == "cheap"'
          model: hidden
        - model: smart
"""


def test_models_list_is_public_models_and_virtual_models_in_openai_shape() -> None:
    router, _ = _router(BASIC)
    answer = _resolve(router, b"", path="/v1/models")
    assert isinstance(answer, LocalAnswer) and answer.status == 200
    doc = json.loads(answer.body)
    assert doc["object"] == "list"
    ids = [entry["id"] for entry in doc["data"]]
    assert ids == ["anthropic/*", "eng-only", "smart", "tiered"]
    assert all(e["object"] == "model" and e["owned_by"] == "openai" for e in doc["data"])


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"{not json", 400, "invalid_request_body"),
        ({"messages": []}, 400, "missing_model"),
        ({"model": 7}, 400, "missing_model"),
        ({"model": "nope"}, 404, "model_not_found"),
        ({"model": "hidden"}, 404, "model_not_found"),  # internal: only via a virtual model
        ({"model": "eng-only"}, 404, "model_not_found"),  # its header match is missing
    ],
)
def test_router_errors_are_agentgateway_json(body: object, status: int, code: str) -> None:
    router, _ = _router(BASIC)
    answer = _resolve(router, body)
    assert isinstance(answer, LocalAnswer)
    assert answer.status == status
    error = json.loads(answer.body)["error"]
    assert error["code"] == code and error["type"] == "invalid_request_error"


def test_provider_model_and_transformation_rewrite_the_body() -> None:
    router, _ = _router(BASIC)
    routed = _resolve(router, {"model": "smart", "messages": []})
    assert isinstance(routed, Routed) and routed.obj is not None
    assert routed.obj["model"] == "gpt-5.5" and routed.route_type == "completions"
    routed = _resolve(router, {"model": "anthropic/claude-x", "messages": []})
    assert isinstance(routed, Routed) and routed.obj is not None
    assert routed.obj["model"] == "claude-x"
    assert routed.route.config.provider == "anthropic"


def test_header_matches_select_a_model() -> None:
    router, _ = _router(BASIC)
    routed = _resolve(router, {"model": "eng-only"}, headers=[(b"x-org", b"engineering")])
    assert isinstance(routed, Routed) and routed.route.name == "eng-only"


def test_conditional_virtual_model_with_default() -> None:
    router, _ = _router(BASIC)
    cheap = _resolve(router, {"model": "tiered", "metadata": {"tier": "cheap"}})
    other = _resolve(router, {"model": "tiered"})
    assert isinstance(cheap, Routed) and cheap.route.name == "hidden"
    assert isinstance(other, Routed) and other.route.name == "smart"
    assert other.obj is not None and other.obj["model"] == "gpt-5.5"


def test_weighted_virtual_model_spreads_by_weight() -> None:
    router, _ = _router("""
llm:
  port: 0
  models:
  - {name: a, provider: openAI}
  - {name: b, provider: openAI}
  virtualModels:
  - name: mix
    routing: {weighted: {targets: [{model: a, weight: 3}, {model: b, weight: 1}]}}
""")
    counts = {"a": 0, "b": 0}
    for _ in range(2000):
        routed = _resolve(router, {"model": "mix"})
        assert isinstance(routed, Routed)
        counts[routed.route.name] += 1
    assert 1300 < counts["a"] < 1700  # 3:1, with a wide margin for chance


FAILOVER = """
llm:
  port: 0
  models:
  - name: primary
    provider: openAI
    health:
      eviction: {duration: 10s}
  - name: backup/*
    provider: openAI
  virtualModels:
  - name: resilient
    routing:
      failover:
        targets:
        - {model: primary, priority: 0}
        - {model: backup/a, priority: 1}
"""


def test_failover_moves_to_the_next_priority_while_evicted() -> None:
    router, _ = _router(FAILOVER)
    first = _resolve(router, {"model": "resilient"})
    assert isinstance(first, Routed) and first.route.name == "primary"
    assert first.record(True, None, 100.0) == 10.0
    second = router.resolve("/v1/chat/completions", [], b'{"model":"resilient"}', dict, 105.0)
    assert isinstance(second, Routed) and second.route.name == "backup/*"
    # A failover target without params.model sends the target's name.
    assert second.obj is not None and second.obj["model"] == "backup/a"
    third = router.resolve("/v1/chat/completions", [], b'{"model":"resilient"}', dict, 110.5)
    assert isinstance(third, Routed) and third.route.name == "primary"


def test_eviction_decisions_follow_agentgateway() -> None:
    assert eviction_seconds(None, 1.0, 0, 0, None) is None  # no eviction policy, no retry-after
    assert eviction_seconds(None, 1.0, 0, 0, 2.0) == 2.0  # retry-after alone evicts
    assert eviction_seconds(Eviction(), 1.0, 0, 0, None) == 3.0  # default duration
    assert eviction_seconds(Eviction(duration=5.0), 1.0, 0, 2, None) == 15.0  # grows
    three = Eviction(duration=1.0, consecutive_failures=3)
    assert eviction_seconds(three, 1.0, 1, 0, None) is None
    assert eviction_seconds(three, 1.0, 2, 0, None) == 1.0
    threshold = Eviction(duration=1.0, health_threshold=0.5)
    assert eviction_seconds(threshold, 0.5, 0, 0, None) is None
    assert eviction_seconds(threshold, 0.49, 0, 0, None) == 1.0


def test_failover_falls_back_to_evicted_targets_when_all_are() -> None:
    states = [HealthState(evicted_until=50.0), HealthState(evicted_until=50.0)]
    assert choose_failover([[0], [1]], states, 10.0) == 0


def test_retry_after() -> None:
    assert retry_after_seconds([b"retry-after: 7"]) == 7.0
    assert retry_after_seconds([b"content-type: x"]) is None
    assert retry_after_seconds([b"retry-after: Wed, 21 Oct 2015 07:28:00 GMT"]) == 0.0


@pytest.mark.parametrize(
    ("yaml", "path", "message"),
    [
        ("  models: [{name: 'a*b', provider: openAI}]", "llm.models[0].name",
         "beginning or the end"),
        ("  models: [{name: 'x', provider: vertex}]", "llm.models[0].params.vertexProject",
         "vertex requires vertexProject"),
        ("  models: [{name: 'x', provider: copilot}]", "llm.models[0].provider", "not supported"),
        ("  models: [{name: 'x', provider: grok}]", "llm.models[0].provider", "expected one of"),
        ("  models: [{name: 'x', provider: {reference: nope}}]", "llm.models[0].provider.reference",
         "unknown provider nope"),
        ("  models: [{name: 'x', provider: azure, params: {azureResourceName: r,"
         " azureResourceType: openAI}}]", "llm.models[0].params.apiKey", "Entra"),
        ("  models: [{name: x, provider: openAI}]\n  virtualModels: [{name: v, routing: "
         "{weighted: {targets: [{model: y}]}}}]",
         "llm.virtualModels[0].routing.weighted.targets[0]", "does not match any llm.models entry"),
        ("  models: [{name: x, provider: openAI, params: {baseUrl: 'ftp://h'}}]",
         "llm.models[0].params.baseUrl", "must use http or https"),
        ("  gateways: default\n  models: []", "llm.gateways", "cannot be used with llm.port"),
    ],
)
def test_bad_llm_configs_name_the_field(yaml: str, path: str, message: str) -> None:
    text = "llm:\n  port: 0\n" + yaml + "\n"
    with pytest.raises(ConfigError) as info:
        compile_config(load_config(text, ENV, base_dir=Path(".")))
    assert info.value.path == path, str(info.value)
    assert message in str(info.value)


def test_base_url_sets_host_prefix_and_tls() -> None:
    config = load_config(
        "llm:\n  models:\n  - name: m\n    provider: anthropic\n"
        "    params: {baseUrl: 'https://anthropic.internal/v1', apiKey: k}\n",
        ENV, base_dir=Path("."),
    )
    (bind,) = config.binds
    assert bind.port == 4000
    target = bind.listeners[0].routes[0].backends[0].target
    assert isinstance(target, LLMRouter)
    (model,) = target.models
    assert model.host_override is not None and model.host_override.port == 443
    assert model.path_prefix == "/v1" and model.backend_tls is not None
