"""The compile step: declarative config objects -> runtime backends, routes and binds."""

from __future__ import annotations

import dataclasses
import math
import ssl
from collections import Counter
from pathlib import Path

import pytest

from agw_fast.config.model import (
    AIBackend,
    BackendAuth,
    BackendPolicies,
    BackendTLS,
    Bind,
    Config,
    DirectResponse,
    FrontendPolicies,
    HeaderModifier,
    HostBackend,
    Listener,
    PathMatch,
    RequestRedirect,
    Route,
    RouteBackend,
    RouteMatch,
    RoutePolicies,
    TimeoutPolicy,
)
from agw_fast.core.rewrite import RESPONSE_HOP_BY_HOP
from agw_fast.errors import ConfigError
from agw_fast.plan import (
    DEFAULT_LLM_BUFFER,
    RuntimeBackend,
    RuntimeBind,
    RuntimeRoute,
    compile_config,
)
from agw_fast.policies import PolicyRequest, run_steps


def _compile(*routes: Route, frontend: FrontendPolicies | None = None) -> RuntimeBind:
    config = Config(
        binds=(Bind(8080, (Listener("main", routes=routes),)),),
        frontend=frontend or FrontendPolicies(),
    )
    binds = compile_config(config)
    assert len(binds) == 1
    return binds[0]


def _routes(*routes: Route, frontend: FrontendPolicies | None = None) -> dict[str, RuntimeRoute]:
    bind = _compile(*routes, frontend=frontend)
    assert bind.single is not None
    return {route.name: route for route in bind.single.routes()}


# agentgateway names an inline backend after its place in the config (types/local.rs).
BACKEND_NAME = "/default/default/bind/8080/main/default/r/backend0"


def _backend(
    target: HostBackend | AIBackend,
    *,
    route_policies: RoutePolicies | None = None,
    policies: BackendPolicies | None = None,
) -> RuntimeBackend:
    route = Route(
        name="r",
        policies=route_policies,
        backends=(RouteBackend(target, policies=policies),),
    )
    (backend,) = _routes(route)["r"].backends
    return backend


# -- AI backends -------------------------------------------------------------------------------


def test_ai_backend_defaults_to_openai_over_tls() -> None:
    backend = _backend(AIBackend(name="openai", model="gpt-4o-mini"))
    assert (backend.host, backend.port) == ("api.openai.com", 443)
    assert isinstance(backend.ssl, ssl.SSLContext)
    assert backend.ssl.verify_mode == ssl.CERT_REQUIRED
    assert backend.ssl.check_hostname is True
    assert backend.server_hostname == "api.openai.com"
    assert backend.auto_authority == b"api.openai.com"
    assert backend.pool_key == ("api.openai.com", 443, id(backend.ssl))
    assert backend.name == BACKEND_NAME
    assert backend.protocol == "llm"
    assert backend.ai is not None
    assert backend.ai.model_override == "gpt-4o-mini"
    assert backend.ai.has_host_override is False
    assert backend.ai.path_override is None
    assert backend.ai.max_body == DEFAULT_LLM_BUFFER


def test_ai_backend_with_host_override_and_no_tls_is_plain() -> None:
    override = HostBackend("llm.internal", 8000)
    backend = _backend(AIBackend(name="local", host_override=override, path_override="/v1/x"))
    assert (backend.host, backend.port) == ("llm.internal", 8000)
    assert backend.ssl is None
    assert backend.server_hostname is None
    assert backend.pool_key == ("llm.internal", 8000, 0)
    assert backend.auto_authority == b"llm.internal:8000"
    assert backend.ai is not None
    assert backend.ai.has_host_override is True
    assert backend.ai.path_override == b"/v1/x"


def test_ai_backend_with_host_override_on_an_ip_has_no_auto_authority() -> None:
    backend = _backend(AIBackend(name="local", host_override=HostBackend("127.0.0.1", 9000)))
    assert backend.ssl is None
    assert backend.auto_authority is None
    assert backend.pool_key == ("127.0.0.1", 9000, 0)


def test_ai_backend_with_host_override_and_route_tls() -> None:
    backend = _backend(
        AIBackend(name="local", host_override=HostBackend("llm.internal", 443)),
        route_policies=RoutePolicies(backend_tls=BackendTLS(insecure_host=True)),
    )
    assert backend.ssl is not None
    assert backend.ssl.check_hostname is False
    assert backend.server_hostname == "llm.internal"
    assert backend.auto_authority == b"llm.internal"


def test_frontend_max_buffer_size_bounds_llm_bodies() -> None:
    routes = _routes(
        Route(name="r", backends=(RouteBackend(AIBackend(name="a")),)),
        frontend=FrontendPolicies(max_buffer_size=1024),
    )
    ai = routes["r"].backends[0].ai
    assert ai is not None
    assert ai.max_body == 1024


# -- policy precedence -------------------------------------------------------------------------

_ROUTE_POLICIES = RoutePolicies(
    backend_tls=BackendTLS(hostname="route.example"),
    backend_auth=BackendAuth("route-key"),
)
_BACKEND_POLICIES = BackendPolicies(
    backend_tls=BackendTLS(hostname="backend.example"),
    backend_auth=BackendAuth("backend-key"),
)


def test_route_backend_policies_are_copied_onto_host_backends() -> None:
    backend = _backend(HostBackend("up.example", 443), route_policies=_ROUTE_POLICIES)
    assert backend.server_hostname == "route.example"
    assert backend.request_headers.extra == b"authorization: Bearer route-key\r\n"


def test_backend_level_tls_and_auth_win_over_the_route_copy() -> None:
    backend = _backend(
        HostBackend("up.example", 443),
        route_policies=_ROUTE_POLICIES,
        policies=_BACKEND_POLICIES,
    )
    assert backend.server_hostname == "backend.example"
    assert backend.request_headers.extra == b"authorization: Bearer backend-key\r\n"


def test_backend_level_tls_only_keeps_route_auth() -> None:
    backend = _backend(
        HostBackend("up.example", 443),
        route_policies=_ROUTE_POLICIES,
        policies=BackendPolicies(backend_tls=BackendTLS(hostname="backend.example")),
    )
    assert backend.server_hostname == "backend.example"
    assert backend.request_headers.extra == b"authorization: Bearer route-key\r\n"


def test_ai_policies_win_over_route_and_backend_entry_wins_over_ai() -> None:
    ai_policies = BackendPolicies(
        backend_tls=BackendTLS(hostname="ai.example"), backend_auth=BackendAuth("ai-key")
    )
    target = AIBackend(name="a", policies=ai_policies)
    backend = _backend(target, route_policies=_ROUTE_POLICIES)
    assert backend.server_hostname == "ai.example"
    assert backend.request_headers.extra == b"authorization: Bearer ai-key\r\n"
    backend = _backend(target, route_policies=_ROUTE_POLICIES, policies=_BACKEND_POLICIES)
    assert backend.server_hostname == "backend.example"
    assert backend.request_headers.extra == b"authorization: Bearer backend-key\r\n"


def test_header_modifiers_route_then_backend() -> None:
    backend = _backend(
        HostBackend("up.example", 80),
        route_policies=RoutePolicies(
            request_header_modifier=HeaderModifier(set=(("x-env", "route"),)),
            response_header_modifier=HeaderModifier(set=(("x-r", "route"),)),
        ),
        policies=BackendPolicies(
            request_header_modifier=HeaderModifier(set=(("x-env", "backend"),)),
        ),
    )
    assert backend.request_headers.extra == b"x-env: backend\r\n"
    assert backend.response_extra == b"x-r: route\r\n"
    assert b"x-r" in backend.response_drop and b"connection" in backend.response_drop


def test_no_response_plan_without_response_modifiers() -> None:
    backend = _backend(HostBackend("up.example", 80))
    assert backend.response_extra == b""
    assert backend.response_drop == RESPONSE_HOP_BY_HOP
    assert backend.redirect is None
    assert backend.backend_request_timeout is None
    assert backend.ai is None
    assert backend.name == BACKEND_NAME
    assert backend.protocol == "http"


def test_timeouts_and_backend_redirect() -> None:
    redirect = RequestRedirect(scheme="https")
    route = Route(
        name="r",
        policies=RoutePolicies(
            timeout=TimeoutPolicy(request_timeout=30, backend_request_timeout=5)
        ),
        backends=(
            RouteBackend(HostBackend("a.example", 80)),
            RouteBackend(
                HostBackend("b.example", 80),
                policies=BackendPolicies(request_redirect=redirect, backend_request_timeout=2),
            ),
        ),
    )
    runtime = _routes(route)["r"]
    assert runtime.request_timeout == 30
    first, second = runtime.backends
    assert (first.backend_request_timeout, first.redirect) == (5, None)
    assert (second.backend_request_timeout, second.redirect) == (2, redirect)


# -- pool keys and SSL contexts ----------------------------------------------------------------


def _two(first: BackendTLS | None, second: BackendTLS | None) -> tuple[RuntimeBackend, ...]:
    routes = _routes(
        Route(
            name="a",
            matches=(RouteMatch(PathMatch("prefix", "/a")),),
            policies=RoutePolicies(backend_tls=first),
            backends=(RouteBackend(HostBackend("up.example", 443)),),
        ),
        Route(
            name="b",
            matches=(RouteMatch(PathMatch("prefix", "/b")),),
            backends=(
                RouteBackend(
                    HostBackend("up.example", 443), policies=BackendPolicies(backend_tls=second)
                ),
            ),
        ),
    )
    return routes["a"].backends[0], routes["b"].backends[0]


@pytest.mark.parametrize(
    "tls",
    [
        BackendTLS(),
        BackendTLS(insecure=True),
        BackendTLS(hostname="sni.example", insecure_host=True),
        BackendTLS(alpn=("http/1.1",)),
    ],
)
def test_equal_tls_settings_share_context_and_pool_key(tls: BackendTLS) -> None:
    # An equal but distinct object, as two YAML copies of the same settings would be.
    first, second = _two(tls, dataclasses.replace(tls))
    assert first.ssl is not None
    assert first.ssl is second.ssl
    assert first.pool_key == second.pool_key
    assert first.pool_key == ("up.example", 443, id(first.ssl))


@pytest.mark.parametrize(
    ("tls_a", "tls_b"),
    [
        (BackendTLS(), BackendTLS(insecure=True)),
        (BackendTLS(), BackendTLS(insecure_host=True)),
        (BackendTLS(hostname="a.example"), BackendTLS(hostname="b.example")),
        (BackendTLS(), None),
    ],
)
def test_different_tls_settings_have_different_pool_keys(
    tls_a: BackendTLS, tls_b: BackendTLS | None
) -> None:
    first, second = _two(tls_a, tls_b)
    assert first.pool_key != second.pool_key
    assert first.ssl is not second.ssl


def test_contexts_are_shared_across_listeners_and_binds() -> None:
    def route(name: str) -> Route:
        return Route(
            name=name,
            backends=(
                RouteBackend(
                    HostBackend("up.example", 443),
                    policies=BackendPolicies(backend_tls=BackendTLS()),
                ),
            ),
        )

    config = Config(
        binds=(
            Bind(
                8080,
                (
                    Listener("l1", hostname="a.example", routes=(route("r1"),)),
                    Listener("l2", hostname="b.example", routes=(route("r2"),)),
                ),
            ),
            Bind(8081, (Listener("l3", routes=(route("r3"),)),)),
        )
    )
    backends = [
        runtime.backends[0]
        for bind in compile_config(config)
        for table in bind.listeners.values()
        for runtime in table.routes()
    ]
    assert len(backends) == 3
    assert len({b.pool_key for b in backends}) == 1
    assert len({id(b.ssl) for b in backends}) == 1


# -- auto authority ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "port", "tls", "authority", "server_hostname"),
    [
        ("up.example", 80, None, b"up.example", None),
        ("up.example", 8080, None, b"up.example:8080", None),
        ("up.example", 443, None, b"up.example:443", None),
        ("up.example", 443, BackendTLS(), b"up.example", "up.example"),
        ("up.example", 8443, BackendTLS(), b"up.example:8443", "up.example"),
        ("up.example", 80, BackendTLS(), b"up.example:80", "up.example"),
        ("10.0.0.1", 80, None, None, None),
        ("10.0.0.1", 8080, None, None, None),
        ("[::1]", 8080, None, None, None),
        ("::1", 8080, None, None, None),
        ("10.0.0.1", 443, BackendTLS(), None, "10.0.0.1"),
        ("[::1]", 443, BackendTLS(), None, "::1"),
        ("10.0.0.1", 443, BackendTLS(hostname="named.example"), None, "named.example"),
    ],
)
def test_auto_authority_and_server_hostname(
    host: str,
    port: int,
    tls: BackendTLS | None,
    authority: bytes | None,
    server_hostname: str | None,
) -> None:
    backend = _backend(HostBackend(host, port), policies=BackendPolicies(backend_tls=tls))
    assert backend.auto_authority == authority
    assert backend.server_hostname == server_hostname


# -- routes and binds --------------------------------------------------------------------------


def test_direct_response_bytes_are_prebuilt() -> None:
    routes = _routes(
        Route(
            name="ok",
            matches=(RouteMatch(PathMatch("exact", "/ok")),),
            policies=RoutePolicies(direct_response=DirectResponse(200, b"hello")),
        ),
        Route(
            name="gone",
            matches=(RouteMatch(PathMatch("exact", "/gone")),),
            policies=RoutePolicies(direct_response=DirectResponse(410)),
        ),
        Route(name="proxy", backends=(RouteBackend(HostBackend("up.example", 80)),)),
    )
    assert _answer(routes["ok"]) == b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello"
    assert _answer(routes["gone"]) == b"HTTP/1.1 410 Gone\r\ncontent-length: 0\r\n\r\n"
    assert routes["proxy"].request_steps == ()


def _answer(route: RuntimeRoute) -> bytes | None:
    """What the route's policy steps answer a plain GET / with (None: proxied)."""
    answer = run_steps(route.request_steps, PolicyRequest(b"GET", b"h", b"/", b"", [], None))
    return answer.response if answer is not None else None


@pytest.mark.parametrize("status", [204, 304])
def test_direct_response_without_body_for_bodiless_statuses(status: int) -> None:
    # A 204/304 ends at its head (RFC 9112 §6.3): body bytes would be read by a keep-alive
    # client as the start of the next response. The config loader accepts a body here.
    route = Route(name="r", policies=RoutePolicies(direct_response=DirectResponse(status, b"x")))
    prebuilt = _answer(_routes(route)["r"])
    assert prebuilt is not None
    head, _, body = prebuilt.partition(b"\r\n\r\n")
    assert body == b""
    if status == 204:
        # RFC 9110 §8.6: no Content-Length in a 204.
        assert prebuilt == b"HTTP/1.1 204 No Content\r\n\r\n"


def test_route_key_listener_and_single_table() -> None:
    bind = _compile(Route(name="route1"))
    assert bind.port == 8080
    assert set(bind.listeners) == {""}
    assert bind.single is bind.listeners[""]
    (route,) = bind.single.routes()
    assert route.key == "bind/8080/main/default/route1"
    assert route.listener == "main"
    assert route.backends == ()
    assert route.choose_backend() is None


def test_telemetry_names_are_agentgateways() -> None:
    """bind/gateway/listener/route as agentgateway's binds form names them (types/local.rs);
    it never sets a route rule there, and the route namespace defaults to `default`."""
    config = Config(
        binds=(
            Bind(
                3000,
                (
                    Listener(
                        "main",
                        routes=(
                            Route(
                                name="chat", namespace="team", rule_name="ignored",
                                backends=(RouteBackend(HostBackend("up", 80)),),
                            ),
                            Route(name="route1"),
                        ),
                    ),
                ),
            ),
        )
    )
    (bind,) = compile_config(config)
    assert bind.single is not None
    routes = {route.name: route for route in bind.single.routes()}
    labels = routes["chat"].labels
    assert (labels.bind, labels.gateway, labels.listener, labels.route, labels.route_rule) == (
        "bind/3000", "default/default", "main", "team/chat", None,
    )
    assert labels.values == ("bind/3000", "default/default", "main", "team/chat", "unknown")
    assert routes["route1"].labels.route == "default/route1"
    (backend,) = routes["chat"].backends
    assert backend.name == "/default/default/bind/3000/main/team/chat/backend0"
    assert bind.single.labels.values == (
        "bind/3000", "default/default", "main", "unknown", "unknown",
    )
    assert bind.labels.values == ("bind/3000",) + ("unknown",) * 4


def test_route_key_carries_the_namespace() -> None:
    # The key breaks precedence ties, so the namespace orders routes as in agentgateway.
    bind = _compile(Route(name="route1", namespace="team-a"))
    assert bind.single is not None
    (route,) = bind.single.routes()
    assert route.key == "bind/8080/main/team-a/route1"


def test_star_listener_is_the_single_table() -> None:
    (bind,) = compile_config(Config(binds=(Bind(1, (Listener("a", hostname="*"),)),)))
    assert bind.single is bind.listeners["*"]


def test_no_single_table_with_several_or_named_listeners() -> None:
    config = Config(
        binds=(
            Bind(1, (Listener("a", hostname="A.Example"),)),
            Bind(2, (Listener("a"), Listener("b", hostname="*.example"))),
            Bind(3, (Listener("a", hostname="*example"),)),
        )
    )
    first, second, third = compile_config(config)
    assert third.single is None
    assert first.single is None
    assert set(first.listeners) == {"a.example"}
    assert second.single is None
    assert set(second.listeners) == {"", "*.example"}


# -- weighted backend choice -------------------------------------------------------------------


def _weighted(*weights: int) -> RuntimeRoute:
    route = Route(
        name="w",
        backends=tuple(
            RouteBackend(HostBackend(f"b{index}.example", 80), weight=weight)
            for index, weight in enumerate(weights)
        ),
    )
    return _routes(route)["w"]


def _draws(route: RuntimeRoute, count: int = 2000) -> Counter[str]:
    counts: Counter[str] = Counter()
    for _ in range(count):
        backend = route.choose_backend()
        assert backend is not None
        counts[backend.host] += 1
    return counts


@pytest.mark.parametrize("weights", [(0, 1), (1, 0), (0, 1, 0), (1, 0, 1), (0, 0, 5), (3, 0, 0, 2)])
def test_weight_zero_is_never_chosen(weights: tuple[int, ...]) -> None:
    counts = _draws(_weighted(*weights), 500)
    for index, weight in enumerate(weights):
        host = f"b{index}.example"
        if weight == 0:
            assert counts[host] == 0
        else:
            assert counts[host] > 0


@pytest.mark.parametrize("weights", [(0,), (0, 0), (0, 0, 0)])
def test_no_backend_when_all_weights_are_zero(weights: tuple[int, ...]) -> None:
    assert _weighted(*weights).choose_backend() is None


def test_single_backend_is_always_chosen() -> None:
    route = _weighted(7)
    assert all(route.choose_backend() is route.backends[0] for _ in range(50))


@pytest.mark.parametrize("weights", [(1, 1), (1, 3), (1, 2, 7), (10, 90), (5, 0, 5)])
def test_choice_is_roughly_proportional(weights: tuple[int, ...]) -> None:
    draws = 2000
    counts = _draws(_weighted(*weights), draws)
    total = sum(weights)
    for index, weight in enumerate(weights):
        share = weight / total
        observed = counts[f"b{index}.example"]
        # Eight standard deviations of a binomial count: a flake is practically impossible.
        slack = 8 * math.sqrt(draws * share * (1 - share))
        assert abs(observed - draws * share) <= slack


def test_unloadable_tls_file_is_a_config_error_with_its_path(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pem"
    bad.write_text("-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n")
    route = Route(
        name="r",
        policies=RoutePolicies(backend_tls=BackendTLS(root=str(bad))),
        backends=(RouteBackend(HostBackend("example.com", 443)),),
    )
    config = Config(binds=(Bind(3000, (Listener("l", routes=(route,)),)),))
    with pytest.raises(ConfigError) as caught:
        compile_config(config)
    assert caught.value.path == "binds[0].listeners[0].routes[0].backends[0]"
    assert "cannot load TLS files" in str(caught.value)
