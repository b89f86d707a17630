"""Request-shaping fields shared by `policies.ai` (binds form) and `llm.models` entries:
body defaults and overrides, CEL transformations, prompt caching, prompt enrichment and
model aliases (agentgateway's llm/policy/mod.rs `Policy`)."""

from __future__ import annotations

import json

from agw_fast.config.model import AIPolicy, PromptCaching, PromptEnrichment
from agw_fast.config.validate import Obj, as_map, as_str, as_str_map, join
from agw_fast.errors import ConfigError

__all__ = [
    "cel_map",
    "json_map",
    "parse_model_aliases",
    "parse_prompt_caching",
    "parse_prompts",
    "shaped_ai_policy",
]


def cel_map(raw: object, path: str) -> tuple[tuple[str, str], ...]:
    """A map of body field -> CEL text (compiled by the plan, which names a bad one)."""
    if raw is None:
        return ()
    return tuple((key, as_str(value, f"{path}.{key}")) for key, value in as_map(raw, path).items())


def json_map(raw: object, path: str) -> tuple[tuple[str, object], ...]:
    """A map of body field -> JSON value."""
    if raw is None:
        return ()
    items = as_map(raw, path)
    for key, value in items.items():
        try:
            json.dumps(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{path}.{key}", "must be a JSON value") from None
    return tuple(items.items())


def parse_prompt_caching(raw: object, path: str) -> PromptCaching | None:
    """`promptCaching`; a missing field takes agentgateway's default, `minTokens: null`
    means no minimum."""
    if raw is None:
        return None
    o = Obj(raw, path, "PromptCachingConfig")
    default = PromptCaching()
    flags = {
        key: o.opt_bool(key) for key in ("cacheSystem", "cacheMessages", "cacheTools")
    }
    # An explicit null is no minimum (serde's Option); only an absent key takes the default.
    explicit = "minTokens" in as_map(raw, path)
    min_tokens = o.opt_int("minTokens", 0) if explicit else default.min_tokens
    offset = o.opt_int("cacheMessageOffset", 0)
    o.close()
    return PromptCaching(
        cache_system=default.cache_system if flags["cacheSystem"] is None else flags["cacheSystem"],
        cache_messages=(
            default.cache_messages if flags["cacheMessages"] is None else flags["cacheMessages"]
        ),
        cache_tools=default.cache_tools if flags["cacheTools"] is None else flags["cacheTools"],
        min_tokens=min_tokens,
        cache_message_offset=offset or 0,
    )


def parse_prompts(raw: object, path: str) -> PromptEnrichment:
    """`prompts` (PromptEnrichment): `prepend` and `append` lists of {role, content}."""
    o = Obj(raw, path, "PromptEnrichment")
    lists = []
    for key in ("prepend", "append"):
        messages = []
        for where, item in o.items(key):
            m = Obj(item, where, "SimpleChatCompletionMessage")
            messages.append((m.req_str("role"), m.req_str("content")))
            m.close()
        lists.append(tuple(messages))
    o.close()
    return PromptEnrichment(prepend=lists[0], append=lists[1])


def parse_model_aliases(raw: object, path: str) -> tuple[tuple[str, str], ...]:
    """`modelAliases`: requested name (exact, or with `*` wildcards) -> model name."""
    aliases = as_str_map(raw, path)
    for name, _ in aliases:
        if not name:
            raise ConfigError(join(path, name), "an alias needs a model name")
    return tuple(aliases)


def shaped_ai_policy(o: Obj, routes: tuple[tuple[str, str], ...]) -> AIPolicy:
    """A `policies.ai` object (Policy) with its request-shaping fields read from `o` (a
    field left out stays unset, None)."""

    def raw(key: str) -> tuple[object | None, str]:
        return o.get(key), o.child(key)

    prompts, p1 = raw("prompts")
    aliases, p2 = raw("modelAliases")
    defaults, p3 = raw("defaults")
    overrides, p4 = raw("overrides")
    transformations, p5 = raw("transformations")
    final, p6 = raw("finalTransformations")
    caching, p7 = raw("promptCaching")
    return AIPolicy(
        routes=routes,
        prompts=None if prompts is None else parse_prompts(prompts, p1),
        model_aliases=() if aliases is None else parse_model_aliases(aliases, p2),
        defaults=None if defaults is None else json_map(defaults, p3),
        overrides=None if overrides is None else json_map(overrides, p4),
        transformations=None if transformations is None else cel_map(transformations, p5),
        final_transformations=None if final is None else cel_map(final, p6),
        prompt_caching=parse_prompt_caching(caching, p7),
    )
