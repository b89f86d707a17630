"""Declarative configuration: what the YAML says, validated, as frozen dataclasses.

This is the *parsed* form of agentgateway's local-file schema (the subset agw-fast
implements). It holds no sockets, SSL contexts or compiled regexes: `compile.py` turns it
into runtime objects. Durations are seconds (float); byte sizes are ints.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

__all__ = [
    "AIBackend",
    "AIPolicy",
    "AuthorityRewrite",
    "BackendAuth",
    "BackendPolicies",
    "BackendPoolConfig",
    "BackendTLS",
    "Bind",
    "Config",
    "DirectResponse",
    "FrontendPolicies",
    "HeaderModifier",
    "HostBackend",
    "KeepaliveConfig",
    "Listener",
    "ListenerTLS",
    "LoggingConfig",
    "PathMatch",
    "PathRewrite",
    "RequestRedirect",
    "Route",
    "RouteBackend",
    "RouteMatch",
    "RoutePolicies",
    "StaticConfig",
    "TimeoutPolicy",
    "UrlRewrite",
    "ValueMatch",
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
    status: int
    body: bytes = b""


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
class TimeoutPolicy:
    request_timeout: float | None = None
    backend_request_timeout: float | None = None


@dataclass(frozen=True, slots=True)
class AIPolicy:
    """`policies.ai`: only `routes` (path suffix -> route type) is implemented."""

    routes: tuple[tuple[str, str], ...] = ()


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


@dataclass(frozen=True, slots=True)
class RoutePolicies:
    request_header_modifier: HeaderModifier | None = None
    response_header_modifier: HeaderModifier | None = None
    request_redirect: RequestRedirect | None = None
    url_rewrite: UrlRewrite | None = None
    direct_response: DirectResponse | None = None
    backend_tls: BackendTLS | None = None
    backend_auth: BackendAuth | None = None
    timeout: TimeoutPolicy | None = None
    ai: AIPolicy | None = None


@dataclass(frozen=True, slots=True)
class HostBackend:
    host: str
    port: int


@dataclass(frozen=True, slots=True)
class AIBackend:
    name: str
    provider: Literal["openAI"] = "openAI"
    model: str | None = None  # provider.openAI.model
    host_override: HostBackend | None = None
    path_override: str | None = None
    path_prefix: str | None = None
    policies: BackendPolicies | None = None  # ai.policies


@dataclass(frozen=True, slots=True)
class RouteBackend:
    target: HostBackend | AIBackend
    weight: int = 1
    policies: BackendPolicies | None = None


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


@dataclass(frozen=True, slots=True)
class FrontendPolicies:
    max_buffer_size: int | None = None  # None: LLM default (32 MiB)
    http1_idle_timeout: float = 600 * SECONDS
    tls_handshake_timeout: float = 15 * SECONDS  # `tls.handshakeTimeout`


@dataclass(frozen=True, slots=True)
class Config:
    binds: tuple[Bind, ...] = ()
    static: StaticConfig = StaticConfig()
    frontend: FrontendPolicies = FrontendPolicies()
