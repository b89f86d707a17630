"""The gateways form: named `gateways:` with listeners, and top-level `routes:` attached to them.

agentgateway's newer config form (types/local.rs `convert_gateways`, `convert_attached_llm`)
is another way to write the binds form: each gateway is one bind on its `port`, with one
listener per `listeners` entry, or one listener made of the gateway's own `protocol`, `tls`
and policy fields. Routes name the gateways they attach to (`<gateway>` for all its listeners,
`<gateway>/<listener>` for one); without `gateways` they attach to the gateway named
`default`. This module reads the gateways and assembles the attached routes into the same
`Bind`/`Listener`/`Route` model the binds form produces, so nothing downstream knows which
form was written. The names follow agentgateway, which telemetry reports: the listener is
`<gateway>` or `<gateway>/<listener>` (`listener{i}` when unnamed), an unnamed route is
`route{i}` counted per listener, and route keys are `gateway/<listener>/<namespace>/<name>`.
The gateway label stays the proxy's own name (`default/default`), as agentgateway's
`ListenerName` keeps it for every listener of a local config.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal, TypeVar, cast

from agw_fast.config.load_policies import parse_gateway_policies, parse_route_policies
from agw_fast.config.load_tls import parse_listener_tls
from agw_fast.config.model import (
    Authorization,
    BackendPolicies,
    Bind,
    GatewayPolicies,
    Listener,
    Route,
    RouteBackend,
    RoutePolicies,
)
from agw_fast.config.validate import Obj, as_list, as_map, as_str, choice, join, not_supported
from agw_fast.errors import ConfigError

__all__ = [
    "DEFAULT_GATEWAY",
    "PROXY_GATEWAY",
    "AttachedRoute",
    "Gateway",
    "TargetedPolicy",
    "apply_backend_policies",
    "apply_route_and_gateway_policies",
    "attach_llm_route",
    "attach_routes",
    "gateway_binds",
    "parse_gateway_refs",
    "parse_gateways",
    "parse_targeted_policies",
]

_T = TypeVar("_T", RoutePolicies, GatewayPolicies, BackendPolicies)

DEFAULT_GATEWAY = "default"
_PROTOCOLS = ("HTTP", "HTTPS", "TCP", "TLS")
# The gateway policy fields (LocalGatewayPolicy), flattened into a gateway or its listeners.
_POLICY_KEYS = (
    "cors", "apiKey", "authorization", "basicAuth", "jwtAuth",
    "oidc", "extAuthz", "extProc", "transformations",
)  # fmt: skip


def parse_gateway_refs(raw: object | None, path: str) -> tuple[str, ...]:
    """`gateways:` on a route or `llm:`: one reference or a list of them."""
    if raw is None:
        return ()
    if isinstance(raw, str):
        return (raw,)
    return tuple(as_str(item, f"{path}[{i}]") for i, item in enumerate(as_list(raw, path)))


@dataclass(slots=True)
class Gateway:
    """One `gateways:` entry while routes are being attached."""

    name: str
    port: int
    path: str
    listeners: list[Listener]
    routes: list[list[Route]] = field(default_factory=list)  # per listener, in order


@dataclass(frozen=True, slots=True)
class AttachedRoute:
    """A top-level `routes:` entry, read by the binds form's route reader.

    `named` says whether it had a `name`: an unnamed route is numbered per listener.
    """

    path: str
    gateways: tuple[str, ...]
    route: Route
    named: bool


def parse_gateways(raw: object | None, path: str, base_dir: Path) -> list[Gateway]:
    if raw is None:
        return []
    gateways = []
    for name, item in as_map(raw, path).items():
        gateways.append(_gateway(name, item, join(path, name), base_dir))
    return gateways


def _gateway(name: str, raw: object, path: str, base_dir: Path) -> Gateway:
    o = Obj(raw, path, "LocalGateway")
    port = o.opt_int("port", 0, 65535)  # 0: a free port, as for binds
    if port is None:
        raise ConfigError(o.child("port"), "a gateway requires a port")
    items = o.items("listeners")
    if not items:
        only = _listener_fields(o, name, "*", base_dir)
        o.close()
        return Gateway(name, port, path, [only], [[]])
    inline = [k for k in ("protocol", "tls", *_POLICY_KEYS) if o.has(k)]
    if inline:
        raise ConfigError(
            o.child(inline[0]),
            "a gateway with listeners cannot set protocol, tls, or policy fields",
        )
    o.close()
    listeners: list[Listener] = []
    for idx, (item_path, item) in enumerate(items):
        lo = Obj(item, item_path, "LocalGatewayListener")
        own = lo.opt_str("name")
        hostname = lo.opt_str("hostname")
        ref = f"{name}/{f'listener{idx}' if own is None else own}"
        if any(existing.name == ref for existing in listeners):
            raise ConfigError(lo.child("name"), f"duplicate listener {ref}")
        listeners.append(
            _listener_fields(lo, ref, "*" if hostname is None else hostname.lower(), base_dir)
        )
        lo.close()
    https = [listener.protocol == "HTTPS" for listener in listeners]
    if any(https) and not all(https):
        # One port is served either with TLS or without (agentgateway refuses the mix too).
        plain = https.index(False) if https[0] else https.index(True)
        raise ConfigError(
            f"{o.child('listeners')}[{plain}].protocol",
            f"gateway listeners on port {port} cannot mix TLS and plaintext",
        )
    return Gateway(name, port, path, listeners, [[] for _ in listeners])


def _listener_fields(o: Obj, ref: str, hostname: str, base_dir: Path) -> Listener:
    """The listener a gateway (without `listeners`) or one of its listeners describes."""
    tls_raw = o.get("tls")
    protocol = "HTTPS" if tls_raw is not None else "HTTP"
    protocol_raw = o.get("protocol")
    if protocol_raw is not None:
        protocol = choice(protocol_raw, o.child("protocol"), _PROTOCOLS)
        if protocol in ("TCP", "TLS"):
            raise not_supported(o.child("protocol"), f"{protocol}, for tcpRoutes")
        if protocol == "HTTP" and tls_raw is not None:
            raise ConfigError(o.child("tls"), "protocol HTTP cannot set tls")
        if protocol == "HTTPS" and tls_raw is None:
            raise ConfigError(o.child("tls"), "protocol HTTPS requires tls")
    tls = None if tls_raw is None else parse_listener_tls(tls_raw, o.child("tls"), base_dir)
    picked = {key: o.get(key) for key in _POLICY_KEYS if o.has(key)}
    policies = parse_gateway_policies(picked, o.path, base_dir) if picked else None
    return Listener(
        name=ref,
        hostname=hostname,
        protocol="HTTPS" if tls is not None else "HTTP",
        policies=policies,
        tls=tls,
    )


def _resolve(
    gateways: list[Gateway], refs: tuple[str, ...], path: str
) -> list[tuple[Gateway, int]]:
    """The listeners (gateway, index) that `refs` name, each once, in reference order."""
    found: list[tuple[Gateway, int]] = []
    for i, ref in enumerate(refs):
        where = path if len(refs) == 1 else f"{path}[{i}]"
        matched = [
            (gateway, index)
            for gateway in gateways
            for index, listener in enumerate(gateway.listeners)
            if ref in (gateway.name, listener.name)
        ]
        if not matched:
            raise ConfigError(where, f"unknown gateway reference {ref}")
        found += [m for m in matched if m not in found]
    return found


def _default_refs(gateways: list[Gateway]) -> tuple[str, ...]:
    return (DEFAULT_GATEWAY,) if any(g.name == DEFAULT_GATEWAY for g in gateways) else ()


def attach_routes(gateways: list[Gateway], routes: list[AttachedRoute]) -> None:
    """Attach top-level routes to their gateway listeners, in file order."""
    for attached in routes:
        refs = attached.gateways or _default_refs(gateways)
        if not refs:
            raise ConfigError(
                join(attached.path, "gateways"),
                "a route must set gateways when no gateway is named `default`",
            )
        for gateway, index in _resolve(gateways, refs, join(attached.path, "gateways")):
            on_listener = gateway.routes[index]
            route = attached.route
            name = route.name if attached.named else f"route{len(on_listener)}"
            ref = gateway.listeners[index].name
            on_listener.append(
                replace(route, name=name, key=f"gateway/{ref}/{route.namespace}/{name}")
            )


def attach_llm_route(
    gateways: list[Gateway], refs: tuple[str, ...], own_port: bool, route: Route, path: str
) -> bool:
    """Attach the `llm:` form's route to `llm.gateways` (or, when it sets neither gateways nor
    a port, to the `default` gateway); False when it keeps its own bind instead."""
    if not refs and not own_port:
        refs = _default_refs(gateways)
    if not refs:
        return False
    for gateway, index in _resolve(gateways, refs, path):
        # agentgateway scopes the feature's route key under the listener (`scoped_routes`).
        ref = gateway.listeners[index].name
        gateway.routes[index].append(replace(route, key=f"gateway/{ref}/{route.name}"))
    return True


def gateway_binds(gateways: list[Gateway]) -> list[tuple[Bind, str]]:
    """One bind per gateway, with the path of its `port` for errors."""
    return [
        (
            Bind(
                port=gateway.port,
                listeners=tuple(
                    replace(listener, routes=tuple(routes))
                    for listener, routes in zip(gateway.listeners, gateway.routes, strict=True)
                ),
            ),
            join(gateway.path, "port"),
        )
        for gateway in gateways
    ]


# -- Top-level `policies:` (agentgateway's targeted policies, LocalPolicy) -------------------
#
# Each entry attaches exactly one policy to a target. agentgateway resolves them at request
# time by precedence (store/binds.rs: route > listener > gateway for route policies; a
# backendRef's own > the backend's own > targeted for backend policies); here they are folded
# into the model at load time with the same outcome: a targeted policy fills a field the more
# specific inline policy leaves unset. Where agentgateway's order between two policies of the
# same level is not a documented rule (a policy aimed at a listener or route that also sets
# the same field inline), the load is refused rather than one silently dropped.

PROXY_GATEWAY = ("default", "default")  # the proxy's own (namespace, name) in a local config
_GATEWAY_PHASE = {
    "cors": "cors", "jwtAuth": "jwt_auth", "basicAuth": "basic_auth", "apiKey": "api_key",
    "authorization": "authorization",
}  # fmt: skip
# Route policies that are backend policies, as FilterOrPolicy and BackendPolicies name them.
_BACKEND_PHASE = {
    "requestHeaderModifier": "request_header_modifier",
    "responseHeaderModifier": "response_header_modifier",
    "requestRedirect": "request_redirect",
    "backendTLS": "backend_tls",
    "backendAuth": "backend_auth",
    "ai": "ai",
}


@dataclass(frozen=True, slots=True)
class TargetedPolicy:
    """One `policies:` entry, read: the one policy (a FilterOrPolicy with a single key)."""

    path: str  # `policies[i]`
    key: str  # the policy's camelCase name, e.g. `cors`
    target: Literal["gateway", "route", "backend"]
    phase: Literal["route", "gateway"]
    # gateway: (listenerName or None,); route: (namespace, name, ruleName or None);
    # backend: (name,)
    selector: tuple[str | None, ...]
    policies: RoutePolicies


def parse_targeted_policies(raw_items: list[tuple[str, object]], base_dir: Path
                            ) -> list[TargetedPolicy]:  # fmt: skip
    return [_targeted(raw, path, base_dir) for path, raw in raw_items]


def _targeted(raw: object, path: str, base_dir: Path) -> TargetedPolicy:
    o = Obj(raw, path, "LocalPolicy")
    n = Obj(o.require("name"), o.child("name"), "ResourceName")
    n.req_str("name")
    n.req_str("namespace")
    n.close()
    phase_raw = o.get("phase")
    phase = (
        "route" if phase_raw is None else choice(phase_raw, o.child("phase"), ("route", "gateway"))
    )
    policy_raw = as_map(o.require("policy"), o.child("policy"))
    set_keys = [k for k, v in policy_raw.items() if v is not None]
    if len(set_keys) != 1:
        raise ConfigError(o.child("policy"), "a policies entry must contain exactly 1 policy")
    (key,) = set_keys
    policies = parse_route_policies(policy_raw, o.child("policy"), base_dir)
    if policies is None:
        raise ConfigError(join(o.child("policy"), key), "the policy sets nothing")
    t = Obj(o.require("target"), o.child("target"), "PolicyTarget")
    kinds = t.keys()
    if len(kinds) != 1:
        raise ConfigError(t.path, "a target needs exactly one of gateway, route, backend")
    (kind,) = kinds
    where = t.child(kind)
    selector: tuple[str | None, ...]
    if kind == "gateway":
        g = Obj(t.get(kind), where, "ListenerTarget")
        gateway = (g.req_str("gatewayNamespace"), g.req_str("gatewayName"))
        if gateway != PROXY_GATEWAY:
            raise ConfigError(
                where, "targets no gateway: a local config's gateway is default/default"
            )
        selector = (g.opt_str("listenerName"),)
        g.close()
    elif kind == "route":
        r = Obj(t.get(kind), where, "RouteName")
        selector = (r.req_str("namespace"), r.req_str("name"), r.opt_str("ruleName"))
        r.close()
    else:
        b = Obj(t.get(kind), where, "BackendTarget")
        ref = Obj(b.get("backend"), b.child("backend"), "BackendTarget/backend")
        name, namespace = ref.req_str("name"), ref.req_str("namespace")
        ref.close()
        b.close()
        if namespace:
            raise ConfigError(
                join(b.child("backend"), "namespace"),
                "top-level backends have the empty namespace",
            )
        selector = (name,)
    t.close()
    o.close()
    policy_path = join(o.child("policy"), key)
    if phase == "gateway" and (kind != "gateway" or key not in _GATEWAY_PHASE):
        raise ConfigError(
            o.child("phase"),
            "phase gateway needs a gateway target and one of " + ", ".join(_GATEWAY_PHASE),
        )
    if kind == "backend" and key not in _BACKEND_PHASE:
        raise ConfigError(policy_path, "a backend target takes backend policies only")
    return TargetedPolicy(
        path, key, cast(Literal["gateway", "route", "backend"], kind),
        cast(Literal["route", "gateway"], phase), selector, policies,
    )  # fmt: skip


def _fill(base: _T, extra: _T, key: str, path: str, refuse_tie: bool) -> _T:
    """`base` with the fields `extra` sets and `base` leaves unset (authorization rules add
    up, as agentgateway collects every rule); a field set on both is refused when
    `refuse_tie`, else `base` keeps its own."""
    changes: dict[str, Any] = {}
    for f in fields(cast(Any, extra)):
        mine, theirs = getattr(base, f.name), getattr(extra, f.name)
        if theirs in (None, ()):
            continue
        if mine in (None, ()):
            changes[f.name] = theirs
        elif isinstance(mine, Authorization) and isinstance(theirs, Authorization):
            changes[f.name] = Authorization(mine.rules + theirs.rules)
        elif refuse_tie:
            raise not_supported(
                f"{path}.policy.{key}",
                "the target sets the same policy inline; set it in one place",
            )
    return replace(base, **changes) if changes else base


def apply_backend_policies(policies: list[TargetedPolicy], named: dict[str, RouteBackend]) -> None:
    """Backend-targeted policies onto the named backends (below the backend's own)."""
    for policy in policies:
        if policy.target != "backend":
            continue
        name = policy.selector[0]
        assert name is not None
        backend = named.get(name)
        if backend is None:
            raise ConfigError(
                join(policy.path, "target"), f"no top-level backend is named {name!r}"
            )
        values = {
            field_name: getattr(policy.policies, field_name)
            for key, field_name in _BACKEND_PHASE.items()
            if key == policy.key
        }
        extra = BackendPolicies(**cast(Any, values))
        own = backend.policies or BackendPolicies()
        named[name] = replace(backend, policies=_fill(own, extra, policy.key, policy.path, False))


def apply_route_and_gateway_policies(policies: list[TargetedPolicy], binds: list[Bind]
                                     ) -> list[Bind]:  # fmt: skip
    """Gateway- and route-targeted policies onto the listeners and routes they select."""
    for policy in policies:
        if policy.target == "backend":
            continue
        matched = False
        for bi, bind in enumerate(binds):
            listeners = list(bind.listeners)
            for li, listener in enumerate(listeners):
                listeners[li], hit = _apply(policy, listener)
                matched = matched or hit
            binds[bi] = replace(bind, listeners=tuple(listeners))
        if not matched:
            raise ConfigError(join(policy.path, "target"), "the target matches nothing")
    return binds


def _apply(policy: TargetedPolicy, listener: Listener) -> tuple[Listener, bool]:
    if policy.target == "gateway":
        (listener_name,) = policy.selector
        if listener_name is not None and listener_name != listener.name:
            return listener, False
        # Aimed at this listener: the same level as its inline policies (a tie is refused);
        # at the whole gateway: below them.
        tie = listener_name is not None
        if policy.phase == "gateway":
            extra = GatewayPolicies(
                **{_GATEWAY_PHASE[policy.key]: getattr(policy.policies, _GATEWAY_PHASE[policy.key])}
            )
            own = listener.policies or GatewayPolicies()
            return replace(listener, policies=_fill(own, extra, policy.key, policy.path, tie)), True
        routes = tuple(
            replace(route, policies=_fill(
                route.policies or RoutePolicies(), policy.policies, policy.key, policy.path, False
            ))
            for route in listener.routes
        )  # fmt: skip
        return replace(listener, routes=routes), True
    namespace, name, rule = policy.selector
    hit = False
    selected = []
    for route in listener.routes:
        if (route.namespace, route.name) == (namespace, name) and rule in (None, route.rule_name):
            hit = True
            route = replace(route, policies=_fill(
                route.policies or RoutePolicies(), policy.policies, policy.key, policy.path, True
            ))  # fmt: skip
        selected.append(route)
    return replace(listener, routes=tuple(selected)), hit
