"""Tracing without sockets: W3C trace context parsing, sampling, the config's checks, span
attributes and `flattenRecursive` expansion."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from agw_fast.config import load_config
from agw_fast.config.model import PathMatch, TracingPolicy
from agw_fast.errors import ConfigError
from agw_fast.policies.tracing import Sampler, format_traceparent, parse_traceparent

VALID = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_traceparent_round_trip() -> None:
    parsed = parse_traceparent(VALID)
    assert parsed == (0, 0x4BF92F3577B34DA6A3CE929D0E0E4736, 0x00F067AA0BA902B7, 1)
    assert format_traceparent(*parsed) == VALID


@pytest.mark.parametrize(
    "value",
    [
        b"0" * 55,  # no dashes
        b"00-4bf9-00f067aa0ba902b7-01",
        b"00-4bf92f3577b34da6a3ce929d0e0e47360-0f067aa0ba902b7-01",
        b"zz-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        b"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  # forbidden version
        b"00-00000000000000000000000000000000-00f067aa0ba902b7-01",  # zero trace id
        b"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",  # zero parent id
        b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        b"",
    ],
)
def test_traceparent_malformed(value: bytes) -> None:
    assert parse_traceparent(value) is None


def test_constant_samplers() -> None:
    assert Sampler(1.0).sample(None)
    assert not Sampler(0.0).sample(None)
    hits = sum(Sampler(0.5).sample(None) for _ in range(2000))
    assert 700 < hits < 1300


def doc(tracing: str, where: str = "config") -> str:
    route = "binds:\n- port: 3000\n  listeners:\n  - routes:\n    - backends: [{host: a:1}]\n"
    return f"{where}:\n  tracing:\n{tracing}{route}"


def test_config_tracing_endpoint_forms() -> None:
    cases = {
        "http://c:4317": ("http://c:4317", "/v1/traces"),
        "c:4318/custom/traces": ("https://c:4318", "/custom/traces"),  # no scheme: https
        "grpc://c": ("http://c:4317", "/v1/traces"),
    }
    for endpoint, expected in cases.items():
        config = load_config(doc(f"    otlpEndpoint: {endpoint}\n"), {}, base_dir=Path("."))
        tracing = config.static.tracing
        assert tracing is not None
        assert (tracing.endpoint, tracing.otlp_path) == expected


def test_config_tracing_environment_overrides() -> None:
    env = {
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://env:4318/v1/traces",
        "OTEL_EXPORTER_OTLP_HEADERS": "authorization=Bearer t, x-a=b",
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf",
    }
    config = load_config(doc("    otlpEndpoint: http://file:4317\n"), env, base_dir=Path("."))
    assert config.static.tracing == TracingPolicy(
        path="config.tracing", endpoint="http://env:4318", protocol="http",
        headers=(("authorization", "Bearer t"), ("x-a", "b")),
    )


@pytest.mark.parametrize(
    ("text", "where", "message"),
    [
        ("    randomSampling: true\n", "config",
         "config.tracing: config.tracing requires otlpEndpoint"),
        ("    otlpEndpoint: ftp://c:1\n", "config",
         "config.tracing.otlpEndpoint: unsupported tracing endpoint scheme: ftp"),
        ("    otlpEndpoint: http://c:1\n    otlpProtocol: zipkin\n", "config",
         'config.tracing.otlpProtocol: expected one of "grpc", "http", got "zipkin"'),
        ("    otlpEndpoint: http://c:1\n    fields: {add: {a: 'llm.cost'}}\n", "config",
         "config.tracing.fields.add.a: not supported: the CEL field `llm.cost`"),
        ("    otlpEndpoint: http://c:1\n    randomSampling: 'nope('\n", "config",
         "config.tracing.randomSampling: invalid CEL expression"),
        ("    host: c\n", "frontendPolicies", "frontendPolicies.tracing.host: port is required"),
        ("    backend: b\n", "frontendPolicies",
         "frontendPolicies.tracing.backend: not supported"),
    ],
)
def test_config_tracing_errors(text: str, where: str, message: str) -> None:
    from agw_fast.plan import compile_config

    with pytest.raises(ConfigError) as info:
        compile_config(load_config(doc(text, where), {}, base_dir=Path(".")))
    assert str(info.value).startswith(message)


def test_both_tracing_forms_refused() -> None:
    text = doc("    otlpEndpoint: http://c:1\n") + "frontendPolicies:\n  tracing: {host: 'c:2'}\n"
    with pytest.raises(ConfigError, match="cannot use config.tracing together with"):
        load_config(text, {}, base_dir=Path("."))


def test_tracing_without_the_sdk_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec

    def missing(name: str, *args: object) -> object:
        return None if name.startswith("opentelemetry") else real(name)

    monkeypatch.setattr(importlib.util, "find_spec", missing)
    with pytest.raises(ConfigError) as info:
        load_config(doc("    otlpEndpoint: http://c:1\n"), {}, base_dir=Path("."))
    assert str(info.value) == (
        "config.tracing: tracing needs the OpenTelemetry SDK: pip install 'agw-fast[tracing]'"
    )


def test_span_name_and_flatten() -> None:
    pytest.importorskip("opentelemetry.sdk")
    from agw_fast.telemetry.tracing import _add_value, _span_name

    assert _span_name(b"GET", PathMatch("prefix", "/")) == "GET /*"
    assert _span_name(b"POST", PathMatch("prefix", "/v1")) == "POST /v1/*"
    assert _span_name(b"GET", PathMatch("exact", "/health")) == "GET /health"
    attributes: dict[str, object] = {}
    _add_value(attributes, "p", {"$_meta_flatten_list_recursive": [{"a": [1, 2]}]}, False)
    _add_value(attributes, "q", {"$_meta_flatten_map": {"k": {"deep": 1}}}, False)
    _add_value(attributes, "r", {"plain": True}, False)
    assert attributes == {"p.0.a.0": 1, "p.0.a.1": 2, "q.k": '{"deep":1}', "r": '{"plain":true}'}
