"""The model-centric `llm:` form: models, providers, virtual models, its listener's policies.

agentgateway turns `llm:` into one bind (`llm.port`, default 4000) with one listener named
`llm` and one route `internal/llm:request` whose backend is the model router (types/local.rs
`convert_llm_config`); this loader does the same, so the rest of agw-fast sees an ordinary
bind. Provider references and `params.baseUrl` are resolved here, as agentgateway resolves
them before it builds its backends.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal, NamedTuple, cast
from urllib.parse import urlsplit

from agw_fast.config.load_ai import cel_map as _cel_map
from agw_fast.config.load_ai import json_map as _json_map
from agw_fast.config.load_ai import parse_prompt_caching as _prompt_caching
from agw_fast.config.load_gateways import parse_gateway_refs
from agw_fast.config.load_guardrails import merge_prompt_guards
from agw_fast.config.load_policies import (
    parse_authorization,
    parse_backend_auth,
    parse_backend_tls,
    parse_guardrails,
    parse_header_modifier,
    parse_health,
    parse_route_policies,
    parse_secret,
    parse_value_match,
)
from agw_fast.config.load_tls import parse_listener_tls
from agw_fast.config.model import (
    AzureParams,
    BackendAuth,
    BackendTLS,
    BedrockParams,
    Bind,
    CustomFormat,
    HeaderModifier,
    HostBackend,
    Listener,
    LLMModel,
    LLMRouter,
    LLMVirtualModel,
    LLMVirtualTarget,
    PromptGuard,
    ProviderFormat,
    Route,
    RouteBackend,
    RoutePolicies,
    ValueMatch,
    VertexParams,
)
from agw_fast.config.validate import (
    Obj,
    as_int,
    as_list,
    as_map,
    as_str,
    check_url_path,
    choice,
    not_supported,
    parse_host_port,
)
from agw_fast.errors import ConfigError

__all__ = [
    "DEFAULT_LLM_PORT",
    "LLM_LISTENER",
    "LLM_ROUTE",
    "LLMForm",
    "TIKTOKEN_MISSING",
    "parse_llm",
    "tiktoken_available",
    "tokenize_flag",
    "vertex_params",
]

DEFAULT_LLM_PORT = 4000
LLM_LISTENER = "llm"  # agentgateway's llm::LOCAL_LISTENER_NAME
LLM_ROUTE = "llm:request"
TIKTOKEN_MISSING = "needs the tiktoken package: pip install 'agw-fast[tokenize]'"
_PROVIDERS = ("openai", "openAI", "gemini", "vertex", "anthropic", "bedrock", "azure", "copilot")
_SERVED_PROVIDERS = {"openai": "openAI", "openAI": "openAI", "anthropic": "anthropic",
                     "gemini": "gemini", "azure": "azure", "bedrock": "bedrock",
                     "vertex": "vertex"}  # fmt: skip
_FORMATS = (
    "completions", "messages", "responses", "embeddings", "anthropicTokenCount",
    "generateContent", "geminiCountTokens", "realtime", "rerank",
)  # fmt: skip


def _formats(*specs: str) -> tuple[CustomFormat, ...]:
    """`"format"` or `"format=/fixed/path"` each."""
    result = []
    for spec in specs:
        name, _, fixed = spec.partition("=")
        result.append(CustomFormat(cast(ProviderFormat, name), fixed or None))
    return tuple(result)


# agentgateway's provider presets (llm/src/custom.rs `ProviderPreset`): custom providers
# with a default `baseUrl` and the formats each vendor's API takes. The name is also the
# provider name in telemetry.
_PRESETS: dict[str, tuple[str, tuple[CustomFormat, ...]]] = {
    "cohere": ("https://api.cohere.ai", _formats(
        "completions=/compatibility/v1/chat/completions",
        "embeddings=/compatibility/v1/embeddings", "rerank=/v2/rerank")),
    "ollama": ("http://localhost:11434/v1", _formats("completions", "responses", "embeddings")),
    "baseten": ("https://inference.baseten.co/v1", _formats("completions", "messages")),
    "cerebras": ("https://api.cerebras.ai/v1", _formats("completions")),
    "deepinfra": ("https://api.deepinfra.com/v1/openai", _formats(
        "completions", "messages=/anthropic/v1/messages", "embeddings")),
    "deepseek": ("https://api.deepseek.com/v1", _formats(
        "completions", "messages=/anthropic/v1/messages", "responses")),
    "groq": ("https://api.groq.com/openai/v1", _formats("completions", "responses")),
    "huggingface": ("https://router.huggingface.co/v1", _formats("completions", "responses")),
    "mistral": ("https://api.mistral.ai/v1", _formats("completions", "embeddings")),
    "openrouter": ("https://openrouter.ai/api/v1", _formats(
        "completions", "messages", "responses", "embeddings", "rerank")),
    "togetherai": ("https://api.together.xyz/v1", _formats("completions", "embeddings", "rerank")),
    "xai": ("https://api.x.ai/v1", _formats("completions", "responses", "realtime")),
    "fireworks": ("https://api.fireworks.ai/inference/v1", _formats(
        "completions", "messages", "responses", "embeddings", "rerank")),
}  # fmt: skip


class LLMForm(NamedTuple):
    """`llm:` read: the bind agentgateway makes of it on its own port, or, with `gateways`,
    the gateways its one route attaches to instead (config/load_gateways.py)."""

    bind: Bind
    gateways: tuple[str, ...]  # `llm.gateways`
    own_port: bool  # `port` or `tls` set: never attached to a `default` gateway implicitly


def parse_llm(raw: object, path: str, base_dir: Path) -> LLMForm:
    """`llm:` as the bind agentgateway makes of it."""
    o = Obj(raw, path, "LocalLLMConfig")
    gateways = parse_gateway_refs(o.get("gateways"), o.child("gateways"))
    port = o.opt_int("port", 0, 65535)
    tls_raw = o.get("tls")
    if gateways and (port is not None or tls_raw is not None):
        raise ConfigError(
            o.child("gateways"), "llm.gateways cannot be used with llm.port or llm.tls"
        )
    tls = None if tls_raw is None else parse_listener_tls(tls_raw, o.child("tls"), base_dir)
    providers: dict[str, tuple[str, dict[str, Any]]] = {}
    for item_path, item in o.items("providers"):
        p = as_map(item, item_path)
        Obj(p, item_path, "LocalLLMProvider")  # key check
        name = as_str(p.get("name"), f"{item_path}.name")
        if name in providers:
            raise ConfigError(
                f"{item_path}.name", "llm.providers contains duplicate provider names"
            )
        providers[name] = (item_path, p)
    models = tuple(
        _model(item, item_path, base_dir, providers) for item_path, item in o.items("models")
    )
    _check_patterns(models, o.child("models"))
    virtual = tuple(_virtual_model(item, p) for p, item in o.items("virtualModels"))
    for vm_path, vm in zip((p for p, _ in o.items("virtualModels")), virtual, strict=True):
        for target in vm.targets:
            if not any(_matches(m.name, target.model) for m in models):
                raise ConfigError(
                    target.path,
                    f"virtual model target {target.model} does not match any llm.models entry",
                )
        del vm_path
    policies_raw = o.get("policies")
    policies, shared_guards = (
        (None, None) if policies_raw is None
        else _policies(policies_raw, o.child("policies"), base_dir)
    )
    if shared_guards is not None:
        models = tuple(
            replace(m, guardrails=merge_prompt_guards(shared_guards, m.guardrails))
            for m in models
        )
    o.close()
    # agentgateway orders models by specificity (characters other than `*`), most first;
    # ties keep config order. The router takes the first match in this order.
    ordered = tuple(sorted(models, key=lambda m: -len(m.name.replace("*", ""))))
    route = Route(
        name=LLM_ROUTE,
        namespace="internal",
        policies=policies,
        backends=(RouteBackend(LLMRouter(ordered, virtual)),),
    )
    listener = Listener(
        name=LLM_LISTENER,
        hostname="*",
        protocol="HTTPS" if tls is not None else "HTTP",
        routes=(route,),
        tls=tls,
    )
    bind = Bind(port=DEFAULT_LLM_PORT if port is None else port, listeners=(listener,))
    return LLMForm(bind, gateways, port is not None or tls is not None)


def _policies(
    raw: object, path: str, base_dir: Path
) -> tuple[RoutePolicies | None, PromptGuard | None]:
    """`llm.policies`: the listener's policies, run for every request before a model is
    chosen (those agw-fast has are the route policies of the same names), and `guardrails`,
    which apply to every model (merged into each model's own)."""
    o = Obj(raw, path, "LocalLLMPolicy")
    picked = {key: o.get(key) for key in o.keys() if key != "guardrails"}
    guards_raw = o.get("guardrails")
    guards = None if guards_raw is None else parse_guardrails(
        guards_raw, o.child("guardrails"), base_dir
    )
    o.close()
    return parse_route_policies(picked, path, base_dir), guards


def _check_patterns(models: tuple[LLMModel, ...], path: str) -> None:
    ids: set[str] = set()
    for i, model in enumerate(models):
        pattern = model.name
        where = f"{path}[{i}].name"
        stars = pattern.count("*")
        if stars > 1:
            raise ConfigError(where, f"model name wildcard may only appear once: '{pattern}'")
        if stars == 1 and not (pattern.startswith("*") or pattern.endswith("*")):
            raise ConfigError(
                where,
                f"model name wildcard must be either at the beginning or the end: '{pattern}'",
            )
        if model.id is not None:
            if not model.id:
                raise ConfigError(f"{path}[{i}].id", "llm.models model id cannot be empty")
            if model.id in ids:
                raise ConfigError(
                    f"{path}[{i}].id", f"llm.models contains duplicate model id: {model.id}"
                )
            ids.add(model.id)


def _matches(pattern: str, model: str) -> bool:
    """agentgateway's model pattern match (`*`, `prefix*`, `*suffix`, exact)."""
    if pattern == "*":
        return True
    if pattern.endswith("*"):
        return model.startswith(pattern[:-1])
    if pattern.startswith("*"):
        return model.endswith(pattern[1:])
    return pattern == model


def _provider_kind(raw: object, path: str) -> str | tuple[str, object]:
    """A served provider's name, or ("preset", name), ("custom", its mapping) or
    ("reference", name)."""
    if isinstance(raw, str):
        if raw in _PRESETS:
            return ("preset", raw)
        name = choice(raw, path, (*_PROVIDERS, *_PRESETS))
        if name == "copilot":
            raise not_supported(
                path,
                "the copilot provider: its GitHub credential is read per request from "
                "GH_COPILOT_TOKEN or the GitHub CLI's files; use `custom` with an apiKey",
            )
        if name not in _SERVED_PROVIDERS:
            raise not_supported(
                path,
                f"the {name} provider (agw-fast has openAI, anthropic, gemini, azure, bedrock, "
                "vertex, "
                "custom and the presets)",
            )
        return _SERVED_PROVIDERS[name]
    o = as_map(raw, path)
    if set(o) == {"reference"}:
        return ("reference", as_str(o["reference"], f"{path}.reference"))
    if set(o) == {"custom"}:
        return ("custom", o["custom"])
    raise ConfigError(path, "expected a provider name, {reference: <name>} or {custom: ...}")


def _custom(raw: object, path: str) -> tuple[str | None, str | None, tuple[CustomFormat, ...]]:
    """`provider.custom`: its model, providerOverride and formats."""
    c = Obj(raw, path, "CustomProvider")
    model = c.opt_str("model")
    override = c.opt_str("providerOverride")
    formats = []
    for item_path, item in c.items("formats"):
        f = Obj(item, item_path, "ProviderFormatConfig")
        kind = choice(f.require("type"), f.child("type"), _FORMATS)
        fixed = f.get("path")
        formats.append(
            CustomFormat(
                cast(ProviderFormat, kind),
                None if fixed is None else check_url_path(fixed, f.child("path")),
            )
        )
        f.close()
    c.close()
    return model, override, tuple(formats)


# Model-level fields a provider's `defaults` may also set (model values win).
_DEFAULTABLE = (
    "defaults", "overrides", "transformation", "requestHeaders", "responseHeaders", "tls",
    "backendTLS", "auth", "health", "backendTunnel", "promptCaching",
)  # fmt: skip


def _model(
    raw: object,
    path: str,
    base_dir: Path,
    providers: Mapping[str, tuple[str, dict[str, Any]]],
) -> LLMModel:
    data = dict(as_map(raw, path))
    o = Obj(data, path, "LocalLLMModels")  # key check before anything is merged in
    del o
    kind = _provider_kind(data.get("provider"), f"{path}.provider")
    kind_path = f"{path}.provider"
    params_path = f"{path}.params"
    params = dict(as_map(data.get("params") or {}, params_path))
    # agentgateway names a referenced custom provider after its llm.providers entry.
    reference_name: str | None = None
    if isinstance(kind, tuple) and kind[0] == "reference":
        reference = cast(str, kind[1])
        found = providers.get(reference)
        if found is None:
            raise ConfigError(
                f"{path}.provider.reference",
                f"model {data.get('name')} references unknown provider {reference}",
            )
        provider_path, provider = found
        if set(params) - {"model"}:
            raise ConfigError(
                params_path,
                f"model {data.get('name')} references provider {reference} and can only set "
                "params.model",
            )
        kind_path = f"{provider_path}.provider"
        kind = _provider_kind(provider.get("provider"), kind_path)
        reference_name = reference
        if isinstance(kind, tuple) and kind[0] == "reference":
            raise ConfigError(
                f"{provider_path}.provider",
                f"llm.providers.{reference} cannot reference another provider",
            )
        merged = dict(as_map(provider.get("params") or {}, f"{provider_path}.params"))
        if "model" in params:
            merged["model"] = params["model"]
        params, params_path = merged, f"{provider_path}.params"
        defaults_raw = provider.get("defaults")
        if defaults_raw is not None:
            d = Obj(defaults_raw, f"{provider_path}.defaults", "LocalLLMProviderDefaults")
            for key in d.keys():
                value = d.get(key)
                if key in ("defaults", "overrides", "transformation") and key in data:
                    data[key] = {
                        **as_map(value, d.child(key)),
                        **as_map(data[key], f"{path}.{key}"),
                    }
                elif key not in data and not (
                    key in ("tls", "backendTLS") and ("tls" in data or "backendTLS" in data)
                ):
                    data[key] = value
            d.close()
    o = Obj(data, path, "LocalLLMModels")
    name = o.req_str("name")
    o.get("provider")
    o.get("params")
    p = Obj(params, params_path, "LocalLLMParams")
    model = p.opt_str("model")
    api_key_raw = p.get("apiKey")
    api_key = (
        None if api_key_raw is None else parse_secret(api_key_raw, p.child("apiKey"), base_dir)
    )
    tokenize = tokenize_flag(p.opt_bool("tokenize"), p.child("tokenize"))
    azure = _azure(p, kind)
    bedrock = _bedrock(p, kind)
    vertex = _vertex(p, kind)
    host_override: HostBackend | None = None
    path_prefix: str | None = None
    path_override: str | None = None
    if p.get("hostOverride") is not None:
        host_override = parse_host_port(p.get("hostOverride"), p.child("hostOverride"))
    if p.get("pathOverride") is not None:
        path_override = check_url_path(p.get("pathOverride"), p.child("pathOverride"))
    if p.get("pathPrefix") is not None:
        path_prefix = check_url_path(p.get("pathPrefix"), p.child("pathPrefix"))
    tls_raw = o.get("tls")
    if tls_raw is None:
        tls_raw = o.get("backendTLS")
    else:
        o.get("backendTLS")
    backend_tls = None if tls_raw is None else parse_backend_tls(tls_raw, o.child("tls"), base_dir)
    base_url = p.opt_str("baseUrl")
    preset = kind[1] if isinstance(kind, tuple) and kind[0] == "preset" else None
    if preset is not None and base_url is None and host_override is None and path_override is None:
        # agentgateway's `apply_provider_defaults`: the preset's endpoint, unless the
        # model says where to go.
        base_url = _PRESETS[cast(str, preset)][0]
    if base_url is not None:
        host_override, path_prefix, https = _base_url(
            base_url, p.child("baseUrl"), name, host_override, path_prefix, path_override
        )
        if https and backend_tls is None:
            backend_tls = BackendTLS()
    p.close()
    provider_kind: Literal["openAI", "anthropic", "gemini", "azure", "bedrock", "vertex", "custom"]
    formats: tuple[CustomFormat, ...] = ()
    provider_name: str | None = None
    if isinstance(kind, tuple):
        provider_kind = "custom"
        if kind[0] == "preset":
            provider_name = cast(str, kind[1])
            formats = _PRESETS[provider_name][1]
        else:
            custom_path = f"{kind_path}.custom"
            custom_model, override, formats = _custom(kind[1], custom_path)
            provider_name = override or reference_name or "custom"
            if model is None:
                model = custom_model
            if not formats:
                raise ConfigError(
                    f"{custom_path}.formats",
                    f"custom provider for model {name} must specify at least one format",
                )
        if host_override is None:
            # A custom provider has no default host. agentgateway refuses a bare custom
            # provider so at load; a preset whose own endpoint a pathOverride displaced
            # fails its every request there, and is refused here.
            what = "custom provider" if preset is None else f"provider {preset}"
            raise ConfigError(
                f"{params_path}.baseUrl", f"{what} for model {name} requires params.baseUrl"
            )
    else:
        provider_kind = cast(
            Literal["openAI", "anthropic", "gemini", "azure", "bedrock", "vertex"], kind
        )
    visibility = o.get("visibility")
    public = True
    if visibility is not None:
        public = choice(visibility, o.child("visibility"), ("public", "internal")) == "public"
    if o.get("backendTunnel") is not None:
        raise not_supported(o.child("backendTunnel"), "backend tunnels")
    guardrails_raw = o.get("guardrails")
    passthrough_raw = o.get("passthrough")
    passthrough = None
    if passthrough_raw is not None:
        passthrough = cast(
            Literal["detect", "opaque"],
            choice(passthrough_raw, o.child("passthrough"), ("detect", "opaque")),
        )
    auth_raw = o.get("auth")
    auth: BackendAuth | None = (
        None if auth_raw is None else parse_backend_auth(auth_raw, o.child("auth"), base_dir)
    )
    authorization_raw = o.get("authorization")
    authorization = (
        None
        if authorization_raw is None
        else parse_authorization(authorization_raw, o.child("authorization"))
    )
    result = LLMModel(
        name=name,
        provider=provider_kind,
        path=path,
        id=o.opt_str("id"),
        model=model,
        public=public,
        api_key=api_key,
        host_override=host_override,
        path_override=path_override,
        path_prefix=path_prefix,
        azure=azure,
        bedrock=bedrock,
        vertex=vertex,
        transformation=_cel_map(o.get("transformation"), o.child("transformation")),
        defaults=_json_map(o.get("defaults"), o.child("defaults")),
        overrides=_json_map(o.get("overrides"), o.child("overrides")),
        header_matches=_matches_list(o.get("matches"), o.child("matches")),
        request_headers=_modifier(o.get("requestHeaders"), o.child("requestHeaders")),
        response_headers=_modifier(o.get("responseHeaders"), o.child("responseHeaders")),
        backend_tls=backend_tls,
        auth=auth,
        health=parse_health(o.get("health"), o.child("health")),
        passthrough=passthrough,
        formats=formats,
        provider_name=provider_name,
        prompt_caching=_prompt_caching(o.get("promptCaching"), o.child("promptCaching")),
        final_transformation=_cel_map(
            o.get("finalTransformation"), o.child("finalTransformation")
        ),
        authorization=authorization,
        guardrails=None if guardrails_raw is None else parse_guardrails(
            guardrails_raw, o.child("guardrails"), base_dir
        ),
        tokenize=tokenize,
    )
    o.close()
    return result


def _bedrock(p: Obj, kind: str | tuple[str, object]) -> BedrockParams | None:
    region = p.opt_str("awsRegion")
    if kind != "bedrock":
        if region is not None:
            raise not_supported(p.child("awsRegion"), "its provider")
        return None
    if region is None:
        raise ConfigError(p.child("awsRegion"), "bedrock requires awsRegion")
    return BedrockParams(region)


def _azure(p: Obj, kind: str | tuple[str, object]) -> AzureParams | None:
    name = p.opt_str("azureResourceName")
    rtype = p.get("azureResourceType")
    version = p.opt_str("azureApiVersion")
    project = p.opt_str("azureProjectName")
    if kind != "azure":
        return None
    if name is None:
        raise ConfigError(p.child("azureResourceName"), "azure requires azureResourceName")
    if rtype is None:
        raise ConfigError(p.child("azureResourceType"), "azure requires azureResourceType")
    resource_type = choice(rtype, p.child("azureResourceType"), ("openAI", "foundry"))
    if resource_type == "foundry" and project is None:
        raise ConfigError(p.child("azureProjectName"), "azure foundry requires azureProjectName")
    return AzureParams(name, cast(Literal["openAI", "foundry"], resource_type), version, project)


def _vertex(p: Obj, kind: str | tuple[str, object]) -> VertexParams | None:
    """`vertexProject` (required) and `vertexRegion`; other providers ignore both, as in
    agentgateway."""
    project = p.opt_str("vertexProject")
    region = p.opt_str("vertexRegion")
    if kind != "vertex":
        return None
    if project is None:
        raise ConfigError(p.child("vertexProject"), "vertex requires vertexProject")
    return vertex_params(project, region, p.child("vertexProject"), p.child("vertexRegion"))


# A Google Cloud project ID (or a legacy `domain:project`) and a location: both go into the
# request path, the location into the host too (`{region}-aiplatform.googleapis.com`).
_PROJECT = re.compile(r"[a-z0-9][a-z0-9.:-]*")
_REGION = re.compile(r"[a-z0-9][a-z0-9-]*")


def vertex_params(
    project: str, region: str | None, project_path: str, region_path: str
) -> VertexParams:
    """Vertex AI's project and region, checked: they become part of the URL."""
    if not _PROJECT.fullmatch(project):
        raise ConfigError(project_path, f"invalid Google Cloud project ID {project!r}")
    if region is not None and not _REGION.fullmatch(region):
        raise ConfigError(region_path, f"invalid Vertex AI region {region!r}")
    return VertexParams(project, region)


def _base_url(
    text: str,
    path: str,
    name: str,
    host_override: HostBackend | None,
    path_prefix: str | None,
    path_override: str | None,
) -> tuple[HostBackend | None, str | None, bool]:
    """`params.baseUrl` expands to hostOverride, pathPrefix and TLS for https (each only
    where not set explicitly), as agentgateway's `apply_base_url`."""
    try:
        url = urlsplit(text)
        port = url.port
    except ValueError as error:
        raise ConfigError(path, f"invalid params.baseUrl for model {name}: {error}") from None
    if url.username or url.password or url.query or url.fragment:
        raise ConfigError(
            path,
            f"params.baseUrl for model {name} cannot include user info, query parameters, "
            "or a fragment",
        )
    if port is None:
        port = {"http": 80, "https": 443}.get(url.scheme)
        if port is None:
            raise ConfigError(
                path,
                f"params.baseUrl for model {name} must use http or https, or include an "
                "explicit port",
            )
    if not url.hostname:
        raise ConfigError(path, f"params.baseUrl for model {name} must include a host")
    if host_override is None:
        host_override = HostBackend(url.hostname, port)
    prefix = url.path.rstrip("/")
    if prefix and path_override is None and path_prefix is None:
        path_prefix = check_url_path(prefix, path)
    return host_override, path_prefix, url.scheme == "https"


def _matches_list(raw: object, path: str) -> tuple[tuple[ValueMatch, ...], ...]:
    if raw is None:
        return ()
    result = []
    for i, item in enumerate(as_list(raw, path)):
        m = Obj(item, f"{path}[{i}]", "LLMRouteMatch")
        headers = tuple(parse_value_match(h, hp, header=True) for hp, h in m.items("headers"))
        m.close()
        result.append(headers)
    return tuple(result)


def _modifier(raw: object, path: str) -> HeaderModifier | None:
    return None if raw is None else parse_header_modifier(raw, path)


def _virtual_model(raw: object, path: str) -> LLMVirtualModel:
    o = Obj(raw, path, "LocalLLMVirtualModel")
    name = o.req_str("name")
    r = Obj(o.require("routing"), o.child("routing"), "LocalLLMVirtualModelRouting")
    kinds = [k for k in ("weighted", "failover", "conditional") if r.has(k)]
    if len(kinds) != 1:
        raise ConfigError(r.path, f"virtual model {name} must specify exactly one routing strategy")
    kind = kinds[0]
    spec, target_spec = {
        "weighted": ("LocalLLMWeightedRouting", "LocalLLMWeightedTarget"),
        "failover": ("LocalLLMFailoverRouting", "LocalLLMFailoverTarget"),
        "conditional": ("LocalLLMConditionalRouting", "LocalLLMConditionalTarget"),
    }[kind]
    s = Obj(r.get(kind), r.child(kind), spec)
    targets = []
    for tp, item in s.items("targets"):
        t = Obj(item, tp, target_spec)
        model = t.req_str("model")
        if kind == "weighted":
            weight = t.opt_int("weight", 0)
            targets.append(LLMVirtualTarget(model, weight=1 if weight is None else weight, path=tp))
        elif kind == "failover":
            priority = t.get("priority")
            targets.append(
                LLMVirtualTarget(
                    model,
                    priority=as_int(
                        t.require("priority") if priority is None else priority,
                        t.child("priority"),
                        0,
                    ),
                    path=tp,
                )
            )
        else:
            targets.append(LLMVirtualTarget(model, when=t.opt_str("when"), path=tp))
        t.close()
    s.close()
    r.close()
    o.close()
    if not targets:
        raise ConfigError(
            f"{s.path}.targets", f"virtual model {name} must specify at least one {kind} target"
        )
    if kind == "conditional":
        fallback = [i for i, t in enumerate(targets) if t.when is None]
        if fallback and fallback[0] != len(targets) - 1:
            raise ConfigError(
                targets[fallback[0]].path,
                f"virtual model {name} conditional fallback target must be last",
            )
    return LLMVirtualModel(
        name, cast(Literal["weighted", "failover", "conditional"], kind), tuple(targets)
    )


def tiktoken_available() -> bool:
    """Whether the `tokenize` extra (the tiktoken library) is installed."""
    return importlib.util.find_spec("tiktoken") is not None


def tokenize_flag(value: bool | None, path: str) -> bool:
    """`tokenize` (binds `ai` providers, `llm` params): counting needs tiktoken, so a config
    that asks for it without the extra is refused at load rather than at the first request."""
    if value and not tiktoken_available():
        raise ConfigError(path, TIKTOKEN_MISSING)
    return bool(value)
