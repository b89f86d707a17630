"""Configs that load, and the dataclasses they load into."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import pytest

from agw_fast.config import (
    AIBackend,
    AIPolicy,
    AuthorityRewrite,
    BackendAuth,
    BackendPolicies,
    BackendPoolConfig,
    BackendTLS,
    Bind,
    Config,
    DirectResponse,
    FrontendPolicies,
    HeaderModifier,
    HostBackend,
    KeepaliveConfig,
    Listener,
    LoggingConfig,
    PathMatch,
    PathRewrite,
    RequestRedirect,
    Route,
    RouteBackend,
    RouteMatch,
    RoutePolicies,
    StaticConfig,
    TimeoutPolicy,
    UrlRewrite,
    ValueMatch,
    load_config,
    load_config_file,
)
from agw_fast.errors import ConfigError

# The seed documentation page's config, byte for byte.
SEED = """\
binds:
- port: 3000
  listeners:
  - routes:
    - policies:
        urlRewrite:
          authority:
            full: api.cohere.ai
          path:
            full: "/compatibility/v1/chat/completions"
        backendTLS: {}
        backendAuth:
          key: $COHERE_API_KEY
      backends:
      - ai:
          name: cohere
          hostOverride: api.cohere.ai:443
          provider:
            openAI:
              model: command
"""

SEED_CONFIG = Config(
    binds=(
        Bind(
            port=3000,
            listeners=(
                Listener(
                    name="listener0",
                    routes=(
                        Route(
                            name="route0",
                            matches=(RouteMatch(path=PathMatch("prefix", "/")),),
                            policies=RoutePolicies(
                                url_rewrite=UrlRewrite(
                                    authority=AuthorityRewrite("full", "api.cohere.ai"),
                                    path=PathRewrite("full", "/compatibility/v1/chat/completions"),
                                ),
                                backend_tls=BackendTLS(),
                                backend_auth=BackendAuth(key="test-cohere-key"),
                            ),
                            backends=(
                                RouteBackend(
                                    target=AIBackend(
                                        name="cohere",
                                        provider="openAI",
                                        model="command",
                                        host_override=HostBackend("api.cohere.ai", 443),
                                    ),
                                ),
                            ),
                        ),
                    ),
                ),
            ),
        ),
    ),
)


def load(text: str, env: dict[str, str] | None = None, base_dir: Path = Path("/")) -> Config:
    return load_config(text, env or {}, base_dir=base_dir)


def one_route(config: Config) -> Route:
    return config.binds[0].listeners[0].routes[0]


def doc(route: Mapping[str, object], **top: object) -> str:
    return json.dumps({"binds": [{"port": 3000, "listeners": [{"routes": [route]}]}], **top})


def test_seed_loads_unchanged() -> None:
    config = load(SEED, {"COHERE_API_KEY": "test-cohere-key"})
    assert config == SEED_CONFIG
    assert config.static == StaticConfig()
    assert config.frontend == FrontendPolicies()


def test_seed_without_key_names_the_variable() -> None:
    with pytest.raises(ConfigError) as info:
        load(SEED, {})
    assert "COHERE_API_KEY" in str(info.value)


def test_seed_as_json_file(tmp_path: Path) -> None:
    as_yaml = load(SEED, {"COHERE_API_KEY": "test-cohere-key"})
    path = tmp_path / "seed.json"
    raw = {
        "binds": [
            {
                "port": 3000,
                "listeners": [
                    {
                        "routes": [
                            {
                                "policies": {
                                    "urlRewrite": {
                                        "authority": {"full": "api.cohere.ai"},
                                        "path": {"full": "/compatibility/v1/chat/completions"},
                                    },
                                    "backendTLS": {},
                                    "backendAuth": {"key": "$COHERE_API_KEY"},
                                },
                                "backends": [
                                    {
                                        "ai": {
                                            "name": "cohere",
                                            "hostOverride": "api.cohere.ai:443",
                                            "provider": {"openAI": {"model": "command"}},
                                        }
                                    }
                                ],
                            }
                        ]
                    }
                ],
            }
        ]
    }
    path.write_text(json.dumps(raw, indent="\t"))
    assert load_config_file(path, {"COHERE_API_KEY": "test-cohere-key"}) == as_yaml


@pytest.mark.parametrize("text", ["", "{}", "# nothing\n", "binds: []", "config: null"])
def test_empty_configs(text: str) -> None:
    assert load(text) == Config()


def test_yaml12_scalars_reach_the_model_as_strings() -> None:
    config = load(
        """
binds:
- port: 8080
  listeners:
  - hostname: "no"
    routes:
    - hostnames: [yes, on.example.com]
      matches:
      - headers:
        - name: x-mode
          value: {exact: off}
      policies:
        requestHeaderModifier:
          set: {x-flag: off, x-zero: "0755"}
          add: {x-on: on}
      backends:
      - host: n:80
"""
    )
    listener = config.binds[0].listeners[0]
    route = listener.routes[0]
    assert listener.hostname == "no"
    assert route.hostnames == ("yes", "on.example.com")
    assert route.matches[0].headers == (ValueMatch("x-mode", "exact", "off"),)
    assert route.policies is not None
    assert route.policies.request_header_modifier == HeaderModifier(
        add=(("x-on", "on"),), set=(("x-flag", "off"), ("x-zero", "0755"))
    )
    assert route.backends[0].target == HostBackend("n", 80)


def test_full_feature_set(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text("ca")
    (tmp_path / "client.pem").write_text("cert")
    (tmp_path / "client.key").write_text("key")
    (tmp_path / "api-key").write_text("  file-secret\n")
    text = """
# yaml-language-server: $schema=https://example.com/config.json
config:
  adminAddr: 127.0.0.1:9901
  statsAddr: off
  readinessAddr: "[::1]:9902"
  connectionTerminationDeadline: 1m30s
  backend:
    connectTimeout: 2s
    poolIdleTimeout: 30s
    poolMaxSize: 8
    keepalives: {enabled: true, time: 1m, interval: 10s, retries: 3}
  logging:
    level: debug,agent_core=trace
    format: json
frontendPolicies:
  http:
    maxBufferSize: 1048576
    http1IdleTimeout: 5m
binds:
- port: 3000
  mode: standard
  tunnelProtocol: direct
  listeners:
  - name: main
    namespace: team-a
    hostname: "*.Example.com"
    protocol: HTTP
    routes:
    - name: chat
      namespace: team-a
      ruleName: rule-1
      hostnames: [api.example.com]
      matches:
      - path: {exact: /v1/chat/completions}
        method: POST
        headers:
        - name: X-Tenant
          value: {regex: "t-[0-9]+"}
        query:
        - name: Debug
          value: {exact: "1"}
      - path: {regex: "/v[0-9]+/.*"}
      policies:
        requestHeaderModifier:
          add: {X-Added: "a"}
          set: {x-set: b}
          remove: [x-remove]
        responseHeaderModifier:
          remove: [server]
        urlRewrite:
          authority: {port: 8443}
          path: {prefix: /api}
        timeout:
          requestTimeout: 30s
          backendRequestTimeout: 10s
        backendTLS:
          root: ca.pem
          cert: client.pem
          key: client.key
          hostname: upstream.internal
          insecureHost: true
          alpn: [h2, http/1.1]
        backendAuth:
          key:
            value: {file: api-key}
            location:
              header: {name: X-API-Key}
        ai:
          routes:
            /v1/chat/completions: completions
            /v1/embeddings: embeddings
            "*": passthrough
      backends:
      - host: "[::1]:8080"
        weight: 3
        policies:
          http: {requestTimeout: 5s, version: HTTP/1.1}
          backendAuth: {key: {file: api-key}}
      - weight: 0
        ai:
          name: openai
          provider: {openAI: {}}
          pathPrefix: /openai/v1
          pathOverride: /fixed?x=1
          tokenize: false
          policies:
            backendTLS: {insecure: true}
            ai: {routes: {"/v1/responses": responses}}
    - name: moved
      matches: [{path: {pathPrefix: /old}}]
      policies:
        requestRedirect:
          scheme: https
          authority: {host: new.example.com}
          path: {full: /new}
          status: 301
    - policies:
        directResponse: {status: 200, body: [104, 105]}
    - policies:
        directResponse: {status: 404, body: gone}
        urlRewrite: {authority: none}
"""
    config = load(text, base_dir=tmp_path)
    assert config.static == StaticConfig(
        admin_addr="127.0.0.1:9901",
        stats_addr=None,
        readiness_addr="[::1]:9902",
        backend=BackendPoolConfig(
            keepalive=KeepaliveConfig(enabled=True, time=60, interval=10, retries=3),
            connect_timeout=2.0,
            pool_idle_timeout=30.0,
            pool_max_size=8,
        ),
        connection_termination_deadline=90.0,
        logging=LoggingConfig(level="debug", format="json"),
    )
    assert config.frontend == FrontendPolicies(max_buffer_size=1048576, http1_idle_timeout=300.0)
    listener = config.binds[0].listeners[0]
    assert (listener.name, listener.hostname, listener.protocol) == (
        "main",
        "*.example.com",
        "HTTP",
    )
    chat, moved, direct_bytes, direct_text = listener.routes
    assert chat.name == "chat" and chat.rule_name == "rule-1" and chat.namespace == "team-a"
    assert chat.hostnames == ("api.example.com",)
    assert chat.matches == (
        RouteMatch(
            path=PathMatch("exact", "/v1/chat/completions"),
            method="POST",
            headers=(ValueMatch("x-tenant", "regex", "t-[0-9]+"),),
            query=(ValueMatch("Debug", "exact", "1"),),
        ),
        RouteMatch(path=PathMatch("regex", "/v[0-9]+/.*")),
    )
    assert chat.policies == RoutePolicies(
        request_header_modifier=HeaderModifier(
            add=(("X-Added", "a"),), set=(("x-set", "b"),), remove=("x-remove",)
        ),
        response_header_modifier=HeaderModifier(remove=("server",)),
        url_rewrite=UrlRewrite(
            authority=AuthorityRewrite("port", "8443"), path=PathRewrite("prefix", "/api")
        ),
        timeout=TimeoutPolicy(request_timeout=30.0, backend_request_timeout=10.0),
        backend_tls=BackendTLS(
            root=str(tmp_path / "ca.pem"),
            cert=str(tmp_path / "client.pem"),
            key=str(tmp_path / "client.key"),
            hostname="upstream.internal",
            insecure_host=True,
            alpn=("http/1.1",),
        ),
        backend_auth=BackendAuth(key="file-secret", header_name="x-api-key", prefix=""),
        ai=AIPolicy(
            routes=(
                ("/v1/chat/completions", "completions"),
                ("/v1/embeddings", "embeddings"),
                ("*", "passthrough"),
            )
        ),
    )
    host_backend, ai_backend = chat.backends
    assert host_backend == RouteBackend(
        target=HostBackend("::1", 8080),
        weight=3,
        policies=BackendPolicies(
            backend_request_timeout=5.0, backend_auth=BackendAuth(key="file-secret")
        ),
    )
    assert ai_backend == RouteBackend(
        target=AIBackend(
            name="openai",
            model=None,
            path_prefix="/openai/v1",
            path_override="/fixed?x=1",
            policies=BackendPolicies(
                backend_tls=BackendTLS(insecure=True),
                ai=AIPolicy(routes=(("/v1/responses", "responses"),)),
            ),
        ),
        weight=0,
    )
    assert moved.policies == RoutePolicies(
        request_redirect=RequestRedirect(
            scheme="https",
            authority=AuthorityRewrite("host", "new.example.com"),
            path=PathRewrite("full", "/new"),
            status=301,
        )
    )
    assert direct_bytes.name == "route2"
    assert direct_bytes.policies == RoutePolicies(direct_response=DirectResponse(200, b"hi"))
    assert direct_text.policies == RoutePolicies(
        direct_response=DirectResponse(404, b"gone"),
        url_rewrite=UrlRewrite(authority=AuthorityRewrite("none")),
    )


def test_defaults() -> None:
    config = load(doc({"backends": [{"host": "localhost:8080"}]}))
    route = one_route(config)
    assert route == Route(
        name="route0",
        backends=(RouteBackend(target=HostBackend("localhost", 8080)),),
    )
    assert config.binds[0].listeners[0] == Listener(name="listener0", hostname="", routes=(route,))


def test_explicit_nulls_mean_unset() -> None:
    route = {
        "name": None,
        "policies": {"cors": None, "localRateLimit": None, "timeout": None},
        "matches": [{"path": None, "headers": None}],
        "backends": [{"host": "h:1", "weight": None, "policies": None}],
    }
    config = load(doc(route, config={"logging": None, "tracing": None}))
    assert one_route(config) == Route(
        name="route0", backends=(RouteBackend(target=HostBackend("h", 1)),)
    )


def test_empty_policy_blocks_load_as_none() -> None:
    route = {"policies": {"timeout": {}}, "backends": [{"host": "h:1", "policies": {}}]}
    config = load(doc(route))
    assert one_route(config).policies is None
    assert one_route(config).backends[0].policies is None


def test_empty_matches_list_is_kept() -> None:
    assert one_route(load(doc({"matches": []}))).matches == ()


def test_routes_may_be_empty() -> None:
    text = json.dumps({"binds": [{"port": 1, "listeners": [{"routes": []}]}]})
    assert load(text).binds[0].listeners[0].routes == ()


@pytest.mark.parametrize(
    ("level", "expected"),
    [
        ("INFO", "info"),
        ("warn", "warn"),
        ("agent_core=trace,error", "error"),
        (["debug", "agent_core=trace"], "debug"),
        ("agent_core=trace", "info"),
        ("", "info"),
    ],
)
def test_logging_level(level: object, expected: str) -> None:
    config = load(json.dumps({"config": {"logging": {"level": level}}}))
    assert config.static.logging.level == expected


def test_legacy_inline_key_is_trimmed() -> None:
    config = load(doc({"policies": {"backendAuth": {"key": "  sk-1 "}}}))
    policies = one_route(config).policies
    assert policies is not None and policies.backend_auth == BackendAuth(key="sk-1")


def test_key_with_header_prefix() -> None:
    auth = {"key": {"value": "k", "location": {"header": {"name": "Api-Key", "prefix": "Key "}}}}
    policies = one_route(load(doc({"policies": {"backendAuth": auth}}))).policies
    assert policies is not None
    assert policies.backend_auth == BackendAuth(key="k", header_name="api-key", prefix="Key ")


def test_secret_does_not_appear_in_repr() -> None:
    config = load(SEED, {"COHERE_API_KEY": "sk-very-secret"})
    assert "sk-very-secret" not in repr(config)


def test_relative_paths_resolve_against_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "key").write_text("from-cwd\n")
    config_dir = tmp_path / "conf"
    config_dir.mkdir()
    path = config_dir / "config.yaml"
    path.write_text(
        "binds:\n- port: 1\n  listeners:\n  - routes:\n    - policies:\n"
        "        backendAuth: {key: {file: secrets/key}}\n"
    )
    monkeypatch.chdir(tmp_path)
    policies = one_route(load_config_file(path, {})).policies
    assert policies is not None and policies.backend_auth == BackendAuth(key="from-cwd")
    with pytest.raises(ConfigError, match="file not found"):
        load_config_file(path, {}, base_dir=config_dir)


def test_config_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config_file(tmp_path / "missing.yaml", {})
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(b"binds: \xff\n")
    with pytest.raises(ConfigError, match="not valid UTF-8"):
        load_config_file(bad, {})


def test_utf8_bom_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "bom.json"
    path.write_bytes(b"\xef\xbb\xbf{}")
    assert load_config_file(path, {}) == Config()


def test_env_overrides_static_addresses() -> None:
    env = {
        "ADMIN_ADDR": "0.0.0.0:1000",
        "STATS_ADDR": "off",
        "CONNECTION_TERMINATION_DEADLINE": "2s",
    }
    config = load(json.dumps({"config": {"adminAddr": "127.0.0.1:9"}}), env)
    assert config.static.admin_addr == "0.0.0.0:1000"
    assert config.static.stats_addr is None
    assert config.static.readiness_addr == StaticConfig().readiness_addr
    assert config.static.connection_termination_deadline == 2.0


@pytest.mark.parametrize(
    ("grace", "configured", "expected"),
    [("30", None, 25.0), ("8", None, 7.0), ("1", None, 1.0), ("30", "3s", 3.0)],
)
def test_termination_grace_period(grace: str, configured: str | None, expected: float) -> None:
    raw = {} if configured is None else {"connectionTerminationDeadline": configured}
    config = load(json.dumps({"config": raw}), {"TERMINATION_GRACE_PERIOD_SECONDS": grace})
    assert config.static.connection_termination_deadline == expected


def test_min_termination_deadline_from_config_or_env() -> None:
    assert load("{}").static.connection_min_termination_deadline == 0.0
    raw = json.dumps({"config": {"connectionMinTerminationDeadline": "1.5s"}})
    assert load(raw).static.connection_min_termination_deadline == 1.5
    env = {"CONNECTION_MIN_TERMINATION_DEADLINE": "250ms"}
    assert load(raw, env).static.connection_min_termination_deadline == 0.25
    with pytest.raises(ConfigError) as error:
        load(raw, {"CONNECTION_MIN_TERMINATION_DEADLINE": "soon"})
    assert error.value.path == "$CONNECTION_MIN_TERMINATION_DEADLINE"
    with pytest.raises(ConfigError) as error:
        load(json.dumps({"config": {"connectionMinTerminationDeadline": "-1s"}}))
    assert error.value.path == "config.connectionMinTerminationDeadline"


def test_port_zero_binds_are_not_duplicates() -> None:
    bind = {"port": 0, "listeners": []}
    config = load(json.dumps({"binds": [bind, bind]}))
    assert [b.port for b in config.binds] == [0, 0]
