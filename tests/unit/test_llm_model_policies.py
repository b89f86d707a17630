"""Per-model policies of the `llm:` form: `promptCaching` (cache markers on Anthropic
Messages requests), `finalTransformation` (CEL on the provider-format body) and
`authorization` (checked by the model router while it chooses the model)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from agw_fast.config.load import load_config
from agw_fast.config.model import PromptCaching
from agw_fast.core.cel import CelProgram
from agw_fast.errors import ConfigError
from agw_fast.llm.calls import final_transformation, prepare_call
from agw_fast.llm.router import LocalAnswer, ModelRouter, Routed
from agw_fast.llm.translate.anthropic import completions_to_messages
from agw_fast.llm.translate.anthropic_cache import estimate_tokens, insert_cache_markers
from agw_fast.plan import compile_config

DATA = Path(__file__).resolve().parents[1] / "data" / "agentgateway-llm"
EPHEMERAL = {"type": "ephemeral"}


def _router(text: str) -> ModelRouter:
    config = load_config(text, {}, base_dir=Path("."))
    listener = compile_config(config)[-1].single
    assert listener is not None
    (route,) = listener.routes()
    (backend,) = route.backends
    assert isinstance(backend.router, ModelRouter)
    return backend.router


def _load_error(text: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        _router(text)
    return info.value


def _snapshot_request(path: Path) -> Any:
    text = path.read_text()
    return json.loads(text[text.index("\n---\n", 4) + 5 :])["request"]


# --- promptCaching: the config ---------------------------------------------------------------

CACHED = """
llm:
  port: 0
  providers:
  - name: claude
    provider: anthropic
    params: {apiKey: sk-ant}
    defaults:
      promptCaching: {cacheTools: true}
  models:
  - name: plain
    provider: anthropic
    params: {apiKey: sk-ant}
    promptCaching: {}
  - name: tuned
    provider: anthropic
    params: {apiKey: sk-ant}
    promptCaching: {cacheSystem: false, minTokens: null, cacheMessageOffset: 2}
  - name: inherits
    provider: {reference: claude}
  - name: own
    provider: {reference: claude}
    promptCaching: {cacheMessages: false}
  - name: none
    provider: anthropic
    params: {apiKey: sk-ant}
"""


def test_prompt_caching_config_defaults_null_and_provider_defaults() -> None:
    router = _router(CACHED)
    by_name = {m.name: m.config.prompt_caching for m in router.models}
    assert by_name["plain"] == PromptCaching(True, True, False, 1024, 0)
    assert by_name["tuned"] == PromptCaching(False, True, False, None, 2)
    # A provider's `defaults.promptCaching` applies unless the model sets its own (whole).
    assert by_name["inherits"] == PromptCaching(cache_tools=True)
    assert by_name["own"] == PromptCaching(cache_messages=False)
    assert by_name["none"] is None


def test_prompt_caching_unknown_key_is_refused_by_path() -> None:
    error = _load_error(CACHED.replace("{cacheMessages: false}", "{cacheEverything: true}"))
    assert error.path == "llm.models[3].promptCaching.cacheEverything"


def test_agentgateway_fixture_with_prompt_caching_and_guardrails_loads() -> None:
    """agentgateway's llm_simple fixture (promptCaching, llm.policies.guardrails merged into
    a model's own guardrails) loads once `tokenize` is off (another issue's feature)."""
    text = (Path(__file__).resolve().parents[1] / "data/agentgateway-examples/llm_simple.yaml")
    config = text.read_text().replace("tokenize: true", "tokenize: false")
    loaded = load_config(
        config, {"OPENAI_API_KEY": "k", "ANTHROPIC_API_KEY": "k"}, base_dir=Path(".")
    )
    router = loaded.binds[0].listeners[0].routes[0].backends[0].target
    guards = {m.name: m.guardrails for m in router.models}  # type: ignore[union-attr]
    merged = next(g for g in guards.values() if g is not None and g.response)
    # agentgateway's merge_prompt_guards: the shared request guards first, then the model's.
    assert [g.regex.rules[0].builtin for g in merged.request] == ["email", "creditCard"]
    assert [g.regex.rules[0].builtin for g in merged.response] == ["phoneNumber"]
    assert all(g is not None and g.request[0].rejection.status == 400 for g in guards.values())


# --- promptCaching: where the markers go -----------------------------------------------------


def _messages(n: int) -> list[dict[str, object]]:
    return [
        {"role": "user" if i % 2 == 0 else "assistant",
         "content": [{"type": "text", "text": f"m{i}"}]}
        for i in range(n)
    ]  # fmt: skip


def _marked(messages: list[dict[str, Any]]) -> list[int]:
    return [
        i for i, m in enumerate(messages)
        if any("cache_control" in block for block in m["content"])
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("count", "offset", "marked"),
    [
        (3, 0, [1]),  # second-to-last: the history, not the current turn
        (5, 2, [1]),  # offset N moves it N messages further back
        (3, 100, [0]),  # clamped to the first message
        (1, 0, []),  # nothing to reuse yet
        (0, 0, []),
    ],
)
def test_message_marker_placement_follows_agentgateway(
    count: int, offset: int, marked: list[int]
) -> None:
    """The cases of agentgateway's `insert_message_cache_point` tests (bedrock_tests.rs)."""
    body: dict[str, Any] = {"messages": _messages(count)}
    insert_cache_markers(body, PromptCaching(cache_message_offset=offset))
    assert _marked(body["messages"]) == marked
    for i in marked:  # on the message's last block only
        assert body["messages"][i]["content"][-1]["cache_control"] == EPHEMERAL


def test_system_marker_needs_the_estimated_minimum() -> None:
    system = " ".join(["word"] * 100)  # 100 words: an estimate of 130 tokens
    assert estimate_tokens(system) == 130
    for minimum, cached in ((130, True), (131, False), (None, True), (0, True)):
        body: dict[str, Any] = {"system": system, "messages": []}
        insert_cache_markers(body, PromptCaching(min_tokens=minimum))
        if cached:
            assert body["system"] == [{"type": "text", "text": system, "cache_control": EPHEMERAL}]
        else:
            assert body["system"] == system
    body = {"system": system, "messages": []}
    insert_cache_markers(body, PromptCaching(cache_system=False, min_tokens=None))
    assert body["system"] == system


def test_tools_marker_only_when_asked() -> None:
    tools = [{"name": "a", "input_schema": {}}, {"name": "b", "input_schema": {}}]
    body: dict[str, Any] = {"messages": [], "tools": copy.deepcopy(tools)}
    insert_cache_markers(body, PromptCaching())
    assert body["tools"] == tools  # cacheTools defaults to false
    insert_cache_markers(body, PromptCaching(cache_tools=True))
    assert "cache_control" not in body["tools"][0]
    assert body["tools"][1]["cache_control"] == EPHEMERAL


@pytest.mark.parametrize("name", ["tool-call", "full"])
def test_golden_request_gets_markers_and_nothing_else(name: str) -> None:
    """agentgateway's chat -> Messages golden fixtures: with every marker asked for, the
    body is the snapshot with the markers added at their places."""
    request = json.loads((DATA / "requests/completions" / f"{name}.json").read_text())
    expected = _snapshot_request(DATA / "requests/completions" / f"{name}.anthropic.snap")
    caching = PromptCaching(cache_tools=True, min_tokens=None)
    body, _ = completions_to_messages(request, prompt_caching=caching)
    got = json.loads(body)
    messages = expected["messages"]
    messages[len(messages) - 2]["content"][-1]["cache_control"] = EPHEMERAL
    if "system" in expected:
        expected["system"] = [
            {"type": "text", "text": expected["system"], "cache_control": EPHEMERAL}
        ]
    if expected.get("tools"):
        expected["tools"][-1]["cache_control"] = EPHEMERAL
    assert got == expected


def _call(router: ModelRouter, model: str, body: dict[str, Any], path: str) -> bytes:
    routed = router.resolve(path, [], json.dumps(body).encode(), lambda: {}, 0.0)
    assert isinstance(routed, Routed) and routed.obj is not None
    request = prepare_call(
        routed.route.config, routed.route_type, path.encode(), routed.obj, b""
    )
    return request.body


CALLS = """
llm:
  port: 0
  models:
  - name: claude
    provider: anthropic
    params: {apiKey: sk-ant}
    promptCaching: {minTokens: null}
  - name: deepseek-chat
    provider: deepseek
    params: {apiKey: sk}
    promptCaching: {minTokens: null}
  - name: custom-messages
    provider: {custom: {formats: [{type: messages}]}}
    params: {apiKey: sk, baseUrl: "http://127.0.0.1:9/v1"}
    promptCaching: {minTokens: null}
  - name: gpt
    provider: openAI
    params: {apiKey: sk}
    promptCaching: {minTokens: null}
"""
CHAT = {
    "model": "x",
    "messages": [
        {"role": "system", "content": "Be terse."},
        {"role": "user", "content": "One."},
        {"role": "assistant", "content": "Two."},
        {"role": "user", "content": "Three?"},
    ],
}


@pytest.mark.parametrize("model", ["claude", "custom-messages"])
def test_chat_to_a_messages_provider_carries_the_markers(model: str) -> None:
    router = _router(CALLS)
    out = json.loads(_call(router, model, {**CHAT, "model": model}, "/v1/chat/completions"))
    assert out["system"][0]["cache_control"] == EPHEMERAL
    assert _marked(out["messages"]) == [1]


@pytest.mark.parametrize(
    ("model", "path", "body"),
    [
        # A preset that also speaks completions gets completions: nothing to mark.
        ("deepseek-chat", "/v1/chat/completions", CHAT),
        ("gpt", "/v1/chat/completions", CHAT),
        # Messages clients keep their own markers (agentgateway adds none to them).
        ("claude", "/v1/messages",
         {"model": "x", "max_tokens": 5, "messages": CHAT["messages"][1:]}),
    ],
)  # fmt: skip
def test_no_markers_where_agentgateway_puts_none(
    model: str, path: str, body: dict[str, Any]
) -> None:
    router = _router(CALLS)
    out = _call(router, model, {**body, "model": model}, path)
    assert b"cache_control" not in out


# --- finalTransformation ---------------------------------------------------------------------

FINAL = """
llm:
  port: 0
  models:
  - name: gpt-4o
    provider: openAI
    params: {apiKey: sk}
    finalTransformation:
      converted_message_count: llmRequest.messages.size()
      max_tokens: "32"
      reasoning_effort: llmRequest.no_such_field
      host: request.headers["x-tenant"]
"""


def test_final_transformation_runs_on_the_translated_body() -> None:
    """agentgateway's `messages_to_completions_final_transformation`: a Messages request
    for an OpenAI provider, transformed after it became chat completions."""
    router = _router(FINAL)
    body = {
        "model": "gpt-4o",
        "max_tokens": 64,
        "system": "be brief",
        "messages": [{"role": "user", "content": "hello"}],
        "thinking": {"type": "adaptive"},
    }
    routed = router.resolve("/v1/messages", [], json.dumps(body).encode(), lambda: {}, 0.0)
    assert isinstance(routed, Routed) and routed.obj is not None
    request = prepare_call(routed.route.config, "messages", b"/v1/messages", routed.obj, b"")
    assert "reasoning_effort" in json.loads(request.body)
    variables = {"request": {"headers": {"x-tenant": "acme"}}}
    out = final_transformation(routed.route.final_transformations, request, lambda: variables)
    doc = json.loads(out.body)
    assert doc["messages"][0]["role"] == "system"
    assert doc["converted_message_count"] == 2  # system + user: the converted body
    assert doc["max_tokens"] == 32
    assert "reasoning_effort" not in doc  # a failed expression removes the field
    assert doc["host"] == "acme"
    # The recorded request is the client's: agentgateway reads it before rendering.
    assert out.max_tokens == request.max_tokens == 64
    assert out.target == request.target and out.translation is request.translation


def test_final_transformation_leaves_opaque_bodies_alone() -> None:
    router = _router(FINAL)
    (route,) = router.models
    request = prepare_call(route.config, "detect", b"/v1/other", None, b"\x00not json")
    assert final_transformation(route.final_transformations, request, dict).body == (
        b"\x00not json"
    )


def test_final_transformation_without_request_variables_does_not_build_them() -> None:
    router = _router(FINAL.replace('      host: request.headers["x-tenant"]\n', ""))
    (route,) = router.models
    request = prepare_call(
        route.config, "completions", b"/v1/chat/completions",
        {"model": "gpt-4o", "messages": []}, b"",
    )  # fmt: skip

    def never() -> dict[str, object]:
        raise AssertionError("request variables built for llmRequest-only expressions")

    assert json.loads(final_transformation(route.final_transformations, request, never).body)[
        "max_tokens"
    ] == 32


def test_final_transformation_bad_cel_is_refused_by_path() -> None:
    error = _load_error(FINAL.replace('"32"', '"32 +"'))
    assert error.path == "llm.models[0].finalTransformation.max_tokens"


def test_final_transformations_compile_once() -> None:
    (route,) = _router(FINAL).models
    assert [k for k, _ in route.final_transformations] == [
        "converted_message_count", "max_tokens", "reasoning_effort", "host",
    ]  # fmt: skip
    assert all(isinstance(p, CelProgram) for _, p in route.final_transformations)


# --- authorization -----------------------------------------------------------------------------

AUTHZ = """
llm:
  port: 0
  models:
  - name: gpt-premium
    provider: openAI
    params: {apiKey: sk}
    authorization:
      rules: ['request.headers["x-tier"] == "gold"']
  - name: gpt-*
    provider: openAI
    params: {model: gpt-fallback, apiKey: sk}
    authorization:
      rules: [{deny: 'request.headers["x-tier"] == "banned"'}]
  - name: open
    provider: openAI
    params: {apiKey: sk}
  - name: internal-gold
    visibility: internal
    provider: openAI
    params: {apiKey: sk}
    authorization:
      rules: ['request.headers["x-tier"] == "gold"']
  virtualModels:
  - name: pick
    routing:
      conditional:
        targets:
        - model: internal-gold
  - name: resilient
    routing:
      failover:
        targets:
        - {model: internal-gold, priority: 0}
"""


def _resolve(router: ModelRouter, model: str, tier: str | None, path: str = "") -> object:
    headers = {} if tier is None else {"x-tier": tier}
    body = b"" if path else json.dumps({"model": model, "messages": []}).encode()
    return router.resolve(
        path or "/v1/chat/completions",
        [(k.encode(), v.encode()) for k, v in headers.items()],
        body,
        lambda: {"request": {"headers": headers}},
        0.0,
    )


def _error(answer: object) -> tuple[int, str]:
    assert isinstance(answer, LocalAnswer)
    return answer.status, json.loads(answer.body)["error"]["code"]


def test_a_denied_model_is_skipped_for_the_next_match() -> None:
    router = _router(AUTHZ)
    gold = _resolve(router, "gpt-premium", "gold")
    assert isinstance(gold, Routed) and gold.route.name == "gpt-premium"
    # gpt-premium denies; gpt-* also matches and allows: it serves.
    other = _resolve(router, "gpt-premium", "silver")
    assert isinstance(other, Routed) and other.route.name == "gpt-*"
    assert other.obj is not None and other.obj["model"] == "gpt-fallback"


def test_denied_by_every_matching_model_is_403_json() -> None:
    router = _router(AUTHZ)
    assert _error(_resolve(router, "gpt-premium", "banned")) == (
        403, "model_authorization_denied",
    )  # fmt: skip
    assert _error(_resolve(router, "gpt-x", "banned")) == (403, "model_authorization_denied")
    answer = _resolve(router, "gpt-x", "banned")
    assert isinstance(answer, LocalAnswer)
    assert json.loads(answer.body) == {"error": {
        "message": "Model authorization denied", "type": "invalid_request_error",
        "code": "model_authorization_denied",
    }}  # fmt: skip
    # No model matched at all: still 404.
    assert _error(_resolve(router, "nope", "banned")) == (404, "model_not_found")


def test_model_list_has_only_the_models_the_request_may_use() -> None:
    router = _router(AUTHZ)

    def ids(tier: str | None) -> list[str]:
        answer = _resolve(router, "", tier, path="/v1/models")
        assert isinstance(answer, LocalAnswer) and answer.status == 200
        return [e["id"] for e in json.loads(answer.body)["data"]]

    assert ids("gold") == ["gpt-premium", "gpt-*", "open", "pick", "resilient"]
    assert ids("silver") == ["gpt-*", "open", "pick", "resilient"]
    assert ids("banned") == ["open", "pick", "resilient"]


def test_virtual_targets_are_authorized_too() -> None:
    router = _router(AUTHZ)
    assert isinstance(_resolve(router, "pick", "gold"), Routed)
    assert _error(_resolve(router, "pick", "silver")) == (403, "model_authorization_denied")
    assert isinstance(_resolve(router, "resilient", "gold"), Routed)
    # A failover target's rules are agentgateway's backend policy: the policy's answer.
    denied = _resolve(router, "resilient", "silver")
    assert isinstance(denied, LocalAnswer)
    assert denied == (403, b"authorization failed", b"text/plain")


def test_a_router_without_rules_never_builds_request_variables() -> None:
    text = """
llm:
  port: 0
  models:
  - name: open
    provider: openAI
    params: {apiKey: sk}
"""
    plain = _router(text)
    assert not plain.authorizing

    def never() -> dict[str, object]:
        raise AssertionError("variables built without authorization rules")

    body = json.dumps({"model": "open", "messages": []}).encode()
    assert isinstance(plain.resolve("/v1/chat/completions", [], body, never, 0.0), Routed)
    assert isinstance(plain.resolve("/v1/models", [], b"", never, 0.0), LocalAnswer)


def test_authorization_bad_cel_is_refused_by_path() -> None:
    error = _load_error(AUTHZ.replace("== \"banned\"'", "== '"))
    assert error.path.startswith("llm.models[1].authorization.rules[0]")
