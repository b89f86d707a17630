"""Config forms agentgateway accepts, loaded with its meaning (or refused by name when agw-fast
cannot serve them): listener and route hostnames, header case, LLM route types, keepalives."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agw_fast.config import KeepaliveConfig, load_config
from agw_fast.config.model import Config
from agw_fast.errors import ConfigError

R = "binds[0].listeners[0].routes[0]"


def _load(doc: object) -> Config:
    return load_config(json.dumps(doc), {}, base_dir=Path("/"))


def _error(doc: object) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        _load(doc)
    return info.value


def _listener(**fields: object) -> dict[str, object]:
    return {"binds": [{"port": 1, "listeners": [{"routes": [{}], **fields}]}]}


def _route(**fields: object) -> dict[str, object]:
    return {"binds": [{"port": 1, "listeners": [{"routes": [fields]}]}]}


# -- hostnames ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("written", "stored"),
    [
        ("*", "*"),
        ("*.Example.com", "*.example.com"),
        ("*example.com", "*example.com"),
        ("", ""),
        ("API.example.com", "api.example.com"),
        ("not a dns name", "not a dns name"),
    ],
)
def test_listener_hostname_is_any_string(written: str, stored: str) -> None:
    (listener,) = _load(_listener(hostname=written)).binds[0].listeners
    assert listener.hostname == stored


@pytest.mark.parametrize("hostname", ["*", "", "*.example.com", "a_b.local", "Weird Name"])
def test_route_hostnames_are_any_string(hostname: str) -> None:
    route = _load(_route(hostnames=[hostname])).binds[0].listeners[0].routes[0]
    assert route.hostnames == (hostname.lower(),)


def test_route_namespace_is_kept() -> None:
    route = _load(_route(namespace="team-a")).binds[0].listeners[0].routes[0]
    assert route.namespace == "team-a"
    assert _load(_route()).binds[0].listeners[0].routes[0].namespace == "default"


# -- frontendPolicies.http.http1HeaderCase -----------------------------------------------------


def test_header_case_lowercase_is_accepted() -> None:
    config = _load({"frontendPolicies": {"http": {"http1HeaderCase": "lowercase"}}})
    assert config.frontend == Config().frontend


def test_header_case_preserve_is_refused_by_name() -> None:
    error = _error({"frontendPolicies": {"http": {"http1HeaderCase": "preserve"}}})
    path = "frontendPolicies.http.http1HeaderCase"
    assert str(error) == f"{path}: not supported: {path} (preserve)"


def test_header_case_unknown_value() -> None:
    error = _error({"frontendPolicies": {"http": {"http1HeaderCase": "Title"}}})
    assert error.message == 'expected one of "lowercase", "preserve", got "Title"'


# -- policies.ai.routes ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "route_type", ["completions", "responses", "embeddings", "detect", "passthrough", "models"]
)
def test_served_route_types_load(route_type: str) -> None:
    route = _load(_route(policies={"ai": {"routes": {"/x": route_type, "*": route_type}}}))
    policies = route.binds[0].listeners[0].routes[0].policies
    assert policies is not None and policies.ai is not None
    assert policies.ai.routes == (("/x", route_type), ("*", route_type))


@pytest.mark.parametrize("route_type", ["realtime"])
def test_unserved_route_types_are_refused_at_load(route_type: str) -> None:
    error = _error(_route(policies={"ai": {"routes": {"/v1/x": route_type}}}))
    path = f"{R}.policies.ai.routes./v1/x"
    assert str(error) == f"{path}: not supported: {path} (route type {route_type})"


def test_unserved_route_type_on_a_backend_is_refused() -> None:
    backend = {"host": "a:1", "policies": {"ai": {"routes": {"*": "realtime"}}}}
    error = _error(_route(backends=[backend]))
    assert error.path == f"{R}.backends[0].policies.ai.routes.*"
    assert error.message.startswith("not supported: ")


# -- config.backend.keepalives -----------------------------------------------------------------


def _keepalive(**fields: object) -> KeepaliveConfig:
    return _load({"config": {"backend": {"keepalives": fields}}}).static.backend.keepalive


def test_keepalive_defaults_are_agentgateways() -> None:
    default = KeepaliveConfig(enabled=True, time=180, interval=180, retries=9)
    assert Config().static.backend.keepalive == default
    assert _load({"config": {"backend": {}}}).static.backend.keepalive == default
    assert _keepalive() == default


def test_keepalive_values_truncate_to_whole_seconds() -> None:
    assert _keepalive(time="1m30s", interval="2500ms", retries=3) == KeepaliveConfig(
        enabled=True, time=90, interval=2, retries=3
    )


def test_keepalive_disabled_skips_the_kernel_bounds() -> None:
    assert _keepalive(enabled=False, time="0s", retries=0) == KeepaliveConfig(
        enabled=False, time=0, interval=180, retries=0
    )


@pytest.mark.parametrize(
    ("fields", "key", "message"),
    [
        ({"time": "0s"}, "time", "must be in 1s..32767s for the kernel, got 0s (whole seconds)"),
        ({"time": "999ms"}, "time", "got 0s"),
        ({"interval": "10h"}, "interval", "must be in 1s..32767s for the kernel, got 36000s"),
        ({"retries": 0}, "retries", "must be in 1..127 for the kernel, got 0"),
        ({"retries": 128}, "retries", "must be in 1..127 for the kernel, got 128"),
        ({"retries": -1}, "retries", "must be in 0..4294967295, got -1"),
        ({"time": 30}, "time", 'expected a duration string such as "10s", got int'),
        ({"enabled": "yes"}, "enabled", "expected a boolean"),
    ],
)
def test_keepalive_errors_name_the_field(
    fields: dict[str, object], key: str, message: str
) -> None:
    error = _error({"config": {"backend": {"keepalives": fields}}})
    assert error.path == f"config.backend.keepalives.{key}"
    assert message in error.message


# -- regexes: Rust `regex` syntax ---------------------------------------------------------------


def _path_regex(pattern: str) -> dict[str, object]:
    return _route(matches=[{"path": {"regex": pattern}}])


@pytest.mark.parametrize("pattern", [r"/v\d+/\p{L}+", "/(?<model>[a-z]+)", r"/x\z", "[[:alpha:]]"])
def test_rust_syntax_loads(pattern: str) -> None:
    route = _load(_path_regex(pattern)).binds[0].listeners[0].routes[0]
    assert route.matches[0].path.value == pattern


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("/(?=v1)", "look-around, including look-ahead and look-behind, is not supported"),
        (r"/(a)\1", "backreferences are not supported"),
        (r"/v1\Z", "unrecognized escape sequence"),
        ("/v1/{id}", "repetition quantifier expects a valid decimal"),
    ],
)
def test_python_only_syntax_is_refused_with_the_field(pattern: str, message: str) -> None:
    error = _error(_path_regex(pattern))
    assert error.path == f"{R}.matches[0].path.regex"
    assert error.message.startswith(f"invalid regex {pattern!r}: {message}")


def test_unsupported_unicode_property_is_not_supported() -> None:
    doc = _route(matches=[{"headers": [{"name": "x", "value": {"regex": r"\p{Greek}+"}}]}])
    error = _error(doc)
    path = f"{R}.matches[0].headers[0].value.regex"
    assert error.path == path
    assert error.message.startswith(f"not supported: {path} (regex '\\\\p{{Greek}}+': ")


def test_query_regex_is_checked() -> None:
    doc = _route(matches=[{"query": [{"name": "q", "value": {"regex": "(?!x)"}}]}])
    assert _error(doc).path == f"{R}.matches[0].query[0].value.regex"
