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

from dataclasses import dataclass, field, replace
from pathlib import Path

from agw_fast.config.load_policies import parse_gateway_policies
from agw_fast.config.load_tls import parse_listener_tls
from agw_fast.config.model import Bind, Listener, Route
from agw_fast.config.validate import Obj, as_list, as_map, as_str, choice, join, not_supported
from agw_fast.errors import ConfigError

__all__ = [
    "DEFAULT_GATEWAY",
    "AttachedRoute",
    "Gateway",
    "attach_llm_route",
    "attach_routes",
    "gateway_binds",
    "parse_gateway_refs",
    "parse_gateways",
]

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
