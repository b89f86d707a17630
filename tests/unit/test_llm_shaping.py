"""The binds form's `policies.ai` request shaping: `prompts`, `modelAliases`, `defaults`,
`overrides`, `transformations`, `finalTransformations` and `promptCaching` (agentgateway's
llm/policy/mod.rs), from config to the body each provider is sent."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from agw_fast.config.load import load_config, load_config_file
from agw_fast.config.model import AIPolicy, PromptCaching, PromptEnrichment
from agw_fast.errors import ConfigError
from agw_fast.llm.calls import final_transformation, prepare_call
from agw_fast.llm.providers.openai import LLMRequestError
from agw_fast.llm.router import ProviderGroups, Routed
from agw_fast.llm.shaping import RequestShaping, compile_shaping
from agw_fast.plan import RuntimeBackend, compile_config

DATA = Path(__file__).resolve().parents[1] / "data"
FIXTURES = DATA / "agentgateway-llm" / "requests"
EXAMPLE = DATA / "agentgateway-examples" / "llm-prompt-enrichment.yaml"

# agentgateway's golden_tests.rs `apply_test_prompts_to`: the prompts of its fixtures.
GOLDEN_PROMPTS = RequestShaping(
    (),
    prepend=(
        ("system", "prepend system prompt"),
        ("user", "prepend user message"),
        ("assistant", "prepend assistant message"),
    ),
    append=(
        ("user", "append user message"),
        ("system", "append system prompt"),
        ("assistant", "append assistant prompt"),
    ),
)


def _snapshot_request(path: Path) -> Any:
    text = path.read_text()
    return json.loads(text[text.index("\n---\n", 4) + 5 :])["request"]


def _binds(policies: str = "", backend_policies: str = "", provider: str = "openAI: {}",
           ai_policies: str = "") -> str:
    return f"""
binds:
- port: 3000
  listeners:
  - routes:
    - backends:
      - ai:
          name: p
          provider: {{{provider}}}
          hostOverride: 127.0.0.1:9
{ai_policies}
{backend_policies}
{policies}
"""


def _backend(text: str) -> RuntimeBackend:
    (bind,) = compile_config(load_config(text, {}, base_dir=Path(".")))
    assert bind.single is not None
    (route,) = bind.single.routes()
    (backend,) = route.backends
    return backend


def _groups(text: str) -> ProviderGroups:
    router = _backend(text).router
    assert isinstance(router, ProviderGroups)
    return router


def _resolve(router: ProviderGroups, body: dict[str, Any], path: str = "/v1/chat/completions",
             variables: dict[str, object] | None = None) -> Routed:
    routed = router.resolve(path, [], json.dumps(body).encode(), lambda: dict(variables or {}),
                            0.0)
    assert isinstance(routed, Routed)
    return routed


def _sent(router: ProviderGroups, body: dict[str, Any], path: str = "/v1/chat/completions"
          ) -> dict[str, Any]:
    """The body the provider is sent, finalTransformations included."""
    raw = json.dumps(body).encode()
    routed = _resolve(router, body, path)
    assert routed.obj is not None
    request = prepare_call(routed.route.config, routed.route_type, path.encode(), routed.obj,
                           raw, routed.changed)
    final = routed.route.final_transformations
    if final:
        request = final_transformation(final, request, lambda: {})
    sent = json.loads(request.body)
    assert isinstance(sent, dict)
    return sent


ROUTE_POLICY = "      policies:\n        ai:\n"
CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}


def _route_ai(*lines: str) -> str:
    return ROUTE_POLICY + "".join(f"          {line}\n" for line in lines)


# --- config ----------------------------------------------------------------------------------


def test_agentgateway_prompt_enrichment_example_loads_unchanged_and_appends() -> None:
    config = load_config_file(EXAMPLE, {})
    (bind,) = compile_config(config)
    assert bind.single is not None
    (route,) = bind.single.routes()
    (backend,) = route.backends
    router = backend.router
    assert isinstance(router, ProviderGroups)
    chat = _resolve(router, CHAT)
    assert chat.obj is not None and chat.obj["messages"] == [
        {"role": "user", "content": "hi"},
        {"role": "system", "content": "Respond with emojis only"},
    ]
    responses = _resolve(router, {"model": "gpt-4o", "input": "hi"}, "/v1/responses")
    assert responses.obj is not None and responses.obj["input"] == [
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]},
        {"type": "message", "role": "system",
         "content": [{"type": "input_text", "text": "Respond with emojis only"}]},
    ]  # fmt: skip


def test_every_field_is_read() -> None:
    text = _binds(_route_ai(
        "prompts: {prepend: [{role: system, content: S}], append: [{role: user, content: U}]}",
        "modelAliases: {fast: gpt-4o-mini, 'gpt-*': gpt-4o}",
        "defaults: {temperature: 0.5, metadata: {a: [1, 2]}}",
        "overrides: {max_tokens: 10}",
        "transformations: {user: 'request.path'}",
        "finalTransformations: {top_p: '0.5'}",
        "promptCaching: {cacheTools: true, minTokens: null}",
    ))  # fmt: skip
    config = load_config(text, {}, base_dir=Path("."))
    policies = config.binds[0].listeners[0].routes[0].policies
    assert policies is not None and policies.ai is not None
    assert policies.ai == AIPolicy(
        routes=(),
        prompts=PromptEnrichment(prepend=(("system", "S"),), append=(("user", "U"),)),
        model_aliases=(("fast", "gpt-4o-mini"), ("gpt-*", "gpt-4o")),
        defaults=(("temperature", 0.5), ("metadata", {"a": [1, 2]})),
        overrides=(("max_tokens", 10),),
        transformations=(("user", "request.path"),),
        final_transformations=(("top_p", "0.5"),),
        prompt_caching=PromptCaching(cache_tools=True, min_tokens=None),
    )
    assert policies.ai.shapes_requests


@pytest.mark.parametrize(
    ("lines", "where"),
    [
        (["prompts: {prepend: [{role: system}]}"], "policies.ai.prompts.prepend[0].content"),
        (["prompts: {prepend: [{role: system, content: x, name: n}]}"],
         "policies.ai.prompts.prepend[0].name"),
        (["prompts: {middle: []}"], "policies.ai.prompts.middle"),
        (["modelAliases: {a: [b]}"], "policies.ai.modelAliases.a"),
        (["defaults: [1]"], "policies.ai.defaults"),
        (["transformations: {x: 'request.('}"], "policies.ai.transformations.x"),
        (["finalTransformations: {x: '1 +'}"], "policies.ai.finalTransformations.x"),
        (["promptCaching: {cacheEverything: true}"], "policies.ai.promptCaching.cacheEverything"),
        (["promptGuard: {request: [{regex: {rules: [{builtin: nope}]}}]}"],
         "policies.ai.promptGuard.request[0].regex.rules[0].builtin"),
    ],
)  # fmt: skip
def test_bad_fields_are_named(lines: list[str], where: str) -> None:
    with pytest.raises(ConfigError) as info:
        _backend(_binds(_route_ai(*lines)))
    assert str(info.value).startswith(f"binds[0].listeners[0].routes[0].{where}"), info.value


def test_bad_expression_on_the_ai_backend_policies_is_named_there() -> None:
    text = _binds(ai_policies=(
        "          policies:\n            ai:\n              transformations: {x: 'a +'}"
    ))  # fmt: skip
    with pytest.raises(ConfigError) as info:
        _backend(text)
    assert str(info.value).startswith(
        "binds[0].listeners[0].routes[0].backends[0].ai.policies.ai.transformations.x"
    )


def test_policies_merge_field_by_field_backend_first() -> None:
    # agentgateway's merge_llm_policies: each field the backend's policy sets wins, the
    # route's fills the rest (its `routes` included).
    route = AIPolicy(
        routes=(("/v1/responses", "responses"),),
        prompts=PromptEnrichment(append=(("system", "route"),)),
        defaults=(("a", 1),),
    )
    backend = AIPolicy(prompts=PromptEnrichment(prepend=(("system", "backend"),)),
                       model_aliases=(("x", "y"),), defaults=())
    merged = backend.over(route)
    assert merged.routes == route.routes
    assert merged.prompts == backend.prompts
    assert merged.model_aliases == (("x", "y"),)
    assert merged.defaults == ()  # set (empty) on the backend: it still wins
    assert AIPolicy().over(route) == route


def test_route_and_backend_policies_both_apply() -> None:
    text = _binds(
        _route_ai("routes: {/v1/responses: responses, /v1/chat/completions: completions}",
                  "prompts: {append: [{role: system, content: from-route}]}"),
        backend_policies=(
            "        policies:\n          ai:\n            modelAliases: {short: gpt-4o}"
        ),
    )  # fmt: skip
    router = _groups(text)
    routed = _resolve(router, {"model": "short", "input": "hi"}, "/v1/responses")
    assert routed.route_type == "responses" and routed.requested_model == "gpt-4o"
    assert routed.obj is not None and routed.obj["input"][-1]["content"][0]["text"] == "from-route"


def test_a_route_without_shaping_keeps_the_openai_fast_path() -> None:
    assert _backend(_binds()).router is None
    assert _backend(_binds(_route_ai("routes: {/v1/responses: responses}"))).router is None
    # `defaults: {}` sets nothing to shape with.
    assert _backend(_binds(_route_ai("defaults: {}"))).router is None


@pytest.mark.parametrize(
    "line",
    [
        "prompts: {append: [{role: system, content: x}]}",
        "modelAliases: {a: b}",
        "defaults: {a: 1}",
        "overrides: {a: 1}",
        "transformations: {a: '1'}",
        "finalTransformations: {a: '1'}",
        "promptCaching: {}",
    ],
)
def test_a_route_with_shaping_takes_the_general_path(line: str) -> None:
    backend = _backend(_binds(_route_ai(line)))
    assert isinstance(backend.router, ProviderGroups)
    assert backend.ai is not None and backend.ai.model_override is None


# --- model aliases ---------------------------------------------------------------------------


def test_alias_exact_then_longest_wildcard() -> None:
    shaping = RequestShaping((
        ("gpt-*", "short-pattern"),
        ("gpt-4o-*", "long-pattern"),
        ("gpt-4o-mini", "exact"),
        ("*-preview", "suffix"),
        ("claude-*-sonnet", "middle"),
        ("a.b*", "dotted"),
    ))  # fmt: skip
    assert shaping.alias("gpt-4o-mini") == "exact"
    assert shaping.alias("gpt-4o-2024") == "long-pattern"
    assert shaping.alias("gpt-3.5") == "short-pattern"
    assert shaping.alias("gpt-") == "short-pattern"  # `*` matches nothing too
    assert shaping.alias("o1-preview") == "suffix"
    assert shaping.alias("claude-3-5-sonnet") == "middle"
    assert shaping.alias("claude-3-5-sonnet-x") is None
    assert shaping.alias("a.bc") == "dotted" and shaping.alias("axbc") is None  # `.` literal
    assert shaping.alias("llama") is None


def test_equal_length_wildcards_in_config_order() -> None:
    shaping = RequestShaping((("ab*", "first"), ("*bc", "second")))
    assert shaping.alias("abc") == "first"


def test_a_literal_star_key_matches_exactly_first() -> None:
    shaping = RequestShaping((("g*", "pattern"), ("gpt-*", "literal")))
    assert shaping.alias("gpt-*") == "literal"


def test_no_aliases_and_no_prompts_compile_to_nothing() -> None:
    assert compile_shaping(None) is None
    assert compile_shaping(AIPolicy(defaults=(("a", 1),))) is None
    assert compile_shaping(AIPolicy(prompts=PromptEnrichment())) is None


# --- prompts on each client format: agentgateway's golden fixtures ---------------------------


@pytest.mark.parametrize(
    ("fixture", "route_type"),
    [
        ("policies/openai_with_messages.openai", "completions"),
        ("policies/openai_with_inputs.openai", "responses"),
        ("policies/openai_with_text_input.openai", "responses"),
        ("responses/assistant-history.openai", "responses"),
        ("policies/anthropic_with_system.anthropic", "messages"),
        ("policies/gemini_with_system.gemini-native", "generateContent"),
    ],
)
def test_prompts_match_agentgateway_golden_fixtures(fixture: str, route_type: str) -> None:
    name = fixture.rsplit(".", 1)[0]
    body = json.loads((FIXTURES / f"{name}.json").read_text())
    assert GOLDEN_PROMPTS.enrich(body, route_type)
    assert body == _snapshot_request(FIXTURES / f"{fixture}.snap")


def test_messages_system_prompts_extend_a_block_list_or_create_one() -> None:
    shaping = RequestShaping((), prepend=(("system", "first"),), append=(("system", "last"),))
    body: dict[str, Any] = {
        "messages": [],
        "system": [{"type": "text", "text": "own", "cache_control": {"type": "ephemeral"}}],
    }
    assert shaping.enrich(body, "messages")
    assert body["system"] == [
        {"type": "text", "text": "first"},
        {"type": "text", "text": "own", "cache_control": {"type": "ephemeral"}},
        {"type": "text", "text": "last"},
    ]
    bare: dict[str, Any] = {"messages": []}
    assert shaping.enrich(bare, "anthropicTokenCount")
    assert bare["system"] == [{"type": "text", "text": "first"}, {"type": "text", "text": "last"}]
    # Only chat prompts: a string system prompt stays a string.
    chat_only = RequestShaping((), append=(("user", "u"),))
    kept: dict[str, Any] = {"messages": [], "system": "own"}
    assert chat_only.enrich(kept, "messages")
    assert kept == {"messages": [{"role": "user", "content": "u"}], "system": "own"}


def test_gemini_snake_case_system_instruction_is_kept_in_camel_case() -> None:
    shaping = RequestShaping((), prepend=(("system", "S"),))
    body: dict[str, Any] = {"contents": [], "system_instruction": {"parts": [{"text": "own"}]}}
    assert shaping.enrich(body, "geminiCountTokens")
    instruction = {"parts": [{"text": "S"}, {"text": "own"}]}
    assert body == {"contents": [], "systemInstruction": instruction}


def test_responses_roles_as_agentgateway_builds_them() -> None:
    shaping = RequestShaping((), append=(("developer", "d"), ("tool", "t")))
    body: dict[str, Any] = {}
    assert shaping.enrich(body, "responses")
    assert body["input"] == [
        {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "d"}]},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "t"}]},
    ]


@pytest.mark.parametrize("route_type", ["embeddings", "rerank", "detect", "passthrough"])
def test_no_prompts_for_other_route_types(route_type: str) -> None:
    body: dict[str, Any] = {"model": "m", "input": "x", "messages": []}
    assert not GOLDEN_PROMPTS.enrich(body, route_type)
    assert body == {"model": "m", "input": "x", "messages": []}


def test_a_body_of_the_wrong_shape_is_left_for_the_provider_to_refuse() -> None:
    body: dict[str, Any] = {"model": "m", "messages": "not a list"}
    assert not GOLDEN_PROMPTS.enrich(body, "completions")
    assert body == {"model": "m", "messages": "not a list"}


# --- the order, on the general path ----------------------------------------------------------

ORDERED = _binds(
    _route_ai(
        "routes: {/v1/chat/completions: completions, /v1/embeddings: embeddings,"
        " /v1/messages: messages, /detect: detect}",
        "modelAliases: {'gpt-*': aliased-model, provider-model: provider-aliased}",
        "prompts: {prepend: [{role: system, content: S}], append: [{role: user, content: U}]}",
        "defaults: {temperature: 0.1, max_tokens: 5}",
        "overrides: {max_tokens: 99}",
        "transformations: {seen_model: 'llmRequest.model', temperature: 'llmRequest.temperature'}",
        "finalTransformations: {final_count: 'size(llmRequest.messages)'}",
    ),
)  # fmt: skip


def test_order_body_changes_then_alias_then_prompts_then_final() -> None:
    router = _groups(ORDERED)
    body = {"model": "gpt-4o", "temperature": 0.7, "messages": [{"role": "user", "content": "hi"}]}
    sent = _sent(router, body)
    assert sent["model"] == "aliased-model"  # the alias of the client's model
    # Transformations see the body before this step's changes (the client's model); the
    # override wins over the client's value, a default fills only what is absent.
    assert sent["seen_model"] == "gpt-4o"
    assert sent["temperature"] == 0.7 and sent["max_tokens"] == 99
    assert sent["messages"] == [
        {"role": "system", "content": "S"},
        {"role": "user", "content": "hi"},
        {"role": "user", "content": "U"},
    ]
    assert sent["final_count"] == 3  # computed on the body with the prompts


def test_a_failed_transformation_removes_its_field_before_defaults_fill_it() -> None:
    router = _groups(ORDERED)
    sent = _sent(router, {"model": "gpt-4o", "messages": []})
    # The client sent no temperature: the expression fails and removes the field, then the
    # default (applied last) sets it.
    assert sent["temperature"] == 0.1
    text = ORDERED.replace("defaults: {temperature: 0.1, max_tokens: 5}", "defaults: {x: 1}")
    assert "temperature" not in _sent(_groups(text), {"model": "gpt-4o", "messages": []})


def test_the_alias_resolves_the_provider_model() -> None:
    # agentgateway applies aliases after the provider's model replaced the client's.
    text = ORDERED.replace("provider: {openAI: {}}", "provider: {openAI: {model: provider-model}}")
    routed = _resolve(_groups(text), dict(CHAT))
    assert routed.requested_model == "provider-aliased"
    assert routed.obj is not None and routed.obj["seen_model"] == "provider-model"


def test_a_default_model_serves_a_client_without_one() -> None:
    text = _binds(_route_ai("defaults: {model: gpt-4o}"))
    routed = _resolve(_groups(text), {"messages": []})
    assert routed.requested_model == "gpt-4o"
    with pytest.raises(LLMRequestError, match="model not specified"):
        _resolve(_groups(_binds(_route_ai("prompts: {append: []}", "defaults: {a: 1}"))),
                 {"messages": []})


def test_embeddings_get_aliases_and_body_changes_but_no_prompts() -> None:
    sent = _sent(_groups(ORDERED), {"model": "gpt-x", "input": "text"}, "/v1/embeddings")
    assert sent["model"] == "aliased-model" and sent["input"] == "text"
    assert sent["max_tokens"] == 99 and "messages" not in sent


def test_detect_is_forwarded_as_the_client_sent_it() -> None:
    router = _groups(ORDERED)
    raw = {"model": "gpt-4o", "messages": []}
    routed = _resolve(router, raw, "/detect")
    assert routed.route_type == "detect" and routed.requested_model == "gpt-4o"
    assert routed.obj == raw


def test_unshaped_request_bytes_go_as_sent() -> None:
    router = _groups(_binds(_route_ai("modelAliases: {other: gpt-4o}")))
    routed = _resolve(router, CHAT)
    assert not routed.changed  # no alias matched: the client's bytes are sent


def test_translated_provider_gets_prompts_before_translation_and_caching() -> None:
    text = _binds(
        _route_ai(
            "routes: {/v1/chat/completions: completions, /v1/messages: messages}",
            "modelAliases: {'claude-*': claude-sonnet-4}",
            "prompts: {prepend: [{role: system, content: Be brief.}],"
            " append: [{role: user, content: Answer in French.}]}",
            "promptCaching: {minTokens: null}",
            "finalTransformations: {metadata: '{\"user_id\": \"u1\"}'}",
        ),
        provider="anthropic: {}",
    )
    router = _groups(text)
    chat = {"model": "claude-x", "messages": [{"role": "user", "content": "Hi"}]}
    sent = _sent(router, chat)
    assert sent["model"] == "claude-sonnet-4"
    # Chat's system prompt went to Anthropic's `system`, marked by promptCaching.
    assert sent["system"] == [
        {"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}
    ]
    assert [m["role"] for m in sent["messages"]] == ["user", "user"]
    assert sent["metadata"] == {"user_id": "u1"}
    # A Messages client: system prompts join `system` (no markers: the client decides).
    messages = {"model": "claude-x", "max_tokens": 5, "system": "Own.",
                "messages": [{"role": "user", "content": "Hi"}]}  # fmt: skip
    sent = _sent(router, messages, "/v1/messages")
    assert sent["system"] == [{"type": "text", "text": "Be brief."},
                              {"type": "text", "text": "Own."}]  # fmt: skip
    assert sent["messages"][-1] == {"role": "user", "content": "Answer in French."}


@pytest.mark.parametrize(
    ("ai_extra", "target", "expected"),
    [
        ("", "/compatibility/v1/chat/completions?x=1", "/compatibility/v1/chat/completions?x=1"),
        ("          pathPrefix: /base\n", "/other/v1/chat/completions", "/base/chat/completions"),
    ],
)
def test_openai_off_the_fast_path_keeps_its_upstream_path(
    ai_extra: str, target: str, expected: str
) -> None:
    # hostOverride without pathPrefix keeps the client's path (agentgateway's
    # set_default_path), as the fast path does: shaping a route must not move its calls.
    text = _binds(_route_ai("modelAliases: {a: b}"), ai_policies=ai_extra)
    routed = _resolve(_groups(text), CHAT, target.partition("?")[0])
    assert routed.obj is not None
    request = prepare_call(routed.route.config, routed.route_type, target.encode(), routed.obj,
                           b"", routed.changed)
    assert request.target == expected.encode()
