"""Config text to `Config`: expand `$VARS`, parse YAML 1.2, validate, build the dataclasses.

Every problem is a ConfigError carrying the path of the offending field, such as
`binds[0].listeners[0].routes[1].backends[0].host`. Keys that agentgateway accepts but
agw-fast does not implement are refused ("not supported: <path>"), never ignored.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields, replace
from pathlib import Path
from typing import Literal, cast

from agw_fast.config.durations import parse_duration
from agw_fast.config.envsubst import expand_env
from agw_fast.config.load_gateways import (
    AttachedRoute,
    apply_backend_policies,
    apply_route_and_gateway_policies,
    attach_llm_route,
    attach_routes,
    gateway_binds,
    parse_gateway_refs,
    parse_gateways,
    parse_targeted_policies,
)
from agw_fast.config.load_llm import parse_llm, tokenize_flag, vertex_params
from agw_fast.config.load_policies import (
    one_key,
    parse_backend_policies,
    parse_gateway_policies,
    parse_route_policies,
    parse_value_match,
)
from agw_fast.config.load_tls import parse_frontend_tls, parse_listener_tls
from agw_fast.config.load_tracing import parse_config_tracing, parse_frontend_tracing
from agw_fast.config.model import (
    AccessLogPolicy,
    AIBackend,
    AzureParams,
    BackendPolicies,
    BackendPoolConfig,
    BedrockParams,
    Bind,
    Config,
    FrontendPolicies,
    KeepaliveConfig,
    Listener,
    LoggingConfig,
    PathMatch,
    Route,
    RouteBackend,
    RouteMatch,
    StaticConfig,
    VertexParams,
)
from agw_fast.config.model_catalog import parse_model_catalog
from agw_fast.config.validate import (
    Obj,
    as_list,
    as_map,
    as_str,
    as_str_map,
    check_header_name,
    check_regex,
    check_socket_addr,
    check_url_path,
    choice,
    join,
    not_supported,
    parse_host_port,
)
from agw_fast.config.yaml12 import parse_yaml
from agw_fast.errors import ConfigError

__all__ = ["load_config", "load_config_file"]

_LOG_LEVELS = ("trace", "debug", "info", "warn", "error", "off")
_TUNNEL_PROTOCOLS = ("direct", "hboneWaypoint", "hboneGateway", "proxy", "connect")
_LISTENER_PROTOCOLS = ("HTTP", "HTTPS", "TLS", "TCP", "HBONE")
_BACKEND_TARGETS = ("host", "ai", "backend")
_NAMED_TARGETS = ("host", "ai")
_HEADER_CASES = ("lowercase", "preserve")


def load_config(text: str, env: Mapping[str, str], *, base_dir: Path) -> Config:
    """Build a Config from config text; relative file paths resolve against base_dir."""
    raw = parse_yaml(expand_env(text, env))
    return _root(raw, env, base_dir)


def load_config_file(
    path: Path, env: Mapping[str, str], *, base_dir: Path | None = None
) -> Config:
    """Read and load a YAML or JSON config file.

    Relative paths inside it (TLS files, key files) resolve against base_dir, by default the
    working directory, as agentgateway resolves them.
    """
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise ConfigError("", f"cannot read config file {path}: not valid UTF-8") from None
    except OSError as exc:
        raise ConfigError("", f"cannot read config file {path}: {exc.strerror}") from None
    return load_config(text, env, base_dir=Path.cwd() if base_dir is None else base_dir)


def _root(raw: object, env: Mapping[str, str], base_dir: Path) -> Config:
    # An empty file is a valid config with nothing to serve.
    o = Obj({} if raw is None else raw, "", "Root")
    static = _static(o.get("config"), o.child("config"), env, base_dir)
    frontend = _frontend(o.get("frontendPolicies"), o.child("frontendPolicies"))
    targeted = parse_targeted_policies(o.items("policies"), base_dir)
    named = _named_backends(o, base_dir)
    apply_backend_policies(targeted, named)
    # The gateways form (config/load_gateways.py) makes binds too; agentgateway lists them
    # first, then `binds`, then the `llm:` form's own bind.
    gateways = parse_gateways(o.get("gateways"), o.child("gateways"), base_dir)
    binds = [(_bind(item, p, base_dir, named), join(p, "port")) for p, item in o.items("binds")]
    attached = [_attached_route(item, p, base_dir, named) for p, item in o.items("routes")]
    attach_routes(gateways, attached)
    llm_raw = o.get("llm")
    if llm_raw is not None:
        llm = parse_llm(llm_raw, o.child("llm"), base_dir)
        route = llm.bind.listeners[0].routes[0]
        where = join(o.child("llm"), "gateways")
        if not attach_llm_route(gateways, llm.gateways, llm.own_port, route, where):
            binds.append((llm.bind, join(o.child("llm"), "port")))
    o.close()
    if static.tracing is not None and frontend.tracing is not None:
        raise ConfigError(
            static.tracing.path,
            "cannot use config.tracing together with frontendPolicies.tracing",
        )
    binds = gateway_binds(gateways) + binds
    if targeted:
        with_policies = apply_route_and_gateway_policies(targeted, [b for b, _ in binds])
        binds = [(bind, where) for bind, (_, where) in zip(with_policies, binds, strict=True)]
    seen: dict[int, str] = {}
    for bind, where in binds:
        if bind.port == 0:
            continue  # each port-0 bind gets its own free port
        if bind.port in seen:
            raise ConfigError(where, f"port {bind.port} is already used by {seen[bind.port]}")
        seen[bind.port] = where.removesuffix(".port")
    return Config(binds=tuple(bind for bind, _ in binds), static=static, frontend=frontend)


def _named_backends(o: Obj, base_dir: Path) -> dict[str, RouteBackend]:
    """Top-level `backends:`, which routes reference as `backend: <name>`."""
    named: dict[str, RouteBackend] = {}
    for path, item in o.items("backends"):
        b = Obj(item, path, "FullLocalBackend")
        name = b.req_str("name")
        if name in named:
            raise ConfigError(b.child("name"), f"duplicate backend name {name}")
        present = [k for k in _NAMED_TARGETS if b.has(k)]
        if len(present) != 1:
            what = "both host and ai are set" if present else "one of host, ai is required"
            raise ConfigError(path, f"a backend needs exactly one target: {what}")
        target = (
            parse_host_port(b.get("host"), b.child("host"))
            if present[0] == "host"
            else _ai(b.get("ai"), b.child("ai"), base_dir)
        )
        policies_raw = b.get("policies")
        b.close()
        policies = (
            None
            if policies_raw is None
            else parse_backend_policies(policies_raw, b.child("policies"), base_dir)
        )
        # agentgateway names it `{namespace}/{name}` with an empty namespace.
        named[name] = RouteBackend(target=target, policies=policies, name=f"/{name}")
    return named


def _attached_route(
    raw: object, path: str, base_dir: Path, named: Mapping[str, RouteBackend]
) -> AttachedRoute:
    """A top-level `routes:` entry: a binds-form route plus the gateways it attaches to."""
    o = Obj(raw, path, "LocalAttachedRoute")
    refs = parse_gateway_refs(o.get("gateways"), o.child("gateways"))
    has_name = o.opt_str("name") is not None
    rest = {k: v for k, v in as_map(raw, path).items() if k != "gateways"}
    for key in o.keys():
        o.get(key)  # the route reader below checks and reads the rest
    o.close()
    route = _route(rest, path, 0, base_dir, named)
    return AttachedRoute(path, refs, route, has_name)


def _static(
    raw: object | None, path: str, env: Mapping[str, str], base_dir: Path
) -> StaticConfig:
    """`config:`; as in agentgateway, some environment variables take precedence over it."""
    default = StaticConfig()
    o = Obj({} if raw is None else raw, path, "RawConfig")

    def addr(key: str, var: str, fallback: str | None) -> str | None:
        value = o.get(key)
        configured = fallback if value is None else check_socket_addr(value, o.child(key))
        return check_socket_addr(env[var], f"${var}") if var in env else configured

    backend_raw = o.get("backend")
    logging_raw = o.get("logging")
    tracing_raw = o.get("tracing")
    catalog_raw = o.get("modelCatalog")
    result = StaticConfig(
        admin_addr=addr("adminAddr", "ADMIN_ADDR", default.admin_addr),
        stats_addr=addr("statsAddr", "STATS_ADDR", default.stats_addr),
        readiness_addr=addr("readinessAddr", "READINESS_ADDR", default.readiness_addr),
        backend=default.backend
        if backend_raw is None
        else _backend_pool(backend_raw, o.child("backend")),
        connection_termination_deadline=_termination_deadline(o, env),
        connection_min_termination_deadline=_duration_or_env(
            o, "connectionMinTerminationDeadline", env, "CONNECTION_MIN_TERMINATION_DEADLINE"
        ),
        logging=default.logging
        if logging_raw is None
        else _logging(logging_raw, o.child("logging")),
        tracing=None
        if tracing_raw is None
        else parse_config_tracing(tracing_raw, o.child("tracing"), env),
        model_catalog=None
        if catalog_raw is None
        else parse_model_catalog(catalog_raw, o.child("modelCatalog"), base_dir),
    )
    o.close()
    return result


def _duration_or_env(o: Obj, key: str, env: Mapping[str, str], var: str) -> float:
    """A `config:` duration that an environment variable, if set, overrides; default 0."""
    configured = o.opt_duration(key)
    if var in env:
        return parse_duration(env[var], f"${var}")
    return 0.0 if configured is None else configured


def _termination_deadline(o: Obj, env: Mapping[str, str]) -> float:
    configured = o.opt_duration("connectionTerminationDeadline")
    var = "CONNECTION_TERMINATION_DEADLINE"
    if var in env:
        return parse_duration(env[var], f"${var}")
    if configured is not None:
        return configured
    grace = env.get("TERMINATION_GRACE_PERIOD_SECONDS")
    if grace is None:
        return StaticConfig().connection_termination_deadline
    if not grace.isascii() or not grace.isdigit():
        raise ConfigError("$TERMINATION_GRACE_PERIOD_SECONDS", f"expected seconds, got {grace!r}")
    # Finish draining a little before Kubernetes' SIGKILL, as agentgateway does.
    seconds = int(grace)
    return float(max(seconds - 5 if seconds > 10 else seconds - 1, 1))


def _backend_pool(raw: object, path: str) -> BackendPoolConfig:
    default = BackendPoolConfig()
    o = Obj(raw, path, "BackendConfig")
    keepalives = o.get("keepalives")
    keepalive = (
        default.keepalive
        if keepalives is None
        else _keepalive(keepalives, o.child("keepalives"))
    )
    connect = o.opt_duration("connectTimeout")
    idle = o.opt_duration("poolIdleTimeout")
    result = BackendPoolConfig(
        keepalive=keepalive,
        connect_timeout=default.connect_timeout if connect is None else connect,
        pool_idle_timeout=default.pool_idle_timeout if idle is None else idle,
        pool_max_size=o.opt_int("poolMaxSize", 0),
    )
    o.close()
    return result


# What the Linux kernel accepts for TCP_KEEPIDLE / TCP_KEEPINTVL and TCP_KEEPCNT
# (include/net/tcp.h: MAX_TCP_KEEPIDLE, MAX_TCP_KEEPINTVL, MAX_TCP_KEEPCNT).
_KEEPALIVE_MAX_SECONDS = 32767
_KEEPALIVE_MAX_PROBES = 127


def _keepalive(raw: object, path: str) -> KeepaliveConfig:
    """`keepalives`; like agentgateway, durations are truncated to whole seconds.

    With keepalive enabled, a value the kernel would refuse is refused here: agentgateway
    would log the failed setsockopt at trace level and run without it, which no operator
    means.
    """
    default = KeepaliveConfig()
    k = Obj(raw, path, "KeepaliveConfig")
    enabled = k.opt_bool("enabled")
    time = k.opt_duration("time")
    interval = k.opt_duration("interval")
    retries = k.opt_int("retries", 0, 2**32 - 1)
    k.close()
    result = KeepaliveConfig(
        enabled=default.enabled if enabled is None else enabled,
        time=default.time if time is None else int(time),
        interval=default.interval if interval is None else int(interval),
        retries=default.retries if retries is None else retries,
    )
    if result.enabled:
        for key, value, top in (
            ("time", result.time, _KEEPALIVE_MAX_SECONDS),
            ("interval", result.interval, _KEEPALIVE_MAX_SECONDS),
            ("retries", result.retries, _KEEPALIVE_MAX_PROBES),
        ):
            if not 1 <= value <= top:
                unit = "" if key == "retries" else "s"
                raise ConfigError(
                    k.child(key),
                    f"must be in 1{unit}..{top}{unit} for the kernel, got {value}{unit}"
                    + ("" if key == "retries" else " (whole seconds)"),
                )
    return result


def _logging(raw: object, path: str) -> LoggingConfig:
    o = Obj(raw, path, "RawLogging")
    level = "info"
    level_raw = o.get("level")
    if level_raw is not None:
        level = _log_level(level_raw, o.child("level"))
    fmt = o.get("format")
    o.close()
    if fmt is None or choice(fmt, o.child("format"), ("text", "json")) == "text":
        return LoggingConfig(level=level, format="text")
    return LoggingConfig(level=level, format="json")


def _log_level(raw: object, path: str) -> str:
    """The global level out of a tracing filter such as `info,agent_core=trace`.

    Per-module directives name agentgateway's Rust modules, which do not exist here; they
    only tune debug output, so they are accepted and have no effect.
    """
    if isinstance(raw, list):
        parts = [as_str(item, f"{path}[{i}]") for i, item in enumerate(raw)]
    else:
        parts = [as_str(raw, path)]
    directives = [p.strip() for part in parts for p in part.split(",") if p.strip()]
    for directive in directives:
        if "=" not in directive:
            return choice(directive.lower(), path, _LOG_LEVELS)
    return "info"


def _frontend(raw: object | None, path: str) -> FrontendPolicies:
    default = FrontendPolicies()
    if raw is None:
        return default
    o = Obj(raw, path, "LocalFrontendPolicies")
    http_raw = o.get("http")
    tls_raw = o.get("tls")
    log_raw = o.get("accessLog")
    tracing_raw = o.get("tracing")
    o.close()
    handshake = None if tls_raw is None else parse_frontend_tls(tls_raw, o.child("tls"))
    if handshake is not None:
        default = FrontendPolicies(tls_handshake_timeout=handshake)
    if tracing_raw is not None:
        default = replace(
            default, tracing=parse_frontend_tracing(tracing_raw, o.child("tracing"))
        )
    if log_raw is not None:
        default = replace(default, access_log=_access_log(log_raw, o.child("accessLog")))
    if http_raw is None:
        return default
    h = Obj(http_raw, o.child("http"), "FrontendHTTP")
    idle = h.opt_duration("http1IdleTimeout")
    header_case = h.get("http1HeaderCase")
    if header_case is not None:
        case_path = h.child("http1HeaderCase")
        if choice(header_case, case_path, _HEADER_CASES) != "lowercase":
            # Response field names go out lowercase (what agentgateway does by default);
            # keeping the upstream's spelling would need its raw names carried through.
            raise not_supported(case_path, "preserve")
    result = FrontendPolicies(
        max_buffer_size=h.opt_int("maxBufferSize", 0),
        http1_idle_timeout=default.http1_idle_timeout if idle is None else idle,
        tls_handshake_timeout=default.tls_handshake_timeout,
        access_log=default.access_log,
        tracing=default.tracing,
    )
    h.close()
    return result


def _access_log(raw: object, path: str) -> AccessLogPolicy:
    """`accessLog` (agentgateway's LoggingPolicy): the CEL is compiled by the plan."""
    o = Obj(raw, path, "LoggingPolicy")
    add_raw = o.get("add")
    remove = frozenset(as_str(v, p) for p, v in o.items("remove"))
    policy = AccessLogPolicy(
        path=path,
        filter=o.opt_str("filter"),
        add=() if add_raw is None else tuple(as_str_map(add_raw, o.child("add"))),
        remove=remove,
    )
    o.close()
    return policy


def _bind(raw: object, path: str, base_dir: Path, named: Mapping[str, RouteBackend]) -> Bind:
    o = Obj(raw, path, "LocalBind")
    mode = o.get("mode")
    if mode is not None and choice(mode, o.child("mode"), ("standard", "internal")) != "standard":
        raise not_supported(o.child("mode"), "internal binds")
    tunnel = o.get("tunnelProtocol")
    if tunnel is not None:
        name = choice(tunnel, o.child("tunnelProtocol"), _TUNNEL_PROTOCOLS)
        if name != "direct":
            raise not_supported(o.child("tunnelProtocol"), name)
    port = o.opt_int("port", 0, 65535)  # 0: a free port, logged at start
    if port is None:
        raise ConfigError(
            o.child("port"),
            "a bind without a port must set mode: internal, which agw-fast does not support",
        )
    o.require("listeners")
    listeners = tuple(
        _listener(item, p, i, base_dir, named)
        for i, (p, item) in enumerate(o.items("listeners"))
    )
    o.close()
    https = [i for i, listener in enumerate(listeners) if listener.protocol == "HTTPS"]
    if https and len(https) < len(listeners):
        # agentgateway then serves the whole port as TLS and the HTTP listener is never reached.
        plain = next(i for i, listener in enumerate(listeners) if listener.protocol == "HTTP")
        raise ConfigError(
            f"{o.child('listeners')}[{plain}].protocol",
            "HTTP and HTTPS listeners cannot share a port (the port serves TLS only)",
        )
    return Bind(port=port, listeners=listeners)


def _listener(
    raw: object, path: str, idx: int, base_dir: Path, named: Mapping[str, RouteBackend]
) -> Listener:
    o = Obj(raw, path, "LocalListener")
    name = o.opt_str("name")
    o.opt_str("namespace")  # only names things in agentgateway's own telemetry
    # Any string, as in agentgateway: "" (or none) is the fallback listener, and a name
    # starting with "*" matches every host that ends with the rest ("*" matches all).
    hostname = o.opt_str("hostname")
    protocol = o.get("protocol")
    proto = "HTTP"
    if protocol is not None:
        proto = choice(protocol, o.child("protocol"), _LISTENER_PROTOCOLS)
        if proto not in ("HTTP", "HTTPS"):
            raise not_supported(o.child("protocol"), proto)
    if not o.has("routes"):
        raise ConfigError(path, f"{proto} listener requires routes")
    tls_raw = o.get("tls")
    if proto == "HTTPS" and tls_raw is None:
        raise ConfigError(o.child("tls"), "HTTPS listener requires 'tls'")
    if proto == "HTTP" and tls_raw is not None:
        # agentgateway would serve plain HTTP and ignore the certificate: surely not meant.
        raise ConfigError(o.child("tls"), "tls requires protocol: HTTPS")
    tls = None if tls_raw is None else parse_listener_tls(tls_raw, o.child("tls"), base_dir)
    routes = tuple(
        _route(item, p, i, base_dir, named) for i, (p, item) in enumerate(o.items("routes"))
    )
    policies_raw = o.get("policies")
    policies = (
        None
        if policies_raw is None
        else parse_gateway_policies(policies_raw, o.child("policies"), base_dir)
    )
    o.close()
    return Listener(
        name=f"listener{idx}" if name is None else name,
        hostname="" if hostname is None else hostname.lower(),
        protocol="HTTPS" if tls is not None else "HTTP",
        routes=routes,
        policies=policies,
        tls=tls,
    )


def _route(
    raw: object, path: str, idx: int, base_dir: Path, named: Mapping[str, RouteBackend]
) -> Route:
    o = Obj(raw, path, "LocalRoute")
    name = o.opt_str("name")
    namespace = o.opt_str("namespace")
    rule_name = o.opt_str("ruleName")
    # Any string, as in agentgateway: "*.suffix" is a wildcard, anything else must equal
    # the request's host (so "*" alone only matches a literal `Host: *`).
    hostnames = tuple(as_str(h, p).lower() for p, h in o.items("hostnames"))
    matches: tuple[RouteMatch, ...] = (RouteMatch(),)
    if o.has("matches"):
        matches = tuple(_match(item, p) for p, item in o.items("matches"))
    policies_raw = o.get("policies")
    policies = (
        None
        if policies_raw is None
        else parse_route_policies(policies_raw, o.child("policies"), base_dir)
    )
    backends = tuple(_backend(item, p, base_dir, named) for p, item in o.items("backends"))
    o.close()
    return Route(
        name=f"route{idx}" if name is None else name,
        namespace="default" if namespace is None else namespace,
        hostnames=hostnames,
        matches=matches,
        policies=policies,
        backends=backends,
        rule_name=rule_name,
    )


def _match(raw: object, path: str) -> RouteMatch:
    o = Obj(raw, path, "RouteMatch")
    path_raw = o.get("path")
    method = o.get("method")
    headers = tuple(parse_value_match(item, p, header=True) for p, item in o.items("headers"))
    query = tuple(parse_value_match(item, p, header=False) for p, item in o.items("query"))
    o.close()
    return RouteMatch(
        path=RouteMatch().path if path_raw is None else _path_match(path_raw, o.child("path")),
        method=None if method is None else check_header_name(method, o.child("method")),
        headers=headers,
        query=query,
    )


def _path_match(raw: object, path: str) -> PathMatch:
    o = Obj(raw, path, "PathMatch")
    key = one_key(o, ("exact", "pathPrefix", "regex"))
    value = o.get(key)
    o.close()
    if key == "regex":
        return PathMatch("regex", check_regex(value, o.child(key)))
    text = check_url_path(value, o.child(key))
    return PathMatch("exact", text) if key == "exact" else PathMatch("prefix", text)


def _backend(
    raw: object, path: str, base_dir: Path, named: Mapping[str, RouteBackend]
) -> RouteBackend:
    o = Obj(raw, path, "LocalRouteBackend")
    present = [k for k in _BACKEND_TARGETS if o.has(k)]
    if len(present) != 1:
        what = "one of host, ai, backend is required"
        if present:
            what = f"{'both ' if len(present) == 2 else ''}{' and '.join(present)} are set"
        raise ConfigError(path, f"a backend needs exactly one target: {what}")
    weight = o.opt_int("weight", 0)
    policies_raw = o.get("policies")
    policies = (
        None
        if policies_raw is None
        else parse_backend_policies(policies_raw, o.child("policies"), base_dir)
    )
    if present[0] == "backend":
        name = o.req_str("backend")
        o.close()
        ref = named.get(name)
        if ref is None:
            raise ConfigError(o.child("backend"), f"no top-level backend is named {name!r}")
        # agentgateway: the policies on this use of the backend win over the backend's own.
        return replace(
            ref,
            weight=1 if weight is None else weight,
            policies=_overlay(ref.policies, policies),
        )
    target = (
        parse_host_port(o.get("host"), o.child("host"))
        if present[0] == "host"
        else _ai(o.get("ai"), o.child("ai"), base_dir)
    )
    o.close()
    return RouteBackend(target=target, weight=1 if weight is None else weight, policies=policies)


def _overlay(
    base: BackendPolicies | None, top: BackendPolicies | None
) -> BackendPolicies | None:
    """`base` with every field `top` sets replaced (agentgateway merges backend policies
    field by field, the more specific first)."""
    if base is None or top is None:
        return top if base is None else base
    changes = {
        f.name: getattr(top, f.name) for f in fields(top) if getattr(top, f.name) is not None
    }
    return replace(base, **changes)


def _ai(raw: object, path: str, base_dir: Path) -> AIBackend:
    if isinstance(raw, dict) and "groups" in raw:
        extra = sorted(set(raw) - {"groups"})
        if extra:
            raise ConfigError(join(path, extra[0]), "groups cannot be combined with a provider")
        groups_path = join(path, "groups")
        groups = []
        names: set[str] = set()
        for gi, group_raw in enumerate(as_list(raw["groups"], groups_path)):
            g = Obj(group_raw, f"{groups_path}[{gi}]", "LocalAIProviders")
            group = tuple(_named_provider(item, p, base_dir) for p, item in g.items("providers"))
            g.close()
            if not group:
                raise ConfigError(f"{groups_path}[{gi}].providers", "a group needs a provider")
            for provider in group:
                if provider.name in names:
                    raise ConfigError(groups_path, f"duplicate provider name {provider.name}")
                names.add(provider.name)
            groups.append(group)
        if not groups:
            raise ConfigError(groups_path, "groups needs at least one group")
        return AIBackend(name=groups[0][0].name, groups=tuple(groups))
    return _named_provider(raw, path, base_dir)


def _named_provider(raw: object, path: str, base_dir: Path) -> AIBackend:
    o = Obj(raw, path, "LocalAIBackend")
    name = o.req_str("name")
    provider_path = o.child("provider")
    kind, model, azure, bedrock, vertex = _provider(o.require("provider"), provider_path)
    host_override = o.get("hostOverride")
    path_override = o.get("pathOverride")
    path_prefix = o.get("pathPrefix")
    tokenize = tokenize_flag(o.opt_bool("tokenize"), o.child("tokenize"))
    policies_raw = o.get("policies")
    o.close()
    policies = (
        None
        if policies_raw is None
        else parse_backend_policies(policies_raw, o.child("policies"), base_dir, provider=True)
    )
    if kind == "azure" and (policies is None or policies.backend_auth is None):
        raise not_supported(
            provider_path + ".azure",
            "azure without backendAuth (Entra ID credentials); set policies.backendAuth.key",
        )
    return AIBackend(
        name=name,
        provider=kind,
        model=model,
        host_override=None
        if host_override is None
        else parse_host_port(host_override, o.child("hostOverride")),
        path_override=None
        if path_override is None
        else check_url_path(path_override, o.child("pathOverride")),
        path_prefix=None
        if path_prefix is None
        else check_url_path(path_prefix, o.child("pathPrefix")),
        policies=policies,
        azure=azure,
        bedrock=bedrock,
        vertex=vertex,
        tokenize=tokenize,
    )


_AI_PROVIDERS = ("openAI", "anthropic", "gemini", "azure", "bedrock", "vertex")
_PROVIDER_SPECS = {
    "bedrock": "BedrockProvider",
    "openAI": "OpenAIProvider",
    "anthropic": "AnthropicProvider",
    "gemini": "GeminiProvider",
    "azure": "AzureProvider",
    "vertex": "VertexProvider",
}
_AIKind = Literal["openAI", "anthropic", "gemini", "azure", "bedrock", "vertex"]


def _provider(
    raw: object, path: str
) -> tuple[_AIKind, str | None, AzureParams | None, BedrockParams | None, VertexParams | None]:
    """The provider's kind, its model override (None: keep the client's), and the settings
    of Azure, Bedrock or Vertex AI."""
    o = Obj(raw, path, "AIProvider")
    present = [k for k in _AI_PROVIDERS if k in o.keys() or (isinstance(raw, dict) and k in raw)]
    if len(present) != 1:
        raise ConfigError(
            path,
            "exactly one provider is required (agw-fast has openAI, anthropic, gemini, azure "
            "bedrock and vertex)",
        )
    kind = cast(_AIKind, present[0])
    body = o.get(kind)
    o.close()
    p = Obj({} if body is None else body, join(path, kind), _PROVIDER_SPECS[kind])
    model = p.opt_str("model")
    azure = None
    if kind == "azure":
        resource_type = choice(
            p.require("resourceType"), p.child("resourceType"), ("openAI", "foundry")
        )
        project = p.opt_str("projectName")
        if resource_type == "foundry" and project is None:
            raise ConfigError(p.child("projectName"), "azure foundry requires projectName")
        azure = AzureParams(
            p.req_str("resourceName"),
            cast(Literal["openAI", "foundry"], resource_type),
            p.opt_str("apiVersion"),
            project,
        )
    bedrock = None
    if kind == "bedrock":
        bedrock = BedrockParams(
            p.req_str("region"),
            p.opt_str("guardrailIdentifier"),
            p.opt_str("guardrailVersion"),
        )
    vertex = None
    if kind == "vertex":
        vertex = vertex_params(
            p.req_str("projectId"), p.opt_str("region"), p.child("projectId"), p.child("region")
        )
    p.close()
    return kind, model, azure, bedrock, vertex
