"""The one explicit compile step: declarative config -> runtime objects for the data plane.

Everything a request needs that does not depend on the request is computed here: encoded
header plans, prebuilt local responses, SSL contexts (one per distinct TLS setting), pool
keys, cumulative backend weights and the route tables.
"""

from __future__ import annotations

import ipaddress
import os
import random
import ssl
import time
from bisect import bisect_right
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from agw_fast.config.model import (
    AIBackend,
    AIPolicy,
    BackendAuth,
    BackendPolicies,
    BackendTLS,
    Bind,
    Config,
    HeaderModifier,
    HostBackend,
    Listener,
    LLMModel,
    LLMRouter,
    RequestRedirect,
    RetryPolicy,
    Route,
    RouteBackend,
    RoutePolicies,
    UrlRewrite,
)
from agw_fast.config.validate import join_host_port, not_supported
from agw_fast.core.rewrite import (
    RESPONSE_HOP_BY_HOP,
    RequestHeaderPlan,
    ResponseHeaderPlan,
)
from agw_fast.core.routing import ListenerMap, RouteTable
from agw_fast.core.tls import (
    TLSFileError,
    client_context,
    handshake_profile,
    server_context,
    sni_chooser,
)
from agw_fast.errors import ConfigError
from agw_fast.llm.calls import ANTHROPIC_VERSION, GEMINI_KEY_PREFIX, default_host
from agw_fast.llm.exchange import AIRuntime
from agw_fast.llm.guardrails import Endpoint, GuardPipeline, compile_pipeline
from agw_fast.llm.guardrails.cloud import CloudGuard, require_model_armor_auth
from agw_fast.llm.providers.aws_sigv4 import SigV4Signer, signer_for
from agw_fast.llm.providers.openai import RouteTypeResolver
from agw_fast.llm.providers.vertex import AccessToken, require_google_auth
from agw_fast.llm.router import (
    DEFAULT_ROUTE_TYPES,
    ModelRoute,
    ModelRouter,
    ProviderGroups,
    compile_model_route,
)
from agw_fast.llm.shaping import check_expressions, compile_shaping
from agw_fast.policies import RequestStep, compile_gateway_steps, compile_request_steps
from agw_fast.policies.access_log import capture_step, compile_access_log
from agw_fast.policies.localratelimit import RATE_LIMIT_FIELDS, TokenLimits, build_token_limits
from agw_fast.policies.retry import RetryCondition, compile_condition
from agw_fast.policies.tracing import compile_tracing

__all__ = [
    "DEFAULT_LLM_BUFFER",
    "RouteLabels",
    "RuntimeBackend",
    "RuntimeBind",
    "RuntimeListener",
    "RuntimeMirror",
    "RuntimeRoute",
    "compile_config",
]

DEFAULT_LLM_BUFFER = 32 * 1024 * 1024
OPENAI_HOST = "api.openai.com"
# Without an XDS control plane agentgateway's gateway is `default` in namespace `default`
# (crates/agentgateway/src/config.rs), and every listener of the binds form belongs to it.
GATEWAY_NAME = "default/default"
UNKNOWN = "unknown"  # agentgateway's label value for a name it does not know (DefaultedUnknown)

PoolKey = tuple[str, int, int]


@dataclass(frozen=True, eq=False, slots=True)
class RouteLabels:
    """Where a request was handled, named as agentgateway's telemetry names it.

    These are its `RouteIdentifier` (telemetry/metrics.rs) for the binds form: bind
    `bind/{port}`, gateway `default/default`, the listener's name, the route as
    `{namespace}/{name}`, and no route rule (its `convert_route` never sets one). None means
    the request never got that far (no listener or no route matched). Compared by identity:
    one object per bind, listener and route, built at load time.
    """

    bind: str | None
    gateway: str | None
    listener: str | None
    route: str | None
    route_rule: str | None
    # The five metric label values in that order, "unknown" for None.
    values: tuple[str, str, str, str, str]

    @classmethod
    def of(
        cls,
        bind: str | None,
        gateway: str | None = None,
        listener: str | None = None,
        route: str | None = None,
        route_rule: str | None = None,
    ) -> RouteLabels:
        # Empty names are unknown too, as in agentgateway.
        values = (
            bind or UNKNOWN,
            gateway or UNKNOWN,
            listener or UNKNOWN,
            route or UNKNOWN,
            route_rule or UNKNOWN,
        )
        return cls(bind, gateway, listener, route, route_rule, values)


@dataclass(eq=False, slots=True)
class RuntimeBackend:
    name: str
    weight: int
    host: str
    port: int
    endpoint: str  # "host:port" as logged
    protocol: str  # agentgateway's backend protocol label: "llm" for `ai` backends, else "http"
    ssl: ssl.SSLContext | None
    server_hostname: str | None
    pool_key: PoolKey
    auto_authority: bytes | None  # Host for auto-hostname; None keeps the client's
    request_headers: RequestHeaderPlan
    response_drop: frozenset[bytes]  # response fields never relayed (hop-by-hop + policy)
    response_extra: bytes  # response lines the policy adds
    redirect: RequestRedirect | None
    backend_request_timeout: float | None
    ai: AIRuntime | None
    # The `llm:` form's route backend, or an `ai` backend beyond the OpenAI fast path: picks
    # one of its models' (providers') backends per request.
    router: ModelRouter | ProviderGroups | None = None
    # Bedrock without an API key: each request is SigV4-signed once its body is built.
    signer: SigV4Signer | None = None
    # A credential fetched at run time (Vertex AI's Google access token): its header line is
    # added to each request's head. None for every other backend.
    credential: AccessToken | None = None


@dataclass(eq=False, slots=True)
class RuntimeRoute:
    key: str
    name: str
    listener: str
    labels: RouteLabels
    request_steps: tuple[RequestStep, ...]  # the route's policy pipeline (agw_fast.policies)
    url_rewrite: UrlRewrite | None
    request_timeout: float | None
    backends: tuple[RuntimeBackend, ...]
    # `localRateLimit` of `type: tokens`: checked and charged by LLM exchanges only.
    token_limits: TokenLimits | None = None
    mirror: RuntimeMirror | None = None  # `requestMirror` (None also for percentage 0)
    retry: RetryPolicy | None = None  # `retry`: read by the exchange on its error paths
    # `retry.condition`, asked by the exchange on a response head whose status is not listed.
    retry_condition: RetryCondition | None = None
    _cumulative: list[int] = field(default_factory=list)
    _total: int = 0

    def __post_init__(self) -> None:
        running = 0
        for backend in self.backends:
            running += backend.weight
            self._cumulative.append(running)
        self._total = running

    def choose_backend(self) -> RuntimeBackend | None:
        """Weighted random choice; None when no backend can take traffic."""
        backends = self.backends
        if len(backends) == 1:
            return backends[0] if self._total > 0 else None
        if self._total <= 0:
            return None
        return backends[bisect_right(self._cumulative, random.randrange(self._total))]


@dataclass(frozen=True, eq=False, slots=True)
class RuntimeMirror:
    """`requestMirror`: where copies go, and how often (agentgateway's `random_bool`)."""

    backend: RuntimeBackend
    percentage: float  # in (0, 1]

    def chosen(self) -> bool:
        """Whether this request is copied."""
        return self.percentage >= 1.0 or random.random() < self.percentage


class RuntimeListener(RouteTable[RuntimeRoute]):
    """A listener's route table, with its telemetry names (for a request no route matched)."""

    def __init__(
        self,
        routes: list[tuple[str, Route, RuntimeRoute]],
        labels: RouteLabels,
        request_steps: tuple[RequestStep, ...] = (),
    ) -> None:
        super().__init__(routes)
        self.labels = labels
        # The listener's own policies (agw_fast.policies), run before route selection.
        self.request_steps = request_steps


@dataclass(eq=False, slots=True)
class RuntimeBind:
    port: int
    listeners: ListenerMap[RuntimeListener]
    single: RuntimeListener | None  # the only listener, when it matches any host
    labels: RouteLabels  # for a request no listener matched
    # HTTPS: the context to serve with (its sni_callback switches to the chosen listener's)
    # and each listener by its context, for the 421 rule (`detect_misdirected`).
    ssl_context: ssl.SSLContext | None = None
    tls_listeners: dict[ssl.SSLContext, RuntimeListener] | None = None
    # The Google access token (Application Default Credentials) the config's Vertex models
    # send, one per process for the whole config: each worker keeps it fresh.
    google_token: AccessToken | None = None


_SIGNED_FIELDS = (
    "authorization", "x-api-key", "content-type", "x-amz-date", "x-amz-security-token",
    "x-amz-content-sha256",
)  # fmt: skip


def _pool_key(host: str, port: int, context: ssl.SSLContext | None) -> tuple[str, int, int]:
    """Connections are pooled per address and TLS settings (one context object per setting)."""
    return (host, port, id(context) if context is not None else 0)


def _server_hostname(
    context: ssl.SSLContext | None, tls: BackendTLS | None, host: str
) -> str | None:
    """The SNI and verification name of a TLS upstream: `backendTLS.hostname`, else the host."""
    if context is None:
        return None
    return (tls.hostname if tls is not None else None) or host.strip("[]")


def _auto_authority(host: str, port: int, tls: bool) -> bytes | None:
    """The Host sent for a named upstream (the port left out when it is the scheme's);
    None for an IP address, which keeps the client's."""
    if _is_ip(host):
        return None
    default_port = 443 if tls else 80
    return (host if port == default_port else f"{host}:{port}").encode()


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def _merged(
    route_policies: RoutePolicies | None, *backend_policies: BackendPolicies | None
) -> tuple[BackendTLS | None, BackendAuth | None, AIPolicy | None]:
    """Backend-level values win over the route's copies (the more specific policy); `ai`
    policies merge field by field (agentgateway's `merge_llm_policies`)."""
    tls = route_policies.backend_tls if route_policies else None
    auth = route_policies.backend_auth if route_policies else None
    ai = route_policies.ai if route_policies else None
    for policies in backend_policies:
        if policies is None:
            continue
        tls = policies.backend_tls or tls
        auth = policies.backend_auth or auth
        if policies.ai is not None:
            ai = policies.ai.over(ai)
    return tls, auth, ai


def _server_context(where: str, bind: Bind, index: int) -> ssl.SSLContext:
    tls = bind.listeners[index].tls
    assert tls is not None
    first = bind.listeners[0].tls
    if first is not None and handshake_profile(tls) != handshake_profile(first):
        # OpenSSL settles versions, suites and client verification from the port's first
        # context, before SNI picks the listener; agentgateway can vary them per listener.
        raise not_supported(
            f"{where}[{index}].tls",
            "HTTPS listeners on one port must agree on minTLSVersion, maxTLSVersion, "
            "cipherSuites and whether a root (client certificates) is set",
        )
    try:
        return server_context(tls)
    except TLSFileError as error:
        raise ConfigError(f"{where}[{index}].tls.{error.field}", str(error)) from None


class _Compiler:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.contexts: dict[BackendTLS, ssl.SSLContext] = {}
        max_buffer = config.frontend.max_buffer_size
        self.llm_buffer = DEFAULT_LLM_BUFFER if max_buffer is None else max_buffer
        # Compiled here so a bad accessLog expression fails the load; the worker's recorder
        # compiles its own copy. Its `request`/auth variables need each request's PolicyRequest.
        access_log = compile_access_log(config.frontend.access_log)
        # Tracing's CEL likewise (telemetry/tracing.py compiles the worker's own).
        tracing = compile_tracing(config.frontend.tracing or config.static.tracing)
        self.capture: tuple[RequestStep, ...] = (
            (capture_step,)
            if (access_log is not None and access_log.needs_request)
            or (tracing is not None and tracing.needs_request)
            else ()
        )
        self.google_token: AccessToken | None = None

    def context(self, tls: BackendTLS, where: str) -> ssl.SSLContext:
        found = self.contexts.get(tls)
        if found is None:
            try:
                found = self.contexts[tls] = client_context(tls)
            except (ssl.SSLError, OSError, ValueError) as error:
                # Files exist (the loader checked); this is a bad PEM or a key that does not
                # match its certificate: still a config error, never a traceback.
                reason = getattr(error, "reason", None) or error
                raise ConfigError(where, f"backendTLS: cannot load TLS files: {reason}") from None
        return found

    def backend(
        self, path: str, name: str, route: Route, declared: RouteBackend
    ) -> RuntimeBackend:
        """`path` locates the backend in the file, for errors (`binds[0]...backends[1]`);
        `name` is its telemetry name."""
        target = declared.target
        route_policies = route.policies
        ai_runtime: AIRuntime | None = None
        if isinstance(target, LLMRouter):
            return self.llm_router(path, name, target)
        if isinstance(target, AIBackend) and not _openai_fast_path(target, route, declared):
            return self.ai_groups(path, name, route, declared, target)
        if isinstance(target, AIBackend):
            tls, auth, ai_policy = _merged(route_policies, target.policies, declared.policies)
            if target.host_override is not None:
                host, port = target.host_override.host, target.host_override.port
            else:
                host, port = OPENAI_HOST, 443
                # Without hostOverride the provider's defaults apply: TLS with public roots.
                tls = tls or BackendTLS()
            routes = ai_policy.routes if ai_policy is not None else ()
            ai_runtime = AIRuntime(
                model_override=target.model,
                route_types=RouteTypeResolver(routes),
                has_host_override=target.host_override is not None,
                path_prefix=target.path_prefix,
                path_override=(
                    target.path_override.encode("latin-1")
                    if target.path_override is not None
                    else None
                ),
                max_body=self.llm_buffer,
            )
            own = [target.policies, declared.policies]
        else:
            assert isinstance(target, HostBackend)
            tls, auth, _ = _merged(route_policies, declared.policies)
            host, port = target.host, target.port
            own = [declared.policies]
        context = self.context(tls, path) if tls is not None else None
        server_hostname = _server_hostname(context, tls, host)
        auto_authority = _auto_authority(host, port, context is not None)
        request_modifiers = [route_policies.request_header_modifier if route_policies else None]
        response_modifiers = [route_policies.response_header_modifier if route_policies else None]
        redirect: RequestRedirect | None = None
        backend_timeout: float | None = None
        for policies in own:
            if policies is None:
                continue
            request_modifiers.append(policies.request_header_modifier)
            response_modifiers.append(policies.response_header_modifier)
            redirect = policies.request_redirect or redirect
            backend_timeout = policies.backend_request_timeout or backend_timeout
        if route_policies is not None and route_policies.timeout is not None:
            backend_timeout = backend_timeout or route_policies.timeout.backend_request_timeout
        response_plan = ResponseHeaderPlan.build(response_modifiers)
        response_drop = response_plan.drop if response_plan else RESPONSE_HOP_BY_HOP
        limits = route_policies.local_rate_limit if route_policies is not None else ()
        if limits and all(limit.condition is None for limit in limits):
            # agentgateway inserts its own x-ratelimit-* over the upstream's (merge_in_headers);
            # `conditional` limits, which may not apply, replace them per request instead.
            response_drop = response_drop | RATE_LIMIT_FIELDS
        endpoint = join_host_port(host, port)
        return RuntimeBackend(
            name=name,
            weight=declared.weight,
            host=host,
            port=port,
            endpoint=endpoint,
            protocol="llm" if ai_runtime is not None else "http",
            ssl=context,
            server_hostname=server_hostname,
            pool_key=_pool_key(host, port, context),
            auto_authority=auto_authority,
            request_headers=RequestHeaderPlan.build(request_modifiers, auth),
            response_drop=response_drop,
            response_extra=response_plan.extra if response_plan else b"",
            redirect=redirect,
            backend_request_timeout=backend_timeout,
            ai=ai_runtime,
        )

    def llm_router(self, path: str, name: str, router: LLMRouter) -> RuntimeBackend:
        """The `llm:` route's backend: the model router, with one runtime backend per model."""
        routes = []
        for index, model in enumerate(router.models):
            route = compile_model_route(model, index)
            key = model.id if model.id is not None else f"{model.name}:{index}"
            route.backend = self.llm_model(model, f"/llm:model:{key}")
            route.guards = self.guards(model)
            routes.append(route)
        model_router = ModelRouter(routes, router.virtual_models, int(time.time()))
        return self.router_backend(
            name, 1, "", 0, "", RouteTypeResolver(DEFAULT_ROUTE_TYPES), model_router
        )

    def router_backend(
        self,
        name: str,
        weight: int,
        host: str,
        port: int,
        endpoint: str,
        route_types: RouteTypeResolver,
        router: ModelRouter | ProviderGroups,
    ) -> RuntimeBackend:
        """A route's backend that picks one of its models' (providers') backends per request:
        it has no upstream of its own, only the LLM body collection (`ai`) and the router.
        `host`/`port`/`endpoint` only name it in telemetry."""
        return RuntimeBackend(
            name=name,
            weight=weight,
            host=host,
            port=port,
            endpoint=endpoint,
            protocol="llm",
            ssl=None,
            server_hostname=None,
            pool_key=("", 0, 0),
            auto_authority=None,
            request_headers=RequestHeaderPlan.build([], None),
            response_drop=RESPONSE_HOP_BY_HOP,
            response_extra=b"",
            redirect=None,
            backend_request_timeout=None,
            ai=AIRuntime(
                model_override=None,
                route_types=route_types,
                has_host_override=False,
                path_prefix=None,
                path_override=None,
                max_body=self.llm_buffer,
            ),
            router=router,
        )

    def ai_groups(
        self, path: str, name: str, route: Route, declared: RouteBackend, target: AIBackend
    ) -> RuntimeBackend:
        """An `ai` backend beyond the OpenAI fast path: each provider becomes a model route
        of a `ProviderGroups` router (failover between `groups`, translation per provider)."""
        route_policies = route.policies
        groups = target.groups or ((target,),)
        routes: list[ModelRoute] = []
        indexes: list[tuple[int, ...]] = []
        for gi, group in enumerate(groups):
            members = []
            for pi, provider in enumerate(group):
                where = f"{path}.ai" + (f".groups[{gi}].providers[{pi}]" if target.groups else "")
                model = _provider_model(provider, route_policies, declared.policies, where)
                model_route = compile_model_route(model, len(routes))
                _, _, provider_ai = _merged(route_policies, provider.policies, declared.policies)
                model_route.shaping = compile_shaping(provider_ai)
                model_route.guards = self.guards(model)
                model_route.backend = self.llm_model(
                    model,
                    name if not target.groups else f"{name}/{provider.name}",
                    route_policies.request_header_modifier if route_policies else None,
                    route_policies.response_header_modifier if route_policies else None,
                    _backend_timeout(route_policies, provider.policies, declared.policies),
                )
                members.append(len(routes))
                routes.append(model_route)
            indexes.append(tuple(members))
        _, _, ai_policy = _merged(route_policies, target.policies, declared.policies)
        resolver = RouteTypeResolver(ai_policy.routes if ai_policy is not None else ())
        first = routes[0].backend
        assert isinstance(first, RuntimeBackend)
        return self.router_backend(
            name, declared.weight, first.host, first.port, first.endpoint, resolver,
            ProviderGroups(routes, tuple(indexes), resolver),
        )

    def llm_model(
        self,
        model: LLMModel,
        name: str,
        route_request: HeaderModifier | None = None,
        route_response: HeaderModifier | None = None,
        timeout: float | None = None,
    ) -> RuntimeBackend:
        """One `llm.models` entry's upstream: its provider's host (TLS with public roots), or
        `baseUrl`/`hostOverride`; the API key in the header its provider reads."""
        tls = model.backend_tls
        if model.host_override is not None:
            host, port = model.host_override.host, model.host_override.port
        else:
            host, port = default_host(model), 443
            tls = tls or BackendTLS()
        auth = model.auth
        key = model.api_key
        if auth is None and key is not None:
            if model.provider == "anthropic" and not key.startswith("sk-ant-oat"):
                auth = BackendAuth(key=key, header_name="x-api-key", prefix="")
            elif model.provider == "gemini" and key.startswith(GEMINI_KEY_PREFIX):
                auth = BackendAuth(key=key, header_name="x-goog-api-key", prefix="")
            else:
                auth = BackendAuth(key=key)
        signer: SigV4Signer | None = None
        if auth is None and model.bedrock is not None:
            # Bedrock's own authentication (agentgateway's implicit AWS auth); an API key
            # (a Bedrock bearer token) or `auth` replaces it.
            signer = signer_for(model.bedrock.region, f"{model.path}.provider")
        if auth is None and model.provider == "azure":
            raise not_supported(
                f"{model.path}.params.apiKey",
                "azure without an API key (Entra ID credentials); set params.apiKey",
            )
        credential = None
        if auth is None and model.provider == "vertex":
            # agentgateway's default for Vertex: Application Default Credentials.
            require_google_auth(f"{model.path}.provider")
            credential = self.google_token = self.google_token or AccessToken()
        # The response is read (and perhaps translated): ask for it uncompressed. With the
        # gateway's own credential, the client's credentials never reach the provider.
        remove = ["accept-encoding"]
        if auth is not None or credential is not None:
            remove += ["authorization", "x-api-key", "x-goog-api-key"]
        set_fields: tuple[tuple[str, str], ...] = ()
        if model.provider == "anthropic" or (
            model.azure is not None and model.azure.resource_type == "foundry"
        ):
            # Azure Foundry needs it on its Anthropic endpoint only; others ignore it.
            set_fields = (("anthropic-version", ANTHROPIC_VERSION),)
        own = HeaderModifier(set=set_fields, remove=tuple(remove))
        # The signature's fields replace any the client or `requestHeaders` would send.
        signed = None if signer is None else HeaderModifier(remove=_SIGNED_FIELDS)
        context = self.context(tls, f"{model.path}.tls") if tls is not None else None
        server_hostname = _server_hostname(context, tls, host)
        auto_authority = _auto_authority(host, port, context is not None)
        response_plan = ResponseHeaderPlan.build([route_response, model.response_headers])
        return RuntimeBackend(
            name=name,
            weight=1,
            host=host,
            port=port,
            endpoint=join_host_port(host, port),
            protocol="llm",
            ssl=context,
            server_hostname=server_hostname,
            pool_key=_pool_key(host, port, context),
            auto_authority=auto_authority,
            request_headers=RequestHeaderPlan.build(
                [own, route_request, model.request_headers, signed], auth
            ),
            response_drop=response_plan.drop if response_plan else RESPONSE_HOP_BY_HOP,
            response_extra=response_plan.extra if response_plan else b"",
            redirect=None,
            backend_request_timeout=timeout,
            ai=None,
            signer=signer,
            credential=credential,
        )

    def guards(self, model: LLMModel) -> GuardPipeline | None:
        """A model's `guardrails`, with a runtime backend for each guard service."""
        config = model.guardrails
        if config is None:
            return None
        pipeline = compile_pipeline(config, _moderation_endpoint(), os.environ)
        if pipeline is None:
            return None
        for guard in pipeline.remote:
            endpoint = guard.endpoint
            assert endpoint is not None
            guard.target = self.service(endpoint.host, endpoint.port, endpoint.tls, endpoint.where)
            if isinstance(guard, CloudGuard):
                # The guard's own cloud credential (none when a backendAuth key replaces it).
                if guard.needs == "aws":
                    guard.signer = signer_for(guard.region, endpoint.where)
                elif guard.needs == "google":
                    require_model_armor_auth(endpoint.where)
                    guard.credential = self.google_token = self.google_token or AccessToken()
        return pipeline

    def service(self, host: str, port: int, tls: BackendTLS | None, where: str
                ) -> RuntimeBackend:
        """The upstream of a guard service (its calls use the worker's pool)."""
        context = self.context(tls, where) if tls is not None else None
        server_hostname = _server_hostname(context, tls, host)
        return RuntimeBackend(
            name=where,
            weight=1,
            host=host,
            port=port,
            endpoint=join_host_port(host, port),
            protocol="http",
            ssl=context,
            server_hostname=server_hostname,
            pool_key=_pool_key(host, port, context),
            auto_authority=None,
            request_headers=RequestHeaderPlan.build([], None),
            response_drop=RESPONSE_HOP_BY_HOP,
            response_extra=b"",
            redirect=None,
            backend_request_timeout=None,
            ai=None,
        )

    def mirror(self, policies: RoutePolicies | None, name: str) -> RuntimeMirror | None:
        """A plain-HTTP backend for `requestMirror`'s `host`; the copy carries the route's
        request header changes, as agentgateway mirrors the request after them."""
        mirror = policies.request_mirror if policies is not None else None
        if mirror is None or mirror.percentage <= 0.0:
            return None
        assert policies is not None
        host, port = mirror.target.host, mirror.target.port
        auto_authority = _auto_authority(host, port, tls=False)
        backend = RuntimeBackend(
            name=name,
            weight=1,
            host=host,
            port=port,
            endpoint=join_host_port(host, port),
            protocol="http",
            ssl=None,
            server_hostname=None,
            pool_key=(host, port, 0),
            auto_authority=auto_authority,
            request_headers=RequestHeaderPlan.build([policies.request_header_modifier], None),
            response_drop=RESPONSE_HOP_BY_HOP,
            response_extra=b"",
            redirect=None,
            backend_request_timeout=None,
            ai=None,
        )
        return RuntimeMirror(backend, mirror.percentage)

    def route(self, path: str, port: int, listener: Listener, route: Route) -> RuntimeRoute:
        policies = route.policies
        check_expressions(route, path)
        # agentgateway's names (types/local.rs): the route is `{namespace}/{name}`; an inline
        # backend is the resource `/{route key}/backend{i}` (its namespace is empty), where
        # the route key is `{gateway}/bind/{port}/{listener}/{namespace}/{name}`.
        # The gateways form's loader sets the key agentgateway gives it there.
        route_name = f"{route.namespace}/{route.name}"
        route_key = route.key or f"{GATEWAY_NAME}/bind/{port}/{listener.name}/{route_name}"
        labels = RouteLabels.of(f"bind/{port}", GATEWAY_NAME, listener.name, route_name)
        return RuntimeRoute(
            key=route.key or f"bind/{port}/{listener.name}/{route.namespace}/{route.name}",
            name=route.name,
            listener=listener.name,
            labels=labels,
            request_steps=compile_request_steps(policies),
            token_limits=build_token_limits(policies),
            mirror=self.mirror(policies, f"/{route_key}/mirror"),
            retry=policies.retry if policies else None,
            retry_condition=compile_condition(policies.retry) if policies else None,
            url_rewrite=policies.url_rewrite if policies else None,
            request_timeout=(
                policies.timeout.request_timeout if policies and policies.timeout else None
            ),
            backends=tuple(
                self.backend(
                    f"{path}.backends[{i}]", b.name or f"/{route_key}/backend{i}", route, b
                )
                for i, b in enumerate(route.backends)
            ),
        )

    def bind(self, path: str, bind: Bind) -> RuntimeBind:
        bind_name = f"bind/{bind.port}"
        tables: dict[str, RuntimeListener] = {}
        contexts: dict[int, ssl.SSLContext] = {}
        for li, listener in enumerate(bind.listeners):
            routes = []
            for ri, route in enumerate(listener.routes):
                where = f"{path}.listeners[{li}].routes[{ri}]"
                runtime = self.route(where, bind.port, listener, route)
                routes.append((runtime.key, route, runtime))
            labels = RouteLabels.of(bind_name, GATEWAY_NAME, listener.name)
            table = tables[listener.hostname.lower()] = RuntimeListener(
                routes, labels, compile_gateway_steps(listener.policies) + self.capture
            )
            if listener.tls is not None:
                contexts[id(table)] = _server_context(f"{path}.listeners", bind, li)
        # One listener that takes every host ("" or "*") needs no per-request choice.
        only = next(iter(tables.items())) if len(tables) == 1 else None
        single = only[1] if only is not None and only[0] in ("", "*") else None
        result = RuntimeBind(bind.port, ListenerMap(tables), single, RouteLabels.of(bind_name))
        if contexts:
            listeners = result.listeners
            first = contexts[id(listeners.get("") or next(iter(tables.values())))]
            first.sni_callback = sni_chooser(listeners, contexts)
            result.ssl_context = first
            result.tls_listeners = {contexts[id(t)]: t for t in tables.values()}
        return result



# Route types the binds form's OpenAI backend serves on its own fast path (no translation).
_FAST_ROUTE_TYPES = frozenset({"completions", "responses", "embeddings", "detect", "passthrough",
                               "models"})  # fmt: skip


def _openai_fast_path(target: AIBackend, route: Route, declared: RouteBackend) -> bool:
    if target.groups or target.provider != "openAI" or target.tokenize:
        return False  # the router's path: it has the parsed request `tokenize` counts
    _, _, ai_policy = _merged(route.policies, target.policies, declared.policies)
    if ai_policy is None:
        return True
    if ai_policy.shapes_requests or ai_policy.prompt_guard is not None:
        # Aliases, prompts, body changes, prompt caching, final transformations and guards
        # (which read the parsed request and the relayed response) are the general path's
        # (ProviderGroups); a route without them keeps this one, unchanged.
        return False
    return all(route_type in _FAST_ROUTE_TYPES for _, route_type in ai_policy.routes)


def _backend_timeout(route_policies: RoutePolicies | None, *own: BackendPolicies | None
                     ) -> float | None:
    timeout = None
    for policies in own:
        if policies is not None:
            timeout = policies.backend_request_timeout or timeout
    if timeout is None and route_policies is not None and route_policies.timeout is not None:
        timeout = route_policies.timeout.backend_request_timeout
    return timeout


def _provider_model(
    provider: AIBackend,
    route_policies: RoutePolicies | None,
    backend_policies: BackendPolicies | None,
    where: str,
) -> LLMModel:
    """One provider of an `ai` backend as an `llm.models` entry: the same upstream rules."""
    tls, auth, ai = _merged(route_policies, provider.policies, backend_policies)
    own = provider.policies
    api_key = None
    if auth is not None and auth.header_name == "authorization" and auth.prefix == "Bearer ":
        # The default location: the provider decides the header (x-api-key for Anthropic).
        api_key, auth = auth.key, None
    if tls is None and provider.host_override is None:
        tls = BackendTLS()
    return LLMModel(
        name=provider.name,
        provider=provider.provider,
        path=where,
        model=provider.model,
        api_key=api_key,
        host_override=provider.host_override,
        path_override=provider.path_override,
        path_prefix=provider.path_prefix,
        azure=provider.azure,
        bedrock=provider.bedrock,
        vertex=provider.vertex,
        request_headers=own.request_header_modifier if own is not None else None,
        response_headers=own.response_header_modifier if own is not None else None,
        backend_tls=tls,
        auth=auth,
        health=own.health if own is not None else None,
        # The binds form's `policies.ai` body changes: the same fields as a model's in `llm:`.
        transformation=(ai.transformations or ()) if ai is not None else (),
        defaults=(ai.defaults or ()) if ai is not None else (),
        overrides=(ai.overrides or ()) if ai is not None else (),
        final_transformation=(ai.final_transformations or ()) if ai is not None else (),
        prompt_caching=ai.prompt_caching if ai is not None else None,
        keep_client_path=(
            provider.provider == "openAI"
            and provider.host_override is not None
            and provider.path_prefix is None
        ),
        guardrails=ai.prompt_guard if ai is not None else None,
        tokenize=provider.tokenize,
    )


# Where `openAIModeration` guards send prompts; the variable points them elsewhere (a test
# double, a proxy), as agentgateway's fixed endpoint cannot be.
MODERATION_URL = "https://api.openai.com/v1/moderations"
MODERATION_URL_VARIABLE = "AGW_FAST_OPENAI_MODERATION_URL"


def _moderation_endpoint() -> Endpoint:
    url = os.environ.get(MODERATION_URL_VARIABLE) or MODERATION_URL
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(MODERATION_URL_VARIABLE, f"invalid URL {url!r}")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return Endpoint(
        parts.hostname,
        port,
        parts.netloc.encode(),
        (parts.path or "/v1/moderations").encode(),
        BackendTLS() if parts.scheme == "https" else None,
        MODERATION_URL_VARIABLE,
    )


def compile_config(config: Config) -> list[RuntimeBind]:
    """Runtime binds for the data plane (SSL contexts included, so call it per process
    after fork only if contexts must not be shared; sharing read-only contexts is fine)."""
    compiler = _Compiler(config)
    binds = [compiler.bind(f"binds[{i}]", bind) for i, bind in enumerate(config.binds)]
    for bind in binds:
        bind.google_token = compiler.google_token
    return binds
