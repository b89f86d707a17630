"""The gateways form (`gateways:`, top-level `routes:` and `backends:`, `llm.gateways`): it
loads into the same model as the equivalent binds form, with agentgateway's names.

The expected names come from agentgateway's normalisation snapshot of its `gateway_config.yaml`
fixture (crates/agentgateway/src/types/local_tests/gateway_normalized.snap): listeners
`<gateway>` or `<gateway>/<listener>`, routes numbered per listener, route keys
`gateway/<listener>/<namespace>/<name>` and inline backends `/<route key>/backend<i>`.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import trustme

from agw_fast.config import load_config, load_config_file
from agw_fast.config.model import Bind, Config, HostBackend, Listener, Route
from agw_fast.errors import ConfigError
from agw_fast.plan import RuntimeBind, RuntimeRoute, compile_config

EXAMPLES = Path(__file__).resolve().parents[1] / "data" / "agentgateway-examples"
ENV = {"OPENAI_API_KEY": "test-key"}


def load(doc: object, base_dir: Path = EXAMPLES) -> Config:
    text = doc if isinstance(doc, str) else json.dumps(doc)
    return load_config(text, ENV, base_dir=base_dir)


def error_of(doc: object, base_dir: Path = EXAMPLES) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        compile_config(load(doc, base_dir))
    return info.value


def without_keys(config: Config) -> Config:
    """The config with the gateways form's route keys dropped (the binds form has none)."""
    return replace(
        config,
        binds=tuple(
            replace(
                bind,
                listeners=tuple(
                    replace(
                        listener,
                        routes=tuple(replace(route, key=None) for route in listener.routes),
                    )
                    for listener in bind.listeners
                ),
            )
            for bind in config.binds
        ),
    )


def drop(text: str, *sections: str) -> str:
    """The YAML text without the named top-level sections (each to the next top-level key)."""
    kept, skipping = [], False
    for line in text.splitlines(keepends=True):
        if line[:1] not in ("", " ", "#", "\n", "-"):
            skipping = line.split(":", 1)[0] in sections
        if not skipping:
            kept.append(line)
    return "".join(kept)


def runtime_routes(bind: RuntimeBind) -> dict[tuple[str, str], RuntimeRoute]:
    """(listener, route) label pairs to the runtime routes of a compiled bind."""
    found = {}
    for listener in bind.listeners.values():
        for route in listener.routes():
            assert route.labels.listener is not None and route.labels.route is not None
            found[(route.labels.listener, route.labels.route)] = route
    return found


def test_agentgateway_gateway_fixture_is_its_binds_form() -> None:
    modern = load_config_file(EXAMPLES / "gateway_config.yaml", ENV)
    binds_form = load(
        """
binds:
- port: 12345
  listeners:
  - name: default
    hostname: "*"
    routes:
    - backends: [{host: "explicit-default:80"}]
    - name: route1
      backends: [{host: "implicit-default:80"}]
- port: 12346
  listeners:
  - name: alt
    hostname: "*"
    routes:
    - backends: [{host: "alt:80"}]
    - name: route1
      backends: [{host: "multiple-gateways:80"}]
- port: 12347
  listeners:
  - name: with-listeners/a
    hostname: a.example.com
    routes:
    - backends: [{host: "multiple-gateways:80"}]
  - name: with-listeners/listener1
    hostname: b.example.com
    routes: []
"""
    )
    assert without_keys(modern) == binds_form


def test_agentgateway_gateway_fixture_names_as_its_snapshot() -> None:
    binds = compile_config(load_config_file(EXAMPLES / "gateway_config.yaml", ENV))
    assert [bind.port for bind in binds] == [12345, 12346, 12347]
    found = {}
    for bind in binds:
        for (listener, route_name), route in runtime_routes(bind).items():
            (backend,) = route.backends
            found[(listener, route_name)] = (route.key, backend.name, backend.host)
            assert (route.labels.bind, route.labels.gateway) == (
                f"bind/{bind.port}", "default/default",
            )  # fmt: skip
    assert found == {
        ("default", "default/route0"): (
            "gateway/default/default/route0",
            "/gateway/default/default/route0/backend0",
            "explicit-default",
        ),
        ("default", "default/route1"): (
            "gateway/default/default/route1",
            "/gateway/default/default/route1/backend0",
            "implicit-default",
        ),
        ("alt", "default/route0"): (
            "gateway/alt/default/route0",
            "/gateway/alt/default/route0/backend0",
            "alt",
        ),
        ("alt", "default/route1"): (
            "gateway/alt/default/route1",
            "/gateway/alt/default/route1/backend0",
            "multiple-gateways",
        ),
        ("with-listeners/a", "default/route0"): (
            "gateway/with-listeners/a/default/route0",
            "/gateway/with-listeners/a/default/route0/backend0",
            "multiple-gateways",
        ),
    }
    (third,) = [bind for bind in binds if bind.port == 12347]
    assert set(third.listeners) == {"a.example.com", "b.example.com"}


def test_modern_example_loads_up_to_its_mcp_and_ui() -> None:
    text = (EXAMPLES / "modern.yaml").read_text()
    assert str(error_of(text)) == "mcp: not supported: mcp"
    llm_only = drop(text, "mcp", "ui")
    modern = load(llm_only)
    (bind,) = modern.binds
    (listener,) = bind.listeners
    assert (bind.port, listener.name, listener.hostname) == (3000, "public", "*")
    (route,) = listener.routes
    assert route.key == "gateway/public/llm:request"
    # The same route as the `llm:` form serving on the gateway's port on its own.
    own_port = load(llm_only.replace("gateways:\n  public:\n    port: 3000\n", "")
                    .replace("  gateways:\n  - public\n", "  port: 3000\n"))  # fmt: skip
    (own_bind,) = own_port.binds
    assert own_bind.port == 3000 and own_bind.listeners[0].name == "llm"
    assert own_bind.listeners[0].routes == (replace(route, key=None),)
    (runtime,) = compile_config(modern)
    ((names, compiled),) = runtime_routes(runtime).items()
    assert names == ("public", "internal/llm:request")
    assert compiled.key == "gateway/public/llm:request"


def test_unified_gateway_example_attaches_llm_to_the_default_gateway() -> None:
    text = (EXAMPLES / "traffic-unified-gateway.yaml").read_text()
    assert str(error_of(text)) == "mcp: not supported: mcp"
    config = load(drop(text, "mcp", "ui"))
    (bind,) = config.binds
    (listener,) = bind.listeners
    assert (bind.port, listener.name) == (3000, "default")
    (route,) = listener.routes
    assert route.key == "gateway/default/llm:request"
    assert route.policies is not None and route.policies.api_key is not None
    compile_config(config)


def test_egress_proxy_examples_are_refused_at_their_tcp_routes_and_tunnel() -> None:
    for name in ("traffic-egress-proxy.yaml", "traffic-egress-proxy-conditional.yaml"):
        text = (EXAMPLES / name).read_text()
        assert str(error_of(text)) == "tcpRoutes: not supported: tcpRoutes"
        assert str(error_of(drop(text, "tcpRoutes", "gateways"))) == (
            "binds[0].tunnelProtocol: not supported: binds[0].tunnelProtocol (connect)"
        )
    # The SNI passthrough listener serves tcpRoutes: refused by name too.
    text = (EXAMPLES / "traffic-egress-proxy.yaml").read_text()
    listener = "gateways.secure.listeners[0].protocol"
    assert str(error_of(drop(text, "tcpRoutes"))) == (
        f"{listener}: not supported: {listener} (TLS, for tcpRoutes)"
    )


def test_egress_proxy_conditional_example_http_parts(tmp_path: Path) -> None:
    text = (EXAMPLES / "traffic-egress-proxy-conditional.yaml").read_text()
    certs = tmp_path / "examples" / "mcp-tls" / "certs"
    certs.mkdir(parents=True)
    issued = trustme.CA().issue_cert("llm.example.com", "static.example.com")
    issued.cert_chain_pems[0].write_to_path(str(certs / "cert.pem"))
    issued.private_key_pem.write_to_path(str(certs / "key.pem"))
    error = error_of(drop(text, "binds", "tcpRoutes"), tmp_path)
    assert str(error).startswith(
        "gateways.secure.listeners[2].protocol: not supported: "
        "gateways.secure.listeners[2].protocol"
    )
    # Without the SNI passthrough listener (its last, up to the next top-level comment).
    listener = text.index("    # Inspect all other SNI")
    http_only = text[:listener] + text[text.index("\n# Allow only", listener) :]
    config = load(drop(http_only, "binds", "tcpRoutes"), tmp_path)
    (bind,) = config.binds
    assert bind.port == 443
    assert [(li.name, li.hostname, li.protocol) for li in bind.listeners] == [
        ("secure/llm", "llm.example.com", "HTTPS"),
        ("secure/direct-response", "static.example.com", "HTTPS"),
    ]
    llm, direct = bind.listeners
    assert [r.key for r in llm.routes] == ["gateway/secure/llm/llm:request"]
    assert [r.key for r in direct.routes] == [
        "gateway/secure/direct-response/default/static-response"
    ]
    (runtime,) = compile_config(config)
    assert runtime.ssl_context is not None


GATEWAYS = {
    "gateways": {
        "api": {"port": 8001},
        "web": {
            "port": 8002,
            "listeners": [
                {"name": "a", "hostname": "A.test"},
                {"hostname": "b.test", "cors": {"allowOrigins": ["*"]}},
            ],
        },
    },
}


def test_routes_attach_by_gateway_and_listener_and_use_named_backends() -> None:
    config = load(
        {
            **GATEWAYS,
            "backends": [
                {
                    "name": "shared",
                    "host": "10.0.0.1:8080",
                    "policies": {"requestHeaderModifier": {"set": {"x-from": "backend"}}},
                },
            ],
            "routes": [
                {
                    "name": "chat",
                    "gateways": ["api", "web/a"],
                    "matches": [{"path": {"pathPrefix": "/chat"}}],
                    "backends": [
                        {
                            "backend": "shared",
                            "weight": 3,
                            "policies": {"backendTLS": {"insecure": True}},
                        }
                    ],
                },
                {"gateways": "web", "backends": [{"host": "web:80"}]},
            ],
        }
    )
    api, web = config.binds
    assert (api.port, web.port) == (8001, 8002)
    assert [li.name for li in api.listeners] == ["api"]
    assert [(li.name, li.hostname) for li in web.listeners] == [
        ("web/a", "a.test"), ("web/listener1", "b.test"),
    ]  # fmt: skip
    assert web.listeners[0].policies is None
    policies = web.listeners[1].policies
    assert policies is not None and policies.cors is not None
    assert [(r.name, r.key) for r in api.listeners[0].routes] == [
        ("chat", "gateway/api/default/chat")
    ]
    assert [(r.name, r.key) for r in web.listeners[0].routes] == [
        ("chat", "gateway/web/a/default/chat"), ("route1", "gateway/web/a/default/route1"),
    ]  # fmt: skip
    assert [(r.name, r.key) for r in web.listeners[1].routes] == [
        ("route0", "gateway/web/listener1/default/route0")
    ]
    (shared,) = api.listeners[0].routes[0].backends
    assert shared.target == HostBackend("10.0.0.1", 8080)
    assert (shared.name, shared.weight) == ("/shared", 3)
    assert shared.policies is not None and shared.policies.backend_tls is not None
    modifier = shared.policies.request_header_modifier
    assert modifier is not None and modifier.set == (("x-from", "backend"),)
    runtime_api, _ = compile_config(config)
    ((_, chat),) = runtime_routes(runtime_api).items()
    assert [b.name for b in chat.backends] == ["/shared"]


def test_binds_form_routes_may_use_named_backends_too() -> None:
    config = load(
        {
            "backends": [{"name": "up", "host": "up:81"}],
            "binds": [
                {"port": 3000, "listeners": [{"routes": [{"backends": [{"backend": "up"}]}]}]}
            ],
        }
    )
    (backend,) = config.binds[0].listeners[0].routes[0].backends
    assert backend == replace(backend, target=HostBackend("up", 81), name="/up")


def test_gateway_binds_come_first_then_binds_then_llm() -> None:
    config = load(
        {
            "gateways": {"g": {"port": 8001}},
            "binds": [{"port": 8002, "listeners": [{"routes": []}]}],
            "llm": {"port": 8003, "models": []},
        }
    )
    assert [bind.port for bind in config.binds] == [8001, 8002, 8003]


def test_llm_keeps_its_own_port_when_it_sets_one() -> None:
    config = load({"gateways": {"default": {"port": 8001}}, "llm": {"port": 8003, "models": []}})
    assert [(b.port, b.listeners[0].name) for b in config.binds] == [
        (8001, "default"),
        (8003, "llm"),
    ]
    assert config.binds[0].listeners[0].routes == ()


def test_llm_attaches_to_a_listener_after_the_routes() -> None:
    config = load(
        {
            **GATEWAYS,
            "routes": [{"gateways": "web/a", "backends": [{"host": "web:80"}]}],
            "llm": {"gateways": ["web/a"], "models": []},
        }
    )
    a = config.binds[1].listeners[0]
    assert [r.key for r in a.routes] == [
        "gateway/web/a/default/route0",
        "gateway/web/a/llm:request",
    ]


def test_an_https_gateway(tmp_path: Path) -> None:
    issued = trustme.CA().issue_cert("secure.test")
    issued.cert_chain_pems[0].write_to_path(str(tmp_path / "c.pem"))
    issued.private_key_pem.write_to_path(str(tmp_path / "k.pem"))
    tls = {"cert": "c.pem", "key": "k.pem"}
    config = load({"gateways": {"default": {"port": 8443, "tls": tls}}}, tmp_path)
    (listener,) = config.binds[0].listeners
    assert listener.protocol == "HTTPS" and listener.tls is not None
    explicit = load({"gateways": {"default": {"port": 8443, "protocol": "HTTPS", "tls": tls}}},
                    tmp_path)  # fmt: skip
    assert explicit == config
    assert compile_config(config)[0].ssl_context is not None


def test_the_result_is_an_ordinary_config() -> None:
    config = load({"gateways": {"default": {"port": 1}}, "routes": [{"name": "r"}]})
    assert config.binds == (
        Bind(1, (Listener("default", "*", routes=(Route("r", key="gateway/default/default/r"),)),)),
    )


@pytest.mark.parametrize(
    ("doc", "path", "message"),
    [
        ({"gateways": {"g": {}}}, "gateways.g.port", "a gateway requires a port"),
        ({"gateways": {"g": {"port": "x"}}}, "gateways.g.port", "expected an integer"),
        ({"gateways": []}, "gateways", "expected a map"),
        (
            {"gateways": {"g": {"port": 1, "protocol": "HTTPS"}}},
            "gateways.g.tls",
            "protocol HTTPS requires tls",
        ),
        (
            {"gateways": {"g": {"port": 1, "protocol": "HTTP", "tls": {}}}},
            "gateways.g.tls",
            "protocol HTTP cannot set tls",
        ),
        (
            {"gateways": {"g": {"port": 1, "protocol": "h2"}}},
            "gateways.g.protocol",
            "expected one of",
        ),
        (
            {"gateways": {"g": {"port": 1, "listeners": [{}], "cors": {}}}},
            "gateways.g.cors",
            "cannot set protocol, tls, or policy fields",
        ),
        (
            {"gateways": {"g": {"port": 1, "listeners": [{"name": "a"}, {"name": "a"}]}}},
            "gateways.g.listeners[1].name",
            "duplicate listener g/a",
        ),
        (
            {"gateways": {"g": {"port": 1, "listeners": [{"bogus": 1}]}}},
            "gateways.g.listeners[0].bogus",
            "unknown field",
        ),
        (
            {"gateways": {"g": {"port": 1}}, "routes": [{}]},
            "routes[0].gateways",
            "a route must set gateways when no gateway is named `default`",
        ),
        (
            {"gateways": {"g": {"port": 1}}, "routes": [{"gateways": "h"}]},
            "routes[0].gateways",
            "unknown gateway reference h",
        ),
        (
            {"gateways": {"g": {"port": 1}}, "routes": [{"gateways": ["g", "g/x"]}]},
            "routes[0].gateways[1]",
            "unknown gateway reference g/x",
        ),
        (
            {"gateways": {"g": {"port": 1}}, "routes": [{"gateways": [1]}]},
            "routes[0].gateways[0]",
            "expected a string",
        ),
        ({"routes": [{"bogus": 1}]}, "routes[0].bogus", "unknown field"),
        (
            {"gateways": {"a": {"port": 5}, "b": {"port": 5}}},
            "gateways.b.port",
            "port 5 is already used by gateways.a",
        ),
        (
            {"gateways": {"a": {"port": 5}}, "binds": [{"port": 5, "listeners": []}]},
            "binds[0].port",
            "port 5 is already used by gateways.a",
        ),
        (
            {"gateways": {"a": {"port": 5}}, "llm": {"port": 5, "models": []}},
            "llm.port",
            "port 5 is already used by gateways.a",
        ),
        (
            {"gateways": {"g": {"port": 1}}, "llm": {"gateways": "g", "port": 2, "models": []}},
            "llm.gateways",
            "llm.gateways cannot be used with llm.port or llm.tls",
        ),
        ({"llm": {"gateways": "g", "models": []}}, "llm.gateways", "unknown gateway reference g"),
        (
            {"backends": [{"name": "b", "host": "h:1"}, {"name": "b", "host": "h:2"}]},
            "backends[1].name",
            "duplicate backend name b",
        ),
        ({"backends": [{"name": "b"}]}, "backends[0]", "one of host, ai is required"),
        ({"backends": [{"host": "h:1"}]}, "backends[0].name", "missing required field"),
        (
            {"gateways": {"default": {"port": 1}}, "routes": [{"backends": [{"backend": "x"}]}]},
            "routes[0].backends[0].backend",
            "no top-level backend is named 'x'",
        ),
        (
            {
                "gateways": {"default": {"port": 1}},
                "routes": [{"backends": [{"backend": "x", "host": "h:1"}]}],
            },
            "routes[0].backends[0]",
            "both host and backend are set",
        ),
    ],  # fmt: skip
)
def test_bad_gateway_configs_name_the_field(doc: object, path: str, message: str) -> None:
    error = error_of(doc)
    assert error.path == path, str(error)
    assert message in error.message, str(error)


def test_mixing_tls_and_plaintext_listeners_is_refused(tmp_path: Path) -> None:
    issued = trustme.CA().issue_cert("secure.test")
    issued.cert_chain_pems[0].write_to_path(str(tmp_path / "c.pem"))
    issued.private_key_pem.write_to_path(str(tmp_path / "k.pem"))
    listeners = [{"name": "plain"}, {"name": "tls", "tls": {"cert": "c.pem", "key": "k.pem"}}]
    error = error_of({"gateways": {"g": {"port": 1, "listeners": listeners}}}, tmp_path)
    assert error.path == "gateways.g.listeners[1].protocol"
    assert "cannot mix TLS and plaintext" in error.message


# -- Top-level `policies:` -------------------------------------------------------------------

PROXY = {"gatewayName": "default", "gatewayNamespace": "default"}
NAME = {"name": "p", "namespace": "ns"}
CORS = {"allowOrigins": ["https://x.test"]}
APP = {
    "gateways": {"default": {"port": 1}, "web": {"port": 2, "cors": {"allowOrigins": ["*"]}}},
    "backends": [
        {"name": "up", "host": "up:80",
         "policies": {"requestHeaderModifier": {"set": {"x-own": "1"}}}},
    ],
    "routes": [
        {"name": "r", "gateways": ["default", "web"], "backends": [{"backend": "up"}]},
        {"name": "s", "gateways": "default",
         "policies": {"requestHeaderModifier": {"set": {"x-inline": "1"}}}},
    ],
}  # fmt: skip


def policy(target: object, body: object, phase: str | None = None) -> dict[str, object]:
    entry = {"name": NAME, "target": target, "policy": body}
    return entry if phase is None else {**entry, "phase": phase}


def with_policies(*entries: object) -> Config:
    return load({**APP, "policies": list(entries)})


def test_a_route_policy_is_the_same_as_writing_it_inline() -> None:
    timeout = {"timeout": {"requestTimeout": "1s"}}
    targeted = with_policies(policy({"route": {"name": "r", "namespace": "default"}}, timeout))
    inline_app = json.loads(json.dumps(APP))
    inline_app["routes"][0]["policies"] = timeout
    assert targeted == load(inline_app)


def test_gateway_policies_fill_what_listeners_leave_unset() -> None:
    config = with_policies(policy({"gateway": PROXY}, {"cors": CORS}, "gateway"))
    default, web = (bind.listeners[0] for bind in config.binds)
    assert default.policies is not None and default.policies.cors is not None
    assert default.policies.cors.allow_origins == ("https://x.test",)
    assert web.policies is not None and web.policies.cors is not None
    assert web.policies.cors.allow_origins == ("*",)  # its own wins over the gateway-wide one


def test_authorization_rules_add_up() -> None:
    rules = {"authorization": {"rules": ["true"]}}
    config = with_policies(
        policy({"gateway": PROXY}, rules, "gateway"),
        policy({"gateway": {**PROXY, "listenerName": "default"}}, rules, "gateway"),
    )
    listener = config.binds[0].listeners[0]
    assert listener.policies is not None and listener.policies.authorization is not None
    assert len(listener.policies.authorization.rules) == 2
    assert config.binds[1].listeners[0].policies is not None
    web_authz = config.binds[1].listeners[0].policies.authorization
    assert web_authz is not None and len(web_authz.rules) == 1


def test_route_phase_gateway_policies_reach_every_route_below_their_own() -> None:
    header = {"requestHeaderModifier": {"set": {"x-gateway": "1"}}}
    config = with_policies(policy({"gateway": {**PROXY, "listenerName": "default"}}, header))
    r, s = config.binds[0].listeners[0].routes
    assert r.policies is not None and r.policies.request_header_modifier is not None
    assert r.policies.request_header_modifier.set == (("x-gateway", "1"),)
    assert s.policies is not None and s.policies.request_header_modifier is not None
    assert s.policies.request_header_modifier.set == (("x-inline", "1"),)
    (web_route,) = config.binds[1].listeners[0].routes
    assert web_route.policies is None


def test_backend_policies_sit_below_the_backends_own() -> None:
    config = with_policies(
        policy({"backend": {"backend": {"name": "up", "namespace": ""}}},
               {"backendTLS": {"insecure": True}}),
        policy({"backend": {"backend": {"name": "up", "namespace": ""}}},
               {"requestHeaderModifier": {"set": {"x-targeted": "1"}}}),
    )  # fmt: skip
    (backend,) = config.binds[0].listeners[0].routes[0].backends
    assert backend.policies is not None and backend.policies.backend_tls is not None
    modifier = backend.policies.request_header_modifier
    assert modifier is not None and modifier.set == (("x-own", "1"),)


@pytest.mark.parametrize(
    ("entry", "path", "message"),
    [
        (
            policy(
                {"route": {"name": "s", "namespace": "default"}},
                {"requestHeaderModifier": {"set": {"x": "1"}}},
            ),
            "policies[0].policy.requestHeaderModifier",
            "not supported",
        ),
        (
            policy({"gateway": {**PROXY, "listenerName": "web"}}, {"cors": CORS}, "gateway"),
            "policies[0].policy.cors",
            "not supported",
        ),
        (
            policy({"route": {"name": "r", "namespace": "default"}}, {}),
            "policies[0].policy",
            "exactly 1 policy",
        ),
        (
            policy(
                {"route": {"name": "r", "namespace": "default"}},
                {"cors": CORS, "timeout": {"requestTimeout": "1s"}},
            ),
            "policies[0].policy",
            "exactly 1 policy",
        ),
        (
            policy(
                {"gateway": {"gatewayName": "x", "gatewayNamespace": "default"}}, {"cors": CORS}
            ),
            "policies[0].target.gateway",
            "default/default",
        ),
        (
            policy({"route": {"name": "nope", "namespace": "default"}}, {"cors": CORS}),
            "policies[0].target",
            "matches nothing",
        ),
        (
            policy({"route": {"name": "r", "namespace": "default"}}, {"cors": CORS}, "gateway"),
            "policies[0].phase",
            "phase gateway needs a gateway target",
        ),
        (
            policy({"gateway": PROXY}, {"timeout": {"requestTimeout": "1s"}}, "gateway"),
            "policies[0].phase",
            "phase gateway needs",
        ),
        (
            policy({"backend": {"backend": {"name": "up", "namespace": ""}}}, {"cors": CORS}),
            "policies[0].policy.cors",
            "backend policies only",
        ),
        (
            policy({"backend": {"backend": {"name": "nope", "namespace": ""}}}, {"backendTLS": {}}),
            "policies[0].target",
            "no top-level backend is named 'nope'",
        ),
        (
            policy({"route": {"name": "r", "namespace": "default"}}, {"localRateLimit": []}),
            "policies[0].policy.localRateLimit",
            "the policy sets nothing",
        ),
        (
            policy({"listenerSet": {"name": "x", "namespace": "y"}}, {"cors": CORS}),
            "policies[0].target.listenerSet",
            "not supported",
        ),
        (
            policy({"gateway": {**PROXY, "port": 1}}, {"cors": CORS}),
            "policies[0].target.gateway.port",
            "not supported",
        ),
        (
            policy({"backend": {"service": {"hostname": "h", "namespace": "n"}}}, {"cors": CORS}),
            "policies[0].target.backend.service",
            "not supported",
        ),
        (
            {"target": {"gateway": PROXY}, "policy": {"cors": CORS}},
            "policies[0].name",
            "missing required field",
        ),
    ],  # fmt: skip
)
def test_bad_policies_name_the_field(entry: object, path: str, message: str) -> None:
    error = error_of({**APP, "policies": [entry]})
    assert error.path == path, str(error)
    assert message in error.message, str(error)
