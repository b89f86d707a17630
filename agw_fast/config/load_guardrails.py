"""Guardrails config: agentgateway's `PromptGuard` (`policies.ai.promptGuard` in the binds
form, `guardrails` in `llm:`), raw YAML to frozen dataclasses.

Semantics follow agentgateway's crates/agentgateway/src/llm/policy/mod.rs: a request guard
inspects `scope` (default system prompt and messages; only `regex` may set another), a regex
guard's `action` defaults to `mask`, a `rejection` defaults to 403 with agentgateway's text,
a webhook fails closed unless `failureMode: failOpen`. The cloud guards: Bedrock Guardrails
(SigV4 with the ambient AWS credentials unless `policies.backendAuth.key`), Google Model Armor
(Application Default Credentials unless a key), Azure Content Safety (refused: agentgateway
always authenticates it with Microsoft Entra ID, which agw-fast does not implement). Remote
response guards (webhook, cloud) apply to JSON responses; with `streaming: Enabled` they are
refused (agentgateway calls them per stream window).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Literal, NamedTuple, cast

from agw_fast.config.model import (
    DEFAULT_REJECTION_BODY,
    DEFAULT_SCOPE,
    AzureContentSafetyConfig,
    BackendAuth,
    BackendTLS,
    BedrockGuardConfig,
    GuardConfig,
    GuardKind,
    GuardRejection,
    GuardServicePolicies,
    HeaderModifier,
    ModelArmorConfig,
    ModerationConfig,
    PromptGuard,
    RegexGuardConfig,
    RegexRuleConfig,
    ValueMatch,
    WebhookConfig,
)
from agw_fast.config.validate import (
    Obj,
    as_int,
    as_list,
    as_str,
    as_str_map,
    check_header_name,
    check_regex,
    choice,
    join,
    kind,
    not_supported,
    parse_host_port,
)
from agw_fast.errors import ConfigError

__all__ = [
    "BUILTINS",
    "CONTENT_SCOPES",
    "GuardParsers",
    "merge_prompt_guards",
    "parse_prompt_guard",
]

BUILTINS = ("ssn", "creditCard", "phoneNumber", "email", "caSin")
CONTENT_SCOPES = ("systemPrompt", "messages", "toolOutput", "toolInput")
DEFAULT_MODERATION_MODEL = "omni-moderation-latest"
_CLOUD_GUARDS = ("bedrockGuardrails", "googleModelArmor", "azureContentSafety")
# Pseudo-headers a webhook `headers` entry may set (agentgateway's HeaderOrPseudo; `:scheme`
# and `:status` are accepted there and skipped when the request is built).
_PSEUDO = (":path", ":method", ":authority", ":scheme", ":status")


class GuardParsers(NamedTuple):
    """The shared policy parsers guards reuse (from load_policies, which calls in here)."""

    header_modifier: Callable[[object, str], HeaderModifier]
    value_match: Callable[[object, str], ValueMatch]
    backend_auth: Callable[[object, str, Path], BackendAuth]
    backend_tls: Callable[[object, str, Path], BackendTLS]


def merge_prompt_guards(shared: PromptGuard | None, model: PromptGuard | None
                        ) -> PromptGuard | None:
    """agentgateway's `merge_prompt_guards`: `llm.policies.guardrails` first, then the model's
    own; streaming is enabled if the model enables it (else the shared setting)."""
    if shared is None or model is None:
        return shared if model is None else model
    return PromptGuard(
        streaming=model.streaming or shared.streaming,
        request=shared.request + model.request,
        response=shared.response + model.response,
    )


def parse_prompt_guard(
    raw: object, path: str, base_dir: Path, parsers: GuardParsers
) -> PromptGuard:
    o = Obj(raw, path, "PromptGuard")
    streaming_raw = o.get("streaming")
    streaming = False
    if streaming_raw is not None:
        mode = choice(streaming_raw, o.child("streaming"), ("Disabled", "Enabled"))
        streaming = mode == "Enabled"
    request = tuple(
        _guard(item, p, base_dir, parsers, request=True) for p, item in o.items("request")
    )
    response = tuple(
        _guard(item, p, base_dir, parsers, request=False) for p, item in o.items("response")
    )
    o.close()
    if streaming:
        for guard in response:
            if guard.kind != "regex":
                # agentgateway asks a remote guard about each window of a stream; here only
                # regex guards read streams.
                raise not_supported(
                    f"{guard.path}.{guard.kind}",
                    "remote response guards with streaming: Enabled (streams are checked by "
                    "regex guards only; without streaming, remote guards check JSON responses)",
                )
    return PromptGuard(streaming, request, response)


def _guard(
    raw: object, path: str, base_dir: Path, parsers: GuardParsers, *, request: bool
) -> GuardConfig:
    o = Obj(raw, path, "RequestGuard" if request else "ResponseGuard")
    kinds = [k for k in ("regex", "webhook", "openAIModeration", *_CLOUD_GUARDS) if o.has(k)]
    if len(kinds) != 1:
        found = f" (found {', '.join(kinds)})" if kinds else ""
        options = ", ".join(
            ("regex", "webhook", *(("openAIModeration",) if request else ()), *_CLOUD_GUARDS)
        )
        raise ConfigError(path, f"a guard needs exactly one of: {options}{found}")
    guard_kind = cast(GuardKind, kinds[0])
    where = o.child(guard_kind)
    rejection_raw = o.get("rejection")
    rejection = GuardRejection() if rejection_raw is None else _rejection(
        rejection_raw, o.child("rejection"), parsers
    )
    scope = DEFAULT_SCOPE
    if request:
        scope_raw = o.get("scope")
        if scope_raw is not None:
            scope = _scope(scope_raw, o.child("scope"), guard_kind)
    body = o.get(guard_kind)
    o.close()
    if guard_kind == "regex":
        return GuardConfig("regex", rejection, path, scope, regex=_regex(body, where))
    if guard_kind == "webhook":
        return GuardConfig(
            "webhook", rejection, path, scope, webhook=_webhook(body, where, parsers)
        )
    if guard_kind == "bedrockGuardrails":
        return GuardConfig(guard_kind, rejection, path, scope,
                           bedrock=_bedrock(body, where, base_dir, parsers))
    if guard_kind == "googleModelArmor":
        return GuardConfig(guard_kind, rejection, path, scope,
                           model_armor=_model_armor(body, where, base_dir, parsers))
    if guard_kind == "azureContentSafety":
        return GuardConfig(guard_kind, rejection, path, scope,
                           azure=_azure(body, where, base_dir, parsers))
    return GuardConfig(
        "openAIModeration", rejection, path, scope,
        moderation=_moderation(body, where, base_dir, parsers),
    )


def _scope(raw: object, path: str, guard_kind: str) -> frozenset[str]:
    items = as_list(raw, path)
    if not items:
        raise ConfigError(
            path, "scope must not be empty; omit it to use the default (systemPrompt + messages)"
        )
    scope = frozenset(choice(item, f"{path}[{i}]", CONTENT_SCOPES) for i, item in enumerate(items))
    if guard_kind not in ("regex", "bedrockGuardrails") and scope != DEFAULT_SCOPE:
        raise ConfigError(
            path,
            "only regex and bedrockGuardrails guards support a non-default scope; "
            f"{guard_kind} guards always inspect the default (systemPrompt + messages)",
        )
    return scope


def _rejection(raw: object, path: str, parsers: GuardParsers) -> GuardRejection:
    o = Obj(raw, path, "RequestRejection")
    body = DEFAULT_REJECTION_BODY
    body_raw = o.get("body")
    if body_raw is not None:
        body = _bytes(body_raw, o.child("body"))
    status = o.opt_int("status", 1, 65535)
    if status is not None and not 100 <= status <= 999:
        # http::StatusCode takes three digits only.
        raise ConfigError(o.child("status"), f"invalid status code {status}")
    headers_raw = o.get("headers")
    headers = (
        None if headers_raw is None else parsers.header_modifier(headers_raw, o.child("headers"))
    )
    o.close()
    return GuardRejection(403 if status is None else status, body, headers)


def _bytes(raw: object, path: str) -> bytes:
    """agentgateway's `Bytes`: a string, or a list of byte values."""
    if isinstance(raw, str):
        return raw.encode("utf-8")
    if isinstance(raw, list):
        return bytes(as_int(item, f"{path}[{i}]", 0, 255) for i, item in enumerate(raw))
    raise ConfigError(path, f"expected a string or a list of bytes, got {kind(raw)}")


def _regex(raw: object, path: str) -> RegexGuardConfig:
    o = Obj(raw, path, "RegexRules")
    action_raw = o.get("action")
    action = "mask" if action_raw is None else choice(action_raw, o.child("action"),
                                                      ("mask", "reject"))
    rules: list[RegexRuleConfig] = []
    rules_path = o.child("rules")
    for index, item in enumerate(as_list(o.require("rules"), rules_path)):
        item_path = f"{rules_path}[{index}]"
        r = Obj(item, item_path, "RegexRule")
        if r.has("builtin") == r.has("pattern"):
            raise ConfigError(item_path, "a rule needs exactly one of: builtin, pattern")
        if r.has("builtin"):
            builtin = choice(r.get("builtin"), r.child("builtin"), BUILTINS)
            if builtin == "phoneNumber" and importlib.util.find_spec("phonenumbers") is None:
                raise ConfigError(
                    r.child("builtin"),
                    "the phoneNumber detector needs the `guardrails` extra "
                    "(pip install 'agw-fast[guardrails]': phonenumberslite)",
                )
            rules.append(RegexRuleConfig(builtin, None, item_path))
        else:
            pattern = check_regex(r.get("pattern"), r.child("pattern"))
            rules.append(RegexRuleConfig(None, pattern, r.child("pattern")))
        r.close()
    o.close()
    return RegexGuardConfig(cast(Literal["mask", "reject"], action), tuple(rules))


def _webhook(raw: object, path: str, parsers: GuardParsers) -> WebhookConfig:
    o = Obj(raw, path, "Webhook")
    target = Obj(o.require("target"), o.child("target"), "SimpleLocalBackendSerde")
    host = parse_host_port(target.require("host"), target.child("host"))
    target.close()
    headers: list[tuple[str, str]] = []
    headers_raw = o.get("headers")
    if headers_raw is not None:
        base = o.child("headers")
        for name, expression in as_str_map(headers_raw, base):
            where = join(base, name)
            if name.startswith(":"):
                if name not in _PSEUDO:
                    raise ConfigError(where, f"invalid pseudo-header {name!r}")
            else:
                name = check_header_name(name, where).lower()
            headers.append((name, expression))
    matches = tuple(
        parsers.value_match(item, p) for p, item in o.items("forwardHeaderMatches")
    )
    mode_raw = o.get("failureMode")
    fail_open = mode_raw is not None and choice(
        mode_raw, o.child("failureMode"), ("failClosed", "failOpen")
    ) == "failOpen"
    o.close()
    return WebhookConfig(host.host, host.port, tuple(headers), matches, fail_open, path)


def _moderation(
    raw: object, path: str, base_dir: Path, parsers: GuardParsers
) -> ModerationConfig:
    o = Obj(raw if raw is not None else {}, path, "Moderation")
    model = o.opt_str("model") or DEFAULT_MODERATION_MODEL
    policies = _service_policies(o, base_dir, parsers, None)
    o.close()
    return ModerationConfig(model, policies.auth, policies.backend_tls, policies.request_headers,
                            path)


def _service_policies(o: Obj, base_dir: Path, parsers: GuardParsers,
                      implicit: Literal["aws", "gcp"] | None) -> GuardServicePolicies:
    """A guard's `policies`. `implicit`: the cloud credential the guard uses by default,
    which `backendAuth` may also name explicitly (`aws: {}`, `gcp: {}`: the same)."""
    policies_raw = o.get("policies")
    if policies_raw is None:
        return GuardServicePolicies()
    p = Obj(policies_raw, o.child("policies"), "SimpleLocalBackendPolicies")
    auth_raw, tls_raw = p.get("backendAuth"), p.get("backendTLS")
    headers_raw = p.get("requestHeaderModifier")
    auth_path = p.child("backendAuth")
    auth = None
    if isinstance(auth_raw, dict) and implicit is not None and implicit in auth_raw:
        _implicit_auth(auth_raw, auth_path, implicit)
    elif auth_raw is not None:
        auth = parsers.backend_auth(auth_raw, auth_path, base_dir)
    tls = None if tls_raw is None else parsers.backend_tls(
        tls_raw, p.child("backendTLS"), base_dir
    )
    headers = None if headers_raw is None else parsers.header_modifier(
        headers_raw, p.child("requestHeaderModifier")
    )
    p.close()
    return GuardServicePolicies(auth, tls, headers)


def _implicit_auth(raw: dict[str, object], path: str, implicit: Literal["aws", "gcp"]) -> None:
    """`backendAuth: {aws: {...}}` / `{gcp: {...}}` naming the guard's default credential."""
    if len(raw) != 1:
        raise ConfigError(path, f"expected only {implicit}")
    where = join(path, implicit)
    if implicit == "aws":
        a = Obj(raw[implicit] if raw[implicit] is not None else {}, where, "AwsAuth")
        service = a.opt_str("serviceName")
        if service is not None and service != "bedrock":
            raise not_supported(a.child("serviceName"), "Bedrock guardrails are signed for bedrock")
        if a.opt_str("region") is not None:
            raise not_supported(a.child("region"), "the guardrail's region signs its calls")
        a.close()
        return
    g = Obj(raw[implicit] if raw[implicit] is not None else {}, where, "GcpAuth")
    token_type = g.get("type")
    if token_type is not None and choice(token_type, g.child("type"),
                                         ("accessToken", "idToken")) == "idToken":
        raise not_supported(g.child("type"), "an ID token (Model Armor takes an access token)")
    g.close()


def _bedrock(raw: object, path: str, base_dir: Path, parsers: GuardParsers
             ) -> BedrockGuardConfig:
    o = Obj(raw, path, "BedrockGuardrails")
    identifier = _path_segment(o, "guardrailIdentifier")
    version = _path_segment(o, "guardrailVersion")
    region = _host_label(o, "region")
    policies = _service_policies(o, base_dir, parsers, "aws")
    o.close()
    return BedrockGuardConfig(identifier, version, region, policies, path)


def _model_armor(raw: object, path: str, base_dir: Path, parsers: GuardParsers
                 ) -> ModelArmorConfig:
    o = Obj(raw, path, "GoogleModelArmor")
    template = _path_segment(o, "templateId")
    project = _path_segment(o, "projectId")
    location = _host_label(o, "location") if o.has("location") else "us-central1"
    policies = _service_policies(o, base_dir, parsers, "gcp")
    o.close()
    return ModelArmorConfig(template, project, location, policies, path)


def _azure(raw: object, path: str, base_dir: Path, parsers: GuardParsers
           ) -> AzureContentSafetyConfig:
    o = Obj(raw, path, "AzureContentSafety")
    endpoint = o.req_str("endpoint").rstrip("/")
    for scheme in ("https://", "http://"):
        endpoint = endpoint.removeprefix(scheme)
    if not endpoint or any(c in endpoint for c in "/?# "):
        raise ConfigError(o.child("endpoint"), f"expected a hostname, got {endpoint!r}")
    if o.has("policies"):
        _service_policies(o, base_dir, parsers, None)  # checked; see below
    analyze = detect = False
    threshold, analyze_version = 2, "2024-09-01"
    names: tuple[str, ...] = ()
    halt: bool | None = None
    jailbreak_version = "2024-02-15-preview"
    analyze_raw = o.get("analyzeText")
    if analyze_raw is not None:
        analyze = True
        a = Obj(analyze_raw, o.child("analyzeText"), "AnalyzeTextConfig")
        given = a.opt_int("severityThreshold", -(2**31), 2**31 - 1)  # an i32
        threshold = 2 if given is None else given
        analyze_version = _query_value(a, "apiVersion") or analyze_version
        names = tuple(as_str(n, f"{a.child('blocklistNames')}[{i}]")
                      for i, n in enumerate(as_list(a.get("blocklistNames") or [],
                                                    a.child("blocklistNames"))))
        halt = a.opt_bool("haltOnBlocklistHit")
        a.close()
    detect_raw = o.get("detectJailbreak")
    if detect_raw is not None:
        detect = True
        d = Obj(detect_raw, o.child("detectJailbreak"), "DetectJailbreakConfig")
        jailbreak_version = _query_value(d, "apiVersion") or jailbreak_version
        d.close()
    o.close()
    config = AzureContentSafetyConfig(endpoint, analyze, threshold, analyze_version, names, halt,
                                      detect, jailbreak_version, path)
    # agentgateway puts its implicit Azure credential (Entra ID: environment, workload or
    # managed identity, developer tools) before the guard's `policies`, so the calls always
    # carry an Entra token and a `backendAuth` key is never used.
    raise not_supported(
        path,
        "Azure Content Safety authenticates with Microsoft Entra ID (agentgateway's implicit "
        "Azure credential, which policies.backendAuth cannot replace); agw-fast does not "
        f"implement Entra ID credentials yet ({config.endpoint})",
    )


def _path_segment(o: Obj, key: str) -> str:
    """A value that goes into the service's URL path as one segment."""
    value = o.req_str(key)
    if not value or any(c in value for c in "/?#%") or not value.isprintable() or " " in value:
        raise ConfigError(o.child(key), f"invalid {key} {value!r}")
    return value


def _host_label(o: Obj, key: str) -> str:
    """A region or location: one DNS label of the service's hostname."""
    value = o.req_str(key)
    if not value or not all(c.isascii() and (c.isalnum() or c == "-") for c in value):
        raise ConfigError(o.child(key), f"invalid {key} {value!r}")
    return value


def _query_value(o: Obj, key: str) -> str | None:
    value = o.opt_str(key)
    if value is not None and (not value or any(c in value for c in "&#? %/")):
        raise ConfigError(o.child(key), f"invalid {key} {value!r}")
    return value

