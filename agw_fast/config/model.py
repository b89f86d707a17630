"""Declarative configuration: what the YAML says, validated, as frozen dataclasses.

This is the *parsed* form of agentgateway's local-file schema (the subset agw-fast
implements). It holds no sockets, SSL contexts or compiled regexes: `compile.py` turns it
into runtime objects. Durations are seconds (float); byte sizes are ints.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from agw_fast.config.model_catalog import ModelCatalog

__all__ = [
    "AIBackend",
    "AzureContentSafetyConfig",
    "AzureParams",
    "BedrockGuardConfig",
    "BedrockParams",
    "CustomFormat",
    "ProviderFormat",
    "Eviction",
    "HealthPolicy",
    "LLMModel",
    "LLMRouter",
    "LLMVirtualModel",
    "LLMVirtualTarget",
    "PromptCaching",
    "PromptEnrichment",
    "AIPolicy",
    "ApiKeyAuth",
    "ApiKeyEntry",
    "AuthorityRewrite",
    "BASIC_LOCATION",
    "BEARER_LOCATION",
    "Authorization",
    "AuthorizationRule",
    "BackendAuth",
    "BackendPolicies",
    "BackendPoolConfig",
    "BackendTLS",
    "BasicAuth",
    "Bind",
    "Config",
    "CredentialLocation",
    "CorsPolicy",
    "ConditionalDirectResponse",
    "DelayPolicy",
    "DirectResponse",
    "AccessLogPolicy",
    "FrontendPolicies",
    "GatewayPolicies",
    "HeaderModifier",
    "HostBackend",
    "HtpasswdEntry",
    "JwtAuth",
    "JwtMode",
    "JwtProvider",
    "KeepaliveConfig",
    "Listener",
    "LocalRateLimit",
    "ListenerTLS",
    "LoggingConfig",
    "PathMatch",
    "PathRewrite",
    "RequestMirror",
    "RequestRedirect",
    "Route",
    "RouteBackend",
    "RouteMatch",
    "RoutePolicies",
    "StaticConfig",
    "TracingPolicy",
    "TimeoutPolicy",
    "RetryPolicy",
    "UrlRewrite",
    "ValueMatch",
    "VertexParams",
    "GuardKind",
    "GuardServicePolicies",
    "ModelArmorConfig",
]

SECONDS = 1.0
MiB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class PathMatch:
    kind: Literal["exact", "prefix", "regex"]
    value: str


@dataclass(frozen=True, slots=True)
class ValueMatch:
    """A header or query match: `name` with an exact value or a full-match regex."""

    name: str
    kind: Literal["exact", "regex"]
    value: str


@dataclass(frozen=True, slots=True)
class RouteMatch:
    path: PathMatch = PathMatch("prefix", "/")
    method: str | None = None
    headers: tuple[ValueMatch, ...] = ()
    query: tuple[ValueMatch, ...] = ()


@dataclass(frozen=True, slots=True)
class AuthorityRewrite:
    """`full` replaces host[:port]; `host` keeps the port; `port` keeps the host.

    kind "auto" is the default behaviour (backend hostname); "none" keeps the client's.
    """

    kind: Literal["full", "host", "port", "auto", "none"]
    value: str = ""  # host[:port] for full, host for host, decimal port for port


@dataclass(frozen=True, slots=True)
class PathRewrite:
    kind: Literal["full", "prefix"]
    value: str


@dataclass(frozen=True, slots=True)
class UrlRewrite:
    authority: AuthorityRewrite | None = None
    path: PathRewrite | None = None


@dataclass(frozen=True, slots=True)
class HeaderModifier:
    add: tuple[tuple[str, str], ...] = ()
    set: tuple[tuple[str, str], ...] = ()
    remove: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class RequestRedirect:
    scheme: str | None = None
    authority: AuthorityRewrite | None = None
    path: PathRewrite | None = None
    status: int = 302


@dataclass(frozen=True, slots=True)
class DirectResponse:
    """`body` is static; `body_expression` and `headers` (name -> expression) are CEL,
    evaluated per request (policies/direct_response.py). `path` names it in errors."""

    status: int
    body: bytes = b""
    body_expression: str | None = None
    headers: tuple[tuple[str, str], ...] = ()  # (lowercase name, CEL expression)
    path: str = field(default="", compare=False)


@dataclass(frozen=True, slots=True)
class ConditionalDirectResponse:
    """`directResponse: {conditional: [...]}`: the first entry whose CEL `condition` is true
    answers; an entry without one (last only) is the fallback; none true: no answer."""

    entries: tuple[tuple[str | None, DirectResponse, str], ...]  # (condition, answer, path)


@dataclass(frozen=True, slots=True)
class DelayPolicy:
    """`delay.duration`: a fixed duration (`seconds`) or a CEL `expression` (milliseconds or
    a duration value), evaluated per request."""

    seconds: float = 0.0
    expression: str | None = None
    path: str = ""


@dataclass(frozen=True, slots=True)
class RequestMirror:
    """`requestMirror`: copy a `percentage` (0..1) of requests to `target`, heads only."""

    target: HostBackend
    percentage: float


@dataclass(frozen=True, slots=True)
class BackendTLS:
    """`{}` means: certifi roots, SNI and verification against the target hostname."""

    root: str | None = None  # CA bundle file path (replaces certifi roots)
    cert: str | None = None  # client certificate file (mTLS), requires key
    key: str | None = None
    hostname: str | None = None  # SNI and verification name
    insecure: bool = False  # skip trust verification entirely
    insecure_host: bool = False  # verify the chain but not the name
    alpn: tuple[str, ...] | None = None  # we only speak http/1.1; only that is accepted


@dataclass(frozen=True, slots=True)
class BackendAuth:
    """A secret sent as `Authorization: Bearer <key>` (replacing the client's header)."""

    key: str = field(repr=False)
    header_name: str = "authorization"
    prefix: str = "Bearer "


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """`retry`. `attempts` is the number of *retries* after the first request, as
    agentgateway's proxy counts it (httpproxy.rs: `attempts.get() + 1` sends in all; its
    doc comment says "total", its code does not)."""

    attempts: int = 1
    codes: frozenset[int] = frozenset()
    backoff: float | None = None
    precondition: str | None = None  # CEL on the request: false means no retries
    path: str = ""  # where it is in the config, for a compile error
    condition: str | None = None  # CEL on the response head: true retries (as a listed code)
    condition_path: str = ""


@dataclass(frozen=True, slots=True)
class TimeoutPolicy:
    request_timeout: float | None = None
    backend_request_timeout: float | None = None


# -- guardrails (agentgateway's PromptGuard; parsed by load_guardrails.py) ---------------------

DEFAULT_REJECTION_BODY = b"The request was rejected due to inappropriate content"
DEFAULT_SCOPE = frozenset({"systemPrompt", "messages"})


@dataclass(frozen=True, slots=True)
class GuardRejection:
    """`rejection` (RequestRejection): the answer when a guard rejects."""

    status: int = 403
    body: bytes = DEFAULT_REJECTION_BODY
    headers: HeaderModifier | None = None


@dataclass(frozen=True, slots=True)
class RegexRuleConfig:
    """One `rules` entry: a `builtin` detector or a custom `pattern` (Rust regex syntax)."""

    builtin: str | None
    pattern: str | None
    path: str


@dataclass(frozen=True, slots=True)
class RegexGuardConfig:
    action: Literal["mask", "reject"]
    rules: tuple[RegexRuleConfig, ...]


@dataclass(frozen=True, slots=True)
class WebhookConfig:
    """`webhook`: a guard service at `host:port` (plain HTTP/1.1, as a `host` target)."""

    host: str
    port: int
    headers: tuple[tuple[str, str], ...]  # (header or pseudo-header name, CEL expression)
    forward_header_matches: tuple[ValueMatch, ...]
    fail_open: bool
    path: str


@dataclass(frozen=True, slots=True)
class ModerationConfig:
    """`openAIModeration`: OpenAI's `/v1/moderations` (request guards only)."""

    model: str
    auth: BackendAuth | None
    backend_tls: BackendTLS | None
    request_headers: HeaderModifier | None
    path: str


@dataclass(frozen=True, slots=True)
class GuardServicePolicies:
    """A cloud guard's `policies` (SimpleLocalBackendPolicies). `auth` None: the guard's own
    cloud credential (AWS SigV4, Google ADC); a `key` replaces it, as agentgateway puts the
    user's policies before its implicit ones."""

    auth: BackendAuth | None = None
    backend_tls: BackendTLS | None = None
    request_headers: HeaderModifier | None = None


@dataclass(frozen=True, slots=True)
class BedrockGuardConfig:
    """`bedrockGuardrails`: AWS Bedrock's ApplyGuardrail API."""

    identifier: str
    version: str
    region: str
    policies: GuardServicePolicies
    path: str


@dataclass(frozen=True, slots=True)
class ModelArmorConfig:
    """`googleModelArmor`: Google Cloud Model Armor's sanitize APIs."""

    template_id: str
    project_id: str
    location: str
    policies: GuardServicePolicies
    path: str


@dataclass(frozen=True, slots=True)
class AzureContentSafetyConfig:
    """`azureContentSafety`: Azure AI Content Safety's text:analyze and detectJailbreak."""

    endpoint: str  # a hostname (a scheme and trailing slash are dropped, as agentgateway does)
    analyze_text: bool
    severity_threshold: int
    analyze_api_version: str
    blocklist_names: tuple[str, ...]
    halt_on_blocklist_hit: bool | None
    detect_jailbreak: bool
    jailbreak_api_version: str
    path: str


GuardKind = Literal[
    "regex", "webhook", "openAIModeration", "bedrockGuardrails", "googleModelArmor",
    "azureContentSafety",
]


@dataclass(frozen=True, slots=True)
class GuardConfig:
    """One request or response guard: the field named by `kind` is set."""

    kind: GuardKind
    rejection: GuardRejection
    path: str
    scope: frozenset[str] = DEFAULT_SCOPE
    regex: RegexGuardConfig | None = None
    webhook: WebhookConfig | None = None
    moderation: ModerationConfig | None = None
    bedrock: BedrockGuardConfig | None = None
    model_armor: ModelArmorConfig | None = None
    azure: AzureContentSafetyConfig | None = None


@dataclass(frozen=True, slots=True)
class PromptGuard:
    streaming: bool = False  # `streaming: Enabled`: response guards apply to streams too
    request: tuple[GuardConfig, ...] = ()
    response: tuple[GuardConfig, ...] = ()


@dataclass(frozen=True, slots=True)
class PromptEnrichment:
    """`policies.ai.prompts`: (role, content) messages put before and after the client's."""

    prepend: tuple[tuple[str, str], ...] = ()
    append: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class AIPolicy:
    """`policies.ai`: route types by path suffix, and the request-shaping fields. None (or
    an empty `routes` / `model_aliases`) is "not set": see `over`."""

    routes: tuple[tuple[str, str], ...] = ()
    prompts: PromptEnrichment | None = None
    model_aliases: tuple[tuple[str, str], ...] = ()  # (exact or wildcard name, target)
    # (field, JSON value) for defaults / overrides; (field, CEL text) for the transformations.
    defaults: tuple[tuple[str, object], ...] | None = None
    overrides: tuple[tuple[str, object], ...] | None = None
    transformations: tuple[tuple[str, str], ...] | None = None
    final_transformations: tuple[tuple[str, str], ...] | None = None
    prompt_caching: PromptCaching | None = None
    # `promptGuard`: guardrails (config/load_guardrails.py); not request shaping (the plan
    # decides about the fast path for it on its own).
    prompt_guard: PromptGuard | None = None

    @property
    def shapes_requests(self) -> bool:
        """Whether any field beyond `routes` is set (the OpenAI fast path has none)."""
        return any(getattr(self, name) for name in _SHAPING_FIELDS)

    def over(self, fallback: AIPolicy | None) -> AIPolicy:
        """This (more specific) policy merged over `fallback`, field by field: each field
        this one sets wins, as agentgateway's `merge_llm_policies` (aliases and routes as
        whole maps, never key by key)."""
        if fallback is None:
            return self
        values = {}
        for name in self.__dataclass_fields__:
            mine = getattr(self, name)
            unset = mine == () if name in _MAP_FIELDS else mine is None
            values[name] = getattr(fallback, name) if unset else mine
        return AIPolicy(**values)


# Set when not empty (agentgateway's plain maps); the other fields are set when not None.
_MAP_FIELDS = frozenset({"routes", "model_aliases"})
_SHAPING_FIELDS = (
    "prompts", "model_aliases", "defaults", "overrides", "transformations",
    "final_transformations", "prompt_caching",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class CorsPolicy:
    """`cors`: each list is empty (not set), ("*",) (any) or the configured entries, with
    header names lowercased as agentgateway's `HeaderName` prints them."""

    allow_credentials: bool = False
    allow_headers: tuple[str, ...] = ()
    allow_methods: tuple[str, ...] = ()
    allow_origins: tuple[str, ...] = ()
    expose_headers: tuple[str, ...] = ()
    max_age: int | None = None  # whole seconds (agentgateway sends `as_secs()`)


@dataclass(frozen=True, slots=True)
class BackendPolicies:
    """Policies that apply per backend (may also be written on a route: copied to each)."""

    request_header_modifier: HeaderModifier | None = None
    response_header_modifier: HeaderModifier | None = None
    request_redirect: RequestRedirect | None = None
    backend_tls: BackendTLS | None = None
    backend_auth: BackendAuth | None = None
    backend_request_timeout: float | None = None  # backend `http.requestTimeout`
    ai: AIPolicy | None = None
    health: HealthPolicy | None = None  # read for the providers of an `ai` backend only


JwtMode = Literal["strict", "optional", "permissive"]


@dataclass(frozen=True, slots=True)
class JwtProvider:
    """One trusted issuer of `jwtAuth` (the single form is one provider)."""

    issuer: str
    jwks_source: str  # where the set came from: "inline", a file path or the URL
    jwks_text: str | None  # the JWKS document; None for a URL (fetched when serving)
    audiences: tuple[str, ...] = ()  # empty: `aud` is not checked
    required_claims: frozenset[str] = frozenset({"exp"})
    jwks_url: str | None = None
    path: str = ""  # the provider's config path, for errors in its key set


@dataclass(frozen=True, slots=True)
class JwtAuth:
    """`jwtAuth`: the token's location and what to do with a missing or invalid one."""

    providers: tuple[JwtProvider, ...]
    mode: JwtMode = "optional"
    header_name: str = "authorization"
    prefix: str = "Bearer "
    # A `cookie`, `queryParameter` or `expression` location; None: the header above.
    location: CredentialLocation | None = None


@dataclass(frozen=True, slots=True)
class CredentialLocation:
    """Where a client credential is read from (agentgateway's AuthorizationLocation)."""

    kind: Literal["header", "queryParameter", "cookie", "expression"]
    name: str  # a header name is lowercased; for `expression`, the CEL text
    prefix: str | None = None  # header only: stripped, ASCII case-insensitively
    path: str = ""  # an `expression`'s config path, for its compile error


BEARER_LOCATION = CredentialLocation("header", "authorization", "Bearer ")
BASIC_LOCATION = CredentialLocation("header", "authorization", "Basic ")


@dataclass(frozen=True, slots=True)
class ApiKeyEntry:
    sha256: bytes = field(repr=False)  # the key's SHA-256 digest (`key` is hashed at load)
    metadata: object = None  # JSON value handed to later policies (CEL `apiKey`)


@dataclass(frozen=True, slots=True)
class ApiKeyAuth:
    keys: tuple[ApiKeyEntry, ...] = field(repr=False)
    mode: Literal["strict", "optional", "permissive"] = "optional"
    location: CredentialLocation = BEARER_LOCATION


@dataclass(frozen=True, slots=True)
class HtpasswdEntry:
    username: str
    hash: str = field(repr=False)  # as written: `$2y$...`, `$apr1$...`, `{SHA}...`, crypt
    scheme: Literal["bcrypt", "apr1", "sha1", "crypt"] = "crypt"


@dataclass(frozen=True, slots=True)
class BasicAuth:
    htpasswd: tuple[HtpasswdEntry, ...] = field(repr=False)
    realm: str = "Restricted"
    mode: Literal["strict", "optional"] = "optional"
    location: CredentialLocation = BASIC_LOCATION


@dataclass(frozen=True, slots=True)
class AuthorizationRule:
    """One `authorization.rules` entry: a CEL expression (compiled when the plan is built)."""

    mode: Literal["allow", "deny", "require"]
    expression: str
    path: str  # where it is in the config, for a compile error


@dataclass(frozen=True, slots=True)
class Authorization:
    rules: tuple[AuthorizationRule, ...]


@dataclass(frozen=True, slots=True)
class LocalRateLimit:
    """One `localRateLimit` token bucket (agentgateway's `RateLimitSpec`)."""

    max_tokens: int  # capacity, and what the bucket holds at start
    tokens_per_fill: int
    fill_interval_ns: int  # > 0
    kind: str = "requests"  # "requests" (1 per request) or "tokens" (LLM usage)
    # A `conditional` entry's CEL condition (None: an explicit limit, or the fallback entry)
    # and its config path, for a compile error.
    condition: str | None = None
    path: str = ""


@dataclass(frozen=True, slots=True)
class RoutePolicies:
    request_header_modifier: HeaderModifier | None = None
    response_header_modifier: HeaderModifier | None = None
    request_redirect: RequestRedirect | None = None
    url_rewrite: UrlRewrite | None = None
    direct_response: DirectResponse | ConditionalDirectResponse | None = None
    backend_tls: BackendTLS | None = None
    backend_auth: BackendAuth | None = None
    timeout: TimeoutPolicy | None = None
    ai: AIPolicy | None = None
    basic_auth: BasicAuth | None = None
    api_key: ApiKeyAuth | None = None
    authorization: Authorization | None = None
    jwt_auth: JwtAuth | None = None
    cors: CorsPolicy | None = None
    local_rate_limit: tuple[LocalRateLimit, ...] = ()
    delay: DelayPolicy | None = None
    request_mirror: RequestMirror | None = None
    retry: RetryPolicy | None = None


@dataclass(frozen=True, slots=True)
class HostBackend:
    host: str
    port: int


@dataclass(frozen=True, slots=True)
class AIBackend:
    """An `ai` backend: one named provider, or (`groups`) priority groups of them (then the
    other fields are unused)."""

    name: str
    provider: Literal["openAI", "anthropic", "gemini", "azure", "bedrock", "vertex"] = "openAI"
    model: str | None = None  # provider.<kind>.model
    host_override: HostBackend | None = None
    path_override: str | None = None
    path_prefix: str | None = None
    policies: BackendPolicies | None = None  # ai.policies
    azure: AzureParams | None = None
    bedrock: BedrockParams | None = None
    vertex: VertexParams | None = None
    groups: tuple[tuple[AIBackend, ...], ...] = ()
    tokenize: bool = False  # count the prompt's tokens before the call (llm/tokenizer.py)


@dataclass(frozen=True, slots=True)
class Eviction:
    """`health.eviction` (agentgateway's http/health.rs `Eviction`)."""

    duration: float | None = None  # base eviction time; else retry-after, else 3 s
    restore_health: float | None = None
    consecutive_failures: int | None = None
    health_threshold: float | None = None


@dataclass(frozen=True, slots=True)
class HealthPolicy:
    """`health`: what counts as an unhealthy response, and how a target is evicted."""

    unhealthy_expression: str | None = None  # CEL over `response`; None: 5xx or no connection
    eviction: Eviction | None = None
    path: str = ""  # the expression's config path, for its compile error


@dataclass(frozen=True, slots=True)
class AzureParams:
    resource_name: str
    resource_type: Literal["openAI", "foundry"]
    api_version: str | None = None
    project_name: str | None = None


@dataclass(frozen=True, slots=True)
class BedrockParams:
    """AWS Bedrock: the region of its endpoint (and of the SigV4 signature), and the
    guardrail the binds form may name (sent in every Converse request)."""

    region: str
    guardrail_identifier: str | None = None
    guardrail_version: str | None = None


@dataclass(frozen=True, slots=True)
class VertexParams:
    """Vertex AI: `params.vertexProject`/`vertexRegion` (`ai.provider.vertex.projectId`/
    `region`). No region is the `global` location."""

    project: str
    region: str | None = None


# The upstream API shapes a `custom` provider may accept (agentgateway's `ProviderFormat`).
ProviderFormat = Literal[
    "completions", "messages", "responses", "embeddings", "anthropicTokenCount",
    "generateContent", "geminiCountTokens", "realtime", "rerank",
]  # fmt: skip


@dataclass(frozen=True, slots=True)
class CustomFormat:
    """One format a `custom` provider (or a preset) accepts; `path`, when set, is sent
    verbatim instead of the format's default path."""

    format: ProviderFormat
    path: str | None = None


@dataclass(frozen=True, slots=True)
class PromptCaching:
    """`promptCaching`: where cache markers go (agentgateway's `PromptCachingConfig`, with
    its defaults). `min_tokens` None: no minimum."""

    cache_system: bool = True
    cache_messages: bool = True
    cache_tools: bool = False
    min_tokens: int | None = 1024
    cache_message_offset: int = 0


@dataclass(frozen=True, slots=True)
class LLMModel:
    """One `llm.models` entry, with its provider reference and `baseUrl` resolved."""

    name: str  # the match pattern: exact, `prefix*`, `*suffix` or `*`
    provider: Literal["openAI", "anthropic", "gemini", "azure", "bedrock", "vertex", "custom"]
    path: str  # where it is in the config, for compile errors
    id: str | None = None
    model: str | None = None  # params.model: replaces the client's
    public: bool = True  # visibility
    api_key: str | None = field(default=None, repr=False)
    host_override: HostBackend | None = None
    path_override: str | None = None
    path_prefix: str | None = None
    azure: AzureParams | None = None
    bedrock: BedrockParams | None = None
    vertex: VertexParams | None = None
    # (field, CEL text) for `transformation`; (field, JSON value) for defaults / overrides.
    transformation: tuple[tuple[str, str], ...] = ()
    defaults: tuple[tuple[str, object], ...] = ()
    overrides: tuple[tuple[str, object], ...] = ()
    header_matches: tuple[tuple[ValueMatch, ...], ...] = ()  # `matches`: any one list, all of it
    request_headers: HeaderModifier | None = None
    response_headers: HeaderModifier | None = None
    backend_tls: BackendTLS | None = None
    auth: BackendAuth | None = None
    health: HealthPolicy | None = None
    passthrough: Literal["detect", "opaque"] | None = None
    # `custom` (and the presets, which are custom providers): the formats it accepts, in
    # config order, and its name in telemetry (preset, providerOverride, else "custom").
    formats: tuple[CustomFormat, ...] = ()
    provider_name: str | None = None
    prompt_caching: PromptCaching | None = None
    # (field, CEL text): set on the provider-format body, after translation.
    final_transformation: tuple[tuple[str, str], ...] = ()
    authorization: Authorization | None = None  # rules the router checks choosing this model
    # The binds form's OpenAI provider with hostOverride and no pathPrefix: its calls keep
    # the client's path (agentgateway's `set_default_path`), off the fast path too.
    keep_client_path: bool = False
    # `guardrails`, merged with `llm.policies.guardrails` (agentgateway's merge_prompt_guards)
    guardrails: PromptGuard | None = None
    tokenize: bool = False  # params.tokenize: count the prompt's tokens before the call


@dataclass(frozen=True, slots=True)
class LLMVirtualTarget:
    model: str
    weight: int = 1  # weighted
    priority: int = 0  # failover
    when: str | None = None  # conditional (CEL); None on the final fallback
    path: str = ""


@dataclass(frozen=True, slots=True)
class LLMVirtualModel:
    name: str
    kind: Literal["weighted", "failover", "conditional"]
    targets: tuple[LLMVirtualTarget, ...]


@dataclass(frozen=True, slots=True)
class LLMRouter:
    """The backend of the `llm:` form's one route: the model router
    (agentgateway's `llm:router` backend, llm/model_router.rs)."""

    models: tuple[LLMModel, ...]
    virtual_models: tuple[LLMVirtualModel, ...] = ()


@dataclass(frozen=True, slots=True)
class RouteBackend:
    target: HostBackend | AIBackend | LLMRouter
    weight: int = 1
    policies: BackendPolicies | None = None
    # A reference to a top-level named backend (`backend: <name>`): agentgateway names it
    # `/{name}` in telemetry. None: an inline backend, named after its route.
    name: str | None = None


@dataclass(frozen=True, slots=True)
class Route:
    name: str
    # Part of the route key, which breaks precedence ties; agentgateway names the route
    # `{namespace}/{name}` in telemetry.
    namespace: str = "default"
    hostnames: tuple[str, ...] = ()
    matches: tuple[RouteMatch, ...] = (RouteMatch(),)
    policies: RoutePolicies | None = None
    backends: tuple[RouteBackend, ...] = ()
    rule_name: str | None = None
    # agentgateway's route key when the loader knows it is not the binds form's
    # (`{gateway}/bind/{port}/{listener}/{namespace}/{name}`): the gateways form's
    # `gateway/{listener}/{namespace}/{name}`. It names inline backends and breaks ties.
    key: str | None = None


@dataclass(frozen=True, slots=True)
class GatewayPolicies:
    """A listener's `policies` (LocalGatewayPolicy): run on each of its requests before
    route selection (agentgateway's gateway phase). The route's own policies of the same kinds
    run after these, on the same request (apply_gateway_policies, then apply_request_policies
    in proxy/httpproxy.rs): neither replaces the other."""

    cors: CorsPolicy | None = None
    jwt_auth: JwtAuth | None = None
    basic_auth: BasicAuth | None = None
    api_key: ApiKeyAuth | None = None
    authorization: Authorization | None = None


@dataclass(frozen=True, slots=True)
class ListenerTLS:
    """A listener's `tls` (protocol HTTPS): files resolved, versions and suites checked."""

    cert: str  # certificate chain file (PEM)
    key: str  # private key file (PEM)
    root: str | None = None  # CA file: clients must present a certificate it signed (mTLS)
    min_version: Literal["TLS_V1_2", "TLS_V1_3"] | None = None
    max_version: Literal["TLS_V1_2", "TLS_V1_3"] | None = None
    # OpenSSL names of the TLS 1.2 suites allowed, in order (None: agentgateway's defaults);
    # TLS 1.3 suites are on or off as a whole (Python's ssl cannot choose among them).
    ciphers: tuple[str, ...] | None = None
    tls13_suites: bool = True


@dataclass(frozen=True, slots=True)
class Listener:
    name: str
    hostname: str = ""  # "" is the fallback for any host; "*…" matches hosts ending in "…"
    protocol: Literal["HTTP", "HTTPS"] = "HTTP"
    routes: tuple[Route, ...] = ()
    policies: GatewayPolicies | None = None
    tls: ListenerTLS | None = None  # set exactly when protocol is HTTPS


@dataclass(frozen=True, slots=True)
class Bind:
    port: int
    listeners: tuple[Listener, ...]


@dataclass(frozen=True, slots=True)
class KeepaliveConfig:
    """TCP keepalive on upstream sockets (`config.backend.keepalives`), agentgateway's defaults.

    Times are whole seconds, as the kernel takes them (agentgateway truncates the same way).
    """

    enabled: bool = True
    time: int = 180  # idle seconds before the first probe (TCP_KEEPIDLE)
    interval: int = 180  # seconds between probes (TCP_KEEPINTVL)
    retries: int = 9  # unanswered probes before the connection is dropped (TCP_KEEPCNT)


@dataclass(frozen=True, slots=True)
class BackendPoolConfig:
    keepalive: KeepaliveConfig = KeepaliveConfig()
    connect_timeout: float = 10 * SECONDS
    pool_idle_timeout: float = 90 * SECONDS
    pool_max_size: int | None = None  # idle connections kept per upstream; None = unlimited


@dataclass(frozen=True, slots=True)
class LoggingConfig:
    level: str = "info"  # "info" logs one access line per request; "warn"/"error" do not
    format: Literal["text", "json"] = "text"


@dataclass(frozen=True, slots=True)
class TracingPolicy:
    """OpenTelemetry tracing: `config.tracing` (read at start-up) or `frontendPolicies.tracing`
    (follows reloads), one shape once loaded, as agentgateway migrates the first into the
    second (types/local.rs `merge_deprecated_frontend_policies`). CEL is compiled by
    telemetry/tracing.py; `path` is where it sits in the file."""

    path: str
    endpoint: str  # "http://host:port" or "https://host:port"
    protocol: Literal["grpc", "http"] = "grpc"
    otlp_path: str = "/v1/traces"  # the OTLP/HTTP path (gRPC has its own)
    headers: tuple[tuple[str, str], ...] = ()  # sent with every export (credentials)
    attributes: tuple[tuple[str, str], ...] = ()  # (name, CEL), in file order (`fields.add`)
    resources: tuple[tuple[str, str], ...] = ()  # resource attributes (name, CEL)
    remove: frozenset[str] = frozenset()
    # CEL texts (a boolean or a 0..1 float); None: agentgateway's default (random: never
    # start a trace; client: follow the client's traceparent).
    random_sampling: str | None = None
    client_sampling: str | None = None
    filter: str | None = None  # keep-filter (frontendPolicies.tracing only)


@dataclass(frozen=True, slots=True)
class StaticConfig:
    """Top-level `config:`. Addresses are "host:port" strings, or None for "off"."""

    admin_addr: str | None = "localhost:15000"
    stats_addr: str | None = "[::]:15020"
    readiness_addr: str | None = "[::]:15021"
    backend: BackendPoolConfig = BackendPoolConfig()
    connection_termination_deadline: float = 5 * SECONDS
    # On SIGTERM, new connections are still accepted (and answered with `connection: close`)
    # for this long, then the listening sockets close; agentgateway's default is zero.
    connection_min_termination_deadline: float = 0 * SECONDS
    logging: LoggingConfig = LoggingConfig()
    tracing: TracingPolicy | None = None  # `config.tracing`
    # `modelCatalog`: LLM prices, merged from its sources at load (None: calls are unpriced).
    model_catalog: ModelCatalog | None = None


@dataclass(frozen=True, slots=True)
class AccessLogPolicy:
    """`frontendPolicies.accessLog`: CEL `filter` and `add` (compiled by
    policies/access_log.py), `remove` field names; `path` is where it sits in the file."""

    path: str
    filter: str | None = None
    add: tuple[tuple[str, str], ...] = ()  # (field name, CEL expression), in file order
    remove: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class FrontendPolicies:
    max_buffer_size: int | None = None  # None: LLM default (32 MiB)
    http1_idle_timeout: float = 600 * SECONDS
    tls_handshake_timeout: float = 15 * SECONDS  # `tls.handshakeTimeout`
    access_log: AccessLogPolicy | None = None
    tracing: TracingPolicy | None = None  # `frontendPolicies.tracing`


@dataclass(frozen=True, slots=True)
class Config:
    binds: tuple[Bind, ...] = ()
    static: StaticConfig = StaticConfig()
    frontend: FrontendPolicies = FrontendPolicies()
