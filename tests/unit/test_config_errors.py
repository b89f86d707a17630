"""Configs that must fail, and the exact path each error names."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agw_fast.config import load_config
from agw_fast.config.schema_keys import SPECS
from agw_fast.config.validate import Obj
from agw_fast.errors import ConfigError

R = "binds[0].listeners[0].routes[0]"
B = f"{R}.backends[0]"
AI = f"{B}.ai"


def route_doc(route: dict[str, object], **top: object) -> dict[str, object]:
    return {"binds": [{"port": 3000, "listeners": [{"routes": [route]}]}], **top}


def policies(p: object) -> dict[str, object]:
    return route_doc({"policies": p, "backends": [{"host": "h:1"}]})


def backend(b: object) -> dict[str, object]:
    return route_doc({"backends": [b]})


def ai(extra: dict[str, object]) -> dict[str, object]:
    return backend({"ai": {"name": "x", "provider": {"openAI": {}}, **extra}})


def error_of(
    config: object, env: dict[str, str] | None = None, base_dir: Path = Path("/nonexistent")
) -> ConfigError:
    text = config if isinstance(config, str) else json.dumps(config)
    with pytest.raises(ConfigError) as info:
        load_config(text, env or {}, base_dir=base_dir)
    return info.value


NOT_SUPPORTED: list[tuple[str, object]] = [
    ("mcp", {"gateways": {"default": {"port": 1}}, "mcp": {"targets": []}}),
    ("ui", {"gateways": {"default": {"port": 1}}, "ui": {"gateways": "default"}}),
    ("tcpRoutes", {"gateways": {"default": {"port": 1}}, "tcpRoutes": []}),
    ("gateways.g.protocol", {"gateways": {"g": {"port": 1, "protocol": "TLS"}}}),
    (
        "gateways.g.listeners[0].protocol",
        {"gateways": {"g": {"port": 1, "listeners": [{"protocol": "TCP"}]}}},
    ),
    ("gateways.g.oidc", {"gateways": {"g": {"port": 1, "oidc": {}}}}),
    ("backends[0].mcp", {"backends": [{"name": "b", "mcp": {"targets": []}}]}),
    (
        "llm.models[0].guardrails.request[0].bedrockGuardrails.policies.backendAuth.aws"
        ".accessKeyId",
        {"llm": {"models": [{"name": "m", "provider": "openAI", "guardrails": {
            "request": [{"bedrockGuardrails": {
                "guardrailIdentifier": "g", "guardrailVersion": "1", "region": "r",
                "policies": {"backendAuth": {"aws": {"accessKeyId": "a",
                                                     "secretAccessKey": "s"}}}}}]}}]}},
    ),
    (
        "llm.policies.guardrails.response[0].azureContentSafety",
        {"llm": {"models": [], "policies": {"guardrails": {
            "response": [{"azureContentSafety": {"endpoint": "e"}}]}}}},
    ),
    ("llm.policies.remoteRateLimit", {"llm": {"models": [], "policies": {"remoteRateLimit": {}}}}),
    ("frontendPolicies.tracing.service", {"frontendPolicies": {"tracing": {"service": {}}}}),
    ("config.workerThreads", {"config": {"workerThreads": 2}}),
    ("config.adminAddr", {"config": {"adminAddr": "unix:/tmp/admin.sock"}}),
    ("config.logging.filter", {"config": {"logging": {"filter": "true"}}}),
    ("frontendPolicies.accessLog.otlp", {"frontendPolicies": {"accessLog": {"otlp": {}}}}),
    (
        "frontendPolicies.accessLog.database",
        {"frontendPolicies": {"accessLog": {"database": {}}}},
    ),
    (
        "frontendPolicies.http.http1HeaderCase",
        {"frontendPolicies": {"http": {"http1HeaderCase": "preserve"}}},
    ),
    ("binds[0].mode", {"binds": [{"mode": "internal", "listeners": []}]}),
    (
        "binds[0].tunnelProtocol",
        {"binds": [{"port": 1, "tunnelProtocol": "proxy", "listeners": []}]},
    ),
    (
        "binds[0].listeners[0].protocol",
        {"binds": [{"port": 1, "listeners": [{"protocol": "TCP"}]}]},
    ),
    (
        "binds[0].listeners[0].tls.keyExchangeGroups",
        {
            "binds": [
                {
                    "port": 1,
                    "listeners": [
                        {"protocol": "HTTPS", "routes": [], "tls": {"keyExchangeGroups": ["X"]}}
                    ],
                }
            ]
        },
    ),
    (
        "binds[0].listeners[0].policies.extAuthz",
        {"binds": [{"port": 1, "listeners": [{"routes": [], "policies": {"extAuthz": {}}}]}]},
    ),
    ("frontendPolicies.tls.alpn", {"frontendPolicies": {"tls": {"alpn": [[104, 50]]}}}),
    (
        f"{R}.policies.requestMirror.backend.service",
        policies(
            {"requestMirror": {"percentage": 1, "backend": {"service": {"name": "s", "port": 80}}}}
        ),
    ),
    (
        f"{R}.policies.backendTLS.subjectAltNames",
        policies({"backendTLS": {"subjectAltNames": ["a"]}}),
    ),
    (f"{R}.policies.backendTLS.spiffe", policies({"backendTLS": {"spiffe": {}}})),
    (f"{R}.policies.backendTLS.alpn", policies({"backendTLS": {"alpn": ["h2"]}})),
    (f"{R}.policies.backendTLS.alpn[1]", policies({"backendTLS": {"alpn": ["http/1.1", "h3"]}})),
    (f"{R}.policies.backendAuth", policies({"backendAuth": "copilot"})),
    (f"{R}.policies.backendAuth.passthrough", policies({"backendAuth": {"passthrough": {}}})),
    (f"{R}.policies.backendAuth.credentials", policies({"backendAuth": {"credentials": []}})),
    (f"{R}.policies.backendAuth.aws", policies({"backendAuth": {"aws": {}}})),
    (
        f"{R}.policies.backendAuth.key.location.queryParameter",
        policies(
            {"backendAuth": {"key": {"value": "k", "location": {"queryParameter": {"name": "k"}}}}}
        ),
    ),
    (
        f"{R}.policies.ai.promptGuard.request[1].googleModelArmor.policies.backendAuth.gcp"
        ".credential",
        policies({"ai": {"promptGuard": {"request": [
            {"regex": {"rules": [{"builtin": "email"}]}},
            {"googleModelArmor": {"templateId": "t", "projectId": "p", "policies": {
                "backendAuth": {"gcp": {"credential": "{}"}}}}},
        ]}}}),
    ),
    (
        f"{R}.policies.ai.promptGuard.response[0].webhook",
        policies({"ai": {"promptGuard": {"streaming": "Enabled", "response": [
            {"webhook": {"target": {"host": "127.0.0.1:9"}}}]}}}),
    ),
    (
        f"{R}.policies.ai.promptGuard.request[0].webhook.target.service",
        policies({"ai": {"promptGuard": {"request": [
            {"webhook": {"target": {"service": {"name": "s", "port": 80}}}}]}}}),
    ),
    (
        f"{R}.policies.ai.promptGuard.request[0].openAIModeration.policies.http",
        policies({"ai": {"promptGuard": {"request": [
            {"openAIModeration": {"policies": {"http": {}}}}]}}}),
    ),
    (f"{B}.host", backend({"host": "unix:/tmp/upstream.sock"})),
    (
        f"{B}.policies.http.version",
        backend({"host": "h:1", "policies": {"http": {"version": "HTTP/2.0"}}}),
    ),
    (f"{AI}.provider.custom", backend({"ai": {"name": "x", "provider": {"custom": {}}}})),
    (f"{AI}.provider.copilot", backend({"ai": {"name": "x", "provider": {"copilot": {}}}})),
    (f"{AI}.provider.openAI.moderation", ai({"provider": {"openAI": {"moderation": {}}}})),
    (f"{B}.policies.health", backend({"host": "h:1", "policies": {"health": {}}})),
    (
        f"{AI}.provider.azure",
        backend({"ai": {"name": "x", "provider": {"azure": {"resourceName": "r",
                                                          "resourceType": "openAI"}}}}),
    ),
]


@pytest.mark.parametrize(("path", "config"), NOT_SUPPORTED)
def test_not_supported(path: str, config: object) -> None:
    error = error_of(config)
    assert error.path == path
    assert error.message.startswith(f"not supported: {path}")


def _every_unsupported_key() -> list[tuple[str, object]]:
    """Each known-but-unsupported key of the policy and backend objects, with a non-null value."""
    cases: list[tuple[str, object]] = []
    for key in sorted(SPECS["FilterOrPolicy"].unsupported):
        cases.append((f"{R}.policies.{key}", policies({key: {}})))
    for key in sorted(SPECS["LocalBackendPolicies"].unsupported):
        cases.append((f"{B}.policies.{key}", backend({"host": "h:1", "policies": {key: {}}})))
        cases.append((f"{AI}.policies.{key}", ai({"policies": {key: {}}})))
    for key in sorted(SPECS["LocalRouteBackend"].unsupported):
        cases.append((f"{B}.{key}", backend({key: {}})))
    for key in sorted(SPECS["Root"].unsupported):
        cases.append((key, {key: {}}))
    for key in sorted(SPECS["RawConfig"].unsupported):
        cases.append((f"config.{key}", {"config": {key: {}}}))
    return cases


@pytest.mark.parametrize(("path", "config"), _every_unsupported_key())
def test_every_known_unsupported_key_is_refused(path: str, config: object) -> None:
    assert error_of(config).message == f"not supported: {path}"


ERRORS: list[tuple[object, str, str]] = [
    # (config, path, message fragment)
    (
        {"foo": 1},
        "foo",
        'unknown field "foo" (expected one of: backends, binds, config, frontendPolicies, '
        'gateways, llm, policies, routes)',
    ),
    ([1, 2], "", "expected a map, got list"),
    ("just a string", "", "expected a map, got string"),
    ({"binds": {"port": 1}}, "binds", "expected a list, got map"),
    (
        {"binds": [{"port": "3000", "listeners": []}]},
        "binds[0].port",
        "expected an integer, got string",
    ),
    (
        {"binds": [{"port": True, "listeners": []}]},
        "binds[0].port",
        "expected an integer, got bool",
    ),
    ({"binds": [{"port": -1, "listeners": []}]}, "binds[0].port", "must be in 0..65535, got -1"),
    ({"binds": [{"port": 70000, "listeners": []}]}, "binds[0].port", "must be in 0..65535"),
    (
        {"binds": [{"listeners": []}]},
        "binds[0].port",
        "a bind without a port must set mode: internal",
    ),
    ({"binds": [{"port": 1}]}, "binds[0].listeners", 'missing required field "listeners"'),
    (
        {"binds": [{"port": 1, "listeners": [], "mode": "x"}]},
        "binds[0].mode",
        'expected one of "standard", "internal", got "x"',
    ),
    (
        {"binds": [{"port": 1, "listeners": []}, {"port": 1, "listeners": []}]},
        "binds[1].port",
        "port 1 is already used by binds[0]",
    ),
    (
        {"binds": [{"port": 1, "listeners": [{}]}]},
        "binds[0].listeners[0]",
        "HTTP listener requires routes",
    ),
    (
        {"binds": [{"port": 1, "listeners": [{"routes": [], "protocol": "http"}]}]},
        "binds[0].listeners[0].protocol",
        "expected one of",
    ),
    (
        {"binds": [{"port": 1, "listeners": [{"routes": [], "hostname": 5}]}]},
        "binds[0].listeners[0].hostname",
        "expected a string, got int",
    ),
    (
        {"binds": [{"port": 1, "listeners": [{"routes": [], "name": 5}]}]},
        "binds[0].listeners[0].name",
        "expected a string, got int",
    ),
    (route_doc({"foo": 1}), f"{R}.foo", 'unknown field "foo"'),
    (route_doc({"hostnames": [5]}), f"{R}.hostnames[0]", "expected a string, got int"),
    (route_doc({"hostnames": "a.com"}), f"{R}.hostnames", "expected a list, got string"),
    (
        route_doc({"matches": [{"path": {"regex": "(unclosed"}}]}),
        f"{R}.matches[0].path.regex",
        "invalid regex '(unclosed'",
    ),
    (
        route_doc({"matches": [{"path": {"exact": "/a", "pathPrefix": "/b"}}]}),
        f"{R}.matches[0].path",
        "expected exactly one of: exact, pathPrefix, regex (found exact, pathPrefix)",
    ),
    (route_doc({"matches": [{"path": {}}]}), f"{R}.matches[0].path", "expected exactly one of"),
    (
        route_doc({"matches": [{"path": "invalid"}]}),
        f"{R}.matches[0].path",
        "expected a map, got string",
    ),
    (
        route_doc({"matches": [{"path": {"prefix": "/"}}]}),
        f"{R}.matches[0].path.prefix",
        'unknown field "prefix"',
    ),
    (
        route_doc({"matches": [{"path": {"pathPrefix": "v1"}}]}),
        f"{R}.matches[0].path.pathPrefix",
        'must start with "/"',
    ),
    (route_doc({"matches": [{"method": "GE T"}]}), f"{R}.matches[0].method", "invalid header name"),
    (
        route_doc({"matches": [{"headers": [{"name": "bad name", "value": {"exact": "x"}}]}]}),
        f"{R}.matches[0].headers[0].name",
        "invalid header name 'bad name'",
    ),
    (
        route_doc({"matches": [{"headers": [{"name": "x"}]}]}),
        f"{R}.matches[0].headers[0].value",
        'missing required field "value"',
    ),
    (
        route_doc({"matches": [{"headers": [{"name": "x", "value": {"regex": "["}}]}]}),
        f"{R}.matches[0].headers[0].value.regex",
        "invalid regex",
    ),
    (
        route_doc({"matches": [{"query": [{"name": "q", "value": {"exact": 1}}]}]}),
        f"{R}.matches[0].query[0].value.exact",
        "expected a string, got int",
    ),
    (backend({"host": "example.com"}), f"{B}.host", "port is required"),
    (backend({"host": "example.com:http"}), f"{B}.host", "invalid port 'http'"),
    (backend({"host": "example.com:0"}), f"{B}.host", "invalid port '0'"),
    (backend({"host": "::1:80"}), f"{B}.host", "put IPv6 in brackets"),
    (backend({"host": "[zz]:80"}), f"{B}.host", "invalid IPv6 address"),
    (backend({"host": "bad_host!:80"}), f"{B}.host", "invalid host"),
    (backend({"host": 8080}), f"{B}.host", "expected a string, got int"),
    (
        backend({"host": "h:1", "ai": {}}),
        B,
        "a backend needs exactly one target: both host and ai are set",
    ),
    (backend({"weight": 2}), B, "one of host, ai, backend is required"),
    (backend({"host": "h:1", "weight": -1}), f"{B}.weight", "must be in >= 0, got -1"),
    (backend({"ai": {"provider": {"openAI": {}}}}), f"{AI}.name", 'missing required field "name"'),
    (backend({"ai": {"name": "x"}}), f"{AI}.provider", 'missing required field "provider"'),
    (backend({"ai": {"name": "x", "provider": {}}}), f"{AI}.provider", "exactly one provider"),
    (backend({"ai": {"groups": []}}), f"{AI}.groups", "groups needs at least one group"),
    (
        backend({"ai": {"groups": [{"providers": []}]}}),
        f"{AI}.groups[0].providers",
        "a group needs a provider",
    ),
    (
        backend({"ai": {"name": "x", "provider": "openAI"}}),
        f"{AI}.provider",
        "expected a map, got string",
    ),
    (
        backend({"ai": {"name": "x", "provider": {"openai": {}}}}),
        f"{AI}.provider.openai",
        'unknown field "openai"',
    ),
    (
        ai({"provider": {"openAI": {"model": 4}}}),
        f"{AI}.provider.openAI.model",
        "expected a string, got int",
    ),
    (ai({"hostOverride": "api.cohere.ai"}), f"{AI}.hostOverride", "port is required"),
    (ai({"pathPrefix": "v1"}), f"{AI}.pathPrefix", 'must start with "/"'),
    (ai({"pathOverride": "/a b"}), f"{AI}.pathOverride", "spaces and control characters"),
    (ai({"tokenize": "no"}), f"{AI}.tokenize", "expected a boolean (true or false), got string"),
    (
        policies({"requestHeaderModifier": {"set": {"x-a": "a\r\nInjected: 1"}}}),
        f"{R}.policies.requestHeaderModifier.set.x-a",
        "control characters",
    ),
    (
        policies({"requestHeaderModifier": {"add": {"bad name": "v"}}}),
        f"{R}.policies.requestHeaderModifier.add.bad name",
        "invalid header name",
    ),
    (
        policies({"responseHeaderModifier": {"set": {"x-n": 5}}}),
        f"{R}.policies.responseHeaderModifier.set.x-n",
        "expected a string, got int",
    ),
    (
        policies({"requestHeaderModifier": {"remove": ["ok", "not ok"]}}),
        f"{R}.policies.requestHeaderModifier.remove[1]",
        "invalid header name",
    ),
    (
        policies({"requestHeaderModifier": {"replace": {}}}),
        f"{R}.policies.requestHeaderModifier.replace",
        'unknown field "replace" (expected one of: add, remove, set)',
    ),
    (
        policies({"requestRedirect": {"status": 200}}),
        f"{R}.policies.requestRedirect.status",
        "must be in 300..399",
    ),
    (
        policies({"requestRedirect": {"scheme": "ftp"}}),
        f"{R}.policies.requestRedirect.scheme",
        'expected one of "http", "https"',
    ),
    (
        policies({"directResponse": {"body": "x"}}),
        f"{R}.policies.directResponse.status",
        'missing required field "status"',
    ),
    (
        policies({"directResponse": {"status": 100}}),
        f"{R}.policies.directResponse.status",
        "must be in 200..599",
    ),
    (
        policies({"directResponse": {"status": 600}}),
        f"{R}.policies.directResponse.status",
        "must be in 200..599",
    ),
    (
        policies({"directResponse": {"status": 200, "body": [104, 256]}}),
        f"{R}.policies.directResponse.body[1]",
        "must be in 0..255",
    ),
    (
        policies({"directResponse": {"status": 200, "body": {"a": 1}}}),
        f"{R}.policies.directResponse.body",
        "expected a string or a list of byte values",
    ),
    (
        policies({"urlRewrite": {"authority": "bogus"}}),
        f"{R}.policies.urlRewrite.authority",
        'expected "auto", "none" or a map',
    ),
    (
        policies({"urlRewrite": {"authority": {"full": "a", "host": "b"}}}),
        f"{R}.policies.urlRewrite.authority",
        "expected exactly one of: full, host, port",
    ),
    (
        policies({"urlRewrite": {"authority": {"port": 0}}}),
        f"{R}.policies.urlRewrite.authority.port",
        "must be in 1..65535",
    ),
    (
        policies({"urlRewrite": {"authority": {"full": "a b"}}}),
        f"{R}.policies.urlRewrite.authority.full",
        "invalid host",
    ),
    (
        policies({"urlRewrite": {"path": {"full": "x"}}}),
        f"{R}.policies.urlRewrite.path.full",
        'must start with "/"',
    ),
    (
        policies({"backendTLS": {"cert": "c.pem"}}),
        f"{R}.policies.backendTLS.cert",
        "cert requires key",
    ),
    (
        policies({"backendTLS": {"key": "k.pem"}}),
        f"{R}.policies.backendTLS.key",
        "key requires cert",
    ),
    (
        policies({"backendTLS": {"root": "missing-ca.pem"}}),
        f"{R}.policies.backendTLS.root",
        "file not found",
    ),
    (
        policies({"backendTLS": {"insecure": "yes"}}),
        f"{R}.policies.backendTLS.insecure",
        "expected a boolean",
    ),
    (policies({"backendTLS": {"sni": "x"}}), f"{R}.policies.backendTLS.sni", 'unknown field "sni"'),
    (
        policies({"backendAuth": {}}),
        f"{R}.policies.backendAuth.key",
        'missing required field "key"',
    ),
    (
        policies({"backendAuth": {"key": {}}}),
        f"{R}.policies.backendAuth.key.file",
        'missing required field "file"',
    ),
    (
        policies({"backendAuth": {"key": {"file": "nope"}}}),
        f"{R}.policies.backendAuth.key.file",
        "file not found",
    ),
    (
        policies({"backendAuth": {"key": {"value": "k", "file": "f"}}}),
        f"{R}.policies.backendAuth.key.file",
        'unknown field "file"',
    ),
    (
        policies({"backendAuth": {"key": {"location": {"header": {"name": "x"}}}}}),
        f"{R}.policies.backendAuth.key.value",
        'missing required field "value"',
    ),
    (
        policies({"backendAuth": {"key": {"value": "k", "location": {"header": {"name": "a b"}}}}}),
        f"{R}.policies.backendAuth.key.location.header.name",
        "invalid header name",
    ),
    (
        policies({"backendAuth": {"key": 42}}),
        f"{R}.policies.backendAuth.key",
        "expected a map, got int",
    ),
    (
        policies({"timeout": {"requestTimeout": "soon"}}),
        f"{R}.policies.timeout.requestTimeout",
        "invalid duration 'soon'",
    ),
    (
        policies({"timeout": {"requestTimeout": 30}}),
        f"{R}.policies.timeout.requestTimeout",
        'expected a duration string such as "10s", got int',
    ),
    (
        policies({"timeout": {"backendRequestTimeout": "-1s"}}),
        f"{R}.policies.timeout.backendRequestTimeout",
        "negative",
    ),
    (
        policies({"ai": {"routes": {"/v1/x": "chat"}}}),
        f"{R}.policies.ai.routes./v1/x",
        'expected one of "completions", "messages"',
    ),
    (policies({"ai": {"routes": ["x"]}}), f"{R}.policies.ai.routes", "expected a map, got list"),
    (
        backend({"host": "h:1", "policies": {"http": {"version": "2"}}}),
        f"{B}.policies.http.version",
        "expected one of",
    ),
    (
        backend({"host": "h:1", "policies": {"http": {"requestTimeout": "1x"}}}),
        f"{B}.policies.http.requestTimeout",
        "unknown unit",
    ),
    (
        backend({"host": "h:1", "policies": {"urlRewrite": {}}}),
        f"{B}.policies.urlRewrite",
        'unknown field "urlRewrite"',
    ),
    (
        {"config": {"adminAddr": "example.com:15000"}},
        "config.adminAddr",
        'expected "ip:port", "localhost:port" or "off"',
    ),
    ({"config": {"statsAddr": "15020"}}, "config.statsAddr", "port is required"),
    ({"config": {"statsAddr": "host:15020"}}, "config.statsAddr", 'expected "ip:port"'),
    ({"config": {"readinessAddr": "[::]"}}, "config.readinessAddr", "port is required"),
    (
        {"config": {"logging": {"level": "loud"}}},
        "config.logging.level",
        'expected one of "trace", "debug"',
    ),
    (
        {"config": {"logging": {"format": "xml"}}},
        "config.logging.format",
        'expected one of "text", "json", got "xml"',
    ),
    (
        {"config": {"backend": {"connectTimeout": "10"}}},
        "config.backend.connectTimeout",
        "missing unit",
    ),
    ({"config": {"backend": {"poolMaxSize": -1}}}, "config.backend.poolMaxSize", "must be in >= 0"),
    (
        {"config": {"backend": {"keepalives": {"retries": "x"}}}},
        "config.backend.keepalives.retries",
        "expected an integer",
    ),
    (
        {"config": {"backend": {"keepalives": {"idle": "1s"}}}},
        "config.backend.keepalives.idle",
        'unknown field "idle"',
    ),
    (
        {"config": {"connectionTerminationDeadline": "soon"}},
        "config.connectionTerminationDeadline",
        "invalid duration",
    ),
    (
        {"frontendPolicies": {"http": {"maxBufferSize": "big"}}},
        "frontendPolicies.http.maxBufferSize",
        "expected an integer",
    ),
    (
        {"frontendPolicies": {"http": {"http1IdleTimeout": "forever"}}},
        "frontendPolicies.http.http1IdleTimeout",
        "invalid duration",
    ),
    ({"config": [1]}, "config", "expected a map, got list"),
]


@pytest.mark.parametrize(("config", "path", "fragment"), ERRORS)
def test_error_paths(config: object, path: str, fragment: str) -> None:
    error = error_of(config)
    assert error.path == path
    assert fragment in error.message


def test_yaml_int_keys_are_reported() -> None:
    error = error_of("binds:\n- port: 1\n  listeners: []\n  1: x\n")
    assert error.path == "binds[0]"
    assert "expected string keys, got int key 1" in error.message


def test_yaml11_booleans_are_not_booleans() -> None:
    error = error_of(
        "binds:\n- port: 1\n  listeners:\n  - routes:\n    - policies:\n"
        "        backendTLS: {insecure: yes}\n"
    )
    assert error.path == f"{R}.policies.backendTLS.insecure"
    assert error.message == "expected a boolean (true or false), got string"


def test_env_override_errors_name_the_variable() -> None:
    error = error_of({}, {"ADMIN_ADDR": "nowhere"})
    assert error.path == "$ADMIN_ADDR"
    error = error_of({}, {"TERMINATION_GRACE_PERIOD_SECONDS": "-3"})
    assert error.path == "$TERMINATION_GRACE_PERIOD_SECONDS"
    error = error_of({}, {"CONNECTION_TERMINATION_DEADLINE": "x"})
    assert error.path == "$CONNECTION_TERMINATION_DEADLINE"


@pytest.mark.parametrize(
    "auth",
    [
        {"key": "sk-secret-value\r\nX-Evil: 1"},
        {"key": {"value": "sk-secret-value\nX-Evil: 1"}},
        {
            "key": {
                "value": "sk-secret-value",
                "location": {"header": {"name": "a", "prefix": "\n"}},
            }
        },
    ],
)
def test_bad_secrets_are_refused_without_echoing_them(auth: object) -> None:
    error = error_of(policies({"backendAuth": auth}))
    assert "control characters" in error.message
    assert "sk-secret-value" not in str(error)


def test_secret_file_with_bad_bytes_is_not_echoed(tmp_path: Path) -> None:
    (tmp_path / "key").write_bytes(b"sk-\xff\xfe-secret")
    error = error_of(policies({"backendAuth": {"key": {"file": "key"}}}), base_dir=tmp_path)
    assert error.path == f"{R}.policies.backendAuth.key.file"
    assert "not valid UTF-8" in error.message
    assert "secret" not in error.message.replace(str(tmp_path), "")


def test_secret_file_with_newline_inside_is_refused(tmp_path: Path) -> None:
    (tmp_path / "key").write_text("line1\nline2\n")
    error = error_of(policies({"backendAuth": {"key": {"file": "key"}}}), base_dir=tmp_path)
    assert error.path == f"{R}.policies.backendAuth.key"
    assert "line1" not in str(error)


def test_tls_directory_is_not_a_file(tmp_path: Path) -> None:
    (tmp_path / "dir").mkdir()
    error = error_of(policies({"backendTLS": {"root": "dir"}}), base_dir=tmp_path)
    assert error.path == f"{R}.policies.backendTLS.root"
    assert "file not found" in error.message


def test_duplicate_yaml_key_fails_the_load() -> None:
    error = error_of("binds: []\nbinds: []\n")
    assert 'duplicate key "binds"' in error.message
    assert "line 2" in error.message


def test_unset_variable_in_a_comment_fails_the_load() -> None:
    error = error_of("# uses $NOT_SET somewhere\nbinds: []\n")
    assert error.message == "environment variable not found: NOT_SET"


def test_unread_field_is_an_internal_error_not_ignored() -> None:
    o = Obj({"name": "x", "value": {}}, "p", "HeaderMatch")
    o.get("name")
    with pytest.raises(ConfigError, match="internal error") as info:
        o.close()
    assert info.value.path == "p.value"
